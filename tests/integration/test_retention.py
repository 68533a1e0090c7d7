"""Retention on SQLite and PostgreSQL: what is old and finished is deleted with everything
that hangs on it; what is recent, still being sent, or a consent is kept."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from payherald import FrozenClock, StripeEvent, parse_event
from payherald.consent import record_reply
from payherald.delivery import DeliveryReport
from payherald.retention import Pruner, prune
from payherald.rules import PlannedNotification
from payherald.store import Store
from payherald.store.engine import create_store_engine, migrate
from payherald.store.schema import consents, delivery_reports, inbound_messages
from payherald.store.transitions import Outcome
from tests.acceptance.test_cli import cli
from tests.support import (
    TWILIO_SETTINGS,
    LiveServer,
    build_for_tests,
    event_body,
    post_as_twilio,
)

DAY = 86400.0
NUMBER = "+14155550123"


@pytest.fixture
def old_clock() -> FrozenClock:
    """A clock 100 days back: what the tests write at first is older than 90 days."""
    return FrozenClock(datetime.fromtimestamp(int(time.time()), UTC) - timedelta(days=100))


@pytest.fixture
def store(database_url: str, old_clock: FrozenClock) -> Iterator[Store]:
    engine = create_store_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    migrate(engine)
    yield Store(engine=engine, clock=old_clock)
    engine.dispose()


def event(event_id: str) -> StripeEvent:
    return parse_event(event_body(event_id=event_id))


def planned(payment: str) -> PlannedNotification:
    return PlannedNotification(
        rule="payment_confirmation",
        recipient="customer",
        channel="sms",
        livemode=False,
        subject_kind="payment",
        subject=(payment,),
    )


def sent(store: Store, event_id: str, payment: str, provider_id: str) -> None:
    """Record ``event_id``, and send its notification, reported delivered."""
    store.record_event(event(event_id), [planned(payment)])
    claimed = store.queue.claim(worker_id="test", limit=10, lease=60)
    (held,) = [one for one in claimed if one.event_id == event_id]
    for other in claimed:
        if other is not held:  # still pending, held back as by quiet hours
            store.queue.settle(
                other, Outcome.DEFERRED, run_at=store.clock.now() + timedelta(days=1), notes="later"
            )
    assert store.queue.mark_sending(held, to=NUMBER, body="Paid, thanks", channel="sms", lease=60)
    assert store.queue.settle(held, Outcome.SENT, provider_id=provider_id)
    store.deliveries.record(DeliveryReport(provider_id, "delivered", notification_id=held.id))


def history(store: Store, clock: FrozenClock) -> None:
    """100 days ago: a sent notification (delivered), one still pending, one that failed
    but was touched again 5 days ago, an event no rule handled, a STOP reply; 5 days ago:
    a sent notification and an inbound message."""
    sent(store, "evt_old_sent", "pi_1", "SM_old")
    store.record_event(event("evt_old_ignored"), [])
    store.record_event(event("evt_old_touched"), [planned("pi_2")])
    (touched,) = store.queue.claim(worker_id="test", limit=10, lease=60)
    record_reply(store, provider_id="SM_in_old", sender=NUMBER, body="STOP", channel="sms")
    store.record_event(event("evt_old_pending"), [planned("pi_3")])
    clock.advance(95 * DAY)
    assert store.queue.settle(touched, Outcome.FAILED, error="Twilio refused it")
    sent(store, "evt_recent", "pi_4", "SM_recent")
    record_reply(store, provider_id="SM_in_new", sender=NUMBER, body="thanks!", channel="sms")


def event_ids(store: Store) -> list[str]:
    return sorted(row["id"] for row in store.list_events())


def inbound(store: Store) -> list[tuple[str, str, str, str | None]]:
    """(provider id, sender, body, action) of every inbound message; raw_sender, asserted
    None where blanked, is left out."""
    with store.db.read() as connection:
        rows = connection.execute(
            select(
                inbound_messages.c.provider_id,
                inbound_messages.c.sender,
                inbound_messages.c.raw_sender,
                inbound_messages.c.body,
                inbound_messages.c.action,
            ).order_by(inbound_messages.c.provider_id)
        ).all()
    assert all(row.raw_sender is None for row in rows if row.sender == "")
    return [(row.provider_id, row.sender, row.body, row.action) for row in rows]


def count(store: Store, table: object) -> int:
    with store.db.read() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.mark.parametrize("batch_size", [500, 1])
def test_prune_deletes_what_is_old_and_finished_and_keeps_the_rest(
    store: Store, old_clock: FrozenClock, batch_size: int
) -> None:
    history(store, old_clock)
    summary = prune(store, old_clock.now() - timedelta(days=90), batch_size=batch_size)
    assert (summary.events, summary.notifications, summary.delivery_reports) == (2, 1, 1)
    assert (summary.inbound_messages, summary.kept) == (1, 2)
    # Kept: the recent event, the one still pending, the one touched since the cutoff.
    assert event_ids(store) == ["evt_old_pending", "evt_old_touched", "evt_recent"]
    assert sorted(n["event_id"] for n in store.list_notifications()) == [
        "evt_old_pending",
        "evt_old_touched",
        "evt_recent",
    ]
    assert count(store, delivery_reports) == 1  # the recent message's
    # The old reply is forgotten but for its tombstone; the recent one is as it came.
    assert inbound(store) == [
        ("SM_in_new", NUMBER, "thanks!", None),
        ("SM_in_old", "", "", "opt_out"),
    ]
    # Who must not be messaged, and why, is never forgotten.
    assert [row["address"] for row in store.consents.suppressed()] == [NUMBER]
    assert count(store, consents) == 1
    again = prune(store, old_clock.now() - timedelta(days=90))
    assert (again.events, again.inbound_messages, again.batches) == (0, 0, 0)


def test_a_dry_run_counts_what_prune_deletes_and_deletes_nothing(
    store: Store, old_clock: FrozenClock
) -> None:
    history(store, old_clock)
    before = old_clock.now() - timedelta(days=90)
    counted = prune(store, before, dry_run=True)
    assert len(event_ids(store)) == 5
    assert count(store, inbound_messages) == 2
    done = prune(store, before)
    assert (counted.events, counted.notifications, counted.delivery_reports) == (
        done.events,
        done.notifications,
        done.delivery_reports,
    )
    assert (counted.inbound_messages, counted.kept) == (done.inbound_messages, done.kept)


def test_delivery_reports_about_no_kept_message_go_too(
    store: Store, old_clock: FrozenClock
) -> None:
    sent(store, "evt_1", "pi_1", "SM_now")
    (notification,) = store.list_notifications()
    # About an earlier provider id of the same message, and about no message of ours.
    store.deliveries.record(
        DeliveryReport("SM_before", "failed", notification_id=notification["id"])
    )
    store.deliveries.record(DeliveryReport("SM_stranger", "delivered"))
    old_clock.advance(95 * DAY)
    store.deliveries.record(DeliveryReport("SM_stranger", "read"))  # recent: kept
    before = old_clock.now() - timedelta(days=90)
    assert prune(store, before, dry_run=True).delivery_reports == 3
    assert prune(store, before, batch_size=1).delivery_reports == 3
    with store.db.read() as connection:
        left = connection.execute(select(delivery_reports.c.provider_id, delivery_reports.c.status))
        assert left.all() == [("SM_stranger", "read")]


def test_the_worker_process_prunes_on_its_own(database_url: str, old_clock: FrozenClock) -> None:
    ph = build_for_tests(database_url, clock=old_clock, settings={"PAYHERALD_RETENTION_DAYS": "30"})
    try:
        ph.store.record_event(event("evt_old"), [])
        old_clock.advance(31 * DAY)
        ph.store.record_event(event("evt_new"), [])
        assert isinstance(ph.pruner, Pruner)
        ph.start_worker()
        deadline = time.monotonic() + 10
        while ph.store.has_event("evt_old") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert event_ids(ph.store) == ["evt_new"]
    finally:
        ph.stop()
        ph.engine.dispose()


def test_no_schedule_when_retention_is_off(sqlite_url: str) -> None:
    ph = build_for_tests(sqlite_url, settings={"PAYHERALD_RETENTION_DAYS": "0"})
    assert ph.pruner is None
    ph.engine.dispose()


def test_prune_before_as_an_operator_runs_it(tmp_path: Path, old_clock: FrozenClock) -> None:
    assert cli(tmp_path, "migrate").returncode == 0
    engine = create_store_engine(f"sqlite:///{tmp_path / 'payherald.db'}")
    store = Store(engine=engine, clock=old_clock)
    history(store, old_clock)
    engine.dispose()

    dry = cli(tmp_path, "prune", "--before", "90d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("Dry run: before ")
    assert (
        "2 event(s) would be deleted with 1 notification(s) and 1 delivery report(s); 1 "
        "inbound message(s) would be forgotten (sender and text blanked, the message id kept "
        "so that a replayed reply is not acted on again); 2 older event(s) kept" in dry.stdout
    )
    done = cli(tmp_path, "prune", "--before", "90d")
    assert done.returncode == 0, done.stderr
    assert "Pruned: before " in done.stdout
    assert "2 event(s) deleted with 1 notification(s)" in done.stdout
    assert "1 inbound message(s) forgotten" in done.stdout
    assert "Consents and the opt-out list are always kept." in done.stdout
    listed = cli(tmp_path, "events", "list", "--json")
    assert "evt_old_sent" not in listed.stdout
    assert "evt_recent" in listed.stdout


def test_prune_refuses_a_cutoff_newer_than_30_days(tmp_path: Path) -> None:
    for before, words in (
        ("7d", "Cannot prune what is newer than 30 days"),
        ("soon", "is neither a duration"),
    ):
        result = cli(tmp_path, "prune", "--before", before)
        assert result.returncode == 2
        assert words in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_a_reply_replayed_after_its_message_was_pruned_changes_nothing(
    database_url: str, old_clock: FrozenClock
) -> None:
    """Twilio's signature carries no time, so the pruned reply's tombstone is what stops a
    captured, signed START from subscribing again someone who has since sent STOP."""
    ph = build_for_tests(database_url, clock=old_clock, settings=TWILIO_SETTINGS)
    try:
        with LiveServer(ph.http_app, ph.settings) as server:

            def reply(sid: str, body: str) -> str:
                params = {"MessageSid": sid, "From": "(415) 555-0123", "To": "+1", "Body": body}
                answer = post_as_twilio(server.url, "/webhooks/twilio/inbound", params)
                assert answer.status_code == 200
                return str(answer.text)

            assert "You are subscribed again" not in reply("SM_start", "START")
            old_clock.advance(1 * DAY)
            assert "You will get no more messages" in reply("SM_stop", "STOP")
            old_clock.advance(95 * DAY)
            summary = prune(ph.store, old_clock.now() - timedelta(days=90))
            assert summary.inbound_messages == 2
            recorded = count(ph.store, consents)

            for sid, body in (("SM_start", "START"), ("SM_stop", "STOP")):
                assert "<Message>" not in reply(sid, body)
        assert ph.store.consents.suppression(NUMBER) is not None
        assert count(ph.store, consents) == recorded
        assert inbound(ph.store) == [("SM_start", "", "", "opt_in"), ("SM_stop", "", "", "opt_out")]
    finally:
        ph.engine.dispose()
