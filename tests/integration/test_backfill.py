"""Backfill and gap reconciliation against localstripe: events created while
payherald was down are brought in once; what was delivered before is not sent again."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import stripe

from payherald import FrozenClock
from payherald.backfill import RECONCILE_JOB, Backfill, BackfillError, Reconciler, parse_since
from payherald.jobs import JobRunner
from payherald.metrics import Metrics
from payherald.renewals import RENEWAL_SCAN_JOB
from payherald.store.consents import WRITE_BACK_JOB
from payherald.store.questions import ANSWER_JOB, TIMEOUT_JOB
from payherald.store.statuses import JobStatus
from payherald.testing import ScriptedChannel
from tests import peers
from tests.acceptance.test_cli import cli
from tests.support import SECRET, LiveServer, build_for_tests

PHONES = ("+14155550123", "+14155550124", "+14155550125")


def stripe_settings(localstripe: peers.LocalStripe) -> dict[str, str]:
    return {"STRIPE_SECRET_KEY": "sk_test_payherald", "STRIPE_API_BASE": localstripe.url}


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not true after {timeout} s"
        time.sleep(0.05)


def confirmations(sms: ScriptedChannel) -> list[str]:
    return sorted(m.to for m in sms.delivered if m.body.startswith("Payment of"))


@pytest.fixture
def gap(tmp_path: Path, localstripe: peers.LocalStripe, sms: ScriptedChannel) -> Any:
    """One payment delivered and sent; then payherald goes down and two more happen."""
    localstripe.flush()
    database = f"sqlite:///{tmp_path / 'payherald.db'}"
    # localstripe's events are test-mode: the allowlist lets them reach the SMS channel.
    settings = {**stripe_settings(localstripe), "PAYHERALD_TEST_ALLOWLIST": ",".join(PHONES)}
    ph = build_for_tests(database, settings=settings, channels={"sms": sms})
    client = localstripe.stripe_client()
    with LiveServer(ph.http_app) as server:
        localstripe.register_webhook(
            "gap", f"{server.url}/webhooks/stripe", SECRET, events=["payment_intent.succeeded"]
        )
        peers.create_customer_and_succeeded_payment(client, PHONES[0])
        wait_for(lambda: ph.store.list_events(type="payment_intent.succeeded"))
        ph.worker.run_until_idle()
        # payherald goes down: Stripe's deliveries fail from here on.
        localstripe.register_webhook("gap", "http://127.0.0.1:9/", SECRET, events=["x.y"])
    assert confirmations(sms) == [PHONES[0]]
    for phone in PHONES[1:]:
        peers.create_customer_and_succeeded_payment(client, phone)
    ph.database = database
    yield ph
    ph.engine.dispose()


def test_backfill_recovers_the_gap_with_no_duplicates(
    gap: Any, localstripe: peers.LocalStripe, sms: ScriptedChannel, tmp_path: Path
) -> None:
    env = {**stripe_settings(localstripe), "PAYHERALD_DATABASE_URL": gap.database}
    first = cli(tmp_path, "backfill", "--since", "1h", **env)
    assert first.returncode == 0, first.stderr
    assert "2 new, 1 already seen" in first.stdout
    gap.worker.run_until_idle()
    assert confirmations(sms) == sorted(PHONES)  # each payment confirmed once
    again = cli(tmp_path, "backfill", "--since", "1h", **env)
    assert "0 new, 3 already seen" in again.stdout
    assert "0 notifications queued" in again.stdout
    gap.worker.run_until_idle()
    assert confirmations(sms) == sorted(PHONES)


def test_a_dry_run_changes_nothing(
    gap: Any, localstripe: peers.LocalStripe, sms: ScriptedChannel, tmp_path: Path
) -> None:
    env = {**stripe_settings(localstripe), "PAYHERALD_DATABASE_URL": gap.database}
    result = cli(tmp_path, "backfill", "--since", "1h", "--dry-run", **env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Dry run:")
    assert "2 would be new" in result.stdout
    assert len(gap.store.list_events(type="payment_intent.succeeded")) == 1


def test_the_scheduled_reconciliation_handles_what_stripe_never_delivered(
    gap: Any, localstripe: peers.LocalStripe, sms: ScriptedChannel
) -> None:
    metrics = Metrics()
    reconciler = Reconciler(
        backfill=Backfill(
            store=gap.store,
            rules=gap.rules,
            client=localstripe.stripe_client(),
            clock=gap.store.clock,
        ),
        store=gap.store,
        clock=gap.store.clock,
        interval=3600,
        metrics=metrics,
    )
    assert reconciler.run_once().new == 2
    assert gap.store.meta.get("last_reconciled_at") is not None
    assert reconciler.run_once().new == 0
    # Two runs, and the two events no webhook delivered: what an operator alerts on.
    assert reconciled(metrics) == {"ok": 2.0, "failed": 0.0, "recovered": 2.0}
    gap.worker.run_until_idle()
    assert confirmations(sms) == sorted(PHONES)


def test_bad_since_is_one_line(tmp_path: Path) -> None:
    for since, words in (
        ("yesterday", "is neither a duration"),
        ("40d", "more than 30 days ago"),
        ("2999-01-01", "is in the future"),
    ):
        result = cli(tmp_path, "backfill", "--since", since, STRIPE_SECRET_KEY="sk_test_x1y2z3")
        assert result.returncode == 2
        assert words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


# -- the paging loop, with a stand-in for the SDK's events service ---------------------


class Pages:
    """``client.v1.events`` over fixed pages; fails as scripted, records each request."""

    def __init__(self, pages: list[list[dict[str, Any]]], failures: dict[int, Exception]) -> None:
        self.pages, self.failures = pages, failures
        self.requests: list[dict[str, Any]] = []

    def list(self, params: dict[str, Any]) -> Any:
        self.requests.append(dict(params))
        if len(self.requests) in self.failures:
            raise self.failures[len(self.requests)]
        after = params.get("starting_after")
        index = (
            0
            if after is None
            else 1 + next(i for i, page in enumerate(self.pages) if page[-1]["id"] == after)
        )
        data = [SimpleNamespace(id=e["id"], to_dict=lambda e=e: e) for e in self.pages[index]]
        return SimpleNamespace(data=data, has_more=index + 1 < len(self.pages))


def stripe_event(index: int) -> dict[str, Any]:
    from payherald.simulate import build_event

    event = build_event("payment_intent.succeeded", now=FrozenClock().now(), livemode=True)
    event["id"] = f"evt_{index}"
    return json.loads(json.dumps(event))


def backfill_with(pages: Pages, database_url: str) -> tuple[Backfill, Any]:
    ph = build_for_tests(database_url)
    client: Any = SimpleNamespace(v1=SimpleNamespace(events=pages))
    return Backfill(
        store=ph.store, rules=ph.rules, client=client, clock=ph.store.clock, sleep=lambda s: None
    ), ph


def test_a_failing_page_is_retried_from_the_same_cursor(sqlite_url: str) -> None:
    pages = Pages(
        [[stripe_event(1), stripe_event(2)], [stripe_event(3)]],
        {2: stripe.APIConnectionError("reset"), 3: stripe.APIError("500")},
    )
    job, ph = backfill_with(pages, sqlite_url)
    summary = job.run(FrozenClock().now())
    assert (summary.new, summary.retries, summary.pages) == (3, 2, 2)
    cursors = [request.get("starting_after") for request in pages.requests]
    assert cursors == [None, "evt_2", "evt_2", "evt_2"]  # never from the start again
    ph.engine.dispose()


def test_a_key_without_permission_says_so(sqlite_url: str) -> None:
    refused = stripe.PermissionError("The provided key does not have access to events.")
    job, ph = backfill_with(Pages([[stripe_event(1)]], {1: refused}), sqlite_url)
    with pytest.raises(BackfillError, match="read access to Events"):
        job.run(FrozenClock().now())
    ph.engine.dispose()


def test_stripe_staying_down_stops_with_what_to_do(sqlite_url: str) -> None:
    down = {n: stripe.APIConnectionError("down") for n in range(2, 20)}
    job, ph = backfill_with(Pages([[stripe_event(1)], [stripe_event(2)]], down), sqlite_url)
    with pytest.raises(BackfillError, match="Run the same backfill again") as raised:
        job.run(FrozenClock().now())
    assert "after evt_1" in raised.value.message
    assert ph.store.has_event("evt_1")  # what was fetched is kept
    ph.engine.dispose()


def test_a_failed_reconciliation_is_counted(sqlite_url: str) -> None:
    refused = stripe.PermissionError("The provided key does not have access to events.")
    job, ph = backfill_with(Pages([[stripe_event(1)]], {1: refused}), sqlite_url)
    metrics = Metrics()
    reconciler = Reconciler(
        backfill=job, store=ph.store, clock=ph.store.clock, interval=3600, metrics=metrics
    )
    with pytest.raises(BackfillError):
        reconciler.run_once()
    assert reconciled(metrics) == {"ok": 0.0, "failed": 1.0, "recovered": 0.0}
    assert ph.store.meta.get("last_reconciled_at") is None  # the next run covers the gap
    ph.engine.dispose()


def reconciled(metrics: Metrics) -> dict[str, float]:
    registry = metrics.registry
    return {
        result: registry.get_sample_value("payherald_reconciliations_total", {"result": result})
        or 0.0
        for result in ("ok", "failed")
    } | {"recovered": registry.get_sample_value("payherald_recovered_events_total") or 0.0}


def test_since_accepts_durations_and_dates() -> None:
    now = FrozenClock().now()
    assert (now - parse_since("24h", now=now)).total_seconds() == 86400
    assert (now - parse_since("90m", now=now)).total_seconds() == 5400
    day = now.date().isoformat()
    assert parse_since(day, now=now).isoformat().startswith(day)


def test_the_worker_runs_the_scheduled_reconciliation_as_a_recurring_job(
    gap: Any, localstripe: peers.LocalStripe, sms: ScriptedChannel
) -> None:
    settings = {
        **stripe_settings(localstripe),
        "PAYHERALD_TEST_ALLOWLIST": ",".join(PHONES),
        "PAYHERALD_RECONCILE_INTERVAL_SECONDS": "3600",
    }
    ph = build_for_tests(gap.database, settings=settings, channels={"sms": sms})
    assert RECONCILE_JOB in ph.jobs.kinds
    started = ph.store.clock.now()
    ph.start_worker()
    try:
        wait_for(lambda: confirmations(sms) == sorted(PHONES))
        job = ph.store.jobs.get(RECONCILE_JOB)
        assert job is not None
        assert job.status == JobStatus.PENDING
        assert job.due_at >= started + timedelta(seconds=3600)  # and again in an hour
        assert ph.store.meta.get("last_reconciled_at") is not None
    finally:
        ph.stop()
        ph.engine.dispose()


def test_the_reconciliation_job_runs_again_after_its_interval_and_retries_a_failure(
    sqlite_url: str,
) -> None:
    clock = FrozenClock()
    refused = stripe.APIError("500")
    pages = Pages([[stripe_event(1)]], {1: refused})
    ph = build_for_tests(sqlite_url, clock=clock)
    client: Any = SimpleNamespace(v1=SimpleNamespace(events=pages))
    backfill = Backfill(store=ph.store, rules=ph.rules, client=client, clock=clock, max_retries=0)
    metrics = Metrics()
    reconciler = Reconciler(
        backfill=backfill, store=ph.store, clock=clock, interval=3600, metrics=metrics
    )
    runner = JobRunner(jobs=ph.store.jobs, clock=clock, worker_id="test")
    runner.register(RECONCILE_JOB, reconciler.run_job, max_attempts=None, retry_base=60)
    ph.store.jobs.ensure_recurring(RECONCILE_JOB, RECONCILE_JOB, {})
    assert runner.run_until_idle() == 1
    job = ph.store.jobs.get(RECONCILE_JOB)
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.PENDING, 1)
    assert job.last_error is not None
    assert "BackfillError" in job.last_error
    assert reconciled(metrics) == {"ok": 0.0, "failed": 1.0, "recovered": 0.0}
    clock.advance(60)
    assert runner.run_until_idle() == 1  # Stripe answers this time
    job = ph.store.jobs.get(RECONCILE_JOB)
    assert job is not None
    assert (job.status, job.attempts) == (JobStatus.PENDING, 0)
    assert job.due_at == clock.now() + timedelta(seconds=3600)
    assert ph.store.has_event("evt_1")
    assert ph.store.meta.get("last_reconciled_at") == clock.now().isoformat()
    assert reconciled(metrics) == {"ok": 1.0, "failed": 1.0, "recovered": 1.0}
    clock.advance(3599)
    assert runner.run_until_idle() == 0
    ph.engine.dispose()


def test_the_reconciliation_is_registered_only_when_turned_on(sqlite_url: str) -> None:
    on = build_for_tests(
        sqlite_url,
        settings={
            "STRIPE_SECRET_KEY": "sk_test_x1y2z3",
            "PAYHERALD_RECONCILE_INTERVAL_SECONDS": "60",
        },
    )
    always = {WRITE_BACK_JOB, RENEWAL_SCAN_JOB, ANSWER_JOB, TIMEOUT_JOB}
    assert on.jobs.kinds == {RECONCILE_JOB, *always}
    on.engine.dispose()
    off = build_for_tests(sqlite_url, settings={"STRIPE_SECRET_KEY": "sk_test_x1y2z3"})
    # Opt-outs are still written back, renewals scanned for, and answers acted on.
    assert off.jobs.kinds == always
    off.engine.dispose()
