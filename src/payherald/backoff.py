"""The one retry policy: exponential, capped, jittered.

Every retry payherald makes waits by it (a send the provider could not take, a job whose
handler failed, a page of Stripe events that did not come), each with its own base and cap.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(
    attempt: int,
    *,
    base: float = 5.0,
    cap: float = 3600.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """Seconds before retry ``attempt`` (1-based): ``base`` doubled each attempt, at most
    ``cap``, and jittered to between half and all of it so that a burst of failures does
    not retry in step."""
    return float(min(cap, base * 2 ** (attempt - 1)) * (0.5 + rng() / 2))
