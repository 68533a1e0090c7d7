"""The dashboard's live feed (server-sent events on /api/feed): an event shows as it is
stored and again as its message moves on; on PostgreSQL an event stored by another process
shows at once, through its NOTIFY, not at the next poll; closing the feed ends its streams
(so that a server shutting down is not held by an open dashboard)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from payherald import FrozenClock, SystemClock
from payherald import feed as feed_module
from payherald.feed import LiveFeed
from payherald.ingest import plan_event
from payherald.simulate import build_event
from payherald.store import PlannedEvent
from payherald.testing import ScriptedChannel
from payherald.webhook import parse_event
from tests.support import LiveServer, StripeOnLoopback, build_for_tests

TOKEN = "feed-admin-token-for-tests"


def messages(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The ``event: event`` messages of an SSE stream, as JSON."""
    kind = None
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: ") and kind == "event":
            yield json.loads(line.removeprefix("data: "))


def test_an_event_shows_when_stored_and_again_when_its_message_is_sent(
    database_url: str,
) -> None:
    clock, sms = FrozenClock(datetime(2026, 12, 4, 15, tzinfo=UTC)), ScriptedChannel()
    ph = build_for_tests(
        database_url, settings={"PAYHERALD_ADMIN_TOKEN": TOKEN}, clock=clock, channels={"sms": sms}
    )
    paid = build_event("payment_intent.succeeded", now=clock.now())
    seen: list[dict[str, Any]] = []
    with LiveServer(ph.http_app) as server, StripeOnLoopback(ph, server, clock, sms) as stripe:
        opened = threading.Event()

        def watch() -> None:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            with httpx.stream(
                "GET", f"{server.url}/api/feed", headers=headers, timeout=30
            ) as response:
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = response.iter_lines()
                opened.set()
                for message in messages(lines):
                    seen.append(message)
                    if message["notifications"] and message["notifications"][0]["status"] == (
                        "sent"
                    ):
                        return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        assert opened.wait(10)
        body, header = _signed(paid, clock)
        assert stripe.client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
        ).is_success
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen, "the stored event did not show in the feed"
        assert seen[0]["id"] == paid["id"]
        assert seen[0]["notifications"][0]["status"] == "pending"
        ph.worker.run_until_idle()
        watcher.join(10)
        assert not watcher.is_alive(), "the sent message did not show in the feed"
        ph.http_app.state.feed.close()
    assert [m["id"] for m in seen] == [paid["id"], paid["id"]]
    ph.engine.dispose()


def test_an_event_stored_by_another_process_shows_through_its_notify(
    postgres_url: str,
) -> None:
    watching = build_for_tests(postgres_url, clock=SystemClock())
    storing = build_for_tests(postgres_url, clock=SystemClock())
    conninfo = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    # Polling once a minute: only the NOTIFY can show the event within the test's seconds.
    feed = LiveFeed(store=watching.store, conninfo=conninfo, poll_interval=60)
    event = parse_event(json.dumps(build_event("charge.failed", now=SystemClock().now())).encode())

    async def first_message() -> tuple[dict[str, Any], float]:
        stream = feed.stream(
            livemode=False, still_allowed=lambda: True, disconnected=_never_disconnected
        )
        assert (await anext(stream)).startswith("retry:")
        reading = asyncio.ensure_future(anext(stream))
        await asyncio.sleep(1.5)  # the first look is done, and the listener has connected
        started = time.monotonic()
        await asyncio.to_thread(storing.store.record, _planned(storing, event))
        text = await asyncio.wait_for(reading, 10)
        waited = time.monotonic() - started
        await stream.aclose()
        data = text.split("data: ", 1)[1]
        return json.loads(data), waited

    try:
        message, waited = asyncio.run(first_message())
    finally:
        feed.stop()
        watching.engine.dispose()
        storing.engine.dispose()
    assert message["id"] == event.id
    assert message["kind"] == "failed"
    assert waited < 10


