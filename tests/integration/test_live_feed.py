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

from payherald import FrozenClock, SystemClock
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
