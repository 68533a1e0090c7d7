"""The job queue on SQLite and PostgreSQL: due work runs when due, once; a failure is retried
with its traceback kept; a killed worker's jobs run once more, elsewhere, after their lease;
workers in several processes share the queue and run each job once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

import payherald
from payherald import FrozenClock, SystemClock
from payherald.jobs import Job, JobRunner
from payherald.store import Store
from payherald.store.engine import create_store_engine, migrate
from payherald.store.statuses import JobStatus

SRC = Path(payherald.__file__).resolve().parents[1]
WEEK = 7 * 86400.0

# A worker process: ``block`` claims the due jobs and hangs in the first handler (to be
# killed); ``record`` runs jobs until none is left, each run recorded in the table ``ran``.
WORKER = """
import logging, os, sys, threading, time
import structlog
from sqlalchemy import text
from payherald import SystemClock
from payherald.jobs import JobRunner
from payherald.store import Store
from payherald.store.engine import create_store_engine

url, mode, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
engine = create_store_engine(url)
store = Store(engine=engine, clock=SystemClock())
runner = JobRunner(jobs=store.jobs, clock=SystemClock(), worker_id=f"{mode}-{os.getpid()}")

recorder = engine.connect()

def record(job):
    with recorder.begin():
        if engine.dialect.name == "postgresql":
            # The record need not survive a crash of the database: one fsync a job is enough.
            recorder.execute(text("SET LOCAL synchronous_commit TO OFF"))
        recorder.execute(
            text("INSERT INTO ran (key, pid) VALUES (:key, :pid)"),
            {"key": job.key, "pid": os.getpid()},
        )

if mode == "block":
    # Three runners' threads, each holding one job (a runner claims one job at a time).
    runner.register("work", lambda job: threading.Event().wait(120), lease=lease)
    for _ in range(3):
        threading.Thread(target=runner.run_due, kwargs={"limit": 1}).start()
else:
    runner.register("work", record, lease=lease)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if runner.run_due(limit=20) == 0:
            counts = store.jobs.counts()
            if counts["pending"] == 0 and counts["running"] == 0:
                break
            time.sleep(0.02)