def test_closing_the_feed_ends_its_streams(sqlite_url: str) -> None:
    ph = build_for_tests(sqlite_url, clock=SystemClock())
    feed = LiveFeed(store=ph.store, poll_interval=60)

    async def run() -> list[str]:
        stream = feed.stream(
            livemode=False, still_allowed=lambda: True, disconnected=_never_disconnected
        )
        got = [await anext(stream)]
        asyncio.get_running_loop().call_later(0.5, feed.close)
        started = time.monotonic()
        got += [text async for text in stream]
        assert time.monotonic() - started < 5
        return got

    assert asyncio.run(run()) == ["retry: 2000\n\n"]
    ph.engine.dispose()


async def _never_disconnected() -> bool:
    return False


def _planned(ph: Any, event: Any) -> PlannedEvent:
    return plan_event(ph.rules, event)


def _signed(event: dict[str, Any], clock: Any) -> tuple[bytes, str]:
    from payherald.simulate import sign_payload
    from tests.support import SECRET

    return sign_payload(event, SECRET, timestamp=int(clock.now().timestamp()))


def test_a_burst_of_events_shows_in_full_and_a_reconnect_catches_up(sqlite_url: str) -> None:
    clock = FrozenClock(datetime(2026, 12, 4, 15, tzinfo=UTC))
    ph = build_for_tests(sqlite_url, clock=clock)
    feed = LiveFeed(store=ph.store, poll_interval=0.2)

    def burst(count: int) -> list[str]:
        at = clock.now()
        planned = [
            _planned(ph, parse_event(json.dumps(build_event("charge.failed", now=at)).encode()))
            for _ in range(count)
        ]
        ph.store.record_events(planned)
        return [item.event.id for item in planned]

    async def read(count: int, resume_from: Any = None) -> tuple[list[str], str]:
        stream = feed.stream(
            livemode=False,
            still_allowed=lambda: True,
            disconnected=_never_disconnected,
            resume_from=resume_from,
        )
        await anext(stream)  # retry:
        ids, last = [], ""
        while len(ids) < count:
            text = await asyncio.wait_for(anext(stream), 10)
            if text.startswith("event: event"):
                last = text.split("\nid: ", 1)[1].split("\n", 1)[0]
                ids.append(json.loads(text.split("data: ", 1)[1])["id"])
        await stream.aclose()
        return ids, last

    first = burst(250)  # more than one page of any list
    shown, last_id = asyncio.run(read(250))
    assert sorted(shown) == sorted(first)  # one commit: in the order of their ids
    clock.advance(30)
    missed = burst(3)  # while the browser was away, a minute in all
    clock.advance(30)
    # Caught up from the look before it left, a few seconds back (the page replaces a row
    # it has already by its id).
    caught_up, _ = asyncio.run(read(253, resume_from=datetime.fromisoformat(last_id)))
    assert set(caught_up) == {*first, *missed}
    assert len(caught_up) == len(set(caught_up))
    ph.engine.dispose()


def test_an_idle_stream_keeps_alive_and_says_where_it_was(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A keep-alive comes within its interval however long the poll, and carries the
    look's time as its id, so that a browser reconnecting after a quiet spell is caught up
    from there rather than from when it reconnected."""
    monkeypatch.setattr(feed_module, "_KEEPALIVE", 0.5)
    clock = FrozenClock(datetime(2026, 12, 4, 15, tzinfo=UTC))
    ph = build_for_tests(sqlite_url, clock=clock)
    feed = LiveFeed(store=ph.store, poll_interval=60)

    async def run() -> tuple[str, float]:
        stream = feed.stream(
            livemode=False, still_allowed=lambda: True, disconnected=_never_disconnected
        )
        await anext(stream)
        started = time.monotonic()
        text = await asyncio.wait_for(anext(stream), 5)
        waited = time.monotonic() - started
        await stream.aclose()
        return text, waited

    text, waited = asyncio.run(run())
    assert text == f"id: {clock.now().isoformat()}\n: keep-alive\n\n"
    assert waited < 2
    ph.engine.dispose()
