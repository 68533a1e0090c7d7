"""One attempt at one notification: compose it, send it, record what became of it.

Exactly-once is kept by the store's state machine (``payherald.store.queue``): the row is
marked ``sending`` and committed *before* the provider is called, so a crash during the
call leaves it ``unknown``, and an unknown notification is reconciled against the
provider before it can ever be sent again. Whatever the attempt comes to is recorded
through one table (``payherald.store.transitions``): the row's new state, the count in
``payherald_notifications_total``, the log line. Each send the provider accepts is timed
from the event's arrival in ``payherald_end_to_end_seconds``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog

from payherald.backoff import backoff_delay
from payherald.channels.base import Channel, Message, ReconcileOutcome
from payherald.channels.router import ChannelRouter
from payherald.clock import Clock
from payherald.compose import Composed, Composer, NotificationDeferred, NotificationSkipped
from payherald.consent import must_not_be_messaged
from payherald.exceptions import (
    PermanentDeliveryError,
    RecipientNotFound,
    RenderError,
    StoreUnavailable,
    TransientDeliveryError,
)
from payherald.metrics import Metrics
from payherald.payments import twin_told
from payherald.ratelimit import RateLimiter
from payherald.recipients import mask_phone
from payherald.store import ClaimedNotification, Store
from payherald.store.transitions import Outcome

__all__ = ["Sender"]

_log = structlog.get_logger("payherald.worker")

# How long to wait before asking the provider again about an undetermined outcome.
_RECHECK_UNKNOWN = timedelta(minutes=2)


class Sender:
    """Sends claimed notifications (``process``) and settles those whose outcome is
    unknown (``reconcile``); the worker gives it what it claims."""

    def __init__(
        self,
        *,
        store: Store,
        composer: Composer,
        router: ChannelRouter,
        clock: Clock,
        limiter: RateLimiter,
        metrics: Metrics,
        lease: float,
        max_attempts: int,
        retry_base: float,
        max_age: float,
        write_back: bool,
    ) -> None:
        self._store = store
        self._queue = store.queue
        self._composer = composer
        self._router = router
        self._clock = clock
        self._limiter = limiter
        self._metrics = metrics
        self._lease = lease
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._max_age = timedelta(seconds=max_age)
        # Whether opt-outs are written to Stripe customers (a Stripe key is set).
        self._write_back = write_back

    def warm_up(self) -> None:
        """Load now what the first message would otherwise wait for."""
        self._composer.warm_up()

    def process(self, notification: ClaimedNotification) -> None:
        log = _log.bind(
            notification_id=notification.id, event_id=notification.event_id, rule=notification.rule
        )
        planned = notification.channel
        try:
            composed = self._composer.compose(notification)
        except NotificationSkipped as exc:
            self._settle(notification, Outcome.SKIPPED, planned, log, reason=exc.reason)
            return
        except NotificationDeferred as exc:
            self._defer(notification, exc, planned, log)
            return
        except StoreUnavailable as exc:
            # Reading or linking the payment's identifiers failed: nothing was sent.
            retry = TransientDeliveryError(exc.message, code="store_unavailable")
            self._retry_or_fail(notification, retry, log, channel=planned)
            return
        except RecipientNotFound as exc:
            # When the chain ran out because channels refused, the last refusal's code
            # (twilio_21614, smtp_550...) says more than "no recipient"; it is counted under
            # the channel that refused last, under "none" when no channel could be tried.
            refused = notification.refusals and notification.error_code
            code = notification.error_code if refused else "no_recipient"
            counted = notification.refusals[-1][0] if notification.refusals else "none"
            self._settle(notification, Outcome.FAILED, counted, log, error=exc.message, code=code)
            return
        except RenderError as exc:
            self._settle(
                notification, Outcome.FAILED, planned, log, error=exc.message, code="render_error"
            )
            return
        except TransientDeliveryError as exc:
            self._retry_or_fail(notification, exc, log, channel=planned)
            return
        except Exception as exc:
            # A bug or a payload nobody foresaw. Nothing was sent, so record it and move on:
            # leaving the row claimed would retry the same crash after every lease.
            error = f"Could not prepare the message: {type(exc).__name__}: {exc}"
            self._settle(notification, Outcome.CRASHED, planned, log, error=error)
            return
        if composed.notes:
            log.info("channel_fallback", notes=composed.notes)
        carrier = composed.carrier
        customer = notification.recipient == "customer"
        if not self._queue.mark_sending(
            notification,
            to=composed.to,
            body=composed.body,
            channel=carrier.name,
            lease=self._lease,
            notes=composed.notes,
            unless_suppressed=composed.addresses if customer else (),
            question=composed.question,
        ):
            self._not_sending(notification, composed, log)
            return
        message = Message(
            notification_id=notification.id,
            to=composed.to,
            body=composed.body,
            channel=composed.channel,
        )
        self._send(notification, carrier, message, log)

    def _not_sending(self, notification: ClaimedNotification, composed: Composed, log: Any) -> None:
        """``mark_sending`` refused: an opt-out, a twin told meanwhile, or a lost claim."""
        channel = composed.carrier.name
        customer = notification.recipient == "customer"
        opted_out = self._store.consents.first_suppressed(composed.addresses) if customer else None
        if opted_out is not None:
            # An opt-out is the person's: no other channel of the rule may carry it.
            reason = must_not_be_messaged(*opted_out) + "; no channel of the rule may carry it"
            self._settle(
                notification, Outcome.SUPPRESSED, channel, log, error=reason, notes=composed.notes
            )
            return
        sibling = self._store.told_sibling(notification)
        if sibling is None:
            log.warning("claim_lost", action="skip")
            return
        # Its twin, about the same payment, was sent while this one was composed.
        outcome = twin_told(sibling, self._clock.now())
        if isinstance(outcome, NotificationSkipped):
            self._settle(notification, Outcome.SKIPPED, channel, log, reason=outcome.reason)
        else:
            self._defer(notification, outcome, channel, log)

    def _defer(
        self,
        notification: ClaimedNotification,
        outcome: NotificationDeferred,
        channel: str,
        log: Any,
    ) -> None:
        self._settle(
            notification,
            Outcome.DEFERRED,
            channel,
            log,
            run_at=outcome.until,
            notes=outcome.reason,
            logged={"reason": outcome.reason, "until": outcome.until.isoformat()},
        )

    def _send(
        self, notification: ClaimedNotification, channel: Channel, message: Message, log: Any
    ) -> None:
        log = log.bind(channel=channel.name, to=mask_phone(message.to))
        sender = channel.sender(message)
        self._limiter.wait(sender if self._limiter.limited(sender) else channel.name)
        try:
            provider_id = channel.send(message)
        except PermanentDeliveryError as exc:
            if exc.code == "twilio_21610":  # the person replied STOP to this sender
                self._store.consents.record(
                    address=message.to,
                    action="opt_out",
                    channel=message.channel,
                    words="STOP, reported as Twilio error 21610",
                    source="twilio",
                    write_back=self._write_back,
                )
                log.info("suppressed", reason="twilio_21610")
            if notification.recipient == "customer" and self._settle(
                notification,
                Outcome.REFUSED,
                channel.name,
                log,
                error=exc.message,
                code=exc.code,
                run_at=self._clock.now(),
                refusals=notification.refused_by(message.channel, exc.message),
                logged={"channel": message.channel, "error": exc.message},
            ):
                # The next send tries the rule's next channel; if none is left, composing
                # fails with no_recipient and every reason.
                return
            self._settle(
                notification, Outcome.FAILED, channel.name, log, error=exc.message, code=exc.code
            )
        except TransientDeliveryError as exc:
            self._retry_or_fail(notification, exc, log, channel=channel.name)
        except Exception as exc:
            # The provider may have accepted the message: never resend blindly.
            self._settle(
                notification,
                Outcome.UNKNOWN,
                channel.name,
                log,
                error=f"Outcome unknown after {type(exc).__name__}: {exc}",
                run_at=self._clock.now() + _RECHECK_UNKNOWN,
                logged={"error": str(exc)},
            )
        else:
            sent = self._settle(
                notification,
                Outcome.SENT,
                channel.name,
                log,
                provider_id=provider_id,
                logged={"provider_id": provider_id},
            )
            if sent and notification.created_at is not None:
                # Created in the transaction that stored the event: its received_at.
                self._metrics.observe_end_to_end(
                    (self._clock.now() - notification.created_at).total_seconds()
                )

    def _retry_or_fail(
        self,
        notification: ClaimedNotification,
        exc: TransientDeliveryError,
        log: Any,
        *,
        channel: str,
    ) -> None:
        # This attempt: a send (already counted in the store by mark_sending) or a failed
        # preparation (counted now), so that both back off and give up alike.
        attempts = notification.attempts + 1
        gave_up = None
        if self._too_old(notification):
            hours = self._max_age.total_seconds() / 3600
            gave_up = ("too_old", f"over more than {hours:g} hours")
        elif attempts >= self._max_attempts:
            gave_up = ("retries_exhausted", "")
        if gave_up is not None:
            reason, span = gave_up
            self._settle(
                notification,
                Outcome.FAILED,
                channel,
                log,
                error=" ".join(f"Gave up after {attempts} attempts {span}".split())
                + f": {exc.message}",
                code=exc.code,
                attempts=attempts,
                logged={"reason": reason, "error": exc.message},
            )
            return
        delay = (
            exc.retry_after
            if exc.retry_after is not None
            else backoff_delay(attempts, base=self._retry_base)
        )
        self._settle(
            notification,
            Outcome.RETRY,
            channel,
            log,
            run_at=self._clock.now() + timedelta(seconds=delay),
            error=exc.message,
            code=exc.code,
            attempts=attempts,
            logged={"delay_seconds": round(delay, 1), "error": exc.message},
        )

    def _settle(
        self,
        notification: ClaimedNotification,
        outcome: Outcome,
        channel: str,
        log: Any,
        *,
        error: str | None = None,
        code: str | None = None,
        reason: str | None = None,
        logged: dict[str, Any] | None = None,
        **values: Any,
    ) -> bool:
        """Record ``outcome`` (``transitions``): move the row, count it under ``channel``
        if the store recorded it (a claim lost to another worker records nothing here, and
        that worker counts its own), and write its log line. ``error`` and ``code`` are
        stored and logged; a ``reason`` (a skip's) is stored as the error and logged as the
        reason; ``logged`` replaces what is logged."""
        transition = outcome.transition
        if reason is not None:
            error = reason
        if error is not None:
            values["error"] = error
        if code is not None:
            values["error_code"] = code
        recorded = self._queue.settle(notification, outcome, **values)
        if not recorded:
            # Another worker holds it now, or it moved on: that worker records its own.
            log.warning("claim_lost", action=outcome.name.lower())
            return False
        if transition.metric is not None:
            self._metrics.notification(channel, transition.metric)
        if logged is None:
            said = {"reason": code or transition.code, "error": error}
            logged = {"reason": reason} if reason is not None else _given(said)
        getattr(log, transition.log_level)(transition.log_event, **logged)
        return recorded

    def _too_old(self, notification: ClaimedNotification) -> bool:
        """Whether it has been due for longer than the retries may take (a dunning step
        falls due days after it was queued)."""
        if notification.created_at is None:
            return False
        due = notification.created_at + timedelta(
            seconds=self._composer.delay_of(notification.rule)
        )
        return self._clock.now() - due > self._max_age

    def reconcile(self, notification: ClaimedNotification) -> None:
        """Settle a notification whose send may or may not have happened."""
        log = _log.bind(notification_id=notification.id, event_id=notification.event_id)
        channel = notification.channel
        if notification.to is None or notification.body is None:
            # It never reached `sending`, so nothing can have been sent.
            self._settle(
                notification,
                Outcome.RESEND,
                channel,
                log,
                run_at=self._clock.now(),
                error="Retrying: the previous attempt never sent.",
                logged={"outcome": "never_sent"},
            )
            return
        message = Message(
            notification_id=notification.id, to=notification.to, body=notification.body
        )
        started = notification.attempt_started_at or self._clock.now()
        try:
            result = self._router.by_name(channel).reconcile(message, started)
        except Exception as exc:
            # Whatever went wrong, we still do not know: never resend on a guess.
            result = None
            log.warning("reconcile_failed", error=f"{type(exc).__name__}: {exc}")
        if result is not None and result.outcome is ReconcileOutcome.DELIVERED:
            # Counted as sent; not timed end to end, since when the provider accepted it
            # is not known (only that it did, some time before now).
            self._settle(
                notification,
                Outcome.FOUND_SENT,
                channel,
                log,
                provider_id=result.provider_id,
                logged={"outcome": "delivered", "provider_id": result.provider_id},
            )
        elif result is not None and result.outcome is ReconcileOutcome.NOT_DELIVERED:
            self._settle(
                notification,
                Outcome.RESEND,
                channel,
                log,
                run_at=self._clock.now(),
                error="The provider has no record of the previous attempt; sending again.",
                logged={"outcome": "not_delivered"},
            )
        elif self._too_old(notification):
            # Never resent on a guess; after this long, a person has to look.
            self._settle(
                notification,
                Outcome.GAVE_UP_UNKNOWN,
                channel,
                log,
                error="Whether the provider accepted this message could not be found out; "
                "it was not sent again. Check the provider's logs.",
                logged={"reason": "outcome_unknown"},
            )
        else:
            self._settle(
                notification,
                Outcome.STILL_UNKNOWN,
                channel,
                log,
                error="Outcome still unknown; the provider will be asked again.",
                run_at=self._clock.now() + _RECHECK_UNKNOWN,
                logged={"outcome": "undetermined"},
            )


def _given(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` without those that are None."""
    return {name: value for name, value in fields.items() if value is not None}
