"""Renewal reminders on SQLite and PostgreSQL: the scheduled scan lists the subscriptions of
a stand-in of today's Stripe on loopback, page by page, and each one renewing soon gets one
reminder per offset (7, 3 and 1 days before), the card-update variant when its default card
expires first; Stripe's invoice.upcoming and trial_will_end, posted over HTTP, and the scan
tell each reminder once; a rule turned off or a customer who opted out gets nothing."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from payherald import FrozenClock
from payherald.renewals import RENEWAL_DUE, RENEWAL_SCAN_JOB
from payherald.simulate import build_event
from payherald.testing import ScriptedChannel
from tests.stripe_standin import StripeStandIn, stripe_standin
from tests.support import LiveServer, StripeOnLoopback, build_for_tests

DAY = 86400
HOUR = 3600
# Saturday noon, late in November: a card that expires in November 2026 does so before a
# renewal a week later (December 5th).
START = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
OLDER = "2024-06-20"  # before basil: the period end is the subscription's own
UPDATE_URL = "https://billing.example.com/card"
_numbers = itertools.count(100)


def _phone() -> str:
    return f"+1415555{next(_numbers):04d}"


class Account(StripeOnLoopback):
    """payherald with a key to a Stripe stand-in, and what it has sent."""

    standin: StripeStandIn

    def subscription(
        self,
        *,
        renews_in: float,
        api_version: str | None = None,
        card: tuple[int, int] | None = None,
        card_on: str = "subscription",
        livemode: bool = True,
        **fields: Any,
    ) -> dict[str, Any]:
        """A subscription Stripe now knows, of a customer of its own with a phone number,
        renewing ``renews_in`` days from now; with a default card expiring at the end of
        ``card`` (month, year), set on the subscription or on its customer."""
        now = self.clock.now()
        event = build_event(
            "customer.subscription.updated",
            now=now,
            phone=_phone(),
            livemode=livemode,
            **({"api_version": api_version} if api_version else {}),
        )
        sub = event["data"]["object"]
        end = int(now.timestamp() + renews_in * DAY)
        if "current_period_end" in sub:  # an older version
            sub["current_period_end"] = end
        for item in sub["items"]["data"]:
            if "current_period_end" in item:
                item["current_period_end"] = end
        sub.update(fields)
        customer = {
            "id": sub["customer"],
            "object": "customer",
            "phone": sub["metadata"]["phone"],
            "email": None,
            "name": "Jenny Rosen",
            "metadata": {},
            "invoice_settings": {"default_payment_method": None},
        }
        if card is not None:
            method = {
                "id": f"pm_{sub['id']}",
                "object": "payment_method",
                "type": "card",
                "card": {
                    "brand": "visa",
                    "last4": "4242",
                    "exp_month": card[0],
                    "exp_year": card[1],
                },
            }
            self.standin.add(method)
            if card_on == "subscription":
                sub["default_payment_method"] = method["id"]
            else:
                customer["invoice_settings"]["default_payment_method"] = method["id"]
        self.standin.add(customer, sub)
        return sub

    def scan(self) -> None:
        """The scan's recurring job runs (when due), then the worker sends what it queued."""
        self.ph.store.jobs.ensure_recurring(RENEWAL_SCAN_JOB, RENEWAL_SCAN_JOB, {})
        self.ph.jobs.run_until_idle()
        self.ph.worker.run_until_idle()

    def texts_to(self, sub: dict[str, Any]) -> list[str]:
        return [m.body for m in self.sms.delivered if m.to == sub["metadata"]["phone"]]

    def reminders(self) -> list[dict[str, Any]]:
        return [
            row
            for row in self.ph.store.list_notifications(limit=1000)
            if row["rule"] in ("renewal_reminder", "renewal_card_expiring", "trial_ending")
        ]


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with stripe_standin() as standin:
        yield standin


def _account(
    database_url: str, standin: StripeStandIn, tmp_path: Path, rules: str = ""
) -> Iterator[Account]:
    path = tmp_path / "payherald.toml"
    path.write_text(rules)
    settings = {
        "STRIPE_SECRET_KEY": "sk_test_standin",
        "STRIPE_API_BASE": standin.url,
        "PAYHERALD_CONFIG": str(path),
        "PAYHERALD_UPDATE_CARD_URL": UPDATE_URL,
    }
    clock, sms = FrozenClock(START), ScriptedChannel("sms")
    ph = build_for_tests(database_url, clock=clock, channels={"sms": sms}, settings=settings)
    with LiveServer(ph.http_app) as server, Account(ph, server, clock, sms) as account:
        account.standin = standin
        yield account
    ph.engine.dispose()


