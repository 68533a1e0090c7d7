"""Live/test separation (F4) and retry spacing."""

from __future__ import annotations

from payherald import ConsoleChannel
from payherald.worker import ChannelRouter, backoff_delay

SMS = ConsoleChannel(label="fake-sms")
SMS.name = "sms"  # type: ignore[misc]
CONSOLE = ConsoleChannel()
ROUTER = ChannelRouter(
    channels={"sms": SMS}, console=CONSOLE, test_allowlist=frozenset({"+14155550100"})
)


def test_live_events_use_the_rules_channel() -> None:
    assert ROUTER.route("sms", livemode=True, to="+14155550123") is SMS


def test_test_events_go_to_the_console() -> None:
    assert ROUTER.route("sms", livemode=False, to="+14155550123") is CONSOLE


def test_test_events_reach_allowlisted_numbers() -> None:
    assert ROUTER.route("sms", livemode=False, to="+14155550100") is SMS


def test_an_unconfigured_channel_falls_back_to_the_console() -> None:
    assert ROUTER.route("whatsapp", livemode=True, to="+14155550123") is CONSOLE


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff_delay(1, rng=lambda: 0.0) == 2.5
    assert backoff_delay(1, rng=lambda: 1.0) == 5.0
    assert backoff_delay(4, rng=lambda: 1.0) == 40.0
    assert backoff_delay(40, rng=lambda: 1.0) == 3600.0
