"""The job runner on the in-memory queue: what each outcome of a handler does to its job."""

from __future__ import annotations

from datetime import timedelta

import pytest
from structlog.testing import capture_logs

from payherald.jobs import Job, JobRunner, RunAgain
from payherald.store.statuses import JobStatus
from payherald.testing import FrozenClock, InMemoryJobs

BASE = 10.0


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def jobs(clock: FrozenClock) -> InMemoryJobs:
    return InMemoryJobs(clock=clock)


@pytest.fixture
def runner(jobs: InMemoryJobs, clock: FrozenClock) -> JobRunner:
    return JobRunner(jobs=jobs, clock=clock, worker_id="test")


def status(jobs: InMemoryJobs, key: str) -> JobStatus:
    job = jobs.get(key)
    assert job is not None
    return job.status


def test_a_handler_that_returns_none_leaves_its_job_done(
    jobs: InMemoryJobs, runner: JobRunner
) -> None:
    ran: list[Job] = []
    runner.register("note", ran.append)
    jobs.enqueue("note", "note:1", {"n": 1})
    with capture_logs() as logs:
        assert runner.run_until_idle() == 1
    assert [job.payload for job in ran] == [{"n": 1}]
    assert status(jobs, "note:1") == JobStatus.DONE
    assert [line["event"] for line in logs] == ["job_done"]
    assert logs[0]["job_key"] == "note:1"


def test_run_again_makes_a_recurring_job_due_again_at_that_time(
    jobs: InMemoryJobs, runner: JobRunner, clock: FrozenClock
) -> None:
    ran: list[str] = []

    def every_hour(job: Job) -> RunAgain:
        ran.append(job.key)
        return RunAgain(clock.now() + timedelta(hours=1))

    runner.register("scan", every_hour)
    assert jobs.ensure_recurring("scan", "scan", {})
    assert not jobs.ensure_recurring("scan", "scan", {})  # there is one
    assert runner.run_until_idle() == 1
    job = jobs.get("scan")
    assert job is not None
    assert (job.status, job.due_at) == (JobStatus.PENDING, clock.now() + timedelta(hours=1))
    clock.advance(3599)
    assert runner.run_until_idle() == 0
    clock.advance(1)
    assert runner.run_until_idle() == 1
    assert ran == ["scan", "scan"]


def test_a_handler_that_raises_is_retried_after_backoff_with_its_traceback_kept(
    jobs: InMemoryJobs, runner: JobRunner, clock: FrozenClock
) -> None:
    answers: list[Exception | None] = [ValueError("the peer said no"), None]

    def flaky(job: Job) -> None:
        answer = answers.pop(0)
        if answer is not None:
            raise answer

    runner.register("flaky", flaky, retry_base=BASE, retry_cap=600)
    jobs.enqueue("flaky", "flaky:1", {})
    started = clock.now()
    with capture_logs() as logs:
        assert runner.run_until_idle() == 1
    job = jobs.get("flaky:1")
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.PENDING, 1)
    assert started + timedelta(seconds=BASE / 2) <= job.due_at <= started + timedelta(seconds=BASE)
    assert job.last_error is not None
    assert job.last_error.startswith("Traceback (most recent call last)")
    assert "ValueError: the peer said no" in job.last_error
    assert logs[0]["event"] == "job_retry"
    assert logs[0]["attempts"] == 1
    clock.advance(BASE)
    assert runner.run_until_idle() == 1
    assert status(jobs, "flaky:1") == JobStatus.DONE


def test_a_job_fails_after_max_attempts(
    jobs: InMemoryJobs, runner: JobRunner, clock: FrozenClock
) -> None:
    calls: list[int] = []

    def broken(job: Job) -> None:
        calls.append(job.attempts)
        raise RuntimeError("still broken")

    runner.register("broken", broken, max_attempts=3, retry_base=BASE, retry_cap=BASE)
    jobs.enqueue("broken", "broken:1", {})
    for _ in range(5):
        runner.run_until_idle()
        clock.advance(BASE)
    job = jobs.get("broken:1")
    assert job is not None
    assert (job.status, job.attempts, calls) == (JobStatus.FAILED, 3, [0, 1, 2])
    assert job.last_error is not None
    assert "RuntimeError: still broken" in job.last_error


def test_a_duplicate_key_is_enqueued_once(jobs: InMemoryJobs, runner: JobRunner) -> None:
    ran: list[Job] = []
    runner.register("note", ran.append)
    assert jobs.enqueue("note", "note:1", {"n": 1})
    assert not jobs.enqueue("note", "note:1", {"n": 2})
    runner.run_until_idle()
    assert not jobs.enqueue("note", "note:1", {"n": 3})  # done is still there
    runner.run_until_idle()
    assert [job.payload for job in ran] == [{"n": 1}]


def test_kinds_without_a_handler_are_not_claimed(jobs: InMemoryJobs, runner: JobRunner) -> None:
    ran: list[Job] = []
    runner.register("mine", ran.append)
    jobs.enqueue("theirs", "theirs:1", {})
    jobs.enqueue("mine", "mine:1", {})
    assert runner.run_until_idle() == 1
    assert [job.key for job in ran] == ["mine:1"]
    assert status(jobs, "theirs:1") == JobStatus.PENDING


def test_a_kind_registered_twice_raises(runner: JobRunner) -> None:
    runner.register("note", lambda job: None)
    with pytest.raises(ValueError, match="'note' has a handler already"):
        runner.register("note", lambda job: None)


def test_a_job_not_yet_due_waits(jobs: InMemoryJobs, runner: JobRunner, clock: FrozenClock) -> None:
    ran: list[Job] = []
    runner.register("later", ran.append)
    jobs.enqueue("later", "later:1", {}, due_at=clock.now() + timedelta(days=3))
    assert runner.run_until_idle() == 0
    clock.advance(3 * 86400)
    assert runner.run_until_idle() == 1


def test_oldest_due_runs_first(jobs: InMemoryJobs, runner: JobRunner, clock: FrozenClock) -> None:
    ran: list[str] = []
    runner.register("note", lambda job: ran.append(job.key))
    now = clock.now()
    jobs.enqueue("note", "b", {}, due_at=now - timedelta(minutes=1))
    jobs.enqueue("note", "a", {}, due_at=now - timedelta(minutes=5))
    jobs.enqueue("note", "c", {}, due_at=now)
    runner.run_until_idle()
    assert ran == ["a", "b", "c"]


def test_a_stalled_worker_cannot_move_a_job_claimed_again(
    jobs: InMemoryJobs, clock: FrozenClock
) -> None:
    jobs.enqueue("note", "note:1", {})
    (stalled,) = jobs.claim(kinds={"note"}, limit=1, lease=30, worker_id="a")
    clock.advance(31)
    assert jobs.expire_leases() == 1
    (current,) = jobs.claim(kinds={"note"}, limit=1, lease=30, worker_id="b")
    assert not jobs.complete(stalled)
    assert not jobs.retry(stalled, at=clock.now(), error="late")
    assert jobs.complete(current)
    assert status(jobs, "note:1") == JobStatus.DONE


def test_a_recurring_job_that_stopped_is_revived_when_ensured(
    jobs: InMemoryJobs, runner: JobRunner
) -> None:
    runner.register("scan", lambda job: None)  # returned None: done, not again
    jobs.ensure_recurring("scan", "scan", {})
    runner.run_until_idle()
    assert status(jobs, "scan") == JobStatus.DONE
    assert jobs.ensure_recurring("scan", "scan", {})
    assert status(jobs, "scan") == JobStatus.PENDING
