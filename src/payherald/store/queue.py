"""The work queue: due notifications claimed with a lease, then moved through their states.

A notification moves through::

    pending -> claimed -> sending -> sent | failed | pending (retry later)
                  |           `-> unknown (the process died during the provider call)
                  `-> pending (the process died before calling the provider)

A ``claimed`` row whose lease ran out is safe to retry: nothing was sent. A ``sending``
row whose lease ran out may or may not have reached the provider, so it becomes
``unknown`` and is reconciled against the provider before any resend. Every change after
the claim names the claim's token, so a worker that stalled past its lease cannot move a
row that was claimed again meanwhile. On PostgreSQL the claim uses ``FOR UPDATE SKIP
LOCKED``, so any number of workers share the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    exists,
    or_,
    select,
    text,
    update,
)

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.records import ClaimedNotification, claim_token, claimed_from_row
from payherald.store.schema import events, notifications, subject_aliases, suppressions
from payherald.store.statuses import TOLD, NotificationStatus
from payherald.store.transitions import Outcome

__all__ = [
    "STATUSES",
    "TOLD_STATUSES",
    "WorkQueue",
    "lock_canonicals",
    "lock_subject",
    "siblings_told",
]

# Every status a notification can be in; the README's "Notification statuses" says what
# each means.
STATUSES = tuple(status.value for status in NotificationStatus)
# A notification in one of these may have reached its recipient.
TOLD_STATUSES = tuple(sorted(status.value for status in TOLD))


class WorkQueue:
    """The notifications table as a queue (``Store.queue``)."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        self._postgres = db.postgres
        # The state changes, built once per shape and run with new values each time:
        # building an UPDATE costs more than running it (see _transition).
        self._transitions: dict[tuple[Any, ...], Update] = {}

    def claim(self, *, worker_id: str, limit: int, lease: float) -> list[ClaimedNotification]:
        """Claim up to ``limit`` due notifications for ``worker_id`` until the lease ends.

        Each claim carries a token of its own: only the holder of the current token can
        move the row on, so a thread that stalled past its lease cannot act on a row that
        was claimed again meanwhile.
        """
        lease_until = self._clock.now() + timedelta(seconds=lease)
        return self._claim(
            "pending",
            limit,
            status="claimed",
            claimed_by=claim_token(worker_id),
            lease_until=lease_until,
        )

    def claim_unknown(
        self, *, worker_id: str, limit: int, lease: float
    ) -> list[ClaimedNotification]:
        """Claim notifications whose outcome is unknown, for reconciliation.

        They stay ``unknown`` while claimed (their next check is pushed back by the lease
        instead), so a crash during reconciliation can never turn them into a blind resend.
        """
        recheck = self._clock.now() + timedelta(seconds=lease)
        return self._claim("unknown", limit, claimed_by=claim_token(worker_id), run_at=recheck)

    def _claim(self, from_status: str, limit: int, **changes: Any) -> list[ClaimedNotification]:
        """Take up to ``limit`` due rows in ``from_status``, apply ``changes``, return them."""
        if limit <= 0:
            return []
        now = self._clock.now()
        due = (
            select(notifications.c.id)
            .where(and_(notifications.c.status == from_status, notifications.c.run_at <= now))
            .order_by(notifications.c.run_at, notifications.c.id)
            .limit(limit)
        )
        if self._postgres:
            due = due.with_for_update(skip_locked=True)
        with self._db.transaction() as connection:
            ids = list(connection.execute(due).scalars())
            if not ids:
                return []
            connection.execute(
                update(notifications)
                .where(notifications.c.id.in_(ids))
                .values(updated_at=now, **changes)
            )
            rows = connection.execute(
                select(notifications, events.c.payload.label("event_payload"))
                .join(events, events.c.id == notifications.c.event_id)
                .where(notifications.c.id.in_(ids))
                .order_by(notifications.c.run_at, notifications.c.id)
            ).mappings()
            return [claimed_from_row(row) for row in rows]

    def expire_leases(self) -> tuple[int, int]:
        """Return work whose worker vanished: ``claimed`` rows to ``pending`` (nothing was
        sent) and ``sending`` rows to ``unknown`` (something may have been). Returns the
        two counts."""
        now = self._clock.now()
        expired = and_(notifications.c.lease_until.is_not(None), notifications.c.lease_until < now)
        with self._db.transaction() as connection:
            released = connection.execute(
                update(notifications)
                .where(and_(notifications.c.status == "claimed", expired))
                .values(status="pending", claimed_by=None, lease_until=None, updated_at=now)
            ).rowcount
            orphaned = connection.execute(
                update(notifications)
                .where(and_(notifications.c.status == "sending", expired))
                .values(
                    status="unknown",
                    claimed_by=None,
                    lease_until=None,
                    run_at=now,
                    error="The worker stopped during the provider call; reconciling.",
                    updated_at=now,
                )
            ).rowcount
        return released, orphaned

    def _transition(
        self,
        held: ClaimedNotification,
        from_statuses: tuple[str, ...],
        *,
        unless_suppressed: Sequence[str] = (),
        unless_told: bool = False,
        count_attempt: bool = False,
        **values: Any,
    ) -> bool:
        """Move a notification on to ``values``, if ``held`` is still the current claim,
        the row is in one of ``from_statuses``, no address of ``unless_suppressed`` is
        on the suppression list and, with ``unless_told``, no other notification about
        the same thing was told (``siblings_told``); False otherwise. ``count_attempt``
        adds one to ``attempts``."""
        values.setdefault("updated_at", self._clock.now())
        unless_told = unless_told and held.subject is not None
        shape = (
            from_statuses,
            tuple(sorted(values)),
            count_attempt,
            bool(unless_suppressed),
            unless_told,
        )
        statement = self._transitions.get(shape)
        if statement is None:
            statement = self._transitions[shape] = _transition_statement(*shape)
        parameters = {f"new_{name}": value for name, value in values.items()}
        parameters.update(held_id=held.id, held_claim=held.claim)
        if unless_suppressed:
            parameters["suppressed"] = list(unless_suppressed)
        with self._db.transaction() as connection:
            if unless_told and self._postgres:
                # Two notifications about one thing, claimed by two workers at once: the
                # second waits here for the first to commit, then sees it told.
                assert held.subject is not None
                lock_subject(connection, held.subject)
            return bool(connection.execute(statement, parameters).rowcount)

    def mark_sending(
        self,
        held: ClaimedNotification,
        *,
        to: str,
        body: str,
        channel: str,
        lease: float,
        notes: str | None = None,
        unless_suppressed: Sequence[str] = (),
    ) -> bool:
        """Record that the provider is about to be called; must commit before the call.
        The lease starts afresh, to cover the provider call. Nothing happens if any
        address of ``unless_suppressed`` (a customer's addresses) is on the suppression
        list, or if another notification about the same thing was told: both checked in
        the same statement, so an opt-out or a send committed before this one always
        wins."""
        now = self._clock.now()
        return self._transition(
            held,
            ("claimed",),
            unless_suppressed=unless_suppressed,
            unless_told=True,
            count_attempt=True,
            status="sending",
            to=to,
            body=body,
            channel=channel,
            notes=notes,
            attempt_started_at=now,
            lease_until=now + timedelta(seconds=lease),
            error=None,
            error_code=None,
        )

    def settle(self, held: ClaimedNotification, outcome: Outcome, **values: Any) -> bool:
        """Move ``held`` on by ``outcome`` (``transitions``), with ``values``; False when
        ``held`` is no longer the current claim or the row has left the statuses
        ``outcome`` moves from."""
        changes = outcome.changes(values, self._clock.now())
        return self._transition(held, outcome.leaves, **changes)


