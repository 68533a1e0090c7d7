"""The worker: claims queued notifications, composes them, sends them, records the outcome.

Exactly-once is kept by the store's state machine (see ``store``): the row is marked
``sending`` and committed *before* the provider is called, so a crash during the call
leaves it ``unknown``, and an unknown notification is reconciled against the provider
before it can ever be sent again.

The worker waits on a wake-up (set by the server in the same process, or by PostgreSQL
``NOTIFY`` from another) and otherwise polls every ``poll_interval`` seconds. Each outcome
it records is counted in ``payherald_notifications_total``, and each send the provider
accepts is timed from the event's arrival in ``payherald_end_to_end_seconds``.
"""

from __future__ import annotations

import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import structlog

from payherald.backoff import backoff_delay
from payherald.channels.base import Channel, Message, ReconcileOutcome
from payherald.channels.router import ChannelRouter
from payherald.clock import Clock
from payherald.compose import Composer, NotificationDeferred, NotificationSkipped
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
from payherald.stripe_sync import ConsentWriteBack

__all__ = ["Worker"]

_log = structlog.get_logger("payherald.worker")

# How often expired leases are looked for, in seconds.
_REAP_EVERY = 5.0
# How long to wait before asking the provider again about an undetermined outcome.
_RECHECK_UNKNOWN = timedelta(minutes=2)