@pytest.fixture
def account(database_url: str, standin: StripeStandIn, tmp_path: Path) -> Iterator[Account]:
    yield from _account(database_url, standin, tmp_path)


def test_the_scan_reads_every_page_and_reminds_each_renewing_subscription_once(
    account: Account, standin: StripeStandIn
) -> None:
    standin.page_size = 2
    plain = account.subscription(renews_in=6.9, card=(12, 2026))
    card_on_sub = account.subscription(renews_in=6.9, card=(11, 2026))
    card_on_customer = account.subscription(renews_in=6.9, card=(11, 2026), card_on="customer")
    older_version = account.subscription(renews_in=6.9, api_version=OLDER, card=(11, 2030))
    cancelling = account.subscription(renews_in=6.9, cancel_at_period_end=True)
    canceled = account.subscription(renews_in=6.9, status="canceled")
    incomplete = account.subscription(renews_in=6.9, status="incomplete")
    far = account.subscription(renews_in=20)

    account.scan()

    assert standin.requested("starting_after=") >= 3  # four pages of two
    renews = "renews on Dec 5, 2026 for $20.00"
    assert account.texts_to(plain) == [f"Reminder: your Pro monthly subscription {renews}."]
    assert account.texts_to(older_version) == account.texts_to(plain)
    expiring = (
        f"Your Pro monthly subscription {renews}, but your card ending 4242 expires before "
        f"then. Update your card: {UPDATE_URL}"
    )
    assert account.texts_to(card_on_sub) == [expiring]
    assert account.texts_to(card_on_customer) == [expiring]
    for quiet in (cancelling, canceled, incomplete, far):
        assert account.texts_to(quiet) == []
    events = account.ph.store.list_events(type=RENEWAL_DUE)
    assert sorted(e["id"] for e in events) == sorted(
        f"evt_payherald_renewal_{sub['id']}_{int(START.timestamp()) + int(6.9 * DAY)}_7d"
        for sub in (plain, card_on_sub, card_on_customer, older_version)
    )
    assert {row["rule"]: row["status"] for row in account.reminders()} == {
        "renewal_reminder": "sent",
        "renewal_card_expiring": "sent",
    }


def test_a_card_given_by_id_only_is_read_from_stripe(
    account: Account, standin: StripeStandIn
) -> None:
    standin.expand_payment_methods = False
    sub = account.subscription(renews_in=2.5, card=(11, 2026), card_on="customer")

    account.scan()

    assert standin.requested(f"GET /v1/payment_methods/pm_{sub['id']}") == 1
    assert "expires before then" in account.texts_to(sub)[0]


def test_each_reminder_is_sent_once_7_3_and_1_days_before_on_a_moved_clock(
    account: Account,
) -> None:
    sub = account.subscription(renews_in=8)
    renewal = START.timestamp() + 8 * DAY
    sent_at: list[float] = []  # days before the renewal when each reminder went out
    while account.clock.now().timestamp() < renewal:
        account.scan()
        if len(account.texts_to(sub)) > len(sent_at):
            sent_at.append((renewal - account.clock.now().timestamp()) / DAY)
        account.clock.advance(3 * HOUR)  # the hourly scan, due at each step

    # Each due from its day and 12 hours before (see RENEWAL_EARLY_SECONDS).
    assert sent_at == [7.5, 3.5, 1.5]
    assert len(account.texts_to(sub)) == 3
    assert [row["status"] for row in account.reminders()] == ["sent"] * 3
    # A scan in a window already told adds nothing (every hourly scan above did the same).
    assert account.ph.renewals is not None
    assert account.ph.renewals.scan().new == 0


def _upcoming_invoice(account: Account, sub: dict[str, Any]) -> dict[str, Any]:
    """Stripe's invoice.upcoming for ``sub``'s next renewal, in today's shape."""
    event = build_event("invoice.upcoming", now=account.clock.now(), livemode=True)
    invoice = event["data"]["object"]
    end = sub["items"]["data"][0]["current_period_end"]
    invoice["parent"]["subscription_details"]["subscription"] = sub["id"]
    invoice.update(customer=sub["customer"], period_end=end, next_payment_attempt=end + HOUR)
    return event


def _trial_will_end(account: Account, sub: dict[str, Any]) -> dict[str, Any]:
    """Stripe's customer.subscription.trial_will_end for ``sub``."""
    event = build_event(
        "customer.subscription.trial_will_end", now=account.clock.now(), livemode=True
    )
    event["data"]["object"] = copy.deepcopy(sub)
    return event


