"""The job runner: deferred work of every kind, run from the one job queue (``store.jobs``).

A kind of job is registered once with its handler, its lease and its retry policy. The
runner claims only due jobs of the kinds it has handlers for, and runs each::

    handler returns None            done
    handler returns RunAgain(at)    a recurring job: pending again, due at ``at``
    handler raises                  pending again after backoff_delay(attempts), with the
                                    traceback kept in ``last_error``; failed after
                                    ``max_attempts`` (never, for None)

A job runs at least once: a worker that stops holding it (a crash, a SIGKILL) leaves it
``running`` until its lease runs out, and then any runner takes it again. Handlers are
therefore idempotent, and each lease is longer than its handler takes. A job that fell due
while nothing ran is due, and runs on the first claim after start, once.
"""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import structlog

from payherald.backoff import backoff_delay
from payherald.clock import Clock
from payherald.exceptions import StoreUnavailable
from payherald.store.jobs import Job
from payherald.store.statuses import JobStatus

__all__ = ["Job", "JobHandler", "JobQueue", "JobRunner", "RunAgain"]

_log = structlog.get_logger("payherald.jobs")

# How often leases that ran out are looked for, in seconds (more often for a shorter lease).
_REAP_EVERY = 5.0


@dataclass(frozen=True)
class RunAgain:
    """What a recurring job's handler returns: run it again at ``at``."""

    at: datetime


JobHandler = Callable[[Job], RunAgain | None]


class JobQueue(Protocol):
    """The job queue as the runner and its users see it (``payherald.store.Jobs``, or
    ``payherald.testing.InMemoryJobs``)."""

    def enqueue(
        self, kind: str, key: str, payload: Mapping[str, Any], *, due_at: datetime | None = None
    ) -> bool: ...

    def ensure_recurring(
        self, kind: str, key: str, payload: Mapping[str, Any], *, due_at: datetime | None = None
    ) -> bool: ...

    def claim(
        self, *, kinds: Collection[str], limit: int, lease: float, worker_id: str
    ) -> list[Job]: ...

    def complete(self, job: Job) -> bool: ...

    def again(self, job: Job, *, at: datetime) -> bool: ...

    def retry(self, job: Job, *, at: datetime, error: str) -> bool: ...

    def fail(self, job: Job, *, error: str) -> bool: ...

    def expire_leases(self, kinds: Collection[str] | None = None) -> int: ...

    def get(self, key: str) -> Job | None: ...

    def counts(self) -> dict[JobStatus, int]: ...


@dataclass(frozen=True)
class _Kind:
    handler: JobHandler
    lease: float
    max_attempts: int | None
    retry_base: float
    retry_cap: float


