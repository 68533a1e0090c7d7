"""The one interface every channel implements."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Protocol

__all__ = ["Channel", "Message", "ReconcileOutcome", "Reconciliation"]


@dataclass(frozen=True, slots=True)
class Message:
    """One message to one address."""

    notification_id: int
    to: str
    body: str
    channel: str = "sms"  # the channel the rule meant, shown by the console


class ReconcileOutcome(Enum):
    DELIVERED = "delivered"  # the provider has it: record it as sent, never resend
    NOT_DELIVERED = "not_delivered"  # the provider has no trace of it: safe to send again
    UNDETERMINED = "undetermined"  # cannot tell yet: ask again later


@dataclass(frozen=True, slots=True)
class Reconciliation:
    outcome: ReconcileOutcome
    provider_id: str | None = None


class Channel(Protocol):
    """A way to reach a person.

    ``send`` returns the provider's id for the message, or raises
    TransientDeliveryError (try again later) or PermanentDeliveryError (never retry).
    Any other exception means the outcome is unknown: the message may have been
    accepted, and the notification is reconciled with ``reconcile`` before any resend.
    """

    name: str

    def send(self, message: Message) -> str | None: ...

    def sender(self, message: Message) -> str:
        """Who the message is sent from, as rate limits name it (a number, an address)."""
        ...

    def reconcile(self, message: Message, attempt_started_at: datetime) -> Reconciliation: ...
