"""Delivery reports: what Twilio says became of a message after it accepted it.

Twilio posts a status callback for each step (queued, sent, delivered...), may repeat one,
and may deliver them out of order. A report is stored once per (message, status); the
notification's ``delivery_status`` only ever moves forward, in the order below, so a late
"sent" never overwrites "delivered". The move is a single conditional UPDATE, so it holds
however many reports arrive at once. Storing them is ``Store.deliveries``
(``payherald.store.deliveries``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DELIVERY_RANK", "DeliveryReport"]

# How far along a message or call is; a status never gives way to one of a lower rank.
DELIVERY_RANK = {
    "accepted": 0,
    "scheduled": 0,
    "queued": 1,
    "initiated": 1,
    "sending": 2,
    "ringing": 2,
    "sent": 3,
    "in-progress": 3,
    "delivered": 5,
    "undelivered": 5,
    "failed": 5,
    "partially_delivered": 5,
    "completed": 5,
    "busy": 5,
    "no-answer": 5,
    "canceled": 5,
    "read": 6,
}


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    provider_id: str
    status: str
    notification_id: int | None = None
    error_code: str | None = None
