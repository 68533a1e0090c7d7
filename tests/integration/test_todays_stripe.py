"""Today's Stripe, end to end: one message per payment, failure and refund in every release
family, whatever the order of the events, posted over HTTP seconds apart and each processed
before the next arrives (as Stripe sends them), with a secret key (against a stand-in of
the Stripe API) and without one. On SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest

from payherald import FrozenClock, parse_event
from payherald.api_versions import NEWEST_SUPPORTED
from payherald.ingest import ingest
from payherald.simulate import (
    build_event,
    build_renewal_failure_events,
    build_subscription_payment_events,
)
from payherald.store.transitions import Outcome
from payherald.testing import ScriptedChannel
from tests.stripe_standin import StripeStandIn, open_invoice_payment, stripe_standin
from tests.support import LiveServer, StripeOnLoopback, build_for_tests

PHONE = "+14155550123"
TEAM_PHONE = "+14155550100"
GRACE = 60
# One version of each release family, and the last before them (2024-06-20). For basil,
# one that sends invoice_payment.paid (from 2025-05-28).
FAMILIES = [
    "2024-06-20",
    "2024-10-28.acacia",
    "2025-06-30.basil",
    "2025-12-15.clover",
    "2026-06-24.dahlia",
    NEWEST_SUPPORTED,
]
ORDERS = list(itertools.permutations(range(4)))
RULES = f"""
[teams.finance]
sms = ["{TEAM_PHONE}"]

