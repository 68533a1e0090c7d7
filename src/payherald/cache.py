"""A small thread-safe cache of answers from Stripe: bounded in size and in age."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["TtlCache"]

V = TypeVar("V")


class TtlCache(Generic[V]):
    """At most ``size`` answers, each for ``ttl`` seconds; the least recently stored goes
    first when it is full. ``monotonic`` is the time source (tests move it)."""

    def __init__(
        self,
        *,
        ttl: float,
        size: int,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if size < 1:
            raise ValueError("a cache holds at least one answer")
        self._ttl = ttl
        self._size = size
        self._monotonic = monotonic
        self._entries: OrderedDict[str, tuple[float, V]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get_or_fetch(self, key: str, fetch: Callable[[], V]) -> V:
        """The answer stored for ``key`` if it is younger than ``ttl``, else ``fetch()``'s,
        stored (an exception from ``fetch`` stores nothing). ``fetch`` runs without the
        lock held, so two threads may both ask for one key at once."""
        now = self._monotonic()
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                if now - found[0] < self._ttl:
                    return found[1]
                del self._entries[key]
        value = fetch()
        with self._lock:
            self._entries[key] = (now, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return value
