"""The job queue in memory (``payherald.jobs.JobQueue``)."""

from __future__ import annotations

import copy
import dataclasses
import threading
from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Any

from payherald.clock import Clock
from payherald.store.jobs import Job
from payherald.store.records import claim_token
from payherald.store.statuses import JobStatus

__all__ = ["InMemoryJobs"]


class InMemoryJobs:
    """The job queue (``payherald.jobs.JobQueue``) in memory, with the semantics of the
    database's: one job per key, claimed only when due and of a kind asked for, oldest due
    first, with a lease, and changed after the claim only under the claim's token."""

    def __init__(self, *, clock: Clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}

    def enqueue(
        self, kind: str, key: str, payload: Mapping[str, Any], *, due_at: datetime | None = None
    ) -> bool:
        with self._lock:
            if key in self._jobs:
                return False
            self._jobs[key] = Job(
                id=len(self._jobs) + 1,
                kind=kind,
                key=key,
                payload=copy.deepcopy(dict(payload)),
                status=JobStatus.PENDING,
                attempts=0,
                due_at=due_at or self._clock.now(),
            )
            return True

    def ensure_recurring(
        self, kind: str, key: str, payload: Mapping[str, Any], *, due_at: datetime | None = None
    ) -> bool:
        if self.enqueue(kind, key, payload, due_at=due_at):
            return True
        with self._lock:
            job = self._jobs[key]
            if job.status not in (JobStatus.DONE, JobStatus.FAILED):
                return False
            self._jobs[key] = dataclasses.replace(
                job,
                status=JobStatus.PENDING,
                due_at=due_at or self._clock.now(),
                attempts=0,
                claim=None,
                lease_until=None,
            )
            return True

    def claim(
        self, *, kinds: Collection[str], limit: int, lease: float, worker_id: str
    ) -> list[Job]:
        now = self._clock.now()
        token = claim_token(worker_id)
        with self._lock:
            due = sorted(
                (
                    job
                    for job in self._jobs.values()
                    if job.status == JobStatus.PENDING and job.due_at <= now and job.kind in kinds
                ),
                key=lambda job: (job.due_at, job.id),
            )[: max(limit, 0)]
            claimed = []
            for job in due:
                held = dataclasses.replace(
                    job,
                    status=JobStatus.RUNNING,
                    claim=token,
                    lease_until=now + timedelta(seconds=lease),
                )
                self._jobs[job.key] = held
                claimed.append(dataclasses.replace(held, payload=copy.deepcopy(held.payload)))
            return claimed

    def complete(self, job: Job) -> bool:
        return self._move(job, status=JobStatus.DONE, lease_until=None)

    def again(self, job: Job, *, at: datetime) -> bool:
        return self._move(
            job,
            status=JobStatus.PENDING,
            due_at=at,
            attempts=0,
            claim=None,
            lease_until=None,
            last_error=None,
        )

    def retry(self, job: Job, *, at: datetime, error: str) -> bool:
        return self._move(
            job,
            status=JobStatus.PENDING,
            due_at=at,
            count_attempt=True,
            claim=None,
            lease_until=None,
            last_error=error,
        )

    def fail(self, job: Job, *, error: str) -> bool:
        return self._move(
            job, status=JobStatus.FAILED, count_attempt=True, lease_until=None, last_error=error
        )

    def _move(self, job: Job, *, count_attempt: bool = False, **changes: Any) -> bool:
        with self._lock:
            current = self._jobs.get(job.key)
            if (
                current is None
                or job.claim is None
                or current.claim != job.claim
                or current.status != JobStatus.RUNNING
            ):
                return False
            if count_attempt:
                changes["attempts"] = current.attempts + 1
            self._jobs[job.key] = dataclasses.replace(current, **changes)
            return True

    def expire_leases(self, kinds: Collection[str] | None = None) -> int:
        now = self._clock.now()
        with self._lock:
            expired = [
                job
                for job in self._jobs.values()
                if job.status == JobStatus.RUNNING
                and job.lease_until is not None
                and job.lease_until < now
                and (kinds is None or job.kind in kinds)
            ]
            for job in expired:
                self._jobs[job.key] = dataclasses.replace(
                    job, status=JobStatus.PENDING, claim=None, lease_until=None
                )
            return len(expired)

    def get(self, key: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(key)
            return copy.deepcopy(job) if job is not None else None

    def counts(self) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        with self._lock:
            for job in self._jobs.values():
                counts[job.status] += 1
        return counts
