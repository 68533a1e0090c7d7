"""The daily digest on a moved clock, on SQLite and PostgreSQL: a day of events posted over
HTTP as Stripe sends them (today's API shapes), the figures the digest counts of it, and
the digest's message to the finance team, sent once at 08:00 New York time whatever runs
again, restarts or was down."""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from payherald import FrozenClock
from payherald.digest import DIGEST_JOB, DIGEST_RULE, day_bounds
from payherald.exceptions import TransientDeliveryError
from payherald.replay import replay
from payherald.simulate import (
    build_event,
    build_failure_events,
    build_renewal_failure_events,
    build_subscription_payment_events,
)
from payherald.store.digest import DigestFigures, Tally
from payherald.testing import ScriptedChannel
from tests.support import LiveServer, StripeOnLoopback, build_for_tests

NEW_YORK = ZoneInfo("America/New_York")
DAY = date(2026, 12, 2)
TEAM_PHONE = "+14155550100"
CUSTOMER = "+14155550123"
RULES = f"""
timezone = "America/New_York"

[teams.finance]
sms = ["{TEAM_PHONE}"]
email = ["finance@example.com"]

[digest]
at = "08:00"
"""
_ids = itertools.count(1)


def local(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hour, minute, tzinfo=NEW_YORK).astimezone(UTC)


class Stripe(StripeOnLoopback):
    def to(self, when: datetime) -> None:
        """Move the clock to ``when`` (later), the worker doing what falls due at the end."""
        self.clock.advance((when - self.clock.now()).total_seconds())
        self.ph.worker.run_until_idle()

    def post(self, *events: dict[str, Any]) -> None:
        for event in events:
            self.send(event)

    def digests(self, day: date | None = None) -> list[dict[str, Any]]:
        """The digest's notifications (of ``day`` only), oldest first."""
        return digests_in(self.ph, day)


def digests_in(ph: Any, day: date | None = None) -> list[dict[str, Any]]:
    rows = [r for r in ph.store.list_notifications(limit=1000) if r["rule"] == DIGEST_RULE]
    if day is not None:
        rows = [r for r in rows if r["key"].split(":")[3] == day.isoformat()]
    return sorted(rows, key=lambda r: r["id"])


def _build(database_url: str, rules: Path, clock: FrozenClock, channels: dict[str, Any]) -> Any:
    return build_for_tests(
        database_url,
        settings={"PAYHERALD_CONFIG": str(rules), "PAYHERALD_LINK_GRACE_SECONDS": "0"},
        clock=clock,
        channels=channels,
    )


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "payherald.toml"
    path.write_text(RULES)
    return path


@pytest.fixture
def email() -> ScriptedChannel:
    return ScriptedChannel("email")


@pytest.fixture
def stripe(database_url: str, rules: Path, email: ScriptedChannel) -> Iterator[Stripe]:
    clock, sms = FrozenClock(local(DAY, 0) - timedelta(hours=4)), ScriptedChannel()
    ph = _build(database_url, rules, clock, {"sms": sms, "email": email})
    with LiveServer(ph.http_app) as server, Stripe(ph, server, clock, sms) as stripe:
        yield stripe
    ph.engine.dispose()


def about(event: dict[str, Any], event_type: str, **changes: Any) -> dict[str, Any]:
    """An event of ``event_type`` about ``event``'s object, as it is now (``changes``)."""
    later = copy.deepcopy(event)
    later.update(id=f"evt_digest_test_{next(_ids)}", type=event_type)
    later["data"]["object"].update(changes)
    later["data"].pop("previous_attributes", None)
    return later


def live(event_type: str, stripe: Stripe, **options: Any) -> dict[str, Any]:
    options = {"phone": CUSTOMER, "livemode": True, **options}
    return build_event(event_type, now=stripe.clock.now(), **options)


