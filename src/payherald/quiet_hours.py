"""Quiet hours: customers are texted and called only in their local daytime.

The window is local wall-clock time (default 08:00 to 21:00) in the recipient's time zone,
so it moves with daylight saving: 08:00 in New York is 13:00 UTC in winter and 12:00 UTC
in summer, and on the morning of the switch the window opens at 08:00 of the new offset.
A message due outside the window is deferred once, to the moment the window next opens.
A window whose start is later than its end runs over midnight (22:00 to 06:00).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

__all__ = ["QuietHours", "parse_clock_time"]


@dataclass(frozen=True, slots=True)
class QuietHours:
    """When customer messages may be sent: from ``send_from`` (inclusive) to ``send_until``
    (exclusive), local time."""

    send_from: time = time(8, 0)
    send_until: time = time(21, 0)
    enabled: bool = True

    def next_opening(self, now: datetime, zone: str) -> datetime | None:
        """None when ``now`` is inside the window in ``zone``; otherwise the instant (UTC)
        at which the window next opens there."""
        if not self.enabled or self.send_from == self.send_until:
            return None
        tz = ZoneInfo(zone)
        local = now.astimezone(tz)
        if self._inside(local.time()):
            return None
        day = local.date()
        if local.time() >= self.send_from:
            day += timedelta(days=1)
        opening = datetime.combine(day, self.send_from, tzinfo=tz)
        # A start inside a spring-forward gap (02:30 on the switch day) does not exist; the
        # round trip through UTC moves it to the same instant an hour later on the clock.
        return opening.astimezone(UTC)

    def _inside(self, clock: time) -> bool:
        if self.send_from < self.send_until:
            return self.send_from <= clock < self.send_until
        return clock >= self.send_from or clock < self.send_until

    def describe(self) -> str:
        return f"{self.send_from:%H:%M}-{self.send_until:%H:%M}"


def parse_clock_time(value: object) -> time:
    """``"08:00"`` (or a TOML local time, ``08:00:00``) as a time; ValueError with a
    sentence otherwise."""
    if isinstance(value, time):
        return value
    text = str(value)
    try:
        hours, minutes = text.split(":")
        if len(minutes) != 2:
            raise ValueError
        return time(int(hours), int(minutes))
    except ValueError:
        raise ValueError(
            f'{text!r} is not a time of day; write it as HH:MM, like "08:00".'
        ) from None
