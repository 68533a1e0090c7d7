"""Live/test separation, channel availability, and retry spacing."""

from __future__ import annotations

from payherald.backoff import backoff_delay
from payherald.channels import ChannelRouter, ConsoleChannel
from payherald.testing import ScriptedChannel

SMS = ScriptedChannel("sms")
CONSOLE = ConsoleChannel()
ROUTER = ChannelRouter(
    channels={"sms": SMS}, console=CONSOLE, test_allowlist=frozenset({"+14155550100"})
)
DEVELOPER = ChannelRouter(channels={}, console=CONSOLE)


def test_live_events_use_the_rules_channel() -> None:
    assert ROUTER.route("sms", livemode=True, to="+14155550123") is SMS


def test_test_events_go_to_the_console() -> None:
    assert ROUTER.route("sms", livemode=False, to="+14155550123") is CONSOLE


def test_test_events_reach_allowlisted_numbers() -> None:
    assert ROUTER.route("sms", livemode=False, to="+14155550100") is SMS


def test_an_unconfigured_channel_is_unavailable_once_a_provider_is_configured() -> None:
    assert ROUTER.available("sms", livemode=True)
    assert not ROUTER.available("email", livemode=True)


def test_test_mode_and_a_developer_machine_can_use_every_channel_on_the_console() -> None:
    assert ROUTER.available("email", livemode=False)
    assert DEVELOPER.available("email", livemode=True)
    assert DEVELOPER.route("email", livemode=True, to="jenny@example.com") is CONSOLE


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    assert backoff_delay(1, rng=lambda: 0.0) == 2.5
    assert backoff_delay(1, rng=lambda: 1.0) == 5.0
    assert backoff_delay(4, rng=lambda: 1.0) == 40.0
    assert backoff_delay(40, rng=lambda: 1.0) == 3600.0
