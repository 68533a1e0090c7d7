"""The work queue: each notification waiting to be sent has a job on the job queue, and
the job is what is claimed, with a lease, and what schedules it.

A notification moves through::

    pending -> claimed -> sending -> sent | failed | pending (retry later)
                  |           `-> unknown (the process died during the provider call)
                  `-> pending (the process died before calling the provider)

While it waits (pending or unknown) it has one job (``payherald.store.jobs``), keyed on
its id and due at its ``run_at``: of kind ``notification.send`` to be sent, of kind
``notification.reconcile`` to be checked against the provider. A claim takes due jobs of
one kind and, in the same transaction and under the same token, their notifications.
Whatever becomes of a notification moves its job: one that must wait makes it due again
at the notification's ``run_at``, in the transaction that records it. A finished one
(sent, failed, skipped) leaves its job held by the claim, and the worker's next claim (or
``discard_finished``) deletes the jobs of all it finished since, in one statement: the
notification's row is the record, and a job held by a claim is taken by nobody else.

A claim whose lease ran out is safe to retry while the notification is ``claimed``:
nothing was sent. A ``sending`` one holds its job until the lease of its provider call
(started by ``mark_sending``) runs out too; then it may or may not have reached the
provider, so it becomes ``unknown`` and is reconciled against the provider before any
resend. Every change
after the claim names the claim's token, so a worker that stalled past its lease cannot
move a row that was claimed again meanwhile. On PostgreSQL the claim uses ``FOR UPDATE
SKIP LOCKED``, so any number of workers share the queue.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import timedelta
from typing import Any

from sqlalchemy import Connection, Update, select, update

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.jobs import Job, Jobs
from payherald.store.outbox import RECONCILE_JOB, SEND_JOB, job_key
from payherald.store.questions import Question, Questions
from payherald.store.queue_statements import (
    ORPHANED,
    TAKE_TO_RECONCILE,
    TAKE_TO_SEND,
    TAKEN,
    transition_statement,
)
from payherald.store.records import ClaimedNotification, claimed_from_row
from payherald.store.schema import notifications
from payherald.store.statuses import TERMINAL
from payherald.store.statuses import NotificationStatus as S
from payherald.store.told import lock_subject
from payherald.store.transitions import Outcome

__all__ = ["STATUSES", "WorkQueue"]

# Every status a notification can be in; the README's "Notification statuses" says what
# each means.
STATUSES = tuple(status.value for status in S)


class WorkQueue:
    """The notifications table as a queue, scheduled by their jobs (``Store.queue``)."""

    def __init__(self, *, db: Database, clock: Clock, jobs: Jobs, questions: Questions) -> None:
        self._db = db
        self._clock = clock
        self._jobs = jobs
        self._questions = questions
        self._postgres = db.postgres
        # The state changes, built once per shape and run with new values each time:
        # building an UPDATE costs more than running it (see _transition).
        self._transitions: dict[tuple[Any, ...], Update] = {}
        # The (key, claim) of the jobs of notifications finished since the last claim.
        self._finished: deque[tuple[str, str]] = deque()

    # -- claiming -------------------------------------------------------------------------

    def claim(self, *, worker_id: str, limit: int, lease: float) -> list[ClaimedNotification]:
        """Claim up to ``limit`` notifications due to be sent, for ``worker_id`` until the
        lease ends.

        Each claim carries a token of its own: only the holder of the current token can
        move the row on, so a thread that stalled past its lease cannot act on a row that
        was claimed again meanwhile. (A ``claimed`` row is taken too: its job was free, so
        the claim that left it so is gone.)
        """
        return self._claim(SEND_JOB, TAKE_TO_SEND, limit, lease, worker_id)

    def claim_unknown(
        self, *, worker_id: str, limit: int, lease: float
    ) -> list[ClaimedNotification]:
        """Claim notifications whose outcome is unknown, for reconciliation.

        They stay ``unknown`` while claimed (their next check is pushed back by the lease
        instead), so a crash during reconciliation can never turn them into a blind resend.
        A ``sending`` one whose job is free (left so by a claim whose lease ran out) is
        taken too, once the lease of its provider call has run out, and becomes unknown.
        """
        recheck = self._clock.now() + timedelta(seconds=lease)
        return self._claim(
            RECONCILE_JOB, TAKE_TO_RECONCILE, limit, lease, worker_id, recheck=recheck
        )

    def _claim(
        self,
        kind: str,
        take: Update,
        limit: int,
        lease: float,
        worker_id: str,
        **parameters: Any,
    ) -> list[ClaimedNotification]:
        """Claim up to ``limit`` due jobs of ``kind`` and, by ``take`` under their token,
        their notifications; return those."""
        if limit <= 0:
            return []
        now = self._clock.now()
        with self._discarding_finished() as connection:
            held = self._jobs.claim_in(
                connection, kinds=(kind,), limit=limit, lease=lease, worker_id=worker_id
            )
            if not held:
                return []
            token = held[0].claim
            ids = [_notification_of(job) for job in held]
            values = {"ids": ids, "token": token, "now": now, **parameters}
            connection.execute(take, values)
            rows = connection.execute(TAKEN, values).mappings()
            claimed = [claimed_from_row(row) for row in rows]
            if len(claimed) < len(held):
                taken = {notification.id for notification in claimed}
                self._untaken(
                    connection, [job for job in held if _notification_of(job) not in taken]
                )
            return claimed

    def _untaken(self, connection: Connection, held: list[Job]) -> None:
        """Put right the claimed jobs whose notification was not there to take: gone or
        finished (the job is deleted), or not due yet or waiting for the other kind of
        job (the job is made so)."""
        now = self._clock.now()
        found = {
            row.id: row
            for row in connection.execute(
                select(
                    notifications.c.id,
                    notifications.c.status,
                    notifications.c.run_at,
                    notifications.c.lease_until,
                ).where(notifications.c.id.in_([_notification_of(job) for job in held]))
            )
        }
        for job in held:
            assert job.claim is not None
            row = found.get(_notification_of(job))
            if row is None or row.status in TERMINAL:
                self._jobs.discard_in(connection, [(job.key, job.claim)])
                continue
            kind = SEND_JOB if row.status in (S.PENDING, S.CLAIMED) else RECONCILE_JOB
            # A send in flight is looked at again when the lease of its call ends.
            calling = row.status == S.SENDING and row.lease_until is not None
            at = max(row.lease_until if calling else row.run_at, now)
            self._jobs.reschedule_in(connection, job.key, job.claim, at=at, kind=kind)

    def expire_leases(self) -> tuple[int, int]:
        """Return work whose worker vanished: ``claimed`` rows to ``pending`` (nothing was
        sent) and ``sending`` rows to ``unknown`` (something may have been), their jobs due
        now; the jobs of the rows it finished are deleted. Returns the two counts."""
        now = self._clock.now()
        with self._discarding_finished() as connection:
            expired = self._jobs.expired_in(connection, (SEND_JOB, RECONCILE_JOB))
            if not expired:
                return 0, 0
            rows = connection.execute(
                select(
                    notifications.c.id, notifications.c.status, notifications.c.lease_until
                ).where(
                    notifications.c.id.in_([_notification_of(job) for job in expired]),
                    notifications.c.claimed_by.in_({job.claim for job in expired}),
                )
            ).all()
            # A send in flight holds its job until its own lease (from mark_sending) ends.
            calling = {
                row.id
                for row in rows
                if row.status == S.SENDING
                and row.lease_until is not None
                and row.lease_until >= now
            }
            expired = [job for job in expired if _notification_of(job) not in calling]
            if not expired:
                return 0, 0
            released = [row.id for row in rows if row.status == S.CLAIMED]
            orphaned = [row.id for row in rows if row.status == S.SENDING and row.id not in calling]
            if released:
                connection.execute(
                    update(notifications)
                    .where(notifications.c.id.in_(released))
                    .values(
                        status=S.PENDING.value, claimed_by=None, lease_until=None, updated_at=now
                    )
                )
            if orphaned:
                connection.execute(
                    update(notifications)
                    .where(notifications.c.id.in_(orphaned))
                    .values(
                        status=S.UNKNOWN.value,
                        claimed_by=None,
                        lease_until=None,
                        run_at=now,
                        error=ORPHANED,
                        updated_at=now,
                    )
                )
            # The jobs of what the vanished worker finished, which its next claim would
            # have deleted.
            finished = {row.id for row in rows if row.status in TERMINAL}
            done: list[tuple[str, str]] = []
            for job in expired:
                assert job.claim is not None
                if _notification_of(job) in finished:
                    done.append((job.key, job.claim))
                    continue
                kind = RECONCILE_JOB if _notification_of(job) in orphaned else job.kind
                self._jobs.reschedule_in(connection, job.key, job.claim, at=now, kind=kind)
            self._jobs.discard_in(connection, done)
            self._db.wake_workers(connection)
        return len(released), len(orphaned)

    def discard_finished(self) -> None:
        """Delete the jobs of the notifications finished since the last claim (a worker
        that stops calls this; its claims do it as they go)."""
        if self._finished:
            with self._discarding_finished():
                pass

    @contextmanager
    def _discarding_finished(self) -> Iterator[Connection]:
        """A transaction that begins by deleting the jobs of the notifications finished
        since the last one; they are kept for the next if it fails."""
        finished: list[tuple[str, str]] = []
        with suppress(IndexError):  # the sending threads append meanwhile
            while True:
                finished.append(self._finished.popleft())
        try:
            with self._db.transaction() as connection:
                self._jobs.discard_in(connection, finished)
                yield connection
        except BaseException:
            self._finished.extend(finished)
            raise

    # -- after the claim ------------------------------------------------------------------

    def _transition(
        self,
        held: ClaimedNotification,
        from_statuses: tuple[str, ...],
        *,
        unless_suppressed: Sequence[str] = (),
        unless_told: bool = False,
        count_attempt: bool = False,
        job: Callable[[Connection], object] | None = None,
        **values: Any,
    ) -> bool:
        """Move a notification on to ``values``, if ``held`` is still the current claim,
        the row is in one of ``from_statuses``, no address of ``unless_suppressed`` is
        on the suppression list and, with ``unless_told``, no other notification about
        the same thing was told (``siblings_told``); False otherwise. ``count_attempt``
        adds one to ``attempts``. ``job`` moves its job, in the same transaction, when it
        moved; the job is locked first on PostgreSQL in any case, in the order a claim and
        an expiry lock them."""
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
            statement = self._transitions[shape] = transition_statement(*shape)
        parameters = {f"new_{name}": value for name, value in values.items()}
        parameters.update(held_id=held.id, held_claim=held.claim)
        if unless_suppressed:
            parameters["suppressed"] = list(unless_suppressed)
        with self._db.transaction() as connection:
            if self._postgres:
                if unless_told:
                    # Two notifications about one thing, claimed by two workers at once:
                    # the second waits here for the first to commit, then sees it told.
                    assert held.subject is not None
                    lock_subject(connection, held.subject)
                # The job before the notification, in the order of a claim or an expiry.
                self._jobs.lock_in(connection, job_key(held.id))
            if not connection.execute(statement, parameters).rowcount:
                if self._finished_meanwhile(connection, held):
                    self._finished.append((job_key(held.id), held.claim))
                return False
            if job is not None:
                job(connection)
            return True

    def _finished_meanwhile(self, connection: Connection, held: ClaimedNotification) -> bool:
        """Whether ``held`` was finished under its claim by someone else (the end of its
        dunning sequence skips the steps a worker holds): its job then goes with the
        worker's next claim, like those of the notifications it finished, rather than
        staying held until its lease runs out."""
        row = connection.execute(
            select(notifications.c.status, notifications.c.claimed_by).where(
                notifications.c.id == held.id
            )
        ).first()
        return row is not None and row.status in TERMINAL and row.claimed_by == held.claim

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
        question: Question | None = None,
    ) -> bool:
        """Record that the provider is about to be called; must commit before the call.
        The lease starts afresh, to cover the provider call. Nothing happens if any
        address of ``unless_suppressed`` (a customer's addresses) is on the suppression
        list, or if another notification about the same thing was told: both checked in
        the same statement, so an opt-out or a send committed before this one always
        wins. The ``question`` the message asks opens with it (``Store.questions``), so
        that a reply however quick finds it."""
        now = self._clock.now()
        opens = question
        return self._transition(
            held,
            (S.CLAIMED.value,),
            unless_suppressed=unless_suppressed,
            unless_told=True,
            count_attempt=True,
            job=(lambda c: self._questions.open_in(c, opens)) if opens is not None else None,
            # The provider call's own lease: its job is not expired before it ends.
            lease_until=now + timedelta(seconds=lease),
            status=S.SENDING.value,
            to=to,
            body=body,
            channel=channel,
            notes=notes,
            attempt_started_at=now,
            error=None,
            error_code=None,
        )

    def settle(self, held: ClaimedNotification, outcome: Outcome, **values: Any) -> bool:
        """Move ``held`` on by ``outcome`` (``transitions``), with ``values``, and its job
        with it; False when ``held`` is no longer the current claim or the row has left
        the statuses ``outcome`` moves from."""
        now = self._clock.now()
        changes = outcome.changes(values, now)
        key = job_key(held.id)
        enters = outcome.transition.enters
        if enters not in (S.PENDING, S.UNKNOWN):
            # Finished: its job is deleted with the others by the next claim. A question it
            # asked (the fraud check) and could not deliver is closed with it.
            undelivered = (
                (lambda c: self._questions.undelivered_in(c, held.id))
                if enters is S.FAILED
                else None
            )
            moved = self._transition(held, outcome.leaves, job=undelivered, **changes)
            if moved:
                self._finished.append((key, held.claim))
            return moved
        kind = SEND_JOB if enters is S.PENDING else RECONCILE_JOB
        at = changes.get("run_at") or now
        move = lambda c: self._jobs.reschedule_in(c, key, held.claim, at=at, kind=kind)  # noqa: E731
        return self._transition(held, outcome.leaves, job=move, **changes)


def _notification_of(job: Job) -> int:
    return int(job.payload["notification"])
