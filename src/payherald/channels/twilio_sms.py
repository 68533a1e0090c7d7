"""SMS through Twilio's Programmable Messaging API, with the official SDK."""

from __future__ import annotations

from datetime import datetime, timedelta

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from payherald.channels.base import Message, ReconcileOutcome, Reconciliation
from payherald.exceptions import PermanentDeliveryError, TransientDeliveryError

__all__ = ["TwilioSmsChannel", "twilio_client"]

# Twilio error codes that will fail the same way however often they are retried.
_PERMANENT_CODES = {
    21211: "the 'To' number is not a valid phone number",
    21408: "SMS to this region is not enabled on the Twilio account",
    21610: "the recipient has replied STOP to this sender",
    21612: "Twilio cannot route SMS from this sender to this number",
    21614: "the 'To' number is not a mobile number",
    30003: "the handset is unreachable",
    30004: "the message is blocked by the carrier or recipient",
    30005: "the number is unknown or no longer in service",
    30006: "the number is a landline or unreachable carrier",
}


def twilio_client(
    account_sid: str, auth_token: str, *, api_base: str | None = None, timeout: float = 15.0
) -> Client:
    """A Twilio REST client; ``api_base`` (TWILIO_API_BASE) replaces https://api.twilio.com."""
    client = Client(account_sid, auth_token, http_client=TwilioHttpClient(timeout=timeout))
    if api_base:
        client.api.base_url = api_base.rstrip("/")
    return client


class TwilioSmsChannel:
    name = "sms"

    def __init__(
        self,
        *,
        client: Client,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        status_callback: str | None = None,
    ) -> None:
        if not (from_number or messaging_service_sid):
            raise ValueError("a from number or a messaging service SID is needed")
        self._client = client
        self._from = from_number
        self._service = messaging_service_sid
        self._status_callback = status_callback

    def send(self, message: Message) -> str:
        kwargs: dict[str, str] = {"to": message.to, "body": message.body}
        if self._service:
            kwargs["messaging_service_sid"] = self._service
        else:
            assert self._from is not None
            kwargs["from_"] = self._from
        if self._status_callback:
            kwargs["status_callback"] = (
                f"{self._status_callback}?notification={message.notification_id}"
            )
        try:
            sent = self._client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise _classify(exc) from exc
        except requests.exceptions.RequestException as exc:
            if _never_connected(exc):
                raise TransientDeliveryError(
                    f"Could not connect to Twilio: {exc}", code="connect_error"
                ) from exc
            raise  # the request may have reached Twilio: the outcome is unknown
        return str(sent.sid)

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        """Look for the message at Twilio: same recipient and body, sent since the attempt."""
        since = attempt_started_at - timedelta(minutes=5)
        try:
            candidates = self._client.messages.list(to=message.to, date_sent_after=since, limit=50)
        except TwilioRestException as exc:
            if exc.status in (429,) or exc.status >= 500:
                return Reconciliation(ReconcileOutcome.UNDETERMINED)
            raise _classify(exc) from exc
        except TwilioException:
            return Reconciliation(ReconcileOutcome.UNDETERMINED)
        for candidate in candidates:
            if candidate.body == message.body:
                return Reconciliation(ReconcileOutcome.DELIVERED, provider_id=str(candidate.sid))
        return Reconciliation(ReconcileOutcome.NOT_DELIVERED)


def _never_connected(exc: requests.exceptions.RequestException) -> bool:
    """True when the request certainly never reached Twilio, so a retry cannot duplicate."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    if not isinstance(exc, requests.exceptions.ConnectionError):
        return False
    cause: BaseException | None = exc
    while cause is not None:
        if type(cause).__name__ in ("NewConnectionError", "NameResolutionError"):
            return True
        reason = getattr(cause, "reason", None)
        cause = reason if isinstance(reason, BaseException) else cause.__context__
    return False


def _classify(exc: TwilioRestException) -> TransientDeliveryError | PermanentDeliveryError:
    code = f"twilio_{exc.code}" if exc.code else f"http_{exc.status}"
    if exc.status == 429 or exc.status >= 500:
        return TransientDeliveryError(
            f"Twilio answered {exc.status}: {exc.msg}",
            code=code,
        )
    reason = _PERMANENT_CODES.get(exc.code or 0, exc.msg or "Twilio refused the message")
    return PermanentDeliveryError(f"Twilio refused the message: {reason}", code=code)
