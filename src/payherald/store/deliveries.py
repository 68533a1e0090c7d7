"""Delivery reports, stored once per (message, status), and the notification's
``delivery_status`` moved forward by them (the order is ``payherald.delivery``'s)."""

from __future__ import annotations

from sqlalchemy import and_, or_, select, update

from payherald.clock import Clock
from payherald.delivery import DELIVERY_RANK, DeliveryReport
from payherald.store.database import Database
from payherald.store.schema import delivery_reports, notifications

__all__ = ["DeliveryReports"]


class DeliveryReports:
    """What Twilio said became of each message (``Store.deliveries``)."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def record(self, report: DeliveryReport) -> str:
        """Store ``report``; returns ``"duplicate"``, ``"unknown"`` (no notification of
        ours), ``"stale"`` (the notification is already further along) or ``"updated"``.
        The move is a single conditional UPDATE, so it holds however many reports arrive
        at once."""
        now = self._clock.now()
        with self._db.transaction() as connection:
            inserted = connection.execute(
                self._db.insert(delivery_reports)
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
                    delivery_status=report.status,
                    delivery_error_code=report.error_code,
                    updated_at=now,
                )
            ).rowcount
            return "updated" if moved else "stale"