# PostgreSQL advisory locks on a subject's identifier (its canonical), held to the end of the
# transaction; the first key keeps them apart from any other advisory lock.
_LOCK = text("SELECT pg_advisory_xact_lock(7301, hashtext(:canonical))")
_CANONICAL = text("SELECT canonical FROM subject_aliases WHERE alias = :alias")


def lock_canonicals(connection: Connection, canonicals: Iterable[str]) -> None:
    """Lock these identifiers, in one order (so that two transactions cannot deadlock on
    them), until ``connection``'s transaction ends. PostgreSQL only."""
    for canonical in sorted(set(canonicals)):
        connection.execute(_LOCK, {"canonical": canonical})


def lock_subject(connection: Connection, subject: str) -> None:
    """Lock the identifier ``subject`` is linked to now, as linking locks it (``Store._link``
    locks both identifiers it merges): a merge committed while this waited moves the
    subject to another identifier, so the lock follows it until it stays put."""
    held: set[str] = set()
    while True:
        canonical = connection.execute(_CANONICAL, {"alias": subject}).scalar() or subject
        if canonical in held:
            return
        connection.execute(_LOCK, {"canonical": canonical})
        held.add(canonical)


def siblings_told(held: Table) -> Select[Any]:
    """The other notifications of ``held``'s rule, to the same recipient, about what
    ``held`` is about as linked now (the canonical of its subject), that were told or
    are being told: their ``id``, ``event_id`` and ``status``. ``held`` is the ``notifications``
    table, correlated by the statement that uses this."""
    sibling = notifications.alias("sibling")
    sibling_subject = subject_aliases.alias("sibling_subject")
    held_subject = subject_aliases.alias("held_subject")
    return (
        select(sibling.c.id, sibling.c.event_id, sibling.c.status)
        .join(sibling_subject, sibling_subject.c.alias == sibling.c.subject)
        .join(held_subject, held_subject.c.canonical == sibling_subject.c.canonical)
        .where(
            held_subject.c.alias == held.c.subject,
            sibling.c.id != held.c.id,
            sibling.c.rule == held.c.rule,
            sibling.c.recipient == held.c.recipient,
            # "|| ''" keeps SQLite's planner off the status index: led by it, it scans every
            # notification ever sent, for every send (the 10,000-SMS burst took 5x longer).
            sibling.c.status.concat("").in_(TOLD_STATUSES),
            or_(
                held.c.recipient == "customer",
                and_(sibling.c.channel == held.c.channel, sibling.c.to == held.c.to),
            ),
        )
    )


def _transition_statement(
    from_statuses: tuple[str, ...],
    names: tuple[str, ...],
    count_attempt: bool,
    guarded: bool,
    unless_told: bool,
) -> Update:
    """The UPDATE behind ``Store._transition`` for one shape of change; its values are the
    bound parameters ``held_id``, ``held_claim``, ``new_<column>`` and ``suppressed``."""
    conditions = [
        notifications.c.id == bindparam("held_id"),
        notifications.c.claimed_by == bindparam("held_claim"),
        notifications.c.status.in_(from_statuses),
    ]
    if guarded:
        listed = suppressions.c.address.in_(bindparam("suppressed", expanding=True))
        conditions.append(~exists(select(suppressions.c.address).where(listed)))
    if unless_told:
        conditions.append(~exists(siblings_told(notifications)))
    changes: dict[str, Any] = {
        name: bindparam(f"new_{name}", type_=notifications.c[name].type) for name in names
    }
    if count_attempt:
        changes["attempts"] = notifications.c.attempts + 1
    return update(notifications).where(and_(*conditions)).values(changes)
