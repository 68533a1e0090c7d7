"""Many threads' small writes in one transaction: the worker's state changes on SQLite.

Every notification the worker sends changes state twice in the store (``sending``, committed
before the provider is called, then ``sent``), each a transaction of its own. On SQLite a
transaction holds the one write lock and ends with an fsync, so 64 sender threads spend
their time queueing for the lock. A ``WriteBatcher`` takes the writes that arrive together
and runs them, in order, in one transaction on a thread of its own; each caller returns
when the transaction holding its write committed, with its own result, exactly as if it
had run alone.

If the batch's transaction fails, nothing of it was written, and each write is run again
alone, so that one write that cannot be done never fails its neighbours and each caller
gets its own error. The writer starts with the first write and ends after ``idle_timeout``
seconds with nothing to do, like the webhook's group committer (``group_commit``).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from contextlib import AbstractContextManager
from typing import Any, TypeVar

import structlog
from sqlalchemy import Connection

__all__ = ["WriteBatcher"]

_log = structlog.get_logger("payherald.write_batch")

T = TypeVar("T")
_Write = Callable[[Connection], Any]


class WriteBatcher:
    """Runs ``write(connection)`` calls of many threads in shared transactions opened by
    ``transaction`` (see the module's docstring). A write must do nothing but run
    statements on the connection it is given: it may run twice (alone, after its batch
    failed and was rolled back)."""

    def __init__(
        self,
        *,
        transaction: Callable[[], AbstractContextManager[Connection]],
        max_batch: int = 256,
        idle_timeout: float = 10.0,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._transaction = transaction
        self._max_batch = max_batch
        self._idle_timeout = idle_timeout
        self._queue: deque[tuple[_Write, Future[Any]]] = deque()
        self._ready = threading.Condition()
        self._writer: threading.Thread | None = None
        self.batches = 0  # transactions the writer has opened, for observing it

    def run(self, write: Callable[[Connection], T]) -> T:
        """``write``'s result once the transaction it ran in committed; raises what it
        raised, or what the store raised (StoreUnavailable)."""
        future: Future[T] = Future()
        with self._ready:
            self._queue.append((write, future))
            if self._writer is None:
                self._writer = threading.Thread(
                    target=self._run, name="payherald-write-batch", daemon=True
                )
                self._writer.start()
            self._ready.notify()
        return future.result()

    def _run(self) -> None:
        while True:
            with self._ready:
                if not self._queue:
                    self._ready.wait(self._idle_timeout)
                if not self._queue:
                    # Decided under the lock, so a write queued from now on starts a new
                    # writer.
                    self._writer = None
                    return
                batch = [
                    self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))
                ]
            self._write(batch)

    def _write(self, batch: list[tuple[_Write, Future[Any]]]) -> None:
        self.batches += 1
        try:
            with self._transaction() as connection:
                outcomes = [(True, write(connection)) for write, _ in batch]
        except Exception as exc:
            if len(batch) == 1:
                outcomes = [(False, exc)]
            else:
                _log.warning("write_batch_fallback", writes=len(batch), error=str(exc))
                outcomes = [self._alone(write) for write, _ in batch]
        for (_, future), (ok, value) in zip(batch, outcomes, strict=True):
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)

    def _alone(self, write: _Write) -> tuple[bool, Any]:
        try:
            with self._transaction() as connection:
                return True, write(connection)
        except Exception as exc:
            return False, exc
