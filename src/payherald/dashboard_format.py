"""How the dashboard's pages show values: times in the operator's time zone, the raw
event as indented JSON, and the 30-day chart's bars as SVG geometry.

Everything here returns plain text or numbers; the templates autoescape all of it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

__all__ = ["CHART_HEIGHT", "CHART_WIDTH", "chart_bars", "format_filters"]

# The chart's drawing area, in SVG user units; bars are scaled to the busiest day.
CHART_WIDTH = 600
CHART_HEIGHT = 120
_BAR_AREA = 100  # the rest is the day labels' line
_SLOT = CHART_WIDTH // 30
_BAR_WIDTH = 8


def format_filters(timezone: str) -> dict[str, Callable[..., Any]]:
    """The templates' filters: ``when`` (an instant in ``timezone``), ``iso`` (an instant
    in UTC, for ``<time datetime>``) and ``pretty_json``."""
    zone = ZoneInfo(timezone)

    def when(value: datetime | str | None) -> str:
        instant = _instant(value)
        return instant.astimezone(zone).strftime("%Y-%m-%d %H:%M:%S") if instant else ""

    def iso(value: datetime | str | None) -> str:
        instant = _instant(value)
        return instant.astimezone(UTC).isoformat() if instant else ""

    return {"when": when, "iso": iso, "pretty_json": pretty_json}


def pretty_json(value: Any) -> str:
    """``value`` as indented JSON (plain text: the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, default=str, ensure_ascii=False)


def _instant(value: datetime | str | None) -> datetime | None:
    if value is None or value == "":
        return None
    instant = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    # The store keeps UTC; SQLite gives it back without its zone.
    return instant if instant.tzinfo is not None else instant.replace(tzinfo=UTC)


def chart_bars(days: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per day of ``days`` (``{"day", "succeeded", "failed"}``, oldest first):
    its counts, the x of its slot, and each bar's y and height, the busiest day's taller
    bar filling the drawing area. A day of no payments has bars of height 0."""
    busiest = max((max(day["succeeded"], day["failed"]) for day in days), default=0)
    scale = _BAR_AREA / busiest if busiest else 0.0
    bars = []
    for index, day in enumerate(days):
        succeeded = round(day["succeeded"] * scale)
        failed = round(day["failed"] * scale)
        x = index * _SLOT + 1
        bars.append(
            {
                "day": day["day"],
                "succeeded": day["succeeded"],
                "failed": day["failed"],
                "x": x,
                "failed_x": x + _BAR_WIDTH,
                "width": _BAR_WIDTH,
                "succeeded_y": _BAR_AREA - succeeded,
                "succeeded_height": succeeded,
                "failed_y": _BAR_AREA - failed,
                "failed_height": failed,
                # Only every fifth day and the last are labelled: 30 labels do not fit.
                "label": str(day["day"])[5:] if index % 5 == 0 or index == len(days) - 1 else None,
                # The first and last labels are kept inside the drawing.
                "label_x": x if index == 0 else x + 2 * _BAR_WIDTH,
                "label_anchor": "start" if index == 0 else "end",
            }
        )
    return bars