class Worker:
    def __init__(
        self,
        *,
        store: Store,
        composer: Composer,
        router: ChannelRouter,
        clock: Clock,
        concurrency: int = 8,
        poll_interval: float = 1.0,
        lease: float = 120.0,
        max_attempts: int = 12,
        retry_base: float = 5.0,
        max_age: float = 86400.0,
        limiter: RateLimiter,
        metrics: Metrics,
        write_back: ConsentWriteBack | None = None,
        worker_id: str | None = None,
    ) -> None:
        self._store = store
        self._queue = store.queue
        self._composer = composer
        self._router = router
        self._clock = clock
        self._concurrency = concurrency
        self._poll_interval = poll_interval
        self._lease = lease
        self._max_attempts = max_attempts
        self._retry_base = retry_base
        self._max_age = timedelta(seconds=max_age)
        self._limiter = limiter
        # Opt-outs to write to Stripe customers; None without STRIPE_SECRET_KEY.
        self._write_back = write_back
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._metrics = metrics
        self._wake = threading.Event()
        self._slots = threading.BoundedSemaphore(concurrency)

    def wake(self) -> None:
        """Tell the worker there is new work (thread-safe, cheap)."""
        self._wake.set()

    # -- loops ------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; then finish what is in flight and return."""
        self._composer.warm_up()
        _log.info("worker_started", worker_id=self.worker_id, concurrency=self._concurrency)
        last_reap = 0.0
        with ThreadPoolExecutor(self._concurrency, thread_name_prefix="payherald-send") as pool:
            while not stop.is_set():
                free, claimed = 0, []
                try:
                    now = self._clock.now().timestamp()
                    if now - last_reap >= _REAP_EVERY:
                        last_reap = now
                        self._reap_and_reconcile()
                    self._wake.clear()
                    free = self._free_slots()
                    claimed = self._queue.claim(
                        worker_id=self.worker_id, limit=free, lease=self._lease
                    )
                    for notification in claimed:
                        self._slots.acquire()
                        pool.submit(self._process_in_slot, notification)
                except StoreUnavailable as exc:
                    _log.error("store_unavailable", error=exc.message)
                except Exception:
                    # The loop must outlive any one failure, or the queue silently stops.
                    _log.exception("worker_loop_error")
                if not claimed or len(claimed) == free:
                    self._wake.wait(self._poll_interval)
        _log.info("worker_stopped", worker_id=self.worker_id)

    def _free_slots(self) -> int:
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        for _ in range(free):
            self._slots.release()
        return free

    def _process_in_slot(self, notification: ClaimedNotification) -> None:
        try:
            self.process(notification)
        except Exception:
            _log.exception("notification_crashed", notification_id=notification.id)
        finally:
            self._slots.release()
            self._wake.set()

    def run_until_idle(self) -> int:
        """Process everything due now, one at a time; return how many were handled.
        For tests and one-shot commands."""
        handled = 0
        self._reap_and_reconcile()
        while claimed := self._queue.claim(worker_id=self.worker_id, limit=10, lease=self._lease):
            for notification in claimed:
                self.process(notification)
                handled += 1
        return handled

    # -- one notification -------------------------------------------------------------

    def process(self, notification: ClaimedNotification) -> None:
        log = _log.bind(
            notification_id=notification.id, event_id=notification.event_id, rule=notification.rule
        )
        try:
            composed = self._composer.compose(notification)
        except (NotificationSkipped, NotificationDeferred) as exc:
            self._not_now(notification, exc, log, channel=notification.channel)
            return
        except StoreUnavailable as exc:
            # Reading or linking the payment's identifiers failed: nothing was sent.
            retry = TransientDeliveryError(exc.message, code="store_unavailable")
            self._retry_or_fail(notification, retry, log, channel=notification.channel)
            return
        except RecipientNotFound as exc:
            # When the chain ran out because channels refused, the last refusal's code
            # (twilio_21614, smtp_550...) says more than "no recipient".
            code = (
                notification.error_code
                if notification.refusals and notification.error_code
                else "no_recipient"
            )
            # Counted under the channel that refused it last; under "none" when no channel
            # could even be tried.
            counted = notification.refusals[-1][0] if notification.refusals else "none"
            self._count(
                counted,
                "failed",
                self._queue.mark_failed(notification, error=exc.message, code=code),
            )
            log.warning("notification_failed", reason=code, error=exc.message)
            return
        except RenderError as exc:
            self._count(
                notification.channel,
                "failed",
                self._queue.mark_failed(notification, error=exc.message, code="render_error"),
            )
            log.warning("notification_failed", reason="render_error", error=exc.message)
            return
        except TransientDeliveryError as exc:
            self._retry_or_fail(notification, exc, log, channel=notification.channel)
            return
        except Exception as exc:
            # A bug or a payload nobody foresaw. Nothing was sent, so record it and move on:
            # leaving the row claimed would retry the same crash after every lease.
            log.exception("notification_failed", reason="internal_error")
            recorded = self._queue.mark_failed(
                notification,
                code="internal_error",
                error=f"Could not prepare the message: {type(exc).__name__}: {exc}",
            )
            self._count(notification.channel, "failed", recorded)
            return
        if composed.notes:
            log.info("channel_fallback", notes=composed.notes)
        channel = self._router.route(
            composed.channel, livemode=notification.livemode, to=composed.to
        )
        customer = notification.recipient == "customer"
        if not self._queue.mark_sending(
            notification,
            to=composed.to,
            body=composed.body,
            channel=channel.name,
            lease=self._lease,
            notes=composed.notes,
            unless_suppressed=composed.addresses if customer else (),
        ):
            opted_out = (
                self._store.consents.first_suppressed(composed.addresses) if customer else None
            )
            if opted_out is not None:
                # An opt-out is the person's: no other channel of the rule may carry it.
                reason = must_not_be_messaged(*opted_out) + "; no channel of the rule may carry it"
                recorded = self._queue.mark_failed(
                    notification, error=reason, code="suppressed", notes=composed.notes
                )
                self._count(channel.name, "failed", recorded)
                log.info("suppressed_before_send", error=reason)
                return
            sibling = self._store.told_sibling(notification)
            if sibling is not None:
                # Its twin, about the same payment, was sent while this one was composed.
                self._not_now(
                    notification, twin_told(sibling, self._clock.now()), log, channel=channel.name
                )
                return
            log.warning("claim_lost", action="skip")
            return
        message = Message(
            notification_id=notification.id,
            to=composed.to,
            body=composed.body,
            channel=composed.channel,
        )
        self._send(notification, channel, message, log)

    def _not_now(
        self,
        notification: ClaimedNotification,
        outcome: NotificationSkipped | NotificationDeferred,
        log: Any,
        *,
        channel: str,
    ) -> None:
        """Record that ``notification`` is not sent: skipped for good, or deferred."""
        if isinstance(outcome, NotificationSkipped):
            recorded = self._queue.mark_skipped(notification, reason=outcome.reason)
            self._count(channel, "skipped", recorded)
            log.info("notification_skipped", reason=outcome.reason)
            return
        recorded = self._queue.defer(notification, run_at=outcome.until, reason=outcome.reason)
        self._count(channel, "deferred", recorded)
        log.info("notification_deferred", reason=outcome.reason, until=outcome.until.isoformat())

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
                    write_back=self._write_back is not None,
                )
                log.info("suppressed", reason="twilio_21610")
            if notification.recipient == "customer" and self._queue.fall_back(
                notification, channel=message.channel, error=exc.message, code=exc.code
            ):
                # The next send tries the rule's next channel; if none is left, composing
                # fails with no_recipient and every reason.
                self._count(channel.name, "refused", True)
                log.info("channel_refused", channel=message.channel, error=exc.message)
                return
            self._count(
                channel.name,
                "failed",
                self._queue.mark_failed(notification, error=exc.message, code=exc.code),
            )
            log.warning("notification_failed", reason=exc.code, error=exc.message)
        except TransientDeliveryError as exc:
            self._retry_or_fail(notification, exc, log, channel=channel.name)
        except Exception as exc:
            # The provider may have accepted the message: never resend blindly.
            recorded = self._queue.mark_unknown(
                notification,
                error=f"Outcome unknown after {type(exc).__name__}: {exc}",
                recheck_at=self._clock.now() + _RECHECK_UNKNOWN,
            )
            self._count(channel.name, "unknown", recorded)
            log.error("notification_outcome_unknown", error=str(exc))
        else:
            if self._queue.mark_sent(notification, provider_id=provider_id):
                self._count(channel.name, "sent", True)
                if notification.created_at is not None:
                    # Created in the transaction that stored the event: its received_at.
                    self._metrics.observe_end_to_end(
                        (self._clock.now() - notification.created_at).total_seconds()
                    )
            log.info("notification_sent", provider_id=provider_id)

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
        if self._too_old(notification):
            recorded = self._queue.mark_failed(
                notification,
                error=f"Gave up after {attempts} attempts over more than "
                f"{self._max_age.total_seconds() / 3600:g} hours: {exc.message}",
                code=exc.code,
                attempts=attempts,
            )
            self._count(channel, "failed", recorded)
            log.warning("notification_failed", reason="too_old", error=exc.message)
            return
        if attempts >= self._max_attempts:
            recorded = self._queue.mark_failed(
                notification,
                error=f"Gave up after {attempts} attempts: {exc.message}",
                code=exc.code,
                attempts=attempts,
            )
            self._count(channel, "failed", recorded)
            log.warning("notification_failed", reason="retries_exhausted", error=exc.message)
            return
        delay = (
            exc.retry_after
            if exc.retry_after is not None
            else backoff_delay(attempts, base=self._retry_base)
        )
        run_at = self._clock.now() + timedelta(seconds=delay)
        recorded = self._queue.schedule_retry(
            notification, run_at=run_at, error=exc.message, code=exc.code, attempts=attempts
        )
        self._count(channel, "retry", recorded)
        log.info("notification_retry", delay_seconds=round(delay, 1), error=exc.message)

    def _count(self, channel: str, status: str, recorded: bool) -> None:
        """Count an outcome, if the store recorded it: a claim lost to another worker
        records nothing here, and that worker counts its own outcome."""
        if recorded:
            self._metrics.notification(channel, status)

    def _too_old(self, notification: ClaimedNotification) -> bool:
        created = notification.created_at
        return created is not None and self._clock.now() - created > self._max_age

    # -- crash recovery -----------------------------------------------------------------

    def _reap_and_reconcile(self) -> None:
        try:
            released, orphaned = self._queue.expire_leases()
            if released or orphaned:
                _log.warning("leases_expired", released=released, orphaned=orphaned)
            for notification in self._queue.claim_unknown(
                worker_id=self.worker_id, limit=20, lease=self._lease
            ):
                self.reconcile(notification)
            if self._write_back is not None:
                self._write_back.run_due()
        except StoreUnavailable as exc:
            _log.error("store_unavailable", error=exc.message)

    def reconcile(self, notification: ClaimedNotification) -> None:
        """Settle a notification whose send may or may not have happened."""
        log = _log.bind(notification_id=notification.id, event_id=notification.event_id)
        if notification.to is None or notification.body is None:
            # It never reached `sending`, so nothing can have been sent.
            recorded = self._queue.schedule_retry(
                notification,
                run_at=self._clock.now(),
                error="Retrying: the previous attempt never sent.",
            )
            self._count(notification.channel, "retry", recorded)
            return
        channel = self._router.by_name(notification.channel)
        message = Message(
            notification_id=notification.id, to=notification.to, body=notification.body
        )
        started = notification.attempt_started_at or self._clock.now()
        try:
            result = channel.reconcile(message, started)
        except Exception as exc:
            # Whatever went wrong, we still do not know: never resend on a guess.
            result = None
            log.warning("reconcile_failed", error=f"{type(exc).__name__}: {exc}")
        if result is not None and result.outcome is ReconcileOutcome.DELIVERED:
            # Counted as sent; not timed end to end, since when the provider accepted it
            # is not known (only that it did, some time before now).
            recorded = self._queue.mark_sent(notification, provider_id=result.provider_id)
            self._count(notification.channel, "sent", recorded)
            log.info("reconciled", outcome="delivered", provider_id=result.provider_id)
        elif result is not None and result.outcome is ReconcileOutcome.NOT_DELIVERED:
            recorded = self._queue.schedule_retry(
                notification,
                run_at=self._clock.now(),
                error="The provider has no record of the previous attempt; sending again.",
            )
            self._count(notification.channel, "retry", recorded)
            log.info("reconciled", outcome="not_delivered")
        elif self._too_old(notification):
            # Never resent on a guess; after this long, a person has to look.
            recorded = self._queue.mark_failed(
                notification,
                code="outcome_unknown",
                error="Whether the provider accepted this message could not be found out; "
                "it was not sent again. Check the provider's logs.",
            )
            self._count(notification.channel, "failed", recorded)
            log.warning("notification_failed", reason="outcome_unknown")
        else:
            # Still unknown: not counted again (it was counted when it became unknown).
            self._queue.mark_unknown(
                notification,
                error="Outcome still unknown; the provider will be asked again.",
                recheck_at=self._clock.now() + _RECHECK_UNKNOWN,
            )
            log.info("reconciled", outcome="undetermined")
