"""The job queue: deferred work of every kind, claimed with a lease, done once per key.

A job moves through::

    pending -> running -> done
                  |   `-> failed (its handler failed on every attempt)
                  `-> pending (a retry, the next run of a recurring job, or a lease that
                               ran out: the worker that held it stopped)

``key`` is the idempotency of the work: a job whose key exists is not enqueued again. A
claim takes due jobs of the kinds the claiming runner has handlers for, oldest due first,
and marks them ``running`` under a token of its own until ``lease_until``; every change
after it names that token, so a worker that stalled past its lease cannot move a job that
was claimed again meanwhile. A job whose lease runs out is pending again: a job runs at
least once, and its handler is idempotent. On PostgreSQL the claim uses ``FOR UPDATE SKIP
LOCKED``, so any number of workers share the queue; on SQLite it is one write transaction.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, delete, func, select, tuple_, update

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.records import Job, claim_token, job_from_row
from payherald.store.schema import jobs
from payherald.store.statuses import JobStatus

__all__ = ["Job", "Jobs"]


class Jobs:
    """The jobs table as a queue (``Store.jobs``)."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # The moves other repositories make in their own transactions, once per send:
        # built once (building an UPDATE costs more than running it).
        held = and_(
            jobs.c.key == bindparam("held_key"),
            jobs.c.claimed_by == bindparam("held_claim"),
            jobs.c.status == JobStatus.RUNNING,
        )
        self._reschedule = (
            update(jobs)
            .where(held)
            .values(
                status=JobStatus.PENDING,
                kind=bindparam("new_kind"),
                due_at=bindparam("new_due_at", type_=jobs.c.due_at.type),
                claimed_by=None,
                lease_until=None,
                updated_at=bindparam("new_updated_at", type_=jobs.c.updated_at.type),
            )
        )
        self._discard = delete(jobs).where(
            tuple_(jobs.c.key, jobs.c.claimed_by).in_(bindparam("held", expanding=True)),
            jobs.c.status == JobStatus.RUNNING,
        )
        self._claims: dict[tuple[str, ...], Any] = {}
        self._lock = select(jobs.c.id).where(jobs.c.key == bindparam("held_key")).with_for_update()

    # -- enqueueing -----------------------------------------------------------------------

    def enqueue(
        self, kind: str, key: str, payload: Mapping[str, Any], *, due_at: datetime | None = None
    ) -> bool:
        """Queue ``kind`` work under ``key``, due at ``due_at`` (now by default). False,
        changing nothing, when a job with ``key`` exists already."""
        with self._db.transaction() as connection:
            return self.enqueue_in(connection, kind, key, payload, due_at=due_at)

    def enqueue_in(
        self,
        connection: Connection,
        kind: str,
        key: str,
        payload: Mapping[str, Any],
        *,
        due_at: datetime | None = None,
    ) -> bool:
        """``enqueue`` inside ``connection``'s transaction, for the other repositories of
        the store: the job commits, or not, with what they write."""
        now = self._clock.now()
        due_at = due_at or now
        statement = (
            self._db.insert(jobs)
            .values(_new_row(kind, key, payload, due_at, now))
            .on_conflict_do_nothing(index_elements=[jobs.c.key])
            .returning(jobs.c.id)
        )
        inserted = connection.execute(statement).first() is not None
        if inserted and due_at <= now:
            self._db.wake_workers(connection)
        return inserted

    def enqueue_many_in(
        self,
        connection: Connection,
        kind: str,
        work: Sequence[tuple[str, Mapping[str, Any], datetime]],
        *,
        replace: bool = False,
    ) -> None:
        """Queue each ``(key, payload, due_at)`` of ``work`` as ``kind`` work inside
        ``connection``'s transaction, in one statement. A key queued already is left as it
        is; with ``replace``, its job is made pending again, fresh, whatever it was, so
        that no claim of it from before can act on it. Waking the workers is the
        caller's, once per transaction."""
        if not work:
            return
        now = self._clock.now()
        rows = [_new_row(kind, key, payload, due_at, now) for key, payload, due_at in work]
        statement = self._db.insert(jobs)
        if replace:
            fresh = ("kind", "payload", "status", "due_at", "attempts", "updated_at")
            statement = statement.on_conflict_do_update(
                index_elements=[jobs.c.key],
                set_={
                    **{name: statement.excluded[name] for name in fresh},
                    "claimed_by": None,
                    "lease_until": None,
                    "finished_at": None,
                    "last_error": None,
                },
            )
        else:
            statement = statement.on_conflict_do_nothing(index_elements=[jobs.c.key])
        connection.execute(statement, rows)

    def ensure_recurring(
        self, kind: str, key: str, payload: Mapping[str, Any], *, due_at: datetime | None = None
    ) -> bool:
        """Make sure the recurring job ``key`` will run: queued, due at ``due_at`` (now by
        default), when absent; pending again at ``due_at`` when it stopped (done or
        failed), since a recurring job must never stop for good. A pending or running one
        is left as it is. True when something changed."""
        now = self._clock.now()
        due_at = due_at or now
        with self._db.transaction() as connection:
            if self.enqueue_in(connection, kind, key, payload, due_at=due_at):
                return True
            revived = connection.execute(
                update(jobs)
                .where(
                    and_(
                        jobs.c.key == key,
                        jobs.c.status.in_((JobStatus.DONE, JobStatus.FAILED)),
                    )
                )
                .values(
                    status=JobStatus.PENDING,
                    due_at=due_at,
                    attempts=0,
                    claimed_by=None,
                    lease_until=None,
                    finished_at=None,
                    updated_at=now,
                )
            ).rowcount
            if revived and due_at <= now:
                self._db.wake_workers(connection)
            return bool(revived)

    # -- claiming -------------------------------------------------------------------------

    def claim(
        self, *, kinds: Collection[str], limit: int, lease: float, worker_id: str
    ) -> list[Job]:
        """Claim up to ``limit`` due jobs of ``kinds``, oldest due first, for ``worker_id``
        until ``lease`` seconds from now."""
        if limit <= 0 or not kinds:
            return []
        with self._db.transaction() as connection:
            return self.claim_in(
                connection, kinds=kinds, limit=limit, lease=lease, worker_id=worker_id
            )

    def claim_in(
        self,
        connection: Connection,
        *,
        kinds: Collection[str],
        limit: int,
        lease: float,
        worker_id: str,
    ) -> list[Job]:
        """``claim`` inside ``connection``'s transaction, for a repository that claims what
        the jobs are about in the same transaction. Every job claimed by one call carries
        the same token."""
        if limit <= 0 or not kinds:
            return []
        kinds = tuple(sorted(kinds))
        statement = self._claims.get(kinds)
        if statement is None:
            statement = self._claims[kinds] = self._claim_statement(kinds)
        now = self._clock.now()
        rows = connection.execute(
            statement,
            {
                "claim_now": now,
                "claim_limit": limit,
                "new_claimed_by": claim_token(worker_id),
                "new_lease_until": now + timedelta(seconds=lease),
            },
        ).mappings()
        return sorted((job_from_row(row) for row in rows), key=lambda job: (job.due_at, job.id))

    def _claim_statement(self, kinds: tuple[str, ...]) -> Any:
        """The claim of ``kinds``, in one statement (a busy worker claims once every few
        messages), built once (building it cost more than running it)."""
        now = bindparam("claim_now", type_=jobs.c.due_at.type)
        due = (
            select(jobs.c.id)
            .where(
                and_(
                    jobs.c.status == JobStatus.PENDING,
                    jobs.c.due_at <= now,
                    jobs.c.kind.in_(kinds),
                )
            )
            .order_by(jobs.c.due_at, jobs.c.id)
            .limit(bindparam("claim_limit"))
        )
        if self._db.postgres:
            due = due.with_for_update(skip_locked=True)
        return (
            update(jobs)
            .where(jobs.c.id.in_(due))
            .values(
                status=JobStatus.RUNNING,
                claimed_by=bindparam("new_claimed_by"),
                lease_until=bindparam("new_lease_until", type_=jobs.c.lease_until.type),
                updated_at=now,
            )
            .returning(*jobs.c)
        )

    # -- after the claim: each guarded by the claim's token -------------------------------

    def complete(self, job: Job) -> bool:
        """Done for good. False when ``job``'s claim is no longer the current one."""
        now = self._clock.now()
        return self._move(job, status=JobStatus.DONE, lease_until=None, finished_at=now)

    def again(self, job: Job, *, at: datetime) -> bool:
        """A recurring job ran: pending again, due at ``at``, its failures forgotten."""
        return self._move(
            job,
            status=JobStatus.PENDING,
            due_at=at,
            attempts=0,
            lease_until=None,
            claimed_by=None,
            last_error=None,
        )

    def retry(self, job: Job, *, at: datetime, error: str) -> bool:
        """The handler failed: pending again, due at ``at``, one more failed attempt, and
        ``error`` (its traceback) kept."""
        return self._move(
            job,
            status=JobStatus.PENDING,
            due_at=at,
            attempts=jobs.c.attempts + 1,
            lease_until=None,
            claimed_by=None,
            last_error=error,
        )

    def fail(self, job: Job, *, error: str) -> bool:
        """The handler failed for the last time: failed, with ``error`` kept."""
        return self._move(
            job,
            status=JobStatus.FAILED,
            attempts=jobs.c.attempts + 1,
            lease_until=None,
            finished_at=self._clock.now(),
            last_error=error,
        )

    def _move(self, job: Job, **values: Any) -> bool:
        if job.claim is None:
            return False
        values.setdefault("updated_at", self._clock.now())
        statement = (
            update(jobs)
            .where(
                and_(
                    jobs.c.id == job.id,
                    jobs.c.claimed_by == job.claim,
                    jobs.c.status == JobStatus.RUNNING,
                )
            )
            .values(**values)
        )
        with self._db.transaction() as connection:
            return bool(connection.execute(statement).rowcount)

    def expire_leases(self, kinds: Collection[str] | None = None) -> int:
        """Return running jobs (of ``kinds``; of every kind by default) whose lease ran out
        (their worker stopped or stalled) to pending, due now. Returns how many."""
        now = self._clock.now()
        with self._db.transaction() as connection:
            expired = self.expired_in(connection, kinds)
            if expired:
                connection.execute(
                    update(jobs)
                    .where(jobs.c.id.in_([job.id for job in expired]))
                    .values(
                        status=JobStatus.PENDING, claimed_by=None, lease_until=None, updated_at=now
                    )
                )
                self._db.wake_workers(connection)
        return len(expired)

    def expired_in(self, connection: Connection, kinds: Collection[str] | None = None) -> list[Job]:
        """The running jobs (of ``kinds``; of every kind by default) whose lease ran out,
        read in ``connection``'s transaction (locked there, on PostgreSQL), still held
        under the claim that ran out: a repository releases them with what they are about,
        by ``reschedule_in``."""
        ran_out = select(jobs).where(
            and_(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_until < self._clock.now())
        )
        if kinds is not None:
            ran_out = ran_out.where(jobs.c.kind.in_(sorted(kinds)))
        if self._db.postgres:
            ran_out = ran_out.with_for_update(skip_locked=True)
        return [job_from_row(row) for row in connection.execute(ran_out).mappings()]

    # -- moves inside another repository's transaction, guarded by the claim's token ----

    def reschedule_in(
        self, connection: Connection, key: str, claim: str, *, at: datetime, kind: str
    ) -> bool:
        """The job ``key``, held under ``claim``, is pending again as ``kind`` work, due at
        ``at``: what it is about is not finished (and keeps its own count of attempts)."""
        parameters = {
            "held_key": key,
            "held_claim": claim,
            "new_due_at": at,
            "new_kind": kind,
            "new_updated_at": self._clock.now(),
        }
        return bool(connection.execute(self._reschedule, parameters).rowcount)

    def bring_forward_in(self, connection: Connection, keys: Collection[str]) -> None:
        """Make each pending job of ``keys`` due now, if it was due later: what it waited
        for is known already (a question closed before its time ran out)."""
        if not keys:
            return
        now = self._clock.now()
        connection.execute(
            update(jobs)
            .where(
                jobs.c.key.in_(list(keys)),
                jobs.c.status == JobStatus.PENDING,
                jobs.c.due_at > now,
            )
            .values(due_at=now, updated_at=now)
        )
        self._db.wake_workers(connection)

    def lock_in(self, connection: Connection, key: str) -> None:
        """Lock the job ``key`` until ``connection``'s transaction ends (PostgreSQL): taken
        before the row of what it is about, as a claim and an expiry take them, so that two
        transactions never wait on each other's."""
        connection.execute(self._lock, {"held_key": key})

    def discard_in(self, connection: Connection, held: Collection[tuple[str, str]]) -> int:
        """Delete each job of ``held``, by ``(key, claim)``, if still held under that claim:
        what it was about is finished, and the row of what it was about is the record of
        it. Returns how many were deleted."""
        if not held:
            return 0
        return int(connection.execute(self._discard, {"held": list(held)}).rowcount)

    # -- reading --------------------------------------------------------------------------

    def get(self, key: str) -> Job | None:
        """The job queued under ``key``, or None."""
        with self._db.read() as connection:
            row = connection.execute(select(jobs).where(jobs.c.key == key)).mappings().first()
        return job_from_row(row) if row is not None else None

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status (every status, zeros included)."""
        with self._db.read() as connection:
            rows = connection.execute(
                select(jobs.c.status, func.count()).group_by(jobs.c.status)
            ).all()
        counts = dict.fromkeys(JobStatus, 0)
        for status, count in rows:
            counts[JobStatus(status)] = int(count)
        return counts


def _new_row(
    kind: str, key: str, payload: Mapping[str, Any], due_at: datetime, now: datetime
) -> dict[str, Any]:
    """The ``jobs`` row of new ``kind`` work under ``key``, due at ``due_at``."""
    return {
        "kind": kind,
        "key": key,
        "payload": json.dumps(dict(payload), sort_keys=True),
        "status": JobStatus.PENDING,
        "due_at": due_at,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
