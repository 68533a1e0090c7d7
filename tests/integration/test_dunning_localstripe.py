"""Dunning against localstripe: a real subscription whose SEPA debit fails.

localstripe (a stateful fake of the Stripe API, speaking API version 2017-08-15) makes
every payment from the IBAN DE62370400440532013001 fail, a moment after it is made, and
delivers the signed ``invoice.payment_failed`` itself over HTTP. Paying the invoice there
afterwards (with a good card) delivers ``invoice.payment_succeeded``. With a key, the
invoice is read from localstripe before each step.

localstripe cancels a SEPA subscription as soon as its payment fails, and delivers its
``customer.subscription.deleted`` with the failure, in either order; the endpoints here
listen for the invoice's and the payment's events only.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from payherald import ConsoleChannel, FrozenClock
from tests import peers
from tests.support import (
    DUNNING_STEPS,
    SECRET,
    LiveServer,
    build_for_tests,
    dunning_steps,
    move_clock,
)

DAY = 86400
FAILING_IBAN = "DE62370400440532013001"  # localstripe's: a SEPA debit that fails
EMAIL = "ada@example.com"
STEPS = DUNNING_STEPS


class Dunning:
    """payherald served on loopback, sent events by localstripe, on a clock moved by hand."""

    def __init__(self, ph: Any, clock: FrozenClock, console: io.StringIO) -> None:
        self.ph, self.clock, self.console = ph, clock, console

    def until(self, condition: Callable[[], bool], what: str, timeout: float = 20) -> None:
        """Run the worker until ``condition`` (localstripe's events come a second or so
        after what causes them)."""
        deadline = time.monotonic() + timeout
        while True:
            self.ph.worker.run_until_idle()
            if condition():
                return
            assert time.monotonic() < deadline, f"{what}: {self.summary()}"
            time.sleep(0.1)

    def later(self, seconds: float) -> None:
        """``seconds`` later, in hourly steps, the worker doing what falls due on the way."""
        move_clock(self.ph, self.clock, seconds)

    def steps(self) -> dict[str, str]:
        """Each dunning step's notification: its status."""
        return dunning_steps(self.ph)

    def summary(self) -> list[tuple[Any, ...]]:
        rows = self.ph.store.list_notifications(limit=1000)
        events = self.ph.store.list_events(limit=100)
        return [(r["rule"], r["status"], r["error"]) for r in rows] + [
            (e["type"], e["status"]) for e in events
        ]


def _dunning(
    sqlite_url: str,
    localstripe: peers.LocalStripe,
    events: list[str],
    settings: dict[str, str],
) -> Iterator[Dunning]:
    clock, console = FrozenClock(), io.StringIO()
    ph = build_for_tests(
        sqlite_url, clock=clock, console=ConsoleChannel(stream=console), settings=settings
    )
    with LiveServer(ph.http_app) as server:
        name = f"payherald-{server.port}"
        localstripe.register_webhook(name, f"{server.url}/webhooks/stripe", SECRET, events=events)
        try:
            yield Dunning(ph, clock, console)
        finally:
            # localstripe keeps webhooks; point this one nowhere useful once we are gone.
            localstripe.register_webhook(name, "http://127.0.0.1:9/", SECRET, events=["x.y"])
            ph.engine.dispose()


@pytest.fixture
def keyless(sqlite_url: str, localstripe: peers.LocalStripe) -> Iterator[Dunning]:
    """payherald without a key: the failure and the payment, as localstripe sends them."""
    yield from _dunning(
        sqlite_url,
        localstripe,
        ["invoice.payment_failed", "payment_intent.payment_failed", "invoice.payment_succeeded"],
        {},
    )


@pytest.fixture
def keyed(sqlite_url: str, localstripe: peers.LocalStripe) -> Iterator[Dunning]:
    """payherald with a key to localstripe's API, sent only the failure: whether the invoice
    was paid since, it can only learn by reading it."""
    settings = {"STRIPE_SECRET_KEY": "sk_test_payherald", "STRIPE_API_BASE": localstripe.url}
    yield from _dunning(
        sqlite_url,
        localstripe,
        ["invoice.payment_failed", "payment_intent.payment_failed"],
        settings,
    )


def failing_sepa_subscription(client: Any) -> tuple[str, str]:
    """A customer paying by SEPA debit from the failing IBAN, subscribed to a plan of
    €20.00 a month: its first invoice's payment fails a moment later. The customer's and
    the invoice's ids."""
    customer = client.v1.customers.create(
        params={"name": "Ada Lovelace", "email": EMAIL, "phone": "+14155550123"}
    )
    method = client.v1.payment_methods.create(
        params={
            "type": "sepa_debit",
            "sepa_debit": {"iban": FAILING_IBAN},
            "billing_details": {"name": "Ada Lovelace"},
        }
    )
    client.v1.payment_methods.attach(method.id, params={"customer": customer.id})
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": method.id}}
    )
    plan = client.v1.plans.create(
        params={"amount": 2000, "currency": "eur", "interval": "month", "product": {"name": "Pro"}}
    )
    subscription = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"plan": plan.id}]}
    )
    return customer.id, str(subscription.latest_invoice)


