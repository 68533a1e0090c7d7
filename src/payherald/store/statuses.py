"""Every status payherald stores, one enum per kind of row.

Each is a ``StrEnum``: stored as its value, and equal to it, so that a row read back and a
status written in code compare alike. The README's "Notification statuses" says what each
notification status means to an operator.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "MAY_HAVE_BEEN_SENT",
    "DunningStatus",
    "EventStatus",
    "JobStatus",
    "NotificationStatus",
    "QuestionStatus",
    "WriteBackStatus",
]


class EventStatus(StrEnum):
    RECEIVED = "received"  # stored, its notifications queued
    IGNORED = "ignored"  # no rule for it
    FAILED = "failed"  # planning its notifications failed (its error holds the traceback)
    UNSUPPORTED = "unsupported"  # of an API version payherald does not read


class NotificationStatus(StrEnum):
    PENDING = "pending"  # waiting to be claimed, now or at its run_at
    CLAIMED = "claimed"  # a worker holds it; nothing sent yet
    SENDING = "sending"  # committed before the provider call
    SENT = "sent"
    SKIPPED = "skipped"  # deliberately not sent
    FAILED = "failed"
    UNKNOWN = "unknown"  # the provider may have taken it: reconciled before any resend


# The error code of a notification given up as failed although it may have reached its
# recipient (its outcome could never be found out): it is never sent again.
MAY_HAVE_BEEN_SENT = "outcome_unknown"
# A notification in one of these may have reached its recipient.
TOLD = frozenset({NotificationStatus.SENDING, NotificationStatus.SENT, NotificationStatus.UNKNOWN})
# A notification in one of these is finished with.
TERMINAL = frozenset(
    {NotificationStatus.SENT, NotificationStatus.FAILED, NotificationStatus.SKIPPED}
)


class JobStatus(StrEnum):
    PENDING = "pending"  # due at its due_at
    RUNNING = "running"  # a worker holds its lease
    DONE = "done"
    FAILED = "failed"  # its handler failed on every attempt; last_error holds why


class WriteBackStatus(StrEnum):
    """Writing a consent record to the Stripe customers messaged at its number."""

    PENDING = "pending"
    DONE = "done"
    NO_CUSTOMER = "no_customer"
    SUPERSEDED = "superseded"
    FAILED = "failed"


class DunningStatus(StrEnum):
    """A dunning sequence: the messages that follow an invoice whose payment failed."""

    OPEN = "open"  # its steps are sent as they fall due
    RECOVERED = "recovered"  # the invoice was paid while it was open
    ENDED = "ended"  # voided, uncollectible, deleted, its subscription cancelled, or stopped


class QuestionStatus(StrEnum):
    """A question texted to a customer (the fraud check)."""

    OPEN = "open"  # asked; a YES or NO from its number answers it
    CONFIRMED = "confirmed"  # YES: the customer made the payment
    REJECTED = "rejected"  # NO: the customer did not
    EXPIRED = "expired"  # no answer in time
    OPTED_OUT = "opted_out"  # the number opted out while it was open
    UNDELIVERED = "undelivered"  # its text could not be delivered (failed, refused)
