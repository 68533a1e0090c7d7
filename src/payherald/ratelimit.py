"""Per-sender rate limits: at most N messages a second from one sender, however many
sends are in flight.

A token bucket per sender, refilled at ``rate`` tokens a second and holding at most one
second's worth (so a burst after a quiet spell is at most ``rate`` messages). The limit
holds within one process; several worker processes each hold it for themselves (see
the README).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping

__all__ = ["RateLimiter"]


class RateLimiter:
    def __init__(
        self,
        rates: Mapping[str, float],
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._rates = {sender: rate for sender, rate in rates.items() if rate > 0}
        self._monotonic = monotonic
        self._sleep = sleep
        self._lock = threading.Lock()
        # sender -> (tokens, when they were counted)
        self._buckets: dict[str, tuple[float, float]] = {}

    def limited(self, sender: str) -> bool:
        return sender in self._rates

    def wait(self, sender: str) -> float:
        """Block until ``sender`` may send one more message; returns the seconds waited."""
        rate = self._rates.get(sender)
        if rate is None:
            return 0.0
        waited = 0.0
        while True:
            with self._lock:
                now = self._monotonic()
                tokens, counted = self._buckets.get(sender, (min(rate, 1.0), now))
                tokens = min(max(rate, 1.0), tokens + (now - counted) * rate)
                if tokens >= 1.0:
                    self._buckets[sender] = (tokens - 1.0, now)
                    return waited
                self._buckets[sender] = (tokens, now)
                pause = (1.0 - tokens) / rate
            self._sleep(pause)
            waited += pause
