"""The event log: events as Stripe sent them, the notifications each causes, and the
identifiers that name one payment.

Recording an event and queueing the notifications it causes is one transaction (a
transactional outbox): when ``record_event`` returns, both are durable, and only then is
Stripe answered 2xx. ``record_events`` does the same for many events in one transaction
(group commit: one commit, so one fsync, for a whole batch of webhooks), and wakes the
workers on commit. What happens to a notification once queued, claim by claim, is
``Store.queue`` (``payherald.store.queue``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Engine,
    and_,
    bindparam,
    case,
    exists,
    func,
    select,
    update,
)

from payherald.clock import Clock
from payherald.dunning import DunningEnd, DunningStart
from payherald.exceptions import StoreUnavailable
from payherald.rules import PlannedNotification
from payherald.store.attribution import Attribution
from payherald.store.consents import Consents
from payherald.store.database import Database
from payherald.store.deliveries import DeliveryReports
from payherald.store.digest import Digests
from payherald.store.dunning import Dunning
from payherald.store.history import History
from payherald.store.jobs import Jobs
from payherald.store.links import ALIAS_RACE_RETRIES, AliasRace, Links
from payherald.store.meta import Meta
from payherald.store.outbox import Outbox
from payherald.store.pruning import Pruning
from payherald.store.questions import Questions
from payherald.store.queue import WorkQueue
from payherald.store.records import (
    ClaimedNotification,
    PlannedEvent,
    QueueStats,
    RecordResult,
    event_row,
)
from payherald.store.schema import events, notifications
from payherald.store.statuses import MAY_HAVE_BEEN_SENT, TERMINAL
from payherald.store.told import siblings_told
from payherald.webhook import StripeEvent

__all__ = [
    "ClaimedNotification",
    "PlannedEvent",
    "QueueStats",
    "RecordResult",
    "Store",
]

TERMINAL_STATUSES = frozenset(status.value for status in TERMINAL)
# What `list_events` and `get_event` give of an event (not its payload).
_LISTED_EVENT_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.livemode,
    events.c.status,
    events.c.error,
    events.c.received_at,
    events.c.stripe_created_at,
)


class Store:
    """All reads and writes of payherald's state."""

    def __init__(self, *, engine: Engine, clock: Clock) -> None:
        self.db = Database(engine=engine)
        self._clock = clock
        self.links = Links(db=self.db, clock=clock)
        self.meta = Meta(db=self.db)
        self.deliveries = DeliveryReports(db=self.db, clock=clock)
        self.pruning = Pruning(db=self.db, clock=clock)
        self.jobs = Jobs(db=self.db, clock=clock)
        self.questions = Questions(db=self.db, clock=clock, jobs=self.jobs)
        self.queue = WorkQueue(db=self.db, clock=clock, jobs=self.jobs, questions=self.questions)
        self._outbox = Outbox(db=self.db, jobs=self.jobs, links=self.links)
        self.consents = Consents(db=self.db, clock=clock, jobs=self.jobs, questions=self.questions)
        self.dunning = Dunning(db=self.db, clock=clock)
        self.digest = Digests(db=self.db, dunning=self.dunning)
        self.attribution = Attribution(db=self.db, dunning=self.dunning)
        self.history = History(db=self.db, clock=clock)
        # Asked for every message refused as a twin's: built once (building costs more
        # than running it).
        found = (
            siblings_told(notifications)
            .where(notifications.c.id == bindparam("held_id"))
            .subquery()
        )
        # A twin that was told outweighs one still being sent.
        self._told_sibling = (
            select(found).order_by(case((found.c.status == "sending", 1), else_=0)).limit(1)
        )

    @property
    def clock(self) -> Clock:
        return self._clock

    # -- ingest -----------------------------------------------------------------------

    def record_event(
        self,
        event: StripeEvent,
        planned: Sequence[PlannedNotification],
        *,
        status: str = "received",
        error: str | None = None,
        links: Sequence[str] = (),
    ) -> RecordResult:
        """Store ``event`` and queue ``planned`` in one transaction; ``links`` are the
        identifiers of one payment that the event names, linked as one subject.

        A repeated event id stores nothing and queues nothing (``duplicate=True``). A
        planned notification about something already notified (the same payment reported
        by another event) is not queued again. Raises StoreUnavailable when nothing could
        be written.
        """
        return self.record(PlannedEvent(event, tuple(planned), status, error, tuple(links)))

    def record(self, item: PlannedEvent) -> RecordResult:
        """``record_event`` of a planned event (``payherald.ingest.plan_event``), with the
        dunning sequences it starts and ends, the paylink it texts and the payment it
        credits to a message (``Store.attribution``)."""
        for attempt in range(ALIAS_RACE_RETRIES):
            try:
                (result,) = self._record([item])
                return result
            except AliasRace:
                if attempt == ALIAS_RACE_RETRIES - 1:
                    raise StoreUnavailable(
                        "The event store is too busy linking this event to others; "
                        "Stripe will retry it."
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def record_events(self, items: Sequence[PlannedEvent]) -> list[RecordResult]:
        """Store every item of ``items`` and queue its notifications, all in one
        transaction; one result per item, in order.

        Each item is recorded as ``record_event`` would, seeing the items before it: an
        event id that appears twice is a duplicate the second time, and two events about
        one payment queue its confirmation once. Nothing is retried here. Raises
        StoreUnavailable when the transaction failed (the database, or a concurrent
        transaction that linked one of the payments first): then nothing of ``items`` was
        written, and recording them one by one with ``record_event`` tells which of them,
        if any, cannot be stored.
        """
        try:
            return self._record(items)
        except AliasRace:
            raise StoreUnavailable(
                "The event store could not link an event of this batch to others: a "
                "concurrent transaction linked it first."
            ) from None

    def _record(self, items: Sequence[PlannedEvent]) -> list[RecordResult]:
        """Record ``items`` in one transaction, in a fixed number of statements whatever
        their count (the events, the payments' links, the notifications); raises
        AliasRace or StoreUnavailable, and then nothing was written."""
        now = self._clock.now()
        with self.db.transaction() as connection:
            first: dict[str, int] = {}  # event id -> index of its first item
            for index, item in enumerate(items):
                first.setdefault(item.event.id, index)
            rows = [event_row(items[index], now) for index in first.values()]
            # One statement for many rows (SQLAlchemy's "insertmanyvalues"); RETURNING
            # names the rows stored now, so the others are repeats.
            inserted = set(
                connection.execute(
                    self.db.insert(events)
                    .on_conflict_do_nothing(index_elements=["id"])
                    .returning(events.c.id),
                    rows,
                ).scalars()
            )
            new = [index for event_id, index in first.items() if event_id in inserted]
            self.links.link(
                connection, [("payment", items[i].links) for i in new if items[i].links]
            )
            closed = self.dunning.record_in(
                connection, [(items[i].dunning_start, items[i].dunning_ends) for i in new], now
            )
            queued = self._outbox.add_in(
                connection,
                [(items[i].event.id, items[i].planned) for i in new],
                now,
                closed_sequences=closed,
            )
            self.attribution.record_in(
                connection,
                [(items[i].event.id, items[i].paylink, items[i].payment) for i in new],
                now,
            )
            if any(queued):
                self.db.wake_workers(connection)
            if new:
                self.db.announce_events(connection)
        by_index = dict(zip(new, queued, strict=True))
        return [
            RecordResult(
                duplicate=index not in by_index,
                queued=by_index.get(index, 0),
                failed=index in by_index and item.status == "failed",
                unsupported=index in by_index and item.status == "unsupported",
            )
            for index, item in enumerate(items)
        ]

    def told_sibling(self, held: ClaimedNotification) -> dict[str, Any] | None:
        """Another notification of ``held``'s rule, to the same recipient, about what
        ``held`` is about (as linked now) that is being or was sent (one that was sent,
        first): its ``id``, ``event_id`` and ``status``; None if there is none. Linking can
        join two notifications queued apart: only one is told."""
        if held.subject is None:
            return None
        with self.db.read() as connection:
            row = connection.execute(self._told_sibling, {"held_id": held.id}).first()
        return dict(row._mapping) if row is not None else None

    # -- reading ----------------------------------------------------------------------

    def list_events(self, *, type: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        query = (
            select(*_LISTED_EVENT_COLUMNS)
            .order_by(events.c.received_at.desc(), events.c.id)
            .limit(limit)
        )
        if type:
            query = query.where(events.c.type == type)
        with self.db.read() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def event_payloads(self, *, type: str, since: datetime, until: datetime) -> list[str]:
        """The payloads of the stored events of ``type`` that Stripe created between
        ``since`` and ``until`` (not those of an API version payherald does not read)."""
        query = select(events.c.payload).where(
            and_(
                events.c.type == type,
                events.c.status != "unsupported",
                events.c.stripe_created_at >= since,
                events.c.stripe_created_at <= until,
            )
        )
        with self.db.read() as connection:
            return list(connection.execute(query).scalars())

    def get_event(self, event_id: str) -> dict[str, Any] | None:
        """The event ``event_id`` as ``list_events`` gives it, or None if it is not stored."""
        query = select(*_LISTED_EVENT_COLUMNS).where(events.c.id == event_id)
        with self.db.read() as connection:
            row = connection.execute(query).mappings().first()
        return dict(row) if row is not None else None

    def list_notifications(
        self, *, status: str | None = None, event_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query = select(notifications).order_by(notifications.c.id.desc()).limit(limit)
        if status:
            query = query.where(notifications.c.status == status)
        if event_id:
            query = query.where(notifications.c.event_id == event_id)
        with self.db.read() as connection:
            return [dict(row) for row in connection.execute(query).mappings()]

    def count_notifications(self, *, status: str | None = None) -> int:
        query = select(func.count()).select_from(notifications)
        if status:
            query = query.where(notifications.c.status == status)
        with self.db.read() as connection:
            return int(connection.execute(query).scalar_one())

    def queue_stats(self) -> QueueStats:
        """The work queue's depth and the wait of its oldest due notification, in one
        query on the (status, run_at) index, so that a metrics scrape stays cheap."""
        now = self._clock.now()
        due = notifications.c.run_at <= now
        query = (
            select(
                notifications.c.status,
                func.count(),
                func.sum(case((due, 1), else_=0)),
                func.min(case((due, notifications.c.run_at))),
            )
            .where(notifications.c.status.in_(("pending", "claimed", "sending", "unknown")))
            .group_by(notifications.c.status)
        )
        with self.db.read() as connection:
            rows = connection.execute(query).all()
        depth = dict.fromkeys(
            ("pending_due", "pending_scheduled", "claimed", "sending", "unknown"), 0
        )
        oldest_due_age = 0.0
        for status, count, due_count, oldest_due in rows:
            if status != "pending":
                depth[status] = int(count)
                continue
            depth["pending_due"] = int(due_count or 0)
            depth["pending_scheduled"] = int(count) - depth["pending_due"]
            if oldest_due is not None:
                oldest_due_age = max(0.0, (now - oldest_due).total_seconds())
        return QueueStats(depth=depth, oldest_due_age=oldest_due_age)

    # -- replay -------------------------------------------------------------------------

    def has_event(self, event_id: str) -> bool:
        with self.db.read() as connection:
            found = connection.execute(select(events.c.id).where(events.c.id == event_id))
            return found.first() is not None

    def event_payload(self, event_id: str) -> str | None:
        with self.db.read() as connection:
            payload = connection.execute(
                select(events.c.payload).where(events.c.id == event_id)
            ).scalar()
        return str(payload) if payload is not None else None

    def replayable_events(self, *, since: datetime | None = None) -> list[str]:
        """Events whose processing failed: planning failed, or a notification failed in a
        way that sending again may mend (never ``outcome_unknown``: it may have been
        sent)."""
        retryable = and_(
            notifications.c.event_id == events.c.id,
            notifications.c.status == "failed",
            notifications.c.error_code.is_distinct_from(MAY_HAVE_BEEN_SENT),
        )
        query = select(events.c.id).where(
            (events.c.status == "failed") | exists(select(notifications.c.id).where(retryable))
        )
        if since is not None:
            query = query.where(events.c.received_at >= since)
        with self.db.read() as connection:
            return list(connection.execute(query.order_by(events.c.received_at)).scalars())

    def retry_notification(self, notification_id: int) -> bool:
        """Queue the failed notification ``notification_id`` again, from the first channel
        of its rule; False, changing nothing, if it is not failed or may have been sent
        (``outcome_unknown``)."""
        now = self._clock.now()
        with self.db.transaction() as connection:
            again = self._outbox.requeue_failed_in(
                connection, None, now, notification_id=notification_id, by="retry"
            )
            if again:
                self.db.wake_workers(connection)
        return bool(again)

    def replay_event(
        self,
        event_id: str,
        planned: Sequence[PlannedNotification],
        *,
        links: Sequence[str] = (),
        dunning: tuple[DunningStart | None, Sequence[DunningEnd]] = (None, ()),
    ) -> tuple[int, int, int]:
        """Process a stored event again: link ``links`` (as when it was recorded), queue
        what ``planned`` adds (what is already queued or sent is not), and queue its
        failed notifications again from the first channel. Returns (new, queued again,
        left as they are)."""
        try:
            return self._replay_event(event_id, planned, links, dunning)
        except AliasRace:
            raise StoreUnavailable(
                "The event store was linking this event's payment in another transaction; "
                "replay it again."
            ) from None

    def _replay_event(
        self,
        event_id: str,
        planned: Sequence[PlannedNotification],
        links: Sequence[str],
        dunning: tuple[DunningStart | None, Sequence[DunningEnd]],
    ) -> tuple[int, int, int]:
        now = self._clock.now()
        with self.db.transaction() as connection:
            if links:
                self.links.link(connection, [("payment", tuple(links))])
            closed = self.dunning.record_in(connection, [dunning], now)
            (new,) = self._outbox.add_in(
                connection, [(event_id, planned)], now, closed_sequences=closed
            )
            again = self._outbox.requeue_failed_in(connection, event_id, now)
            total = connection.execute(
                select(func.count()).where(notifications.c.event_id == event_id)
            ).scalar_one()
            connection.execute(
                update(events)
                .where(events.c.id == event_id)
                .values(status="received" if total else "ignored", error=None)
            )
            if new or again:
                self.db.wake_workers(connection)
        return new, again, int(total) - new - again