[high_value]
usd = 1000
"""


class Stripe(StripeOnLoopback):
    """payherald served on loopback, the events it is sent, and what it sent."""

    def later(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.ph.worker.run_until_idle()

    def told(self, events: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
        """The notifications of ``rule`` about ``events`` that were sent."""
        ids = {event["id"] for event in events}
        return [
            row
            for row in self.ph.store.list_notifications(limit=10_000)
            if row["rule"] == rule and row["event_id"] in ids and row["status"] == "sent"
        ]

    def notifications(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = {event["id"] for event in events}
        return [r for r in self.ph.store.list_notifications(limit=10_000) if r["event_id"] in ids]


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with stripe_standin() as standin:
        yield standin


def _stripe(database_url: str, tmp_path: Any, standin: StripeStandIn | None) -> Iterator[Stripe]:
    rules = tmp_path / "payherald.toml"
    rules.write_text(RULES)
    settings = {"PAYHERALD_CONFIG": str(rules), "PAYHERALD_LINK_GRACE_SECONDS": str(GRACE)}
    if standin is not None:
        settings |= {"STRIPE_SECRET_KEY": "sk_test_standin", "STRIPE_API_BASE": standin.url}
    clock, sms = FrozenClock(), ScriptedChannel("sms")
    ph = build_for_tests(database_url, clock=clock, channels={"sms": sms}, settings=settings)
    with LiveServer(ph.http_app) as server, Stripe(ph, server, clock, sms) as stripe:
        yield stripe
    ph.engine.dispose()


@pytest.fixture
def keyless(database_url: str, tmp_path: Any) -> Iterator[Stripe]:
    """payherald without STRIPE_SECRET_KEY: it cannot ask Stripe anything."""
    yield from _stripe(database_url, tmp_path, None)


@pytest.fixture
def keyed(database_url: str, tmp_path: Any, standin: StripeStandIn) -> Iterator[Stripe]:
    """payherald with a secret key, asking the stand-in of the Stripe API."""
    yield from _stripe(database_url, tmp_path, standin)


def _known_to_stripe(standin: StripeStandIn, events: list[dict[str, Any]]) -> None:
    """What Stripe knows by the time it sends ``events``: their objects as they are, the
    customer, and the invoice payment that links the invoice to its payment intent."""
    objects = [event["data"]["object"] for event in events]
    standin.add(*(obj for obj in objects if obj["object"] != "invoice_payment"))
    invoice = next(obj for obj in objects if obj["object"] == "invoice")
    intent = next(obj for obj in objects if obj["object"] == "payment_intent")
    standin.add({"id": invoice["customer"], "object": "customer", "name": "Jenny Rosen"})
    standin.link(
        {
            "id": f"inpay_{invoice['id']}",
            "object": "invoice_payment",
            "invoice": invoice["id"],
            "status": "paid",
            "amount_paid": invoice["amount_paid"],
            "amount_requested": invoice["amount_due"],
            "currency": invoice["currency"],
            "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
        }
    )


def _one_payment_each_order(stripe: Stripe, version: str, standin: StripeStandIn | None) -> None:
    for order in ORDERS:
        events = build_subscription_payment_events(
            now=stripe.clock.now(), phone=PHONE, livemode=True, api_version=version
        )
        if standin is not None:
            _known_to_stripe(standin, events)
        for index in order:
            stripe.send(events[index])
        stripe.later(GRACE + 1)  # whatever waited for a link has its answer by now
        where = f"{version}, order {order}"
        assert len(stripe.told(events, "payment_confirmation")) == 1, where
        assert len(stripe.told(events, "high_value_alert")) == 1, where
        assert len(stripe.told(events, "welcome")) <= 1, where
        waiting = [r for r in stripe.notifications(events) if r["status"] == "pending"]
        assert waiting == [], where


@pytest.mark.parametrize("version", FAMILIES)
def test_a_subscription_payment_is_told_once_in_every_order_without_a_key(
    keyless: Stripe, version: str
) -> None:
    _one_payment_each_order(keyless, version, None)
    confirmations = [m for m in keyless.sms.delivered if m.body.startswith("Payment of")]
    assert len(confirmations) == len(ORDERS)


@pytest.mark.parametrize("version", FAMILIES)
def test_a_subscription_payment_is_told_once_in_every_order_with_a_key(
    keyed: Stripe, standin: StripeStandIn, version: str
) -> None:
    _one_payment_each_order(keyed, version, standin)
    welcomes = [m for m in keyed.sms.delivered if m.body.startswith("Welcome")]
    assert len(welcomes) == len(ORDERS)  # the customer's first payment, told once each


def test_with_a_key_an_invoice_that_nothing_linked_is_linked_by_asking_stripe(
    keyed: Stripe, standin: StripeStandIn
) -> None:
    events = build_subscription_payment_events(now=keyed.clock.now(), phone=PHONE, livemode=True)
    _known_to_stripe(standin, events)
    intent, charge, invoice, _ = events
    keyed.send(invoice)  # first, and nothing links it yet: payherald asks, and tells it now
    assert standin.requested("/v1/invoice_payments?") >= 1
    assert len(keyed.told(events, "payment_confirmation")) == 1
    keyed.send(intent)
    keyed.send(charge)
    assert len(keyed.told(events, "payment_confirmation")) == 1
    assert [r["event_id"] for r in keyed.notifications(events)].count(intent["id"]) == 0


def test_without_a_key_an_invoice_waits_for_its_link_then_is_not_told_twice(
    keyless: Stripe,
) -> None:
    events = build_subscription_payment_events(now=keyless.clock.now(), phone=PHONE, livemode=True)
    intent, charge, invoice, linking = events
    keyless.send(invoice)
    (waiting,) = [r for r in keyless.notifications(events) if r["rule"] == "payment_confirmation"]
    assert waiting["status"] == "pending"
    assert "waiting for the event that links invoice" in waiting["notes"]
    keyless.send(intent)
    keyless.send(linking)
    keyless.send(charge)
    keyless.later(GRACE)
    rows = {
        r["event_id"]: r
        for r in keyless.notifications(events)
        if r["rule"] == "payment_confirmation"
    }
    assert rows[intent["id"]]["status"] == "sent"
    assert rows[invoice["id"]]["status"] == "skipped"
    assert "is about the same payment" in rows[invoice["id"]]["error"]


@pytest.fixture(params=[False, True], ids=["without_key", "with_key"])
def either(
    request: pytest.FixtureRequest, database_url: str, tmp_path: Any, standin: StripeStandIn
) -> Iterator[Stripe]:
    """payherald without a key, then with one (asking the stand-in)."""
    yield from _stripe(database_url, tmp_path, standin if request.param else None)


@pytest.mark.parametrize("version", FAMILIES)
def test_a_failed_renewal_gives_one_failure_text(
    either: Stripe, standin: StripeStandIn, version: str
) -> None:
    for order in itertools.permutations(range(3)):
        events = build_renewal_failure_events(
            now=either.clock.now(), phone=PHONE, livemode=True, api_version=version
        )
        invoice, intent, _ = (event["data"]["object"] for event in events)
        standin.add(*(event["data"]["object"] for event in events))
        standin.link(open_invoice_payment(invoice, intent))
        for index in order:
            either.send(events[index])
        either.later(GRACE + 1)
        where = f"{version}, order {order}"
        texts = [
            m.body
            for m in either.sms.delivered
            if m.body.startswith(("We could not collect", "Your payment"))
        ]
        assert len(texts) == 1, (where, texts)
        assert texts[0].startswith("We could not collect $20.00 for invoice"), where
        assert "the card has insufficient funds" in texts[0], where
        assert "https://invoice.stripe.com/" in texts[0], where
        either.sms.delivered.clear()


def test_a_failure_text_about_an_invoice_paid_since_is_not_sent(
    keyed: Stripe, standin: StripeStandIn
) -> None:
    events = build_renewal_failure_events(now=keyed.clock.now(), phone=PHONE, livemode=True)
    invoice = events[0]["data"]["object"]
    standin.add(invoice | {"status": "paid", "amount_paid": invoice["amount_due"]})
    keyed.send(events[0])
    rows = {row["rule"]: row for row in keyed.notifications(events[:1])}
    row = rows["invoice_payment_failed"]
    assert row["status"] == "skipped"
    assert row["error"] == f"Invoice {invoice['id']} is paid now (read from Stripe before sending)."
    # Its dunning ended with it: the later steps are skipped too, before they fall due.
    assert (rows["dunning_reminder"]["status"], rows["dunning_final"]["status"]) == (
        "skipped",
        "skipped",
    )
    assert keyed.sms.delivered == []


@pytest.mark.parametrize("order", ["refund_first", "charge_first"])
def test_a_refund_of_today_reaches_the_customer_through_its_charge_once(
    keyed: Stripe, standin: StripeStandIn, order: str
) -> None:
    refund_event = build_event("refund.created", now=keyed.clock.now(), livemode=True, amount=750)
    refund = refund_event["data"]["object"]
    refund.update(customer=None, metadata={})  # as Stripe sends it: no contact, no customer
    charge = {
        "id": refund["charge"],
        "object": "charge",
        "customer": "cus_refunded",
        "billing_details": {"phone": "+14155550199", "email": None, "address": None},
    }
    standin.add(charge, {"id": "cus_refunded", "object": "customer", "name": "Jenny Rosen"})
    charge_refunded = build_event("charge.refunded", now=keyed.clock.now(), livemode=True)
    charge_refunded["data"]["object"].update(
        id=refund["charge"],
        customer="cus_refunded",
        amount_refunded=750,
        billing_details=charge["billing_details"],
    )
    charge_refunded["data"]["previous_attributes"] = {"amount_refunded": 0}
    events = [refund_event, charge_refunded]
    for event in events if order == "refund_first" else events[::-1]:
        keyed.send(event)
    keyed.later(GRACE + 1)
    to_customer = [m for m in keyed.sms.delivered if m.to != TEAM_PHONE]
    assert [(m.to, m.body) for m in to_customer] == [
        (
            "+14155550199",
            "We have refunded $7.50 to your card. It usually appears within 5-10 business "
            f"days. Ref: {refund['id']}",
        )
    ]
    assert len(keyed.told(events, "refund_team")) == 1


def test_an_event_of_a_future_api_version_is_stored_and_flagged_not_told(
    keyless: Stripe,
) -> None:
    event = build_event("payment_intent.succeeded", now=keyless.clock.now(), livemode=True)
    event["api_version"] = "2031-01-01.zinnia"
    keyless.send(event)
    (stored,) = [e for e in keyless.ph.store.list_events() if e["id"] == event["id"]]
    assert stored["status"] == "unsupported"
    assert "newer than" in stored["error"]
    assert keyless.notifications([event]) == []
    metrics = keyless.client.get("/metrics").text
    assert (
        'payherald_events_total{outcome="unsupported",type="payment_intent.succeeded"} 1.0'
        in metrics
    )


def test_a_refunds_charge_is_asked_for_once(keyed: Stripe, standin: StripeStandIn) -> None:
    refund_event = build_event("refund.created", now=keyed.clock.now(), livemode=True)
    refund = refund_event["data"]["object"]
    refund.update(metadata={})
    standin.add(
        {
            "id": refund["charge"],
            "object": "charge",
            "customer": None,
            "billing_details": {"phone": PHONE},
        }
    )
    keyed.send(refund_event)
    again = build_event("refund.created", now=keyed.clock.now(), livemode=True)
    again["data"]["object"].update(charge=refund["charge"], metadata={})
    keyed.send(again)  # a second refund of the same charge: its customer is cached
    assert standin.requested(f"/v1/charges/{refund['charge']}") == 1
    told = keyed.told([refund_event, again], "refund_customer")
    assert [row["to"] for row in told] == [PHONE, PHONE]


def test_a_stripe_lookup_that_fails_is_retried_with_backoff_and_nothing_is_sent_on_a_guess(
    keyed: Stripe, standin: StripeStandIn
) -> None:
    events = build_subscription_payment_events(now=keyed.clock.now(), phone=PHONE, livemode=True)
    _known_to_stripe(standin, events)
    standin.fail_next = 1000  # Stripe is down
    keyed.send(events[2])  # invoice.paid, which nothing has linked yet
    rows = [r for r in keyed.notifications(events) if r["rule"] == "payment_confirmation"]
    assert [(r["status"], r["error_code"]) for r in rows] == [("pending", "stripe_unavailable")]
    assert rows[0]["error"].startswith("Could not read the invoice payments of in_")
    assert rows[0]["run_at"] > keyed.clock.now()  # backed off
    assert keyed.sms.delivered == []
    standin.fail_next = 0  # Stripe is back
    keyed.later(3600)
    assert len(keyed.told(events, "payment_confirmation")) == 1


def test_a_charge_refund_before_2024_10_28_is_told_from_charge_refunded(keyless: Stripe) -> None:
    refunded = build_event(
        "charge.refunded", now=keyless.clock.now(), livemode=True, api_version="2024-06-20"
    )
    charge = refunded["data"]["object"]
    charge.update(amount_refunded=500)
    refunded["data"]["previous_attributes"] = {"amount_refunded": 0}
    keyless.send(refunded)
    keyless.send(refunded)  # Stripe retries it
    to_customer = [m.body for m in keyless.sms.delivered if m.to == PHONE]
    assert to_customer == [
        "We have refunded $5.00 to your card. It usually appears within 5-10 business days. "
        f"Ref: {charge['id']}"
    ]


def test_two_workers_committing_the_twins_of_one_payment_at_once_send_one(
    database_url: str, tmp_path: Any
) -> None:
    # The invoice and the payment intent each queue a confirmation before the invoice
    # payment links them; two workers then commit the send of one twin each at the same
    # moment. The statement that commits a send lets exactly one through (on PostgreSQL
    # under an advisory lock on the payment, on SQLite under the write lock).
    import threading

    clock = FrozenClock()
    ph = build_for_tests(database_url, clock=clock, settings={"PAYHERALD_LINK_GRACE_SECONDS": "0"})
    queue = ph.store.queue
    for _ in range(20):
        intent, _, invoice, linking = build_subscription_payment_events(
            now=clock.now(), phone=PHONE, livemode=True
        )
        for payload in (invoice, intent, linking):
            ingest(ph.store, ph.rules, parse_event(json.dumps(payload).encode()))
        claimed = [
            n
            for n in queue.claim(worker_id="w", limit=10, lease=60)
            if n.rule == "payment_confirmation"
        ]
        assert len(claimed) == 2
        barrier = threading.Barrier(2)
        won: list[bool] = []

        def send(held: Any, barrier: threading.Barrier, won: list[bool]) -> None:
            barrier.wait()
            won.append(queue.mark_sending(held, to=PHONE, body="Paid", channel="sms", lease=60))

        threads = [threading.Thread(target=send, args=(held, barrier, won)) for held in claimed]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert sorted(won) == [False, True]
        for held in queue.claim(worker_id="w", limit=10, lease=60):
            queue.settle(held, Outcome.SKIPPED, error="not under test")
    ph.engine.dispose()


def test_a_dunning_text_held_by_quiet_hours_is_read_again_from_stripe_when_the_window_opens(
    database_url: str, tmp_path: Any, standin: StripeStandIn
) -> None:
    from datetime import UTC, datetime

    from payherald.quiet_hours import QuietHours

    night = FrozenClock(datetime(2026, 6, 10, 6, 0, tzinfo=UTC))  # 02:00 in New York
    settings = {"STRIPE_SECRET_KEY": "sk_test_standin", "STRIPE_API_BASE": standin.url}
    sms = ScriptedChannel("sms")
    ph = build_for_tests(
        database_url,
        clock=night,
        channels={"sms": sms},
        settings=settings,
        quiet_hours=QuietHours(),
    )
    events = build_renewal_failure_events(
        now=night.now(), phone="+12125550123", livemode=True, api_version=NEWEST_SUPPORTED
    )
    invoice, intent = events[0]["data"]["object"], events[1]["data"]["object"]
    standin.add(*(event["data"]["object"] for event in events))
    standin.link(open_invoice_payment(invoice, intent))
    for payload in events:
        ingest(ph.store, ph.rules, parse_event(json.dumps(payload).encode()))
    ph.worker.run_until_idle()
    (held,) = [r for r in ph.store.list_notifications() if r["rule"] == "invoice_payment_failed"]
    assert held["status"] == "pending"
    assert held["notes"].startswith("quiet hours")
    # The customer pays during the night; the text is read again when the window opens.
    standin.add(invoice | {"status": "paid", "amount_paid": invoice["amount_due"]})
    night.advance(8 * 3600)
    ph.worker.run_until_idle()
    (told,) = [r for r in ph.store.list_notifications() if r["rule"] == "invoice_payment_failed"]
    assert (told["status"], told["error"]) == (
        "skipped",
        f"Invoice {invoice['id']} is paid now (read from Stripe before sending).",
    )
    assert sms.attempts == []
    ph.engine.dispose()
