"""SMS and WhatsApp through Twilio's Programmable Messaging API, and voice calls that read
the message out, with the official SDK."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException, TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from payherald.channels.base import Message, ReconcileOutcome, Reconciliation
from payherald.exceptions import (
    DeliveryOutcomeUnknown,
    PermanentDeliveryError,
    TransientDeliveryError,
)

__all__ = ["TwilioSmsChannel", "TwilioVoiceChannel", "TwilioWhatsAppChannel", "twilio_client"]

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


# Twilio errors that a later attempt can get past: credentials being fixed, a full queue.
_RETRYABLE_CODES = {
    20003: "authentication failed; check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN",
    20429: "too many requests",
    21611: "the sender's queue of unsent messages is full",
}
# How long after an attempt a message missing from Twilio's list really was never sent.
_RECONCILE_GRACE = timedelta(minutes=5)


def twilio_client(
    account_sid: str,
    auth_token: str,
    *,
    api_base: str | None = None,
    timeout: float = 15.0,
    connections: int = 10,
) -> Client:
    """A Twilio REST client; ``api_base`` (TWILIO_API_BASE) replaces https://api.twilio.com.
    It keeps up to ``connections`` connections open for reuse: give it as many as threads
    send at once (PAYHERALD_WORKER_CONCURRENCY). The SDK's own pool keeps CPUs + 4, so
    after every lull a burst from more senders than that would open a new TLS connection
    for each of the others, and close it again when they return."""
    http = TwilioHttpClient(timeout=timeout)
    if http.session is not None:
        for scheme in ("https://", "http://"):
            http.session.mount(scheme, HTTPAdapter(pool_maxsize=connections))
    client = Client(account_sid, auth_token, http_client=http)
    if api_base:
        client.api.base_url = api_base.rstrip("/")
    return client


class TwilioSmsChannel:
    """SMS from a number or a Messaging Service."""

    name = "sms"
    # WhatsApp addresses are the same numbers behind a "whatsapp:" prefix.
    address_prefix = ""

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

    def sender(self, message: Message) -> str:
        return self._service or self.address_prefix + (self._from or "")

    def send(self, message: Message) -> str:
        kwargs: dict[str, str] = {"to": self.address_prefix + message.to, "body": message.body}
        if self._service:
            kwargs["messaging_service_sid"] = self._service
        else:
            assert self._from is not None
            kwargs["from_"] = self.address_prefix + self._from
        return _create(self._client.messages.create, kwargs, self._status_callback, message)

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        """Look for the message at Twilio: the newest messages to the same number, created
        since the attempt, with the same text.

        Not finding it counts as "not delivered" only once the attempt is older than
        ``_RECONCILE_GRACE``; before that, and on any error, the answer is "undetermined".
        """
        since = attempt_started_at - timedelta(minutes=1)
        wanted = _comparable(message.body)
        try:
            # Newest first, a page at a time, until messages older than the attempt. Not
            # filtered on DateSent: it stays empty while a message waits in Twilio's queue,
            # and such a message must be found.
            for candidate in self._client.messages.stream(
                to=self.address_prefix + message.to, limit=200, page_size=20
            ):
                created = candidate.date_created
                if created is not None and created < since:
                    break
                if _comparable(candidate.body or "") == wanted:
                    return Reconciliation(
                        ReconcileOutcome.DELIVERED, provider_id=str(candidate.sid)
                    )
        except (TwilioException, requests.exceptions.RequestException):
            return Reconciliation(ReconcileOutcome.UNDETERMINED)
        if datetime.now(UTC) - attempt_started_at < _RECONCILE_GRACE:
            return Reconciliation(ReconcileOutcome.UNDETERMINED)
        return Reconciliation(ReconcileOutcome.NOT_DELIVERED)


class TwilioWhatsAppChannel(TwilioSmsChannel):
    """WhatsApp through Twilio: the same API, addresses prefixed with ``whatsapp:``; the
    sender is a WhatsApp-enabled number (TWILIO_WHATSAPP_FROM) or a Messaging Service."""

    name = "whatsapp"
    address_prefix = "whatsapp:"


class TwilioVoiceChannel:
    """A phone call that reads the message out (TwiML ``<Say>``) in the locale's language."""

    name = "voice"

    def __init__(
        self,
        *,
        client: Client,
        from_number: str,
        language: str = "en-US",
        status_callback: str | None = None,
    ) -> None:
        self._client = client
        self._from = from_number
        self._language = language
        self._status_callback = status_callback

    def sender(self, message: Message) -> str:
        return f"voice:{self._from}"

    def twiml(self, text: str) -> str:
        response = VoiceResponse()
        response.say(text, language=self._language)
        return str(response)

    def send(self, message: Message) -> str:
        kwargs: dict[str, str] = {
            "to": message.to,
            "from_": self._from,
            "twiml": self.twiml(message.body),
        }
        return _create(self._client.calls.create, kwargs, self._status_callback, message)

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation:
        """A call to the number from our number since the attempt means it was placed
        (calls do not carry their text to compare)."""
        since = attempt_started_at - timedelta(minutes=1)
        try:
            for call in self._client.calls.stream(
                to=message.to, from_=self._from, limit=50, page_size=20
            ):
                created = call.date_created
                if created is not None and created < since:
                    break
                return Reconciliation(ReconcileOutcome.DELIVERED, provider_id=str(call.sid))
        except (TwilioException, requests.exceptions.RequestException):
            return Reconciliation(ReconcileOutcome.UNDETERMINED)
        if datetime.now(UTC) - attempt_started_at < _RECONCILE_GRACE:
            return Reconciliation(ReconcileOutcome.UNDETERMINED)
        return Reconciliation(ReconcileOutcome.NOT_DELIVERED)