class JobRunner:
    """Runs due jobs of the registered kinds, in the thread that calls ``run``."""

    def __init__(
        self,
        *,
        jobs: JobQueue,
        clock: Clock,
        worker_id: str,
        poll_interval: float = 1.0,
        batch: int = 10,
    ) -> None:
        self._jobs = jobs
        self._clock = clock
        self.worker_id = worker_id
        self._poll_interval = poll_interval
        self._batch = batch
        self._kinds: dict[str, _Kind] = {}
        self._wake = threading.Event()
        self._last_reap: datetime | None = None

    @property
    def kinds(self) -> frozenset[str]:
        """The kinds this runner has handlers for."""
        return frozenset(self._kinds)

    def register(
        self,
        kind: str,
        handler: JobHandler,
        *,
        lease: float = 300.0,
        max_attempts: int | None = 10,
        retry_base: float = 30.0,
        retry_cap: float = 3600.0,
    ) -> None:
        """Run jobs of ``kind`` with ``handler``, each holding its lease for ``lease``
        seconds; a failure is retried after ``backoff_delay(attempts, base=retry_base,
        cap=retry_cap)``, and the job fails after ``max_attempts`` failures (retried for
        ever with None). Raises ValueError for a kind registered already."""
        if kind in self._kinds:
            raise ValueError(f"Job kind {kind!r} has a handler already; register it once.")
        if lease <= 0:
            raise ValueError(f"The lease of job kind {kind!r} must be positive, not {lease}.")
        self._kinds[kind] = _Kind(handler, lease, max_attempts, retry_base, retry_cap)

    def wake(self) -> None:
        """Tell the runner a job may be due (thread-safe, cheap)."""
        self._wake.set()

    # -- loops ----------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, kinds: Collection[str] | None = None) -> None:
        """Run due jobs (of ``kinds``, every registered kind by default) until ``stop`` is
        set; the job in hand is finished first. One thread per kind keeps a long job (a
        reconciliation) from holding up the others."""
        _log.info(
            "job_runner_started", worker_id=self.worker_id, kinds=sorted(kinds or self._kinds)
        )
        while not stop.is_set():
            ran = 0
            try:
                self._wake.clear()
                ran = self.run_due(stop=stop, kinds=kinds)
            except StoreUnavailable as exc:
                _log.error("store_unavailable", error=exc.message)
            except Exception:
                # The loop must outlive any one failure, or deferred work silently stops.
                _log.exception("job_runner_loop_error")
            if ran < self._batch:
                self._wake.wait(self._poll_interval)
        _log.info("job_runner_stopped", worker_id=self.worker_id)

    def run_due(
        self,
        limit: int | None = None,
        *,
        stop: threading.Event | None = None,
        kinds: Collection[str] | None = None,
    ) -> int:
        """Run up to ``limit`` due jobs (the batch size by default) of ``kinds`` (every
        registered kind by default), claiming each just before it runs, so that its lease
        covers it alone; returns how many ran. Stops early once ``stop`` is set."""
        limit = self._batch if limit is None else limit
        self._reap()
        ran = 0
        for name, kind in self._kinds.items():
            if kinds is not None and name not in kinds:
                continue
            while ran < limit and not (stop is not None and stop.is_set()):
                claimed = self._jobs.claim(
                    kinds=[name], limit=1, lease=kind.lease, worker_id=self.worker_id
                )
                if not claimed:
                    break
                self._run(claimed[0])
                ran += 1
        return ran

    def run_until_idle(self, max_rounds: int = 1000) -> int:
        """Run due jobs until none is due (for tests); returns how many ran."""
        total = 0
        for _ in range(max_rounds):
            ran = self.run_due()
            if not ran:
                return total
            total += ran
        raise RuntimeError(f"Jobs were still due after {max_rounds} rounds.")

    # -- one job --------------------------------------------------------------------------

    def _run(self, job: Job) -> None:
        kind = self._kinds[job.kind]
        log = _log.bind(job_id=job.id, job_kind=job.kind, job_key=job.key)
        try:
            outcome = kind.handler(job)
        except Exception as exc:
            self._failed(job, kind, exc, traceback.format_exc(), log)
            return
        if outcome is None:
            recorded = self._jobs.complete(job)
            if recorded:
                log.info("job_done", attempts=job.attempts + 1)
        else:
            recorded = self._jobs.again(job, at=outcome.at)
            if recorded:
                log.info("job_scheduled", due_at=outcome.at.isoformat())
        if not recorded:
            log.warning("job_claim_lost", action="none")

    def _failed(self, job: Job, kind: _Kind, exc: Exception, error: str, log: Any) -> None:
        failures = job.attempts + 1
        reason = f"{type(exc).__name__}: {exc}"
        if kind.max_attempts is not None and failures >= kind.max_attempts:
            if self._jobs.fail(job, error=error):
                log.error("job_failed", attempts=failures, error=reason)
            else:
                log.warning("job_claim_lost", action="none")
            return
        delay = backoff_delay(failures, base=kind.retry_base, cap=kind.retry_cap)
        at = self._clock.now() + timedelta(seconds=delay)
        if self._jobs.retry(job, at=at, error=error):
            log.warning("job_retry", attempts=failures, delay_seconds=round(delay, 1), error=reason)
        else:
            log.warning("job_claim_lost", action="none")

    def _reap(self) -> None:
        now = self._clock.now()
        every = min([_REAP_EVERY, *(kind.lease for kind in self._kinds.values())])
        if self._last_reap is not None and (now - self._last_reap).total_seconds() < every:
            return
        self._last_reap = now
        if expired := self._jobs.expire_leases(self.kinds):
            _log.warning("job_leases_expired", released=expired)
