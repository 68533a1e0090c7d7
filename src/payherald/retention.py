"""Retention: what payherald forgets, and when (``PAYHERALD_RETENTION_DAYS``, 90 by default).

An event received before the cutoff is deleted with everything that hangs on it: its
notifications (their bodies and addresses, refusals and notes) and the delivery reports
about them. Delivery reports received before the cutoff about no notification kept go too.
An inbound message received before the cutoff is forgotten but for its tombstone: its
sender and body are blanked, its MessageSid, time and keyword kept, for Twilio's signature
carries no time and that row is all that stops a captured reply (a START) from being
replayed and acted on again. What is never deleted:

- an event with a notification still in flight (pending, claimed, sending, unknown) or
  touched since the cutoff (a replay, a late send): it and its notifications wait;
- consents and the suppression list (who must not be messaged is kept for good), the
  subject aliases (Stripe identifiers only), the inbound messages' tombstones and ``meta``.

The dedup promise holds because the cutoff is at least 30 days back: Stripe retries a
webhook for 3 days and backfill fetches 30, so a pruned event can never arrive again.
Deleting goes in batches, each its own short transaction, so that a large prune never holds
SQLite's write lock for long. ``Pruner`` runs it on a schedule beside the worker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import structlog
from sqlalchemy import Connection, and_, delete, exists, func, or_, select, tuple_, update

from payherald.clock import Clock
from payherald.exceptions import PayheraldError
from payherald.settings import MIN_RETENTION_DAYS
from payherald.store import TERMINAL_STATUSES, Store
from payherald.store.schema import delivery_reports, events, inbound_messages, notifications

__all__ = ["PruneSummary", "Pruner", "RetentionError", "check_cutoff", "prune"]

_log = structlog.get_logger("payherald.retention")

# Events (or delivery reports) deleted, or inbound messages blanked, per transaction.
BATCH_SIZE = 500
# How often the scheduled prune runs; it starts with the worker.
PRUNE_INTERVAL = 6 * 3600.0


class RetentionError(PayheraldError):
    """Nothing was pruned; the message says why."""


@dataclass
class PruneSummary:
    before: datetime
    events: int = 0
    notifications: int = 0
    delivery_reports: int = 0
    inbound_messages: int = 0
    kept: int = 0  # events older than the cutoff kept: a notification is in flight or recent
    batches: int = 0

    def describe(self, *, dry_run: bool = False) -> str:
        would = "would be " if dry_run else ""
        kept = (
            f"; {self.kept} older event(s) kept: a notification of theirs is still in flight "
            "or changed since"
            if self.kept
            else ""
        )
        return (
            f"before {self.before:%Y-%m-%d %H:%M:%S} UTC, {self.events} event(s) "
            f"{would}deleted with {self.notifications} notification(s) and "
            f"{self.delivery_reports} delivery report(s); {self.inbound_messages} inbound "
            f"message(s) {would}forgotten (sender and text blanked, the message id kept so "
            f"that a replayed reply is not acted on again){kept}. Consents and the opt-out "
            "list are always kept."
        )


def check_cutoff(before: datetime, *, now: datetime) -> None:
    """Raise RetentionError unless ``before`` is at least ``MIN_RETENTION_DAYS`` ago."""
    if before > now - timedelta(days=MIN_RETENTION_DAYS):
        raise RetentionError(
            f"Cannot prune what is newer than {MIN_RETENTION_DAYS} days: backfill fetches "
            f"events that old, and a pruned one would be taken as new and notified again; "
            f"use --before {MIN_RETENTION_DAYS}d or earlier."
        )


def _holds_event(before: datetime) -> Any:
    """A notification of the event in hand that it must be kept for."""
    return exists(
        select(notifications.c.id).where(
            notifications.c.event_id == events.c.id,
            or_(
                notifications.c.status.not_in(TERMINAL_STATUSES),
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


def prune(
    store: Store, before: datetime, *, dry_run: bool = False, batch_size: int = BATCH_SIZE
) -> PruneSummary:
    """Delete what was received before ``before`` and is finished, and blank old inbound
    messages to their tombstones (see the module's docstring), ``batch_size`` rows at a
    time; with ``dry_run``, count it instead.
    Raises StoreUnavailable; what earlier batches deleted stays deleted."""
    summary = PruneSummary(before=before)
    if dry_run:
        _count(store, before, summary)
        return summary
    while _prune_events(store, before, batch_size, summary) == batch_size:
        pass
    while _prune_inbound(store, before, batch_size, summary) == batch_size:
        pass
    while _sweep_reports(store, before, batch_size, summary) == batch_size:
        pass
    with store.db.read() as connection:
        summary.kept = _count_rows(connection, events.c.id, events.c.received_at < before)
    _log.info(
        "pruned",
        before=before.isoformat(),
        events=summary.events,
        notifications=summary.notifications,
        delivery_reports=summary.delivery_reports,
        inbound_messages=summary.inbound_messages,
        kept=summary.kept,
        batches=summary.batches,
    )
    return summary


def _prune_events(store: Store, before: datetime, batch_size: int, summary: PruneSummary) -> int:
    """Delete one batch of finished events received before ``before``, with their
    notifications and those notifications' delivery reports, in one transaction; returns
    how many events were found (fewer than ``batch_size``: the last batch)."""
    candidates = (
        select(events.c.id)
        .where(events.c.received_at < before, ~_holds_event(before))
        .order_by(events.c.received_at)
        .limit(batch_size)
        # PostgreSQL: an event being pruned cannot get a new notification meanwhile (the
        # insert waits for this lock, then finds no event); SQLite writes one at a time.
        .with_for_update(of=events, skip_locked=True)
    )
    with store.db.transaction() as connection:
        found = list(connection.execute(candidates).scalars())
        if not found:
            return 0
        # Locked, and read again as committed now: a replay may have put one of them back
        # in the queue since the query above looked.
        held = {
            row.event_id
            for row in connection.execute(
                select(notifications.c.event_id, notifications.c.status, notifications.c.updated_at)
                .where(notifications.c.event_id.in_(found))
                .with_for_update()
            )
            if row.status not in TERMINAL_STATUSES or row.updated_at >= before
        }
        doomed = [event_id for event_id in found if event_id not in held]
        # By provider id, on the reports' primary key (notification_id has no index); a
        # report about an earlier provider id of the same notification is swept up after.
        their_messages = select(notifications.c.provider_id).where(
            notifications.c.event_id.in_(doomed), notifications.c.provider_id.is_not(None)
        )
        summary.delivery_reports += connection.execute(
            delete(delivery_reports).where(delivery_reports.c.provider_id.in_(their_messages))
        ).rowcount
        summary.notifications += connection.execute(
            delete(notifications).where(notifications.c.event_id.in_(doomed))
        ).rowcount
        summary.events += connection.execute(delete(events).where(events.c.id.in_(doomed))).rowcount
    summary.batches += 1
    return len(found)


def _not_yet_forgotten(before: datetime) -> Any:
    """Inbound messages received before the cutoff whose sender and body are still there
    (a tombstone's sender is blank: a reply's sender is always a number)."""
    return and_(inbound_messages.c.received_at < before, inbound_messages.c.sender != "")


def _prune_inbound(store: Store, before: datetime, batch_size: int, summary: PruneSummary) -> int:
    """Blank the sender, raw sender and body of one batch of inbound messages received
    before ``before``, leaving the tombstone (MessageSid, time, keyword) that
    ``consent.record_reply`` knows a replay by; returns how many were blanked."""
    with store.db.transaction() as connection:
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
    summary.inbound_messages += len(found)
    summary.batches += bool(found)
    return len(found)


def _sweep_reports(store: Store, before: datetime, batch_size: int, summary: PruneSummary) -> int:
    """Delete one batch of delivery reports received before ``before`` about no kept
    notification; returns how many."""
    with store.db.transaction() as connection:
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
    summary.delivery_reports += len(keys)
    summary.batches += bool(keys)
    return len(keys)


def _count_rows(connection: Connection, column: Any, *where: Any) -> int:
    return int(connection.execute(select(func.count(column)).where(*where)).scalar_one())


def _count(store: Store, before: datetime, summary: PruneSummary) -> None:
    """Fill ``summary`` with what ``prune`` would delete now."""
    old = events.c.received_at < before
    doomed = select(events.c.id).where(old, ~_holds_event(before))
    their_notifications = select(notifications.c.id).where(notifications.c.event_id.in_(doomed))
    their_messages = select(notifications.c.provider_id).where(
        notifications.c.event_id.in_(doomed), notifications.c.provider_id.is_not(None)
    )
    with store.db.read() as connection:
        summary.events = _count_rows(connection, events.c.id, old, ~_holds_event(before))
        summary.kept = _count_rows(connection, events.c.id, old, _holds_event(before))
        summary.notifications = _count_rows(
            connection, notifications.c.id, notifications.c.event_id.in_(doomed)
        )
        summary.delivery_reports = _count_rows(
            connection,
            delivery_reports.c.provider_id,
            or_(
                delivery_reports.c.provider_id.in_(their_messages),
                _orphan_reports(before),
                # Orphaned by this prune: about an earlier provider id of a notification.
                and_(
                    delivery_reports.c.received_at < before,
                    delivery_reports.c.notification_id.in_(their_notifications),
                ),
            ),
        )
        summary.inbound_messages = _count_rows(
            connection, inbound_messages.c.provider_id, _not_yet_forgotten(before)
        )


class Pruner:
    """Prune what is older than ``retention_days`` now and then every ``interval``
    seconds, in the process that runs the worker."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        retention_days: int,
        interval: float = PRUNE_INTERVAL,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if retention_days < MIN_RETENTION_DAYS:
            raise ValueError(f"retention_days must be at least {MIN_RETENTION_DAYS}")
        self._store = store
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._interval = interval
        self._batch_size = batch_size

    def run_once(self) -> PruneSummary:
        return prune(self._store, self._clock.now() - self._retention, batch_size=self._batch_size)

    def run(self, stop: threading.Event) -> None:
        """Prune now and then every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.run_once()
            except PayheraldError as exc:
                _log.error("prune_failed", error=exc.message)
            except Exception:
                _log.exception("prune_failed")
            stop.wait(self._interval)
