"""The dashboard's live feed: each new event, and each event whose messages moved on (sent,
failed, delivered), pushed to the browser as a server-sent event.

The store is the source of truth, so the feed shows what every process did: each stream
reads the events received and the notifications changed since it last looked, on their
indexes. It looks when woken, and at least every ``poll_interval`` seconds (which is how a
worker's sends show, and all of it on SQLite with a separate ``serve``). This process's
webhook handler wakes it when it stores an event; on PostgreSQL every process storing
events sends a NOTIFY on the feed channel in the same commit (``Database.announce_events``),
and the feed LISTENs for it, so an event received by another ``serve`` shows at once too.

A stream looks a few seconds back each time (a transaction that took its time stamp first
may commit after one that took a later one) and remembers what it sent, so nothing is
missed and nothing is sent twice unless it changed. A look reads at most the newest
``FEED_WINDOW_LIMIT`` events: in a burst beyond that, the page shows the newest (the lists
have them all). Each message's id is the time of the look that found it, so a browser that
reconnects (its Last-Event-ID) is caught up on what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import structlog
from starlette.concurrency import run_in_threadpool

from payherald.store import Store
from payherald.store.database import FEED_CHANNEL
from payherald.store.history import FEED_WINDOW_LIMIT
from payherald.wakeup import listen

__all__ = ["LiveFeed"]

_log = structlog.get_logger("payherald.feed")

# How far back each look reaches, for transactions that committed out of time order.
_OVERLAP = timedelta(seconds=5)
# An SSE comment this often keeps proxies from closing an idle stream.
_KEEPALIVE = 15.0
# How far back a reconnecting browser is caught up.
_RESUME = timedelta(minutes=10)


class LiveFeed:
    """The live feed of one ``serve`` process, shared by all its streams."""

    def __init__(
        self, *, store: Store, conninfo: str | None = None, poll_interval: float = 1.0
    ) -> None:
        self._store = store
        self._conninfo = conninfo
        self._poll = poll_interval
        # Each stream's wake-up, with the loop it waits on (the app may be served by one
        # loop after another).
        self._woken: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None

    def _listen(self) -> None:
        """Start listening, on PostgreSQL, for the events other processes store: with the
        first stream (the server runs without startup hooks), in a daemon thread."""
        with self._lock:
            if self._conninfo is None or self._listener is not None:
                return
            self._listener = threading.Thread(
                target=listen,
                args=(self._conninfo, FEED_CHANNEL, self.wake, self._stop),
                name="payherald-feed-listen",
                daemon=True,
            )
            self._listener.start()

    def close(self) -> None:
        """End every stream now, and stop listening: the server is shutting down, and
        waits for its open responses (a stream would never end by itself). Safe from a
        signal handler: it only sets flags and schedules wake-ups."""
        self._stop.set()
        self.wake()

    def stop(self) -> None:
        """``close``, and wait for the listener to end."""
        self.close()
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.join(5)

    def wake(self) -> None:
        """Have every stream look now; safe from any thread."""
        for loop, event in list(self._woken):
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def stream(
        self,
        *,
        livemode: bool | None,
        still_allowed: Callable[[], bool],
        disconnected: Callable[[], Any],
        locale: str = "en_US",
        resume_from: datetime | None = None,
    ) -> AsyncIterator[str]:
        """The server-sent events of one browser: ``event: event`` messages, each an
        event as ``History.events`` gives it, with the time of the look that found it as
        its id. ``resume_from`` is the id a reconnecting browser last had (its
        Last-Event-ID): what happened since is sent first, as far back as ``_RESUME``.
        Ends when the browser goes away, ``still_allowed`` says its session is over, or
        the feed is closed."""
        self._listen()
        woken = asyncio.Event()
        waiter = (asyncio.get_running_loop(), woken)
        self._woken.add(waiter)
        history = self._store.history
        now = self._store.clock.now()
        since = now
        if resume_from is not None and now - _RESUME <= resume_from <= now:
            since = resume_from
        sent: dict[str, tuple[str, ...]] = {}  # event id -> what it was sent with
        sent_at: dict[str, datetime] = {}
        written = time.monotonic()
        try:
            yield "retry: 2000\n\n"
            while not self._stop.is_set() and still_allowed() and not await disconnected():
                # Cleared before the look: a wake-up during it makes the next one at once.
                woken.clear()
                now = self._store.clock.now()
                try:
                    news, moved = await run_in_threadpool(
                        history.news, since=since - _OVERLAP, livemode=livemode
                    )
                    wanted = [i for i in news if i not in sent]
                    wanted += [i for i in moved if i not in wanted]
                    found = await run_in_threadpool(
                        history.events_by_id, wanted[-FEED_WINDOW_LIMIT:], locale=locale
                    )
                except Exception as exc:  # the store is down: keep the stream, try again
                    _log.warning("feed_read_failed", error=str(exc))
                    found = []
                else:
                    since = now
                for item in found:
                    state = _state(item)
                    if sent.get(item["id"]) == state:
                        continue
                    sent[item["id"]], sent_at[item["id"]] = state, now
                    yield _message(item, now)
                    written = time.monotonic()
                for event_id, at in list(sent_at.items()):
                    if now - at > _OVERLAP * 4:
                        del sent_at[event_id], sent[event_id]
                quiet = time.monotonic() - written
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        woken.wait(), max(0.0, min(self._poll, _KEEPALIVE - quiet))
                    )
                if time.monotonic() - written >= _KEEPALIVE:
                    written = time.monotonic()
                    # An id and no data: the browser keeps it as where it was (its
                    # Last-Event-ID on a reconnect) and shows nothing.
                    yield f"id: {since.isoformat()}\n: keep-alive\n\n"
        finally:
            self._woken.discard(waiter)


def _state(item: dict[str, Any]) -> tuple[str, ...]:
    return (
        item["status"],
        *(f"{n['id']}:{n['status']}:{n['delivery_status']}" for n in item["notifications"]),
    )


def _message(item: dict[str, Any], looked: datetime) -> str:
    data = json.dumps(item, separators=(",", ":"))
    return f"event: event\nid: {looked.isoformat()}\ndata: {data}\n\n"
