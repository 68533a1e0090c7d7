"""Quiet hours through the whole path: a customer text due at night waits in the
store for the recipient's 08:00, then goes out once; receipts and team alerts do not wait."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from payherald import FrozenClock, parse_event
from payherald.quiet_hours import QuietHours
from payherald.simulate import build_event
from payherald.testing import ScriptedChannel
from tests.support import build_for_tests

RULES = """
[teams.finance]
sms = ["+12125550100"]

[rules.trial_ending]
quiet_hours_exempt = true
"""


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    path = tmp_path / "payherald.toml"
    path.write_text(RULES)
    return path


def build(
    database_url: str, clock: FrozenClock, sms: ScriptedChannel, rules_file: Path, **settings: str
) -> Any:
    return build_for_tests(
        database_url,
        # A dunning text alone, sent at once: no wait for its payment's failure event.
        settings={
            "PAYHERALD_CONFIG": str(rules_file),
            "PAYHERALD_LINK_GRACE_SECONDS": "0",
            **settings,
        },
        clock=clock,
        channels={"sms": sms},
        quiet_hours=QuietHours(),
    )


@pytest.fixture
def night_in_new_york() -> FrozenClock:
    # 2026-03-08 01:30 EST, half an hour before the clocks spring forward.
    return FrozenClock(datetime(2026, 3, 8, 6, 30, tzinfo=UTC))


def deliver(ph: Any, clock: FrozenClock, event_type: str, phone: str, *, live: bool = True) -> None:
    payload = build_event(event_type, now=clock.now(), phone=phone, livemode=live)
    event = parse_event(json.dumps(payload).encode())
    ph.store.record_event(event, ph.rules.plan(event))


def move_to(clock: FrozenClock, when: datetime) -> None:
    clock.advance((when - clock.now()).total_seconds())


@pytest.mark.parametrize(
    ("phone", "night", "opening", "settings"),
    [
        # New York on the night of the spring-forward switch: 08:00 EDT is 12:00 UTC.
        pytest.param(
            "+12125550123",
            datetime(2026, 3, 8, 6, 30, tzinfo=UTC),
            datetime(2026, 3, 8, 12, 0, tzinfo=UTC),
            {},
            id="us-dst-switch",
        ),
        # London, the night British Summer Time starts: 08:00 BST is 07:00 UTC.
        pytest.param(
            "+442071838750",
            datetime(2026, 3, 29, 0, 30, tzinfo=UTC),
            datetime(2026, 3, 29, 7, 0, tzinfo=UTC),
            {},
            id="eu-dst-switch",
        ),
        # Sydney, the night daylight saving ends: 08:00 AEST is 22:00 UTC the day before.
        pytest.param(
            "+61212345678",
            datetime(2026, 4, 4, 15, 30, tzinfo=UTC),
            datetime(2026, 4, 4, 22, 0, tzinfo=UTC),
            {},
            id="apac-dst-switch",
        ),
        # Tokyo, 23:00: tomorrow's 08:00 JST.
        pytest.param(
            "+81312345678",
            datetime(2026, 6, 10, 14, 0, tzinfo=UTC),
            datetime(2026, 6, 10, 23, 0, tzinfo=UTC),
            {},
            id="apac-tokyo",
        ),
        # An Australian mobile could be in any of several zones: the configured one is used.
        pytest.param(
            "+61412345678",
            datetime(2026, 6, 10, 20, 0, tzinfo=UTC),
            datetime(2026, 6, 11, 0, 0, tzinfo=UTC),
            {"PAYHERALD_TIMEZONE": "Australia/Perth"},
            id="several-zones-uses-configured",
        ),
    ],
)
def test_a_dunning_text_at_night_goes_out_once_when_the_window_opens(
    database_url: str,
    sms: ScriptedChannel,
    rules_file: Path,
    phone: str,
    night: datetime,
    opening: datetime,
    settings: dict[str, str],
) -> None:
    clock = FrozenClock(night)
    ph = build(database_url, clock, sms, rules_file, **settings)
    deliver(ph, clock, "invoice.payment_failed", phone)
    ph.worker.run_until_idle()
    assert sms.attempts == []
    (waiting,) = first_dunning_step(ph)
    assert waiting["status"] == "pending"
    assert waiting["run_at"] == opening
    assert waiting["notes"].startswith("quiet hours (08:00-21:00 in ")
    assert waiting["attempts"] == 0

    move_to(clock, opening - timedelta(seconds=1))  # a second before 08:00 local
    ph.worker.run_until_idle()
    assert sms.attempts == []

    clock.advance(1)
    ph.worker.run_until_idle()
    clock.advance(3600)
    ph.worker.run_until_idle()
    assert [message.to for message in sms.attempts] == [phone]
    (sent,) = first_dunning_step(ph)
    assert sent["status"] == "sent"
    ph.engine.dispose()


def first_dunning_step(ph: Any) -> list[dict[str, Any]]:
    """The first step of dunning (the later ones are days away)."""
    return [r for r in ph.store.list_notifications() if r["rule"] == "invoice_payment_failed"]


def test_a_receipt_is_exempt_by_default_and_a_rule_can_be_made_exempt(
    database_url: str, sms: ScriptedChannel, rules_file: Path, night_in_new_york: FrozenClock
) -> None:
    ph = build(database_url, night_in_new_york, sms, rules_file)
    deliver(ph, night_in_new_york, "payment_intent.succeeded", "+12125550123")
    deliver(ph, night_in_new_york, "customer.subscription.trial_will_end", "+12125550123")
    deliver(ph, night_in_new_york, "customer.subscription.deleted", "+12125550123")
    ph.worker.run_until_idle()
    status = {row["rule"]: row["status"] for row in ph.store.list_notifications()}
    assert status["payment_confirmation"] == "sent"  # built-in exemption
    assert status["trial_ending"] == "sent"  # exempted in the rules file
    assert status["subscription_cancelled"] == "pending"  # waits for the morning
    assert len(sms.attempts) == 2
    ph.engine.dispose()


def test_a_receipt_can_be_made_to_wait(
    database_url: str, sms: ScriptedChannel, tmp_path: Path, night_in_new_york: FrozenClock
) -> None:
    rules = tmp_path / "payherald.toml"
    rules.write_text("[rules.payment_confirmation]\nquiet_hours_exempt = false\n")
    ph = build(database_url, night_in_new_york, sms, rules)
    deliver(ph, night_in_new_york, "payment_intent.succeeded", "+12125550123")
    ph.worker.run_until_idle()
    assert sms.attempts == []
    ph.engine.dispose()


def test_team_alerts_and_test_mode_are_not_held(
    database_url: str, sms: ScriptedChannel, rules_file: Path, night_in_new_york: FrozenClock
) -> None:
    ph = build(database_url, night_in_new_york, sms, rules_file)
    deliver(ph, night_in_new_york, "charge.dispute.created", "+12125550123")
    deliver(ph, night_in_new_york, "invoice.payment_failed", "+12125550123", live=False)
    ph.worker.run_until_idle()
    status = {row["rule"]: row["status"] for row in ph.store.list_notifications()}
    assert status == {
        "dispute_alert": "sent",
        "invoice_payment_failed": "sent",
        # Dunning's later steps are days away.
        "dunning_reminder": "pending",
        "dunning_final": "pending",
    }
    # The team's alert went by SMS at night; the test-mode message only to the console.
    assert [message.to for message in sms.attempts] == ["+12125550100"]
    ph.engine.dispose()


def test_the_window_can_be_changed(
    database_url: str, sms: ScriptedChannel, tmp_path: Path, night_in_new_york: FrozenClock
) -> None:
    rules = tmp_path / "payherald.toml"
    rules.write_text('[quiet_hours]\nsend_from = "01:00"\nsend_until = "23:00"\n')
    ph = build_for_tests(
        database_url,
        settings={"PAYHERALD_CONFIG": str(rules), "PAYHERALD_LINK_GRACE_SECONDS": "0"},
        clock=night_in_new_york,
        channels={"sms": sms},
        quiet_hours=None,  # the rules file's window, as in production
    )
    deliver(ph, night_in_new_york, "invoice.payment_failed", "+12125550123")
    ph.worker.run_until_idle()
    assert len(sms.attempts) == 1
    ph.engine.dispose()
