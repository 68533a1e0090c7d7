"""STOP that always holds: 10,000 queued messages are draining to a Twilio-shaped
peer when one recipient replies STOP over real HTTP; from the moment the STOP is recorded,
no message to that number is committed to be sent, and none reaches the peer except those
already in the provider call."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from payherald import parse_event
from payherald.simulate import build_event
from payherald.store.schema import consents
from tests.integration.test_burst import TwilioBurstPeer, settings_for
from tests.integration.test_inbound import reply
from tests.support import (
    POSTGRES_ENV,
    TWILIO_SETTINGS,
    LiveServer,
    build_for_tests,
    postgres_database,
    serving,
)

TOTAL = 10_000
TARGET = "+14155550100"
CONCURRENCY = 8


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[str]:
    """PostgreSQL when configured (CI), else a SQLite file: the race is the same."""
    if os.environ.get(POSTGRES_ENV):
        with postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path / 'payherald.db'}"


@pytest.fixture
def peer() -> Iterator[TwilioBurstPeer]:
    with serving(TwilioBurstPeer(refuse=0.0)) as server:
        yield server


def phone(index: int) -> str:
    # Every tenth message is for the one who will reply STOP.
    return TARGET if index % 10 == 0 else f"+1415{5550000 + index:07d}"


def queue(ph: Any, index: int) -> str:
    """Record one payment for ``phone(index)``; returns its event id."""
    payload = build_event(
        "payment_intent.succeeded", now=ph.store.clock.now(), phone=phone(index), livemode=True
    )
    event = parse_event(json.dumps(payload).encode())
    ph.store.record_event(event, ph.rules.plan(event))
    return event.id


@pytest.mark.timeout(900)
def test_a_stop_mid_drain_of_10000_holds_for_every_later_send(
    store_url: str, peer: TwilioBurstPeer, tmp_path: Path
) -> None:
    settings = {**settings_for(peer, tmp_path), **TWILIO_SETTINGS, "TWILIO_API_BASE": peer.url}
    settings["PAYHERALD_WORKER_CONCURRENCY"] = str(CONCURRENCY)
    ph = build_for_tests(store_url, settings=settings)
    with ThreadPoolExecutor(8) as pool:
        queued = list(pool.map(lambda index: queue(ph, index), range(TOTAL)))
    for_target = {event_id for index, event_id in enumerate(queued) if phone(index) == TARGET}
    assert ph.store.count_notifications(status="pending") >= TOTAL

    with LiveServer(ph.http_app) as server:
        ph.start_worker()
        try:
            deadline = time.monotonic() + 600
            while sum(1 for _, to in peer.arrivals if to == TARGET) < 50:
                assert time.monotonic() < deadline, "the drain did not start"
                time.sleep(0.01)
            sent_before = len(peer.arrivals)
            assert reply(server.url, "STOP", sid="SMstop", sender=TARGET).status_code == 200
            stop_answered = time.monotonic()
            stop_answered_at = datetime.now(UTC)
            while (
                ph.store.count_notifications(status="pending")
                + ph.store.count_notifications(status="claimed")
                + ph.store.count_notifications(status="sending")
            ):
                assert time.monotonic() < deadline, "the drain did not finish"
                time.sleep(0.2)
        finally:
            ph.stop()

    assert sent_before < TOTAL * 0.9  # the STOP really came mid-drain
    # Each payment also queued a welcome, skipped without a Stripe key to check it is the
    # customer's first: the confirmations are the messages that matter here.
    rows = [
        row
        for row in ph.store.list_notifications(limit=TOTAL * 3)
        if row["rule"] == "payment_confirmation"
    ]
    to_target = [row for row in rows if row["event_id"] in for_target]
    assert len(to_target) == TOTAL // 10
    with ph.engine.connect() as connection:
        stopped_at = connection.execute(select(consents.c.created_at)).scalar_one()
    sent = [row for row in to_target if row["status"] == "sent"]
    held = [row for row in to_target if row["status"] != "sent"]
    assert sent
    assert held
    # Every send to that number was committed before the STOP was. A send's time is
    # taken just before its guarded UPDATE, the STOP's just before its commit: on
    # PostgreSQL the two transactions do not queue on one lock, so a send that committed
    # first can carry a later time than the STOP by the width of that race, which only
    # the sends already between clock and commit (one per worker thread) can fall in.
    # Bounds that hold for every commit order: each send started before the STOP was
    # answered, and at most CONCURRENCY of them carry a time after the STOP's.
    late = [row["id"] for row in sent if row["attempt_started_at"] > stop_answered_at]
    assert not late, f"sent after the STOP was answered: {late}"
    racing = [row["id"] for row in sent if row["attempt_started_at"] > stopped_at]
    assert len(racing) <= CONCURRENCY, f"sent after the STOP was recorded: {racing}"
    unexplained = [
        (row["id"], row["status"], row["error"])
        for row in held
        if "must not be messaged" not in (row["error"] or "")
    ]
    assert not unexplained, f"held for another reason: {unexplained}"
    # The peer saw exactly the sends that were recorded; after the STOP's answer, only
    # those already inside the provider call could still arrive.
    arrivals = [at for at, to in peer.arrivals if to == TARGET]
    assert len(arrivals) == len(sent)
    assert sum(1 for at in arrivals if at > stop_answered) <= CONCURRENCY
    # Everyone else got their message, once.
    others = [row for row in rows if row["event_id"] not in for_target]
    unsent = [(row["id"], row["status"], row["error"]) for row in others if row["status"] != "sent"]
    assert not unsent, f"other recipients not sent: {unsent[:10]} ({len(unsent)} in all)"
    assert len(peer.arrivals) == len(sent) + len(others)
    ph.engine.dispose()
