"""What can become of a claimed notification, in one table.

Each outcome of an attempt names the states it may leave, the state it enters, what the
worker counts in ``payherald_notifications_total`` (None: not counted), the log line it
writes, and the error code it records when the caller gives none. The queue moves the row
by this table (``WorkQueue.settle``) and the worker counts and logs by it, so that a new
outcome is one new line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any

from payherald.store.statuses import MAY_HAVE_BEEN_SENT
from payherald.store.statuses import NotificationStatus as S

__all__ = ["Outcome", "Transition"]

_HELD = (S.CLAIMED, S.SENDING, S.UNKNOWN)
_CALLED = (S.SENDING, S.UNKNOWN)


@dataclass(frozen=True, slots=True)
class Transition:
    leaves: tuple[S, ...]
    enters: S
    metric: str | None
    log_event: str
    log_level: str = "info"
    code: str | None = None
    # Back to the queue: the claim is given up.
    releases: bool = False
    # The row's last error code stays unless one is given (else it becomes ``code``).
    keeps_code: bool = False


class Outcome(Enum):
    # The provider took it.
    SENT = Transition(_CALLED, S.SENT, "sent", "notification_sent")
    # Reconciliation found that the provider took it.
    FOUND_SENT = Transition(_CALLED, S.SENT, "sent", "reconciled")
    # Deliberately not sent (a condition, not a first payment, a twin already told).
    SKIPPED = Transition(
        (S.CLAIMED,), S.SKIPPED, "skipped", "notification_skipped", keeps_code=True
    )
    # Not now (quiet hours): due again later; not an attempt.
    DEFERRED = Transition(
        (S.CLAIMED,),
        S.PENDING,
        "deferred",
        "notification_deferred",
        releases=True,
        keeps_code=True,
    )
    # It failed in a way that may mend: due again after a backoff.
    RETRY = Transition(_HELD, S.PENDING, "retry", "notification_retry", releases=True)
    # Reconciliation found nothing was sent: due again now.
    RESEND = Transition(_HELD, S.PENDING, "retry", "reconciled", releases=True)
    # The channel refused it for good: due again now, for the rule's next channel.
    REFUSED = Transition(
        (S.CLAIMED, S.SENDING), S.PENDING, "refused", "channel_refused", releases=True
    )
    FAILED = Transition(_HELD, S.FAILED, "failed", "notification_failed", "warning")
    # Preparing it raised what nobody foresaw (a bug, an odd payload): logged with the
    # traceback; not retried, for it would crash the same way after every lease.
    CRASHED = Transition(
        _HELD, S.FAILED, "failed", "notification_failed", "exception", code="internal_error"
    )
    # An opt-out committed while it was being composed.
    SUPPRESSED = Transition(
        (S.CLAIMED,), S.FAILED, "failed", "suppressed_before_send", code="suppressed"
    )
    # Sent for so long without an answer that a person has to look; never resent.
    GAVE_UP_UNKNOWN = Transition(
        _CALLED, S.FAILED, "failed", "notification_failed", "warning", code=MAY_HAVE_BEEN_SENT
    )
    # The provider call ended in a way that says nothing: reconciled before any resend.
    UNKNOWN = Transition(
        _CALLED, S.UNKNOWN, "unknown", "notification_outcome_unknown", "error", keeps_code=True
    )
    # Asked again, still not known: not counted again.
    STILL_UNKNOWN = Transition(_CALLED, S.UNKNOWN, None, "reconciled", keeps_code=True)

    @property
    def transition(self) -> Transition:
        value: Transition = self.value
        return value

    @property
    def leaves(self) -> tuple[str, ...]:
        """The statuses it moves a notification from, as stored."""
        return tuple(status.value for status in self.transition.leaves)

    def changes(self, values: dict[str, Any], now: datetime) -> dict[str, Any]:
        """The columns it sets, ``values`` (``error``, ``error_code``, ``run_at``,
        ``provider_id``, ``attempts``, ``notes``, ``refusals``) among them: the new status;
        the lease ends; the error code becomes the one given, else the outcome's own (none
        for most), unless the outcome keeps it; an outcome that puts the notification back
        in the queue gives up the claim too; one that records a send stamps ``sent_at`` and
        clears the last error."""
        transition = self.transition
        changes = {**values, "status": transition.enters.value, "lease_until": None}
        if not transition.keeps_code:
            changes.setdefault("error_code", transition.code)
        if transition.releases:
            changes["claimed_by"] = None
        if transition.enters is S.SENT:
            changes.update(sent_at=now, error=None, error_code=None)
        return changes