def a_day_of_events(stripe: Stripe) -> None:
    """The events of the day before DAY (one payment), of DAY (below), and of the day after
    (one payment), before DAY's digest is due."""
    stripe.to(local(DAY, 0) - timedelta(hours=1))  # 23:00 the day before
    stripe.post(live("payment_intent.succeeded", stripe, amount=9900))
    stripe.to(local(DAY, 0, 1))
    # A subscription's payment, reported by three events (and the invoice payment that
    # links the invoice to the payment intent): one payment of $20.00.
    stripe.post(*build_subscription_payment_events(now=stripe.clock.now(), livemode=True))
    stripe.post(live("charge.succeeded", stripe, amount=500))
    stripe.post(live("payment_intent.succeeded", stripe, amount=1500, currency="eur"))
    # A declined card: its payment intent's and its charge's failure, one failure.
    stripe.post(*build_failure_events(now=stripe.clock.now(), livemode=True, amount=3000))
    # A refund of $7.00, told by refund.created; today's charge.refunded adds nothing.
    refunded = live("charge.refunded", stripe, amount=700)
    stripe.post(live("refund.created", stripe, amount=700), refunded)
    stripe.post(live("charge.dispute.created", stripe, amount=4000))
    created = about(live("customer.subscription.updated", stripe), "customer.subscription.created")
    stripe.post(created, live("customer.subscription.deleted", stripe))
    # Three renewals declined ($50.00 each): one still unpaid, one paid, one voided.
    renewals = [
        build_renewal_failure_events(now=stripe.clock.now(), livemode=True, amount=5000)
        for _ in range(3)
    ]
    for events in renewals:
        stripe.post(*events)
    stripe.to(local(DAY, 15))
    paid, voided = renewals[1][0], renewals[2][0]
    stripe.post(about(paid, "invoice.paid", status="paid", amount_paid=5000, amount_remaining=0))
    stripe.post(about(voided, "invoice.voided", status="void"))
    # Test mode: none of it counts.
    stripe.post(
        build_event("payment_intent.succeeded", now=stripe.clock.now(), amount=100_000),
        build_event("charge.dispute.created", now=stripe.clock.now()),
    )
    stripe.to(local(DAY, 23, 59))
    stripe.post(live("refund.created", stripe, amount=100, currency="eur"))
    stripe.to(local(date(2026, 12, 3), 0, 0))
    stripe.post(live("payment_intent.succeeded", stripe, amount=7700))
    stripe.post(live("refund.created", stripe, amount=7700))


def test_the_figures_count_each_thing_of_the_day_once(stripe: Stripe) -> None:
    a_day_of_events(stripe)
    since, until = day_bounds(DAY, NEW_YORK)
    figures = stripe.ph.store.digest.figures(since=since, until=until, livemode=True)
    assert figures == DigestFigures(
        # $20.00 (three events), $5.00, and the renewal paid in dunning ($50.00); €15.00
        payments=Tally({"eur": 1, "usd": 3}, {"eur": 1500, "usd": 7500}),
        # the declined card, and the three renewals' payment attempts
        failed=Tally({"usd": 4}, {"usd": 18000}),
        refunds=Tally({"eur": 1, "usd": 1}, {"eur": 100, "usd": 700}),
        disputes=Tally({"usd": 1}, {"usd": 4000}),
        new_subscriptions=1,
        cancelled_subscriptions=1,
        dunning_open=Tally({"usd": 1}, {"usd": 5000}),
        recovered=Tally({"usd": 1}, {"usd": 5000}),
        dunning_ended=1,
    )


def test_test_mode_figures_are_apart(stripe: Stripe) -> None:
    a_day_of_events(stripe)
    since, until = day_bounds(DAY, NEW_YORK)
    figures = stripe.ph.store.digest.figures(since=since, until=until, livemode=False)
    assert figures.payments == Tally({"usd": 1}, {"usd": 100_000})
    assert figures.disputes.count == 1
    assert figures.failed.count == figures.refunds.count == figures.dunning_open.count == 0


def test_the_digest_goes_to_the_team_once_at_eight(stripe: Stripe, email: ScriptedChannel) -> None:
    stripe.ph.digest.ensure()
    a_day_of_events(stripe)
    # The day before's went out at 08:00 on DAY.
    assert [r["key"].split(":")[3] for r in stripe.digests()] == ["2026-12-01"]
    stripe.to(local(date(2026, 12, 3), 7, 59))
    assert stripe.digests(DAY) == []
    stripe.to(local(date(2026, 12, 3), 8, 0))
    (sent,) = stripe.digests(DAY)
    assert (sent["status"], sent["channel"], sent["to"]) == ("sent", "email", "finance@example.com")
    (message,) = [m for m in email.delivered if m.body.startswith("Daily digest for Dec 2")]
    assert message.body == (
        "Daily digest for Dec 2, 2026 (America/New_York, live mode). Payments: 4 (€15.00, "
        "$75.00). Failed payments: 4 ($180.00). Refunds: 2 (€1.00, $7.00). Disputes: 1 "
        "($40.00). Subscriptions: 1 new, 1 cancelled. Dunning: 1 open at the end of the day "
        "($50.00 due); 1 recovered ($50.00); 1 ended unpaid."
    )
    # The job again, and a worker that restarts, the same day: nothing more.
    stripe.ph.digest.ensure()
    job = stripe.ph.store.jobs.get(stripe.ph.digest.key)
    assert job is not None
    assert job.due_at == local(date(2026, 12, 4), 8, 0)
    stripe.ph.digest.record(DAY)
    stripe.to(local(date(2026, 12, 3), 20, 0))
    assert len(stripe.digests(DAY)) == 1
    stripe.to(local(date(2026, 12, 4), 8, 0))
    assert [row["key"].split(":")[3] for row in stripe.digests()] == [
        "2026-12-01",
        "2026-12-02",
        "2026-12-03",
    ]


