"""Group commit: the webhook's events written by one writer, many to a transaction.

One commit per webhook request caps ingest at the rate the disk (SQLite's fsync under
``synchronous=FULL``) or PostgreSQL can commit. Here each request hands its verified event
to a ``GroupCommitter`` and waits; a single writer takes everything queued (at most
``max_batch``), plans each event (``plan_event``), records them all in one transaction
(``Store.record_events``) and answers each request with its own result. There is no
waiting for a batch to fill: an event queued while the writer is idle is written at once,
and a batch forms from whatever arrived while the previous commit was in flight. A
request is answered only after the transaction holding its event committed, so an event
answered 2xx is durably stored.

When a batch's transaction fails, nothing of it was written. If the store still answers,
the batch's events are recorded again one by one (``Store.record_event``, which retries
when a concurrent transaction linked the same payment first), so one event that cannot be
stored, a deadlock between two processes' batches or a lost alias race never fails its
neighbours. If the store does not answer, every event of the batch gets StoreUnavailable
at once rather than one timeout each.

The writer is a thread, not an asyncio task, because:

- A commit blocks for as long as the disk or the database takes. A thread of its own
  never holds the event loop, and never takes a slot of AnyIO's shared thread pool, which
  the other handlers (``/readyz``, ``/metrics``, Twilio callbacks) use through
  ``run_in_threadpool``; neither can starve the other.
- It belongs to no event loop. An asyncio task lives on the loop it was created on, and
  with uvicorn's ``lifespan="off"`` (``payherald serve``, the tests) there is no startup
  hook to create it on the loop that serves; the app may also be served by one loop after
  another. ``record`` answers on the loop of the request that is waiting, whichever it
  is, and ``submit`` gives a ``concurrent.futures.Future`` to callers outside any loop.
- It needs no start or stop hook: it starts with the first event, is a daemon, and ends
  after ``idle_timeout`` seconds with nothing queued (the next event starts another). A
  graceful shutdown waits for the requests in flight, and they wait for their commit, so
  nothing is acknowledged and then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import structlog

from payherald.exceptions import StoreUnavailable
from payherald.ingest import plan_event, record_planned
from payherald.rules import RuleBook
from payherald.store import PlannedEvent, RecordResult, Store
from payherald.webhook import StripeEvent

__all__ = ["MAX_BATCH", "GroupCommitter"]

_log = structlog.get_logger("payherald.group_commit")

# The most events written in one transaction: enough for a thousand webhooks a second on a
# slow disk, small enough that a batch's transaction stays short.
MAX_BATCH = 256

_Outcome = RecordResult | Exception


class GroupCommitter:
    """Records events for many waiters, many events to a transaction (see the module's
    docstring). ``on_queued`` is called once after each batch that queued work (the
    in-process worker's wake-up)."""

    def __init__(
        self,
        *,
        store: Store,
        rules: RuleBook,
        on_queued: Callable[[], None],
        max_batch: int = MAX_BATCH,
        idle_timeout: float = 10.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._store = store
        self._rules = rules
        self._on_queued = on_queued
        self._max_batch = max_batch
        self._idle_timeout = idle_timeout
        self._queue: deque[tuple[StripeEvent, Callable[[_Outcome], None]]] = deque()
        self._ready = threading.Condition()
        self._writer: threading.Thread | None = None
        self.batches = 0  # batches the writer has taken, for observing it

    @property
    def waiting(self) -> int:
        """Events queued that the writer has not taken yet."""
        with self._ready:
            return len(self._queue)

    async def record(self, event: StripeEvent) -> RecordResult:
        """Record ``event`` with what the rules plan for it; returns once that is
        committed. Raises StoreUnavailable when it could not be stored."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RecordResult] = loop.create_future()

        def deliver(outcome: _Outcome) -> None:
            # A closed loop (the server stopped) has nobody waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, future, outcome)

        self._enqueue(event, deliver)
        return await future

    def submit(self, event: StripeEvent) -> Future[RecordResult]:
        """Queue ``event`` for the writer, from any thread; the future holds its
        RecordResult once the transaction holding it committed, or StoreUnavailable."""
        future: Future[RecordResult] = Future()
        self._enqueue(event, lambda outcome: _settle(future, outcome))
        return future

    def _enqueue(self, event: StripeEvent, deliver: Callable[[_Outcome], None]) -> None:
        # An event whose request is gone meanwhile is recorded all the same: Stripe's
        # retry of it is then a duplicate, answered 200.
        with self._ready:
            self._queue.append((event, deliver))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._run, name="payherald-group-commit", daemon=True
                )
                self._writer.start()
            self._ready.notify()

    def _run(self) -> None:
        while True:
            with self._ready:
                if not self._queue:
                    self._ready.wait(self._idle_timeout)
                if not self._queue:
                    # Decided under the lock, so an event queued from now on starts a
                    # new writer.
                    self._writer = None
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))
                ]
            self._write(batch)

    def _write(self, batch: Sequence[tuple[StripeEvent, Callable[[_Outcome], None]]]) -> None:
        self.batches += 1
        try:
            outcomes = self._record([plan_event(self._rules, event) for event, _ in batch])
        except Exception as exc:  # a bug of ours: answer every waiter, keep the writer alive
            _log.exception("group_commit_failed", event_ids=[event.id for event, _ in batch])
            outcomes = [exc] * len(batch)
        if any(isinstance(outcome, RecordResult) and outcome.queued for outcome in outcomes):
            try:
                self._on_queued()
            except Exception:
                _log.exception("wake_up_failed")
        for (_, deliver), outcome in zip(batch, outcomes, strict=True):
            deliver(outcome)

    def _record(self, items: Sequence[PlannedEvent]) -> list[_Outcome]:
        """One transaction for ``items``; if it fails, one each, so that each item gets
        its own result or error. A batch of one goes straight to ``record_event``, for its
        retries when a concurrent transaction linked the same payment first."""
        if len(items) > 1:
            try:
                return list(self._store.record_events(items))
            except Exception as exc:
                _log.warning(
                    "group_commit_fallback",
                    event_ids=[item.event.id for item in items],
                    error=str(exc),
                )
                if isinstance(exc, StoreUnavailable):
                    try:
                        self._store.db.ping()
                    except StoreUnavailable as down:
                        # One exception each: raising one object in many requests would
                        # pile their tracebacks onto it.
                        return [StoreUnavailable(down.message) for _ in items]
        outcomes: list[_Outcome] = []
        for item in items:
            try:
                outcomes.append(record_planned(self._store, item))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def _settle(future: Future[RecordResult] | asyncio.Future[RecordResult], outcome: _Outcome) -> None:
    if future.cancelled():
        return
    if isinstance(outcome, RecordResult):
        future.set_result(outcome)
    else:
        future.set_exception(outcome)