def pay_with_a_good_card(client: Any, customer: str, invoice: str) -> None:
    """The customer changes to a card that works, and the invoice is paid with it."""
    client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer})
    client.v1.customers.update(
        customer, params={"invoice_settings": {"default_payment_method": "pm_card_visa"}}
    )
    paid = client.v1.invoices.pay(invoice)
    assert paid.status == "paid"


def test_a_failed_sepa_debit_starts_dunning_and_its_payment_recovers_it(
    keyless: Dunning, localstripe: peers.LocalStripe
) -> None:
    client = localstripe.stripe_client()
    customer, invoice = failing_sepa_subscription(client)
    keyless.until(
        lambda: keyless.steps().get("invoice_payment_failed") == "sent",
        "the first step was never sent",
    )
    assert keyless.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "pending",
        "dunning_final": "pending",
    }
    # Without a key, the customer's phone is unknown (an invoice of 2017-08-15 does not
    # carry it) and a test-mode message goes to the console: to the invoice's email.
    assert keyless.console.getvalue().splitlines() == [
        f"[console email] to {EMAIL}: We could not collect €20.00: the card was declined "
        "by the bank."
    ]
    sequence = keyless.ph.store.dunning.get(invoice)
    assert sequence is not None
    assert (sequence["status"], sequence["customer_id"], sequence["amount"]) == (
        "open",
        customer,
        2000,
    )
    assert str(sequence["subscription_id"]).startswith("sub_")  # from the old shape's field

    pay_with_a_good_card(client, customer, invoice)
    keyless.until(lambda: ended(keyless, invoice), "the payment never ended the sequence")
    keyless.later(8 * DAY)
    assert keyless.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "skipped",
        "dunning_final": "skipped",
    }
    sequence = keyless.ph.store.dunning.get(invoice)
    assert sequence is not None
    assert (
        sequence["status"],
        sequence["end_reason"],
        sequence["recovered_amount"],
        sequence["recovered_rule"],
    ) == ("recovered", "paid", 2000, "invoice_payment_failed")
    texts = keyless.console.getvalue().splitlines()
    assert [text for text in texts if "Reminder" in text or "Final notice" in text] == []
    assert len(texts) == 2  # the first step, and the payment's confirmation


def test_a_step_due_after_the_invoice_was_paid_in_stripe_is_skipped_with_a_key(
    keyed: Dunning, localstripe: peers.LocalStripe
) -> None:
    """No event tells payherald of the payment: the read before the step does."""
    client = localstripe.stripe_client()
    customer, invoice = failing_sepa_subscription(client)
    recorded(keyed, invoice)
    pay_with_a_good_card(client, customer, invoice)
    keyed.later(8 * DAY)
    assert keyed.steps() == dict.fromkeys(STEPS, "skipped")
    errors = {
        row["rule"]: row["error"]
        for row in keyed.ph.store.list_notifications(limit=100)
        if row["rule"] in STEPS
    }
    assert errors["invoice_payment_failed"] == (
        f"Invoice {invoice} is paid now (read from Stripe before sending)."
    )
    assert errors["dunning_reminder"] == "The dunning sequence ended: the invoice was paid."
    sequence = keyed.ph.store.dunning.get(invoice)
    assert sequence is not None
    assert (sequence["status"], sequence["end_reason"], sequence["recovered_amount"]) == (
        "recovered",
        "paid",
        2000,
    )
    assert keyed.console.getvalue() == ""


def test_a_subscription_localstripe_cancelled_ends_the_sequence_with_a_key(
    keyed: Dunning, localstripe: peers.LocalStripe
) -> None:
    """localstripe cancels a SEPA subscription when its payment fails: read before the
    first step, that ends the sequence, though the invoice is still open."""
    client = localstripe.stripe_client()
    _, invoice = failing_sepa_subscription(client)
    recorded(keyed, invoice)
    keyed.later(8 * DAY)
    assert keyed.steps() == dict.fromkeys(STEPS, "skipped")
    sequence = keyed.ph.store.dunning.get(invoice)
    assert sequence is not None
    assert (sequence["status"], sequence["end_reason"]) == ("ended", "subscription_cancelled")
    assert client.v1.invoices.retrieve(invoice).status == "open"
    assert keyed.console.getvalue() == ""


def ended(dunning: Dunning, invoice: str) -> bool:
    sequence = dunning.ph.store.dunning.get(invoice)
    return sequence is not None and sequence["status"] != "open"


def recorded(dunning: Dunning, invoice: str, timeout: float = 20) -> None:
    """Wait for localstripe's failure of ``invoice`` to be recorded, without running the
    worker (so that no step is taken yet)."""
    deadline = time.monotonic() + timeout
    while dunning.ph.store.dunning.get(invoice) is None:
        assert time.monotonic() < deadline, f"no failure of {invoice}: {dunning.summary()}"
        time.sleep(0.1)