def test_a_digest_due_while_payherald_was_down_goes_once_after_start(
    database_url: str, rules: Path, stripe: Stripe, email: ScriptedChannel
) -> None:
    stripe.to(local(DAY, 12))
    stripe.ph.digest.ensure()  # as start_worker does: due at 08:00 tomorrow
    stripe.post(live("payment_intent.succeeded", stripe, amount=1200))
    # Down from DAY's noon to the next day's 11:00, past the digest's 08:00.
    stripe.clock.advance((local(date(2026, 12, 3), 11) - stripe.clock.now()).total_seconds())
    assert stripe.digests() == []
    again = _build(database_url, rules, stripe.clock, {"email": email})
    try:
        again.digest.ensure()  # as start_worker does
        again.worker.run_until_idle()
        again.worker.run_until_idle()
        rows = digests_in(again)
        assert [(r["status"], r["key"].split(":")[3]) for r in rows] == [("sent", "2026-12-02")]
        job = again.store.jobs.get(again.digest.key)
        assert job is not None
        assert job.kind == DIGEST_JOB
        assert job.due_at == local(date(2026, 12, 4), 8, 0)
    finally:
        again.engine.dispose()
    (message,) = [m for m in email.delivered if m.body.startswith("Daily digest")]
    assert "Payments: 1 ($12.00)" in message.body