def _comparable(body: str) -> str:
    """The text with only its ASCII letters and digits: Twilio's Smart Encoding may have
    replaced curly quotes and dashes, which must not hide a message that was sent."""
    return "".join(char for char in body if char.isascii() and char.isalnum())


def _create(
    create: Callable[..., Any],
    kwargs: dict[str, str],
    status_callback: str | None,
    message: Message,
) -> str:
    """Call Twilio's ``create`` and say what its failure means: refused for good, worth
    another try, or (the request may have reached Twilio) an unknown outcome."""
    if status_callback:
        kwargs["status_callback"] = f"{status_callback}?notification={message.notification_id}"
    try:
        created = create(**kwargs)
    except TwilioRestException as exc:
        raise _classify(exc) from exc
    except requests.exceptions.RequestException as exc:
        if _never_connected(exc):
            raise TransientDeliveryError(
                f"Could not connect to Twilio: {exc}", code="connect_error"
            ) from exc
        raise DeliveryOutcomeUnknown(
            f"The connection to Twilio broke after the request was sent: {exc}",
            code="connection_lost",
        ) from exc
    return str(created.sid)


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


def _classify(
    exc: TwilioRestException,
) -> TransientDeliveryError | PermanentDeliveryError | DeliveryOutcomeUnknown:
    code = f"twilio_{exc.code}" if exc.code else f"http_{exc.status}"
    if exc.status >= 500:
        # An error from Twilio's edge can come after the message was created.
        return DeliveryOutcomeUnknown(f"Twilio answered {exc.status}: {exc.msg}", code=code)
    if exc.status == 429 or exc.code in _RETRYABLE_CODES or exc.status in (401, 403):
        reason = _RETRYABLE_CODES.get(exc.code or 0, exc.msg)
        return TransientDeliveryError(f"Twilio answered {exc.status}: {reason}", code=code)
    reason = _PERMANENT_CODES.get(exc.code or 0, exc.msg or "Twilio refused the message")
    return PermanentDeliveryError(f"Twilio refused the message: {reason}", code=code)
