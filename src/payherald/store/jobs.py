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
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, RowMapping, and_, func, select, update

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.records import claim_token
from payherald.store.schema import jobs
from payherald.store.statuses import JobStatus

__all__ = ["Job", "Jobs"]


@dataclass(frozen=True)
class Job:
    """One job as read: claimed (``claim`` is the token of the claim that holds it), or
    looked up by its key."""

    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int  # failed attempts since it last succeeded
    due_at: datetime
    claim: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None


class Jobs:
    """The jobs table as a queue (``Store.jobs``)."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

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
            .values(
                kind=kind,
                key=key,
                payload=json.dumps(dict(payload), sort_keys=True),
                status=JobStatus.PENDING,
                due_at=due_at,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[jobs.c.key])
            .returning(jobs.c.id)
        )
        inserted = connection.execute(statement).first() is not None
        if inserted and due_at <= now:
            self._db.wake_workers(connection)
        return inserted

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
        now = self._clock.now()
        due = (
            select(jobs.c.id)
            .where(
                and_(
                    jobs.c.status == JobStatus.PENDING,
                    jobs.c.due_at <= now,
                    jobs.c.kind.in_(sorted(kinds)),
                )
            )
            .order_by(jobs.c.due_at, jobs.c.id)
            .limit(limit)
        )
        if self._db.postgres:
            due = due.with_for_update(skip_locked=True)
        token = claim_token(worker_id)
        with self._db.transaction() as connection:
            ids = list(connection.execute(due).scalars())
            if not ids:
                return []
            connection.execute(
                update(jobs)
                .where(jobs.c.id.in_(ids))
                .values(
                    status=JobStatus.RUNNING,
                    claimed_by=token,
                    lease_until=now + timedelta(seconds=lease),
                    updated_at=now,
                )
            )
            rows = connection.execute(
                select(jobs).where(jobs.c.id.in_(ids)).order_by(jobs.c.due_at, jobs.c.id)
            ).mappings()
            return [_job(row) for row in rows]

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

    def expire_leases(self) -> int:
        """Return running jobs whose lease ran out (their worker stopped or stalled) to
        pending, due now. Returns how many."""
        now = self._clock.now()
        with self._db.transaction() as connection:
            expired = connection.execute(
                update(jobs)
                .where(and_(jobs.c.status == JobStatus.RUNNING, jobs.c.lease_until < now))
                .values(
                    status=JobStatus.PENDING,
                    claimed_by=None,
                    lease_until=None,
                    updated_at=now,
                )
            ).rowcount
            if expired:
                self._db.wake_workers(connection)
        return int(expired)

    # -- reading --------------------------------------------------------------------------

    def get(self, key: str) -> Job | None:
        """The job queued under ``key``, or None."""
        with self._db.read() as connection:
            row = connection.execute(select(jobs).where(jobs.c.key == key)).mappings().first()
        return _job(row) if row is not None else None

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


def _job(row: RowMapping) -> Job:
    return Job(
        id=int(row["id"]),
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        status=JobStatus(row["status"]),
        attempts=int(row["attempts"]),
        due_at=row["due_at"],
        claim=row["claimed_by"],
        lease_until=row["lease_until"],
        last_error=row["last_error"],
    )
