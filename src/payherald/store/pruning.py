"""Forgetting what is old: the queries of retention (``Store.pruning``).

What may go, and when, is ``payherald.retention``'s; here is how, batch by batch, each
batch its own short transaction so that a large prune never holds SQLite's write lock for
long.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, exists, func, or_, select, tuple_, update

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.schema import (
    delivery_reports,
    events,
    inbound_messages,
    notifications,
    questions,
)
from payherald.store.statuses import TERMINAL

__all__ = ["PrunedEvents", "Pruning", "PruningCounts"]

# A notification in one of these is finished with, and its event may go.
_FINISHED = frozenset(status.value for status in TERMINAL)


@dataclass(frozen=True, slots=True)
class PrunedEvents:
    """One batch of ``Pruning.delete_events``."""

    found: int  # events found (fewer than the batch size: the last batch)
    events: int
    notifications: int
    delivery_reports: int


@dataclass(frozen=True, slots=True)
class PruningCounts:
    """What deleting now would delete (``Pruning.count``)."""

    events: int
    kept: int
    notifications: int
    delivery_reports: int
    inbound_messages: int


class Pruning:
    """Deletes finished events received before a cutoff, blanks old inbound messages to
    their tombstones, sweeps orphaned delivery reports, and counts them."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def delete_events(self, before: datetime, batch_size: int) -> PrunedEvents:
        """Delete one batch of finished events received before ``before``, with their
        notifications, those notifications' delivery reports and the questions they asked,
        in one transaction."""
        candidates = (
            select(events.c.id)
            .where(events.c.received_at < before, ~_holds_event(before))
            .order_by(events.c.received_at)
            .limit(batch_size)
            # PostgreSQL: an event being pruned cannot get a new notification meanwhile (the
            # insert waits for this lock, then finds no event); SQLite writes one at a time.
            .with_for_update(of=events, skip_locked=True)
        )
        with self._db.transaction() as connection:
            found = list(connection.execute(candidates).scalars())
            if not found:
                return PrunedEvents(0, 0, 0, 0)
            # Locked, and read again as committed now: a replay may have put one of them
            # back in the queue since the query above looked.
            held = {
                row.event_id
                for row in connection.execute(
                    select(
                        notifications.c.event_id, notifications.c.status, notifications.c.updated_at
                    )
                    .where(notifications.c.event_id.in_(found))
                    .with_for_update()
                )
                if row.status not in _FINISHED or row.updated_at >= before
            }
            doomed = [event_id for event_id in found if event_id not in held]
            # By provider id, on the reports' primary key (notification_id has no index); a
            # report about an earlier provider id of the same notification is swept up after.
            their_messages = select(notifications.c.provider_id).where(
                notifications.c.event_id.in_(doomed), notifications.c.provider_id.is_not(None)
            )
            reports = connection.execute(
                delete(delivery_reports).where(delivery_reports.c.provider_id.in_(their_messages))
            ).rowcount
            # The questions their messages asked (long closed: a question waits 72 hours at
            # most) go with them, and with them the numbers they were asked at.
            connection.execute(delete(questions).where(questions.c.event_id.in_(doomed)))
            deleted_notifications = connection.execute(
                delete(notifications).where(notifications.c.event_id.in_(doomed))
            ).rowcount
            deleted_events = connection.execute(
                delete(events).where(events.c.id.in_(doomed))
            ).rowcount
        return PrunedEvents(len(found), deleted_events, deleted_notifications, reports)

    def forget_inbound(self, before: datetime, batch_size: int) -> int:
        """Blank the sender, raw sender and body of one batch of inbound messages received
        before ``before``, leaving the tombstone (MessageSid, time, keyword) that
        ``Consents.record_reply`` knows a replay by; returns how many were blanked."""
        with self._db.transaction() as connection:
            found = (
                connection.execute(
                    select(inbound_messages.c.provider_id)
                    .where(_not_yet_forgotten(before))
                    .limit(batch_size)
                )
                .scalars()
                .all()
            )
            if found:
                connection.execute(
                    update(inbound_messages)
                    .where(inbound_messages.c.provider_id.in_(found))
                    .values(sender="", body="", raw_sender=None)
                )
        return len(found)

    def sweep_reports(self, before: datetime, batch_size: int) -> int:
        """Delete one batch of delivery reports received before ``before`` about no kept
        notification; returns how many."""
        with self._db.transaction() as connection:
            keys = [
                tuple(key)
                for key in connection.execute(
                    select(delivery_reports.c.provider_id, delivery_reports.c.status)
                    .where(_orphan_reports(before))
                    .limit(batch_size)
                )
            ]
            if keys:
                report = tuple_(delivery_reports.c.provider_id, delivery_reports.c.status)
                connection.execute(delete(delivery_reports).where(report.in_(keys)))
        return len(keys)

    def count_older_events(self, before: datetime) -> int:
        """How many events received before ``before`` are stored."""
        with self._db.read() as connection:
            return _count_rows(connection, events.c.id, events.c.received_at < before)

    def count(self, before: datetime) -> PruningCounts:
        """What pruning everything before ``before`` would delete now, in one read."""
        old = events.c.received_at < before
        doomed = select(events.c.id).where(old, ~_holds_event(before))
        their_notifications = select(notifications.c.id).where(notifications.c.event_id.in_(doomed))
        their_messages = select(notifications.c.provider_id).where(
            notifications.c.event_id.in_(doomed), notifications.c.provider_id.is_not(None)
        )
        with self._db.read() as connection:
            return PruningCounts(
                events=_count_rows(connection, events.c.id, old, ~_holds_event(before)),
                kept=_count_rows(connection, events.c.id, old, _holds_event(before)),
                notifications=_count_rows(
                    connection, notifications.c.id, notifications.c.event_id.in_(doomed)
                ),
                delivery_reports=_count_rows(
                    connection,
                    delivery_reports.c.provider_id,
                    or_(
                        delivery_reports.c.provider_id.in_(their_messages),
                        _orphan_reports(before),
                        # Orphaned by this prune: about an earlier provider id of a
                        # notification.
                        and_(
                            delivery_reports.c.received_at < before,
                            delivery_reports.c.notification_id.in_(their_notifications),
                        ),
                    ),
                ),
                inbound_messages=_count_rows(
                    connection, inbound_messages.c.provider_id, _not_yet_forgotten(before)
                ),
            )


def _holds_event(before: datetime) -> Any:
    """A notification of the event in hand that it must be kept for."""
    return exists(
        select(notifications.c.id).where(
            notifications.c.event_id == events.c.id,
            or_(
                notifications.c.status.not_in(_FINISHED),
                notifications.c.updated_at >= before,
            ),
        )
    )


def _orphan_reports(before: datetime) -> Any:
    """Delivery reports received before the cutoff about no notification kept."""
    return and_(
        delivery_reports.c.received_at < before,
        or_(
            delivery_reports.c.notification_id.is_(None),
            ~exists(
                select(notifications.c.id).where(
                    notifications.c.id == delivery_reports.c.notification_id
                )
            ),
        ),
    )


def _not_yet_forgotten(before: datetime) -> Any:
    """Inbound messages received before the cutoff whose sender and body are still there
    (a tombstone's sender is blank: a reply's sender is always a number)."""
    return and_(inbound_messages.c.received_at < before, inbound_messages.c.sender != "")


def _count_rows(connection: Connection, column: Any, *where: Any) -> int:
    return int(connection.execute(select(func.count(column)).where(*where)).scalar_one())
