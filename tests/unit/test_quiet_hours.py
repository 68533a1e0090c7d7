"""Quiet hours: the window is local wall-clock time and moves with daylight saving."""

from __future__ import annotations

from datetime import UTC, datetime, time
from pathlib import Path

import pytest

from payherald import ConfigurationError
from payherald.config import load_config
from payherald.quiet_hours import QuietHours

DEFAULT = QuietHours()


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("zone", "now", "opens"),
    [
        # New York, winter (UTC-5): 03:00 local waits for 08:00 local = 13:00 UTC.
        ("America/New_York", utc(2026, 1, 15, 8, 0), utc(2026, 1, 15, 13, 0)),
        # New York, summer (UTC-4): 08:00 local is 12:00 UTC.
        ("America/New_York", utc(2026, 7, 15, 7, 0), utc(2026, 7, 15, 12, 0)),
        # The night clocks spring forward (2026-03-08 02:00 EST -> 03:00 EDT): 01:30 EST
        # waits for 08:00 EDT, which is 12:00 UTC, not 13:00.
        ("America/New_York", utc(2026, 3, 8, 6, 30), utc(2026, 3, 8, 12, 0)),
        # The night clocks fall back (2026-11-01): 01:30 EDT waits for 08:00 EST = 13:00 UTC.
        ("America/New_York", utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13, 0)),
        # Los Angeles at 22:00 local waits for tomorrow's 08:00.
        ("America/Los_Angeles", utc(2026, 1, 16, 6, 0), utc(2026, 1, 16, 16, 0)),
        # London, the night of the switch to BST (2026-03-29 01:00 GMT -> 02:00 BST).
        ("Europe/London", utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 7, 0)),
        ("Europe/London", utc(2026, 3, 28, 23, 0), utc(2026, 3, 29, 7, 0)),
        # Berlin after the window, in summer: tomorrow 08:00 CEST = 06:00 UTC.
        ("Europe/Berlin", utc(2026, 6, 10, 20, 0), utc(2026, 6, 11, 6, 0)),
        # Tokyo (no daylight saving): 23:00 JST waits for 08:00 JST = 23:00 UTC.
        ("Asia/Tokyo", utc(2026, 6, 10, 14, 0), utc(2026, 6, 10, 23, 0)),
        # Sydney, the night daylight saving ends (2026-04-05 03:00 AEDT -> 02:00 AEST):
        # 02:30 local waits for 08:00 AEST = 22:00 UTC the day before in UTC terms.
        ("Australia/Sydney", utc(2026, 4, 4, 15, 30), utc(2026, 4, 4, 22, 0)),
        # Sydney, the night it starts (2026-10-04 02:00 AEST -> 03:00 AEDT): 08:00 AEDT.
        ("Australia/Sydney", utc(2026, 10, 3, 16, 30), utc(2026, 10, 3, 21, 0)),
    ],
)
def test_outside_the_window_waits_for_the_local_opening(
    zone: str, now: datetime, opens: datetime
) -> None:
    assert DEFAULT.next_opening(now, zone) == opens


@pytest.mark.parametrize(
    ("zone", "now"),
    [
        ("America/New_York", utc(2026, 3, 8, 12, 0)),  # 08:00 EDT, the window's first minute
        ("America/New_York", utc(2026, 1, 15, 1, 59)),  # 20:59 EST
        ("Europe/London", utc(2026, 3, 29, 7, 0)),
        ("Asia/Tokyo", utc(2026, 6, 10, 3, 0)),  # noon
        ("Australia/Sydney", utc(2026, 4, 4, 22, 0)),
    ],
)
def test_inside_the_window_sends_now(zone: str, now: datetime) -> None:
    assert DEFAULT.next_opening(now, zone) is None


def test_21_00_is_outside_the_default_window() -> None:
    assert DEFAULT.next_opening(utc(2026, 1, 16, 2, 0), "America/New_York") == utc(
        2026, 1, 16, 13, 0
    )


def test_a_window_over_midnight() -> None:
    night = QuietHours(send_from=time(22, 0), send_until=time(6, 0))
    assert night.next_opening(utc(2026, 1, 15, 23, 30), "UTC") is None
    assert night.next_opening(utc(2026, 1, 15, 3, 0), "UTC") is None
    assert night.next_opening(utc(2026, 1, 15, 12, 0), "UTC") == utc(2026, 1, 15, 22, 0)


def test_an_opening_in_the_spring_forward_gap_is_the_same_instant_an_hour_later() -> None:
    early = QuietHours(send_from=time(2, 30), send_until=time(21, 0))
    # 2026-03-08 02:30 does not exist in New York; it is 03:30 EDT = 07:30 UTC.
    assert early.next_opening(utc(2026, 3, 8, 6, 0), "America/New_York") == utc(2026, 3, 8, 7, 30)


def test_turned_off_never_defers() -> None:
    assert QuietHours(enabled=False).next_opening(utc(2026, 1, 15, 8, 0), "UTC") is None


def test_the_rules_file_sets_the_window_and_exemptions(tmp_path: Path) -> None:
    path = tmp_path / "payherald.toml"
    path.write_text(
        '[quiet_hours]\nsend_from = "09:30"\nsend_until = 20:00:00\n\n'
        "[rules.payment_confirmation]\nquiet_hours_exempt = false\n\n"
        "[rules.trial_ending]\nquiet_hours_exempt = true\n"
    )
    config = load_config(path)
    assert config.quiet_hours == QuietHours(send_from=time(9, 30), send_until=time(20, 0))
    exempt = {rule.name: rule.quiet_hours_exempt for rule in config.rules}
    assert exempt["payment_confirmation"] is False
    assert exempt["trial_ending"] is True


def test_by_default_only_receipts_and_the_fraud_check_are_exempt() -> None:
    # Both are about a payment made just now; the fraud check's answer is urgent too.
    config = load_config(Path("/nonexistent/payherald.toml"))
    exempt = {rule.name for rule in config.rules if rule.quiet_hours_exempt}
    assert exempt == {"payment_confirmation", "fraud_check"}
    assert config.quiet_hours == QuietHours()


def test_a_bad_window_is_reported_by_line(tmp_path: Path) -> None:
    path = tmp_path / "payherald.toml"
    path.write_text('[quiet_hours]\nsend_from = "8am"\nsend_untill = "21:00"\n')
    with pytest.raises(ConfigurationError) as raised:
        load_config(path)
    message = str(raised.value)
    assert f"{path}:2: quiet_hours.send_from: '8am' is not a time of day" in message
    assert f"{path}:3: quiet_hours.send_untill: unknown setting" in message