"""


def url_for(database_url: str) -> str:
    return database_url.replace("postgresql://", "postgresql+psycopg://")


@pytest.fixture
def store(database_url: str, clock: FrozenClock) -> Iterator[Store]:
    engine = create_store_engine(url_for(database_url))
    migrate(engine)
    yield Store(engine=engine, clock=clock)
    engine.dispose()


@pytest.fixture
def live_store(database_url: str) -> Iterator[Store]:
    """The store on the real clock, for workers in other processes."""
    engine = create_store_engine(url_for(database_url))
    migrate(engine)
    yield Store(engine=engine, clock=SystemClock())
    engine.dispose()


@pytest.fixture
def worker_script(tmp_path: Path) -> Path:
    path = tmp_path / "job_worker.py"
    path.write_text(WORKER, encoding="utf-8")
    return path


def start_worker(script: Path, database_url: str, mode: str, lease: float) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    return subprocess.Popen(
        [sys.executable, str(script), url_for(database_url), mode, str(lease)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=10)


def wait_for(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"{what}: not after {timeout} s"
        time.sleep(0.02)


def test_a_job_due_in_a_week_runs_once_a_week_later(store: Store, clock: FrozenClock) -> None:
    ran: list[Job] = []
    runner = JobRunner(jobs=store.jobs, clock=clock, worker_id="test")
    runner.register("remind", ran.append)
    due = clock.now() + timedelta(seconds=WEEK)
    assert store.jobs.enqueue("remind", "remind:cus_1", {"customer": "cus_1"}, due_at=due)
    assert not store.jobs.enqueue("remind", "remind:cus_1", {"customer": "cus_2"}, due_at=due)
    assert runner.run_until_idle() == 0
    clock.advance(WEEK - 1)
    assert runner.run_until_idle() == 0
    clock.advance(1)
    assert runner.run_until_idle() == 1
    assert runner.run_until_idle() == 0
    clock.advance(WEEK)
    assert runner.run_until_idle() == 0
    assert [job.payload for job in ran] == [{"customer": "cus_1"}]
    job = store.jobs.get("remind:cus_1")
    assert job is not None
    assert job.status == JobStatus.DONE


def test_a_failing_handler_is_retried_with_backoff_and_its_traceback_kept(
    store: Store, clock: FrozenClock
) -> None:
    failures = [KeyError("customer")]

    def handler(job: Job) -> None:
        if failures:
            raise failures.pop()

    runner = JobRunner(jobs=store.jobs, clock=clock, worker_id="test")
    runner.register("remind", handler, retry_base=60, retry_cap=3600)
    store.jobs.enqueue("remind", "remind:1", {})
    started = clock.now()
    assert runner.run_until_idle() == 1
    job = store.jobs.get("remind:1")
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.PENDING, 1)
    assert started + timedelta(seconds=30) <= job.due_at <= started + timedelta(seconds=60)
    assert job.last_error is not None
    assert job.last_error.startswith("Traceback (most recent call last)")
    assert "KeyError: 'customer'" in job.last_error
    assert runner.run_until_idle() == 0  # not before its backoff
    clock.advance(60)
    assert runner.run_until_idle() == 1
    job = store.jobs.get("remind:1")
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.DONE, 1)


def test_a_killed_workers_jobs_run_once_elsewhere_after_their_lease(
    live_store: Store, database_url: str, worker_script: Path
) -> None:
    lease = 2.0
    keys = [f"work:{n}" for n in range(3)]
    for key in keys:
        live_store.jobs.enqueue("work", key, {})
    doomed = start_worker(worker_script, database_url, "block", lease)
    try:
        wait_for(
            lambda: live_store.jobs.counts()[JobStatus.RUNNING] == len(keys),
            timeout=20,
            what="the worker holds its jobs",
        )
        leases = {}
        for key in keys:
            job = live_store.jobs.get(key)
            assert job is not None
            assert job.lease_until is not None
            leases[key] = job.lease_until
        os.kill(doomed.pid, signal.SIGKILL)
        doomed.wait(timeout=10)
    finally:
        stop(doomed)

    clock = SystemClock()
    ran: list[tuple[str, datetime]] = []

    def record(job: Job) -> None:
        ran.append((job.key, clock.now()))

    runner = JobRunner(jobs=live_store.jobs, clock=clock, worker_id="survivor")
    runner.register("work", record, lease=lease)
    assert runner.run_due() == 0  # the killed worker's leases have not run out yet
    deadline = time.monotonic() + 15
    while len(ran) < len(keys):
        assert time.monotonic() < deadline, "the killed worker's jobs did not run again"
        if not runner.run_due():
            time.sleep(0.05)
    assert sorted(key for key, _ in ran) == keys  # each once
    for key, at in ran:
        assert at >= leases[key]
    time.sleep(0.1)
    assert runner.run_until_idle() == 0
    assert live_store.jobs.counts()[JobStatus.DONE] == len(keys)


def test_three_worker_processes_run_each_of_a_thousand_jobs_once(
    postgres_url: str, worker_script: Path
) -> None:
    engine = create_store_engine(url_for(postgres_url))
    migrate(engine)
    store = Store(engine=engine, clock=SystemClock())
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE ran (key VARCHAR(255) NOT NULL, pid INTEGER)"))
    keys = [f"work:{n}" for n in range(1000)]
    with store.db.transaction() as connection:
        for key in keys:
            store.jobs.enqueue_in(connection, "work", key, {"n": key})
    workers = [start_worker(worker_script, postgres_url, "record", 60.0) for _ in range(3)]
    try:
        for worker in workers:
            _, stderr = worker.communicate(timeout=90)
            assert worker.returncode == 0, stderr
    finally:
        for worker in workers:
            stop(worker)
    with engine.connect() as connection:
        total, distinct = connection.execute(
            text("SELECT count(*), count(DISTINCT key) FROM ran")
        ).one()
    assert (total, distinct) == (1000, 1000)
    assert store.jobs.counts()[JobStatus.DONE] == 1000
    engine.dispose()


def test_jobs_are_counted_by_status_for_metrics(store: Store, clock: FrozenClock) -> None:
    from payherald.metrics import Metrics

    runner = JobRunner(jobs=store.jobs, clock=clock, worker_id="test")
    runner.register("remind", lambda job: None)
    store.jobs.enqueue("remind", "remind:1", {})
    store.jobs.enqueue("remind", "remind:2", {}, due_at=clock.now() + timedelta(days=1))
    runner.run_until_idle()
    registry = Metrics(store=store).registry
    counts = {
        status.value: registry.get_sample_value("payherald_jobs", {"status": status.value})
        for status in JobStatus
    }
    assert counts == {"pending": 1.0, "running": 0.0, "done": 1.0, "failed": 0.0}