def test_an_sms_team_gets_the_short_text(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "sms.toml"
    path.write_text(RULES + 'channels = ["sms"]\n')
    clock, sms = FrozenClock(local(DAY, 12)), ScriptedChannel()
    ph = _build(database_url, path, clock, {"sms": sms})
    try:
        with LiveServer(ph.http_app) as server, Stripe(ph, server, clock, sms) as stripe:
            stripe.post(live("payment_intent.succeeded", stripe, amount=2000))
            stripe.post(live("payment_intent.succeeded", stripe, amount=300, currency="jpy"))
            ph.digest.ensure()
            stripe.to(local(date(2026, 12, 3), 8))
    finally:
        ph.engine.dispose()
    (message,) = [m for m in sms.delivered if m.to == TEAM_PHONE]
    assert message.body == (
        "Dec 2: 2 paid ¥300, $20.00, 0 failed, 0 refunded, 0 disputed; subs +0 -0; dunning 0 open"
    )
    assert len(message.body) <= 160


def test_a_daylight_saving_day_counts_its_25_hours(
    database_url: str, rules: Path, email: ScriptedChannel
) -> None:
    fall_back = date(2026, 11, 1)  # New York's clocks go back from 02:00 EDT to 01:00 EST
    clock, sms = FrozenClock(local(fall_back, 0) - timedelta(hours=2)), ScriptedChannel()
    ph = _build(database_url, rules, clock, {"sms": sms, "email": email})
    try:
        with LiveServer(ph.http_app) as server, Stripe(ph, server, clock, sms) as stripe:
            ph.digest.ensure()
            stripe.to(local(fall_back, 0) - timedelta(minutes=30))
            stripe.post(live("payment_intent.succeeded", stripe, amount=100))  # the day before
            for when in (
                local(fall_back, 0, 30),
                datetime(2026, 11, 1, 6, 30, tzinfo=UTC),  # 01:30 EST, the second 01:30
                local(fall_back, 23, 30),  # 04:30 UTC the next day
            ):
                stripe.to(when)
                stripe.post(live("payment_intent.succeeded", stripe, amount=1000))
            stripe.to(local(date(2026, 11, 2), 0, 30))
            stripe.post(live("payment_intent.succeeded", stripe, amount=100))  # the day after
            stripe.to(local(date(2026, 11, 2), 8))
            (sent,) = stripe.digests(fall_back)
    finally:
        ph.engine.dispose()
    assert sent["status"] == "sent"
    (message,) = [m for m in email.delivered if m.body.startswith("Daily digest for Nov 1")]
    assert "Payments: 3 ($30.00)." in message.body


def test_without_a_digest_section_no_digest_job_runs(database_url: str) -> None:
    ph = build_for_tests(database_url)
    try:
        assert ph.digest is None
        assert DIGEST_JOB not in ph.jobs.kinds
        assert DIGEST_RULE not in {rule.name for rule in ph.rules.rules}
    finally:
        ph.engine.dispose()


def test_a_digest_moved_to_another_team_retires_the_first_ones_job(
    database_url: str, tmp_path: Path, email: ScriptedChannel
) -> None:
    clock = FrozenClock(local(DAY, 12))
    first = tmp_path / "finance.toml"
    first.write_text(RULES)
    ph = _build(database_url, first, clock, {"email": email})
    ph.digest.ensure()
    ph.engine.dispose()
    moved = tmp_path / "ops.toml"
    moved.write_text(
        RULES.replace(
            "[digest]", '[teams.ops]\nemail = ["ops@example.com"]\n\n[digest]\nto = "team:ops"'
        )
    )
    ph = _build(database_url, moved, clock, {"email": email})
    try:
        ph.digest.ensure()
        clock.advance((local(date(2026, 12, 3), 8) - clock.now()).total_seconds())
        ph.worker.run_until_idle()
        assert [(r["to"], r["status"]) for r in digests_in(ph)] == [("ops@example.com", "sent")]
        retired = ph.store.jobs.get("digest:finance")
        assert retired is not None
        assert retired.status == "done"
    finally:
        ph.engine.dispose()


def test_a_digest_the_provider_turned_away_is_retried_and_a_replay_resends_nothing(
    stripe: Stripe, email: ScriptedChannel
) -> None:
    stripe.to(local(DAY, 12))
    stripe.ph.digest.ensure()
    email.script(TransientDeliveryError("SMTP server busy"))
    stripe.to(local(date(2026, 12, 3), 8))
    (waiting,) = stripe.digests(DAY)
    assert (waiting["status"], waiting["attempts"]) == ("pending", 1)
    stripe.to(local(date(2026, 12, 3), 9))
    (sent,) = stripe.digests(DAY)
    assert sent["status"] == "sent"
    result = replay(stripe.ph.store, stripe.ph.rules, sent["event_id"])
    assert (result.new, result.again) == (0, 0)
    stripe.ph.worker.run_until_idle()
    assert len([m for m in email.delivered if m.body.startswith("Daily digest")]) == 1


def test_start_worker_queues_the_digest_for_its_next_time(
    database_url: str, rules: Path, email: ScriptedChannel
) -> None:
    clock = FrozenClock(local(DAY, 9))
    ph = _build(database_url, rules, clock, {"email": email})
    try:
        ph.start_worker()
        ph.stop()
        job = ph.store.jobs.get("digest:finance")
        assert job is not None
        assert (job.kind, job.status, job.due_at) == (
            DIGEST_JOB,
            "pending",
            local(date(2026, 12, 3), 8),
        )
    finally:
        ph.engine.dispose()


def test_two_workers_recording_one_day_at_once_record_it_once(
    database_url: str, rules: Path, email: ScriptedChannel
) -> None:
    clock = FrozenClock(local(date(2026, 12, 3), 8))
    workers = [_build(database_url, rules, clock, {"email": email}) for _ in range(2)]
    together = threading.Barrier(2)

    def record(ph: Any) -> bool:
        together.wait()
        return bool(ph.digest.record(DAY))

    try:
        with ThreadPoolExecutor(2) as pool:
            recorded = list(pool.map(record, workers))
        assert sorted(recorded) == [False, True]
        assert len(digests_in(workers[0], DAY)) == 1
    finally:
        for ph in workers:
            ph.engine.dispose()


def test_before_refund_events_a_charge_refunded_counts_as_the_refund(stripe: Stripe) -> None:
    stripe.to(local(DAY, 10))
    old = live("charge.refunded", stripe, amount=900, api_version="2024-06-20")
    stripe.post(old, about(old, "charge.refunded"))  # a second event about the same refund
    since, until = day_bounds(DAY, NEW_YORK)
    figures = stripe.ph.store.digest.figures(since=since, until=until, livemode=True)
    assert figures.refunds == Tally({"usd": 1}, {"usd": 900})
