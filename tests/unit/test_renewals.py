"""Renewal reminders without I/O: the [renewals] settings (each mistake on its line), the
window each reminder is due in, when a card stops working, which subscriptions renew, and
the reminder an event of Stripe's belongs to."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from payherald import ConfigurationError
from payherald.config import Config, load_config
from payherald.renewals import RenewalSettings, will_renew
from payherald.simulate import build_event
from payherald.stripe_objects import Card, default_card
from payherald.subjects import renewal_offset
from payherald.templates import TemplateRenderer
from payherald.webhook import StripeEvent, parse_event

DAY = 86400
HOUR = 3600
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "payherald.toml"
    path.write_text(text)
    return load_config(path)


def test_the_reminders_default_to_7_3_and_1_days_before(tmp_path: Path) -> None:
    assert _load(tmp_path, "").renewals == RenewalSettings(days=(7, 3, 1), enabled=True)


def test_days_and_enabled_are_read(tmp_path: Path) -> None:
    config = _load(tmp_path, "[renewals]\ndays = [2, 14, 2]\nenabled = false\n")
    assert config.renewals == RenewalSettings(days=(14, 2), enabled=False)
    assert config.rule_book(TemplateRenderer()).renewal_days == (14, 2)


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("[renewals]\ndays = [7, 0]\n", 2, "renewals.days: must be a list of whole days"),
        ('[renewals]\n\ndays = ["7d"]\n', 3, "renewals.days: must be a list of whole days"),
        ("[renewals]\ndays = []\n", 2, "renewals.days: must be a list of whole days"),
        ("[renewals]\ndays = 7\n", 2, "renewals.days: must be a list of whole days"),
        ("[renewals]\ndays = [1.5]\n", 2, "renewals.days: must be a list of whole days"),
        (
            "[renewals]\ndays = [45, 7]\n",
            2,
            "renewals.days: must be a list of whole days before the renewal, each from 1 to 30",
        ),
        ("[renewals]\nenabled = 1\n", 2, "renewals.enabled: must be true or false"),
        ("[renewals]\nday = [7]\n", 2, "renewals.day: unknown setting; renewals can have days"),
        ("renewals = 7\n", 1, "renewals: must be a table"),
    ],
)
def test_a_bad_setting_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _load(tmp_path, text)
    assert f"payherald.toml:{line}: {says}" in caught.value.message


@pytest.mark.parametrize(
    ("left", "offset"),
    [
        (8 * DAY, None),  # further than every reminder
        (7 * DAY + 12 * HOUR + 1, None),
        (7 * DAY + 12 * HOUR, 7),  # due from 12 hours before its day
        (4 * DAY, 7),
        (3 * DAY + 12 * HOUR, 3),
        (2 * DAY, 3),
        (1 * DAY + 12 * HOUR, 1),
        (60, 1),
        (0, None),  # renewed already
        (-DAY, None),
    ],
)
def test_each_time_before_a_renewal_belongs_to_one_reminder(left: int, offset: int | None) -> None:
    end = int(NOW.timestamp()) + 30 * DAY
    assert renewal_offset(end, end - left, (7, 3, 1)) == offset


@pytest.mark.parametrize(
    ("month", "year", "first_day_without"),
    [(11, 2026, datetime(2026, 12, 1, tzinfo=UTC)), (12, 2026, datetime(2027, 1, 1, tzinfo=UTC))],
)
def test_a_card_works_through_the_last_day_of_its_month(
    month: int, year: int, first_day_without: datetime
) -> None:
    card = Card(last4="4242", exp_month=month, exp_year=year)
    assert card.expires_at == int(first_day_without.timestamp())


def test_the_default_card_is_the_subscriptions_else_its_customers() -> None:
    method = {"object": "payment_method", "card": {"last4": "1", "exp_month": 1, "exp_year": 2027}}
    other = {"object": "payment_method", "card": {"last4": "2", "exp_month": 2, "exp_year": 2027}}
    customer = {"id": "cus_1", "invoice_settings": {"default_payment_method": other}}
    assert default_card({"default_payment_method": method, "customer": customer}) == Card(
        "1", 1, 2027
    )
    assert default_card({"default_payment_method": None, "customer": customer}) == Card(
        "2", 2, 2027
    )
    assert default_card({"default_payment_method": "pm_1", "customer": customer}) is None
    sepa = {"object": "payment_method", "type": "sepa_debit", "sepa_debit": {"last4": "3000"}}
    assert default_card({"default_payment_method": sepa}) is None


@pytest.mark.parametrize(
    ("changes", "renews"),
    [
        ({}, True),
        ({"status": "trialing"}, True),
        ({"cancel_at_period_end": True}, False),
        ({"cancel_at": 100}, False),  # before the period ends
        ({"cancel_at": 10**10}, True),  # long after
        ({"status": "canceled"}, False),
        ({"status": "incomplete"}, False),
        ({"status": "past_due"}, False),
        ({"pause_collection": {"behavior": "void"}}, False),
    ],
)
def test_only_a_subscription_to_be_charged_again_renews(
    changes: dict[str, object], renews: bool
) -> None:
    subscription = {"status": "active", "cancel_at_period_end": False, **changes}
    assert will_renew(subscription, 1000) is renews


def _upcoming(created: datetime, end: datetime, event_id: str = "evt_1") -> StripeEvent:
    event = build_event("invoice.upcoming", now=created)
    event["id"] = event_id
    invoice = event["data"]["object"]
    invoice["parent"]["subscription_details"]["subscription"] = "sub_1"
    invoice.update(period_end=int(end.timestamp()), next_payment_attempt=int(end.timestamp()))
    return parse_event(json.dumps(event).encode())


def test_stripes_event_belongs_to_the_reminder_of_when_it_was_created() -> None:
    book = Config().rule_book(TemplateRenderer())
    end = NOW + timedelta(days=3)
    (planned,) = book.plan(_upcoming(NOW, end))
    key = planned.key(planned.subject[0])
    assert key == f"renewal:sub_1:renewal:{int(end.timestamp())}:3d"
    # Configured for 30 days ahead in Stripe: a reminder of its own, not the scan's.
    (early,) = book.plan(_upcoming(NOW, NOW + timedelta(days=29, hours=1)))
    assert early.subject[0].endswith(":30d")  # the whole days left, rounded up
