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

import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    case,
    exists,
    func,
    select,
    text,
    update,
)

from payherald.clock import Clock
from payherald.exceptions import StoreUnavailable
from payherald.rules import LINKED_SUBJECTS, PlannedNotification
from payherald.store.consents import Consents
from payherald.store.database import Database
from payherald.store.deliveries import DeliveryReports
from payherald.store.jobs import Jobs
from payherald.store.pruning import Pruning
from payherald.store.queue import WorkQueue, lock_canonicals, siblings_told
from payherald.store.records import (
    ClaimedNotification,
    PlannedEvent,
    QueueStats,
    RecordResult,
    event_row,
)
from payherald.store.schema import events, meta, notifications, subject_aliases
from payherald.store.statuses import TERMINAL
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
# A subject's identifier and every alias linked to it, in one read.
_SUBJECT_GROUP = text(
    "SELECT linked.alias, linked.canonical FROM subject_aliases AS held "
    "JOIN subject_aliases AS linked ON linked.canonical = held.canonical "
    "WHERE held.alias = :subject"
)
# How often recording an event is tried again when a concurrent one linked the same payment.
_ALIAS_RACE_RETRIES = 5


class _AliasRace(Exception):
    """Another transaction linked one of this event's aliases first; record it again."""


class Store:
    """All reads and writes of payherald's state."""

    def __init__(self, *, engine: Engine, clock: Clock) -> None:
        self.db = Database(engine=engine)
        self._clock = clock
        self.queue = WorkQueue(db=self.db, clock=clock)
        self.deliveries = DeliveryReports(db=self.db, clock=clock)
        self.pruning = Pruning(db=self.db, clock=clock)
        self.jobs = Jobs(db=self.db, clock=clock)
        self.consents = Consents(db=self.db, clock=clock, jobs=self.jobs)
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
        for attempt in range(_ALIAS_RACE_RETRIES):
            try:
                (result,) = self._record(
                    [PlannedEvent(event, tuple(planned), status, error, tuple(links))]
                )
                return result
            except _AliasRace:
                if attempt == _ALIAS_RACE_RETRIES - 1:
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
        except _AliasRace:
            raise StoreUnavailable(
                "The event store could not link an event of this batch to others: a "
                "concurrent transaction linked it first."
            ) from None

    def _record(self, items: Sequence[PlannedEvent]) -> list[RecordResult]:
        """Record ``items`` in one transaction, in a fixed number of statements whatever
        their count (the events, the payments' links, the notifications); raises
        _AliasRace or StoreUnavailable, and then nothing was written."""
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
            self._link(connection, [("payment", items[i].links) for i in new if items[i].links])
            queued = self._queue_many(
                connection, [(items[i].event.id, items[i].planned) for i in new], now
            )
            if any(queued):
                self.db.wake_workers(connection)
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

    def _link(
        self, connection: Connection, subjects: Sequence[tuple[str, tuple[str, ...]]]
    ) -> list[str]:
        """The one identifier that everything known about each subject is keyed on, in
        order, each subject seeing the links of those before it.

        Links every alias of a subject to its identifier: the identifier of its most
        telling alias already known, else its first alias. When its aliases were known
        under several identifiers (a payment intent and an invoice seen apart, then an
        invoice payment naming both), those merge into the first: every alias of the
        others is pointed at it. If a concurrent transaction linked one of them to another
        identifier first, raises _AliasRace so that the whole transaction is recorded
        again, seeing that link. (On SQLite a transaction holds the write lock from its
        start, so nobody can link anything meanwhile.)
        """
        wanted = {
            f"{kind}:{alias}"
            for kind, subject in subjects
            if kind in LINKED_SUBJECTS
            for alias in subject
        }
        known = self._known_aliases(connection, wanted)
        if self.db.postgres and wanted:
            # Lock every identifier these aliases are linked to, and re-read until no merge
            # moved them meanwhile: a concurrent merge, or a worker committing a send about
            # one of them, then goes first (a merge locks both identifiers it joins).
            locked: set[str] = set()
            while new_locks := set(known.values()) - locked:
                lock_canonicals(connection, new_locks)
                locked |= new_locks
                known = self._known_aliases(connection, wanted)
        links: dict[str, str] = {}  # new aliases -> their identifier
        merged: dict[tuple[str, str], str] = {}  # (kind, identifier) -> the one it joined
        canonicals = []
        for kind, subject in subjects:
            if kind not in LINKED_SUBJECTS:
                canonicals.append(subject[0])
                continue
            aliases = [f"{kind}:{alias}" for alias in subject]
            found = list(dict.fromkeys(known[a] for a in aliases if a in known))
            canonical = found[0] if found else subject[0]
            for other in found[1:]:
                merged[(kind, other)] = canonical
                for alias, identifier in known.items():
                    if identifier == other and alias.startswith(f"{kind}:"):
                        known[alias] = canonical
            for alias in aliases:
                if alias not in known:
                    known[alias] = links[alias] = canonical
            canonicals.append(canonical)
        for (kind, other), canonical in merged.items():
            # Both identifiers are locked (above): no send about either commits meanwhile.
            connection.execute(
                update(subject_aliases)
                .where(
                    and_(
                        subject_aliases.c.canonical == other,
                        subject_aliases.c.alias.startswith(f"{kind}:", autoescape=True),
                    )
                )
                .values(canonical=canonical)
            )
        if links:
            connection.execute(
                self.db.insert(subject_aliases).on_conflict_do_nothing(index_elements=["alias"]),
                [{"alias": alias, "canonical": c} for alias, c in links.items()],
            )
            if self.db.postgres:
                linked = connection.execute(
                    select(subject_aliases.c.alias, subject_aliases.c.canonical).where(
                        subject_aliases.c.alias.in_(sorted(links))
                    )
                )
                if any(links[alias] != canonical for alias, canonical in linked):
                    raise _AliasRace()
        return canonicals

    @staticmethod
    def _known_aliases(connection: Connection, wanted: set[str]) -> dict[str, str]:
        if not wanted:
            return {}
        query = select(subject_aliases.c.alias, subject_aliases.c.canonical).where(
            subject_aliases.c.alias.in_(sorted(wanted))
        )
        return {alias: canonical for alias, canonical in connection.execute(query)}

    def link_payment(self, aliases: Sequence[str]) -> str:
        """Link the identifiers of one payment (learnt from Stripe) as one subject, in a
        transaction of its own; returns its identifier. Raises StoreUnavailable."""
        for _ in range(_ALIAS_RACE_RETRIES):
            try:
                with self.db.transaction() as connection:
                    (canonical,) = self._link(connection, [("payment", tuple(aliases))])
                    return canonical
            except _AliasRace:
                continue
        raise StoreUnavailable(
            "The event store is too busy linking this payment; it will be tried again."
        )

    def subject_group(self, subject: str) -> tuple[str, frozenset[str]]:
        """The identifier that ``subject`` (``kind:alias``) is linked to now, and every
        alias linked to it (without the ``kind:``)."""
        kind, _, alias = subject.partition(":")
        with self.db.read() as connection:
            rows = connection.execute(_SUBJECT_GROUP, {"subject": subject}).all()
        if not rows:
            return alias, frozenset({alias})
        prefix = f"{kind}:"
        return rows[0].canonical, frozenset(
            row.alias.removeprefix(prefix) for row in rows if row.alias.startswith(prefix)
        )

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

    def _queue_many(
        self,
        connection: Connection,
        planned: Sequence[tuple[str, Sequence[PlannedNotification]]],
        now: datetime,
    ) -> list[int]:
        """Queue each event's planned notifications in ``connection``'s transaction;
        returns how many were new for each event. A notification whose key is already
        queued (by an earlier event, or one before it here) is not queued again. Waking the
        workers (``pg_notify``) is the caller's, once per transaction."""
        flat = [(index, item) for index, (_, items) in enumerate(planned) for item in items]
        canonicals = self._link(connection, [(item.subject_kind, item.subject) for _, item in flat])
        rows: dict[str, dict[str, Any]] = {}
        owner: dict[str, int] = {}
        for (index, item), canonical in zip(flat, canonicals, strict=True):
            key = item.key(canonical)
            if key in rows:
                continue
            owner[key] = index
            rows[key] = {
                "key": key,
                "event_id": planned[index][0],
                "rule": item.rule,
                "recipient": item.recipient,
                "channel": item.channel,
                "livemode": item.livemode,
                "to": item.to,
                "subject": (
                    f"{item.subject_kind}:{canonical}"
                    if item.subject_kind in LINKED_SUBJECTS
                    else None
                ),
                "status": "pending",
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "run_at": now,
            }
        queued = [0] * len(planned)
        if rows:
            inserted = connection.execute(
                self.db.insert(notifications)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(notifications.c.key),
                list(rows.values()),
            ).scalars()
            for key in inserted:
                queued[owner[key]] += 1
        return queued

    def _queue(
        self,
        connection: Connection,
        event_id: str,
        planned: Sequence[PlannedNotification],
        now: datetime,
    ) -> int:
        """Queue ``planned`` for ``event_id``; returns how many were new."""
        (queued,) = self._queue_many(connection, [(event_id, planned)], now)
        return queued

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
            notifications.c.error_code.is_distinct_from("outcome_unknown"),
        )
        query = select(events.c.id).where(
            (events.c.status == "failed") | exists(select(notifications.c.id).where(retryable))
        )
        if since is not None:
            query = query.where(events.c.received_at >= since)
        with self.db.read() as connection:
            return list(connection.execute(query.order_by(events.c.received_at)).scalars())

    def replay_event(
        self,
        event_id: str,
        planned: Sequence[PlannedNotification],
        *,
        links: Sequence[str] = (),
    ) -> tuple[int, int, int]:
        """Process a stored event again: link ``links`` (as when it was recorded), queue
        what ``planned`` adds (what is already queued or sent is not), and queue its
        failed notifications again from the first channel. Returns (new, queued again,
        left as they are)."""
        try:
            return self._replay_event(event_id, planned, links)
        except _AliasRace:
            raise StoreUnavailable(
                "The event store was linking this event's payment in another transaction; "
                "replay it again."
            ) from None

    def _replay_event(
        self, event_id: str, planned: Sequence[PlannedNotification], links: Sequence[str]
    ) -> tuple[int, int, int]:
        now = self._clock.now()
        with self.db.transaction() as connection:
            if links:
                self._link(connection, [("payment", tuple(links))])
            new = self._queue(connection, event_id, planned, now)
            again = connection.execute(
                update(notifications)
                .where(
                    notifications.c.event_id == event_id,
                    notifications.c.status == "failed",
                    notifications.c.error_code.is_distinct_from("outcome_unknown"),
                )
                .values(
                    status="pending",
                    attempts=0,
                    run_at=now,
                    updated_at=now,
                    error=None,
                    error_code=None,
                    refusals=None,
                    lease_until=None,
                    claimed_by=None,
                )
            ).rowcount
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

    # -- meta -------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        with self.db.read() as connection:
            value = connection.execute(select(meta.c.value).where(meta.c.key == key)).scalar()
        return str(value) if value is not None else None

    def set_meta(self, key: str, value: str) -> None:
        with self.db.transaction() as connection:
            stmt = self.db.insert(meta).values(key=key, value=value)
            connection.execute(
                stmt.on_conflict_do_update(index_elements=["key"], set_={"value": value})
            )

    def development_secret(self) -> str:
        """The webhook secret used when STRIPE_WEBHOOK_SECRET is unset: random, made once
        per database, so `run` and `simulate` agree and no two installs share one."""
        candidate = "whsec_dev_" + secrets.token_hex(16)
        with self.db.transaction() as connection:
            connection.execute(
                self.db.insert(meta)
                .values(key="development_webhook_secret", value=candidate)
                .on_conflict_do_nothing(index_elements=["key"])
            )
            return str(
                connection.execute(
                    select(meta.c.value).where(meta.c.key == "development_webhook_secret")
                ).scalar_one()
            )
