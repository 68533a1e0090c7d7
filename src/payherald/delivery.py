"""Delivery reports: what Twilio says became of a message after it accepted it.

Twilio posts a status callback for each step (queued, sent, delivered...), may repeat one,
and may deliver them out of order. A report is stored once per (message, status); the
notification's ``delivery_status`` only ever moves forward, in the order below, so a late
"sent" never overwrites "delivered". The move is a single conditional UPDATE, so it holds
however many reports arrive at once.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, or_, select, update

from payherald.store import Store
from payherald.store.schema import delivery_reports, notifications

__all__ = ["DELIVERY_RANK", "DeliveryReport", "record_delivery"]

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


def record_delivery(store: Store, report: DeliveryReport) -> str:
    """Store ``report``; returns ``"duplicate"``, ``"unknown"`` (no notification of ours),
    ``"stale"`` (the notification is already further along) or ``"updated"``."""
    now = store.clock.now()
    with store.db.transaction() as connection:
        inserted = connection.execute(
            store.db.insert(delivery_reports)
            .values(
                provider_id=report.provider_id,
                status=report.status,
                notification_id=report.notification_id,
                error_code=report.error_code,
                received_at=now,
            )
            .on_conflict_do_nothing(index_elements=["provider_id", "status"])
            .returning(delivery_reports.c.provider_id)
        ).first()
        if inserted is None:
            return "duplicate"
        ours = notifications.c.provider_id == report.provider_id
        if report.notification_id is not None:
            # The callback can beat the worker's own record of the provider id.
            ours = or_(
                ours,
                and_(
                    notifications.c.id == report.notification_id,
                    or_(
                        notifications.c.provider_id.is_(None),
                        notifications.c.provider_id == report.provider_id,
                    ),
                ),
            )
        notification_id = connection.execute(
            select(notifications.c.id).where(ours).limit(1)
        ).scalar()
        if notification_id is None:
            return "unknown"
        rank = DELIVERY_RANK.get(report.status)
        if rank is None:
            return "stale"  # a status we do not know: kept as a report, not applied
        behind = [status for status, other in DELIVERY_RANK.items() if other < rank]
        moved = connection.execute(
            update(notifications)
            .where(
                and_(
                    notifications.c.id == notification_id,
                    or_(
                        notifications.c.delivery_status.is_(None),
                        notifications.c.delivery_status.in_(behind),
                    ),
                )
            )
            .values(
                delivery_status=report.status, delivery_error_code=report.error_code, updated_at=now
            )
        ).rowcount
        return "updated" if moved else "stale"