@pytest.mark.parametrize("first", ["event", "scan"])
@pytest.mark.parametrize("kind", ["invoice.upcoming", "trial_will_end"])
def test_stripes_event_and_the_scan_tell_one_reminder(
    account: Account, first: str, kind: str
) -> None:
    trial = kind == "trial_will_end"
    end = int(START.timestamp()) + 3 * DAY
    sub = account.subscription(
        renews_in=3, **({"status": "trialing", "trial_end": end} if trial else {})
    )
    event = _trial_will_end(account, sub) if trial else _upcoming_invoice(account, sub)

    if first == "scan":
        account.scan()
    account.send(event)
    account.send(event)  # Stripe retries it
    account.clock.advance(HOUR)
    account.scan()

    texts = account.texts_to(sub)
    assert len(texts) == 1
    assert texts[0].startswith(
        "Your Pro monthly trial ends on Dec 1, 2026" if trial else "Reminder"
    )
    assert [row["status"] for row in account.reminders()] == ["sent"]
    told_by = account.reminders()[0]["event_id"]
    assert (told_by == event["id"]) is (first == "event")


def test_a_test_mode_subscription_is_reminded_on_the_console_only(account: Account) -> None:
    sub = account.subscription(renews_in=1, livemode=False)

    account.scan()

    assert account.texts_to(sub) == []
    (row,) = account.reminders()
    assert (row["status"], row["livemode"], row["provider_id"][:8]) == ("sent", 0, "console-")


@pytest.mark.parametrize(
    "rules",
    [
        "[rules.renewal_reminder]\nenabled = false\n",
        "[renewals]\nenabled = false\n",
    ],
    ids=["rule off", "scan off"],
)
def test_nothing_is_sent_with_the_reminder_or_the_scan_turned_off(
    database_url: str, standin: StripeStandIn, tmp_path: Path, rules: str
) -> None:
    for account in _account(database_url, standin, tmp_path, rules):
        sub = account.subscription(renews_in=3)
        account.scan()
        account.send(_upcoming_invoice(account, sub))
        if "renewals" in rules:
            assert account.ph.renewals is None
            assert RENEWAL_SCAN_JOB not in account.ph.jobs.kinds
            assert len(account.texts_to(sub)) == 1  # Stripe's event still tells it
        else:
            assert account.texts_to(sub) == []
            assert account.ph.store.list_events(type=RENEWAL_DUE) == []


def test_the_card_variant_turned_off_leaves_the_plain_reminder(
    database_url: str, standin: StripeStandIn, tmp_path: Path
) -> None:
    rules = "[rules.renewal_card_expiring]\nenabled = false\n"
    for account in _account(database_url, standin, tmp_path, rules):
        sub = account.subscription(renews_in=6.9, card=(11, 2026))
        account.scan()
        assert [text[:8] for text in account.texts_to(sub)] == ["Reminder"]


def test_a_customer_who_opted_out_is_not_reminded(account: Account) -> None:
    sub = account.subscription(renews_in=3)
    account.ph.store.consents.record(
        address=sub["metadata"]["phone"],
        action="opt_out",
        channel="sms",
        words="STOP",
        source="reply",
    )

    account.scan()

    assert account.texts_to(sub) == []
    (row,) = account.reminders()
    assert (row["status"], row["error_code"]) == ("failed", "suppressed")


@pytest.mark.parametrize("first", ["event", "scan"])
def test_an_expiring_card_and_stripes_event_tell_one_reminder_whichever_comes_first(
    account: Account, first: str
) -> None:
    sub = account.subscription(renews_in=6.9, card=(11, 2026))
    event = _upcoming_invoice(account, sub)

    if first == "scan":
        account.scan()
    account.send(event)
    account.clock.advance(HOUR)
    account.scan()

    # The event does not carry the card, so told first it is the plain reminder.
    (text,) = account.texts_to(sub)
    assert text.startswith("Reminder") is (first == "event")
    assert [row["rule"] for row in account.reminders()] == [
        "renewal_reminder" if first == "event" else "renewal_card_expiring"
    ]


def test_an_older_api_versions_trial_will_end_and_the_scan_tell_one_reminder(
    account: Account,
) -> None:
    # Before basil the period end is the subscription's own, not its items'.
    end = int(START.timestamp()) + 3 * DAY
    sub = account.subscription(renews_in=3, api_version=OLDER, status="trialing", trial_end=end)
    assert "current_period_end" in sub
    assert "current_period_end" not in sub["items"]["data"][0]
    event = _trial_will_end(account, sub)
    event["api_version"] = OLDER

    account.send(event)
    account.scan()

    assert account.texts_to(sub) == [
        "Your Pro monthly trial ends on Dec 1, 2026. Your card will then be charged $20.00."
    ]
