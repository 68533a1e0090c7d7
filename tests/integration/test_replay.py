"""Replay: events whose processing failed are processed again after a fix; nothing
already sent is sent again."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from payherald import FrozenClock, PermanentDeliveryError, parse_event
from payherald.ingest import ingest
from payherald.replay import ReplayError, replay
from payherald.simulate import build_event
from payherald.store.schema import events, notifications
from payherald.testing import ScriptedChannel
from tests.acceptance.test_cli import cli
from tests.support import build_for_tests


class BrokenRules:
    """Rules whose planning crashes, as a bug would."""

    def plan(self, event: Any) -> Any:
        raise KeyError("data.object.amount_received")


@pytest.fixture
def ph(database_url: str, sms: ScriptedChannel) -> Iterator[Any]:
    built = build_for_tests(database_url, clock=FrozenClock(), channels={"sms": sms})
    yield built
    built.engine.dispose()


def payment(ph: Any) -> Any:
    payload = build_event("payment_intent.succeeded", now=ph.store.clock.now(), livemode=True)
    return parse_event(json.dumps(payload).encode())


def test_an_event_whose_planning_failed_is_processed_after_the_fix(
    ph: Any, sms: ScriptedChannel
) -> None:
    event = payment(ph)
    ingest(ph.store, BrokenRules(), event)  # type: ignore[arg-type]
    (stored,) = ph.store.list_events()
    assert stored["status"] == "failed"
    assert "amount_received" in stored["error"]
    assert ph.store.replayable_events() == [event.id]

    result = replay(ph.store, ph.rules, event.id)
    assert (result.new, result.again) == (1, 0)
    ph.worker.run_until_idle()
    assert len(sms.delivered) == 1
    assert ph.store.list_events()[0]["status"] == "received"
    assert ph.store.replayable_events() == []

    again = replay(ph.store, ph.rules, event.id)
    assert (again.new, again.again, again.unchanged) == (0, 0, 1)
    assert again.describe() == f"{event.id}: nothing to send again (1 left as they are)."
    ph.worker.run_until_idle()
    assert len(sms.attempts) == 1


def test_a_failed_notification_is_sent_again_once_and_a_sent_one_never(
    ph: Any, sms: ScriptedChannel
) -> None:
    sms.script(PermanentDeliveryError("Twilio: account suspended", code="twilio_20003"))
    first, second = payment(ph), payment(ph)
    for event in (first, second):
        ingest(ph.store, ph.rules, event)
    ph.worker.run_until_idle()
    failed = ph.store.list_notifications(status="failed")
    assert len(failed) == 1
    assert ph.store.replayable_events() == [failed[0]["event_id"]]
    result = replay(ph.store, ph.rules, failed[0]["event_id"])
    assert result.again == 1
    ph.worker.run_until_idle()
    assert len(sms.delivered) == 2  # one for each payment
    assert [m.notification_id for m in sms.attempts].count(failed[0]["id"]) == 2
    assert len(sms.attempts) == 3
    for event in (first, second):
        replay(ph.store, ph.rules, event.id)
    ph.worker.run_until_idle()
    assert len(sms.delivered) == 2


def test_an_unknown_outcome_is_never_replayed(ph: Any, sms: ScriptedChannel) -> None:
    event = payment(ph)
    ingest(ph.store, ph.rules, event)
    with ph.engine.begin() as connection:
        connection.execute(
            update(notifications).values(status="failed", error_code="outcome_unknown")
        )
    assert ph.store.replayable_events() == []
    assert replay(ph.store, ph.rules, event.id).again == 0
    ph.worker.run_until_idle()
    assert sms.attempts == []


def test_an_event_not_stored_says_to_backfill(ph: Any) -> None:
    with pytest.raises(ReplayError, match="payherald backfill"):
        replay(ph.store, ph.rules, "evt_never_seen")


def test_replay_failed_from_the_command_line(tmp_path: Path, sqlite_url: str) -> None:
    built = build_for_tests(sqlite_url)
    event = payment(built)
    ingest(built.store, BrokenRules(), event)  # type: ignore[arg-type]
    built.engine.dispose()
    env = {"PAYHERALD_DATABASE_URL": sqlite_url}
    result = cli(tmp_path, "replay", "--failed", **env)
    assert result.returncode == 0, result.stderr
    assert f"{event.id}: 0 failed notification(s) queued again, 1 new" in result.stdout
    assert "No event has failed processing." in cli(tmp_path, "replay", "--failed", **env).stdout
    missing = cli(tmp_path, "replay", "evt_nope", **env)
    assert missing.returncode == 2
    assert "evt_nope is not stored here" in missing.stderr
    both = cli(tmp_path, "replay", "evt_1", "--failed", **env)
    assert both.returncode == 2
    assert "not both" in both.stderr


def test_replay_failed_goes_on_past_an_event_that_still_fails(
    tmp_path: Path, sqlite_url: str
) -> None:
    built = build_for_tests(sqlite_url)
    damaged, mended = payment(built), payment(built)
    ingest(built.store, BrokenRules(), damaged)  # type: ignore[arg-type]
    ingest(built.store, BrokenRules(), mended)  # type: ignore[arg-type]
    with built.engine.begin() as connection:
        connection.execute(
            update(events)
            .where(events.c.id == damaged.id)
            # Received first, so that it is replayed first and the other comes after it.
            .values(payload='{"id": 1}', received_at=datetime(2026, 1, 1, tzinfo=UTC))
        )
    built.engine.dispose()
    result = cli(tmp_path, "replay", "--failed", PAYHERALD_DATABASE_URL=sqlite_url)
    assert result.returncode == 2
    assert f"{damaged.id}: its stored payload is not a readable Stripe event" in result.stderr
    assert "1 of 2 event(s) could not be replayed" in result.stderr
    assert f"{mended.id}: 0 failed notification(s) queued again, 1 new" in result.stdout
