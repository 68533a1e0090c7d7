"""Time, behind an interface so that tests can stop it."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FrozenClock", "SystemClock", "parse_duration", "parse_instant"]

_DURATION = re.compile(r"^\s*(\d+)\s*([mhd])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str) -> timedelta | None:
    """``90m``, ``24h`` or ``7d`` as a duration; None for anything else."""
    match = _DURATION.match(text)
    return timedelta(**{_UNITS[match[2]]: int(match[1])}) if match else None


def parse_instant(text: str, *, now: datetime, option: str) -> datetime:
    """``24h``, ``90m``, ``7d`` (that long before ``now``), or an ISO date or time (UTC
    unless it says otherwise), not in the future. Raises ValueError with a sentence that
    names ``option``."""
    ago = parse_duration(text)
    if ago is not None:
        instant = now - ago
    else:
        try:
            instant = datetime.fromisoformat(text.strip())
        except ValueError:
            raise ValueError(
                f"{option} {text!r} is neither a duration (30m, 24h, 7d) nor an ISO date "
                "(2026-11-20 or 2026-11-20T08:00:00Z)."
            ) from None
        if instant.tzinfo is None:
            instant = instant.replace(tzinfo=UTC)
    if instant > now:
        raise ValueError(f"{option} {text!r} is in the future.")
    return instant


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.fromtimestamp(int(time.time()), UTC)

    def now(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
