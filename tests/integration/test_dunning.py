"""Dunning on a moved clock, on SQLite and PostgreSQL: the steps of an invoice's sequence
(now, after 3 days, after 7 days) are sent once each, posted over HTTP as Stripe sends
them, and the sequence ends (its steps still waiting skipped) when the invoice is paid,
voided or deleted, or its subscription cancelled: told by an event, or read from Stripe
(a stand-in of its API) just before a step."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import delete

from payherald import FrozenClock
from payherald.quiet_hours import QuietHours
from payherald.simulate import build_event, build_renewal_failure_events
from payherald.store.schema import notifications
from payherald.testing import ScriptedChannel
from tests.stripe_standin import StripeStandIn, open_invoice_payment, stripe_standin
from tests.support import (
    DUNNING_STEPS,
    LiveServer,
    StripeOnLoopback,
    build_for_tests,
    dunning_steps,
    move_clock,
)

PHONE = "+14155550123"
DAY = 86400
GRACE = 60  # PAYHERALD_LINK_GRACE_SECONDS' default
STEPS = list(DUNNING_STEPS)
_ids = itertools.count(1)


class Stripe(StripeOnLoopback):
    """payherald served on loopback, the events it is sent, and the dunning it did."""

    def later(self, seconds: float) -> None:
        """``seconds`` later, in hourly steps, the worker doing what falls due on the way."""
        move_clock(self.ph, self.clock, seconds)

    def steps(self) -> dict[str, str]:
        """Each dunning step's notification: its status."""
        return dunning_steps(self.ph)

    def texts(self) -> list[str]:
        """The failure and dunning texts sent (not the confirmation of a payment, say)."""
        return [
            message.body
            for message in self.sms.delivered
            if message.body.startswith(
                ("We could not collect", "Your payment", "Reminder", "Final notice")
            )
        ]


def _stripe(
    database_url: str, standin: StripeStandIn | None, key: str = "sk_live_standin", **build: Any
) -> Iterator[Stripe]:
    settings = {}
    if standin is not None:  # the events are live, and so is the key
        settings = {"STRIPE_SECRET_KEY": key, "STRIPE_API_BASE": standin.url}
    clock, sms = FrozenClock(), ScriptedChannel("sms")
    ph = build_for_tests(
        database_url, clock=clock, channels={"sms": sms}, settings=settings, **build
    )
    with LiveServer(ph.http_app) as server, Stripe(ph, server, clock, sms) as stripe:
        yield stripe
    ph.engine.dispose()


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with stripe_standin() as standin:
        yield standin


@pytest.fixture
def keyless(database_url: str) -> Iterator[Stripe]:
    """payherald without STRIPE_SECRET_KEY: only events end a sequence."""
    yield from _stripe(database_url, None)


@pytest.fixture
def keyed(database_url: str, standin: StripeStandIn) -> Iterator[Stripe]:
    """payherald with a secret key, reading the invoice from the stand-in before a step."""
    yield from _stripe(database_url, standin)


def failure(stripe: Stripe) -> list[dict[str, Any]]:
    """The events of a live subscription renewal whose card was declined (today's API
    shapes): invoice.payment_failed first, then its payment intent's and charge's."""
    return build_renewal_failure_events(now=stripe.clock.now(), phone=PHONE, livemode=True)


def fail(stripe: Stripe) -> dict[str, Any]:
    """Send a renewal's failure, as Stripe does; its invoice.payment_failed."""
    events = failure(stripe)
    for event in events:
        stripe.send(event)
    # Without a key, the first step waits up to the grace for the payment's failure, which
    # says why the card was declined.
    stripe.later(GRACE + 1)
    return events[0]


def fail_as_stripe_knows(keyed: Stripe, standin: StripeStandIn) -> tuple[dict[str, Any], str]:
    """Send a renewal's failure that the stand-in of Stripe knows of (its invoice, payment
    and subscription); the invoice and its subscription's id."""
    events = failure(keyed)
    invoice = events[0]["data"]["object"]
    subscription = invoice["parent"]["subscription_details"]["subscription"]
    standin.add(*(event["data"]["object"] for event in events))
    standin.link(open_invoice_payment(invoice, events[1]["data"]["object"]))
    standin.add({"id": subscription, "object": "subscription", "status": "past_due"})
    for event in events:
        keyed.send(event)
    return invoice, subscription


def about(invoice_event: dict[str, Any], event_type: str, **changes: Any) -> dict[str, Any]:
    """An event of ``event_type`` whose object is the invoice of ``invoice_event``, as it is
    now (``changes``)."""
    event = copy.deepcopy(invoice_event)
    event.update(id=f"evt_dunning_{next(_ids)}", type=event_type)
    event["data"]["object"].update(changes)
    return event


def test_an_invoice_never_paid_gets_three_steps_then_nothing(keyless: Stripe) -> None:
    fail(keyless)
    assert keyless.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "pending",
        "dunning_final": "pending",
    }
    keyless.later(3 * DAY - 3600)
    assert len(keyless.texts()) == 1
    keyless.later(3600)
    assert keyless.steps()["dunning_reminder"] == "sent"
    keyless.later(4 * DAY)
    assert keyless.steps() == dict.fromkeys(STEPS, "sent")
    texts = keyless.texts()
    assert [text.split(":")[0] for text in texts] == [
        "We could not collect $20.00 for invoice " + texts[0].split("invoice ")[1].split(":")[0],
        "Reminder",
        "Final notice",
    ]
    assert all("https://invoice.stripe.com/" in text for text in texts)
    keyless.later(30 * DAY)
    assert len(keyless.texts()) == 3


def test_paid_after_the_first_step_no_more_steps_and_recovered(keyless: Stripe) -> None:
    failed = fail(keyless)
    invoice = failed["data"]["object"]
    keyless.later(DAY)
    keyless.send(about(failed, "invoice.paid", status="paid", amount_paid=invoice["amount_due"]))
    assert keyless.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "skipped",
        "dunning_final": "skipped",
    }
    sequence = keyless.ph.store.dunning.get(invoice["id"])
    assert sequence is not None
    assert (
        sequence["status"],
        sequence["end_reason"],
        sequence["recovered_amount"],
        sequence["recovered_rule"],
        sequence["recovered_channel"],
    ) == ("recovered", "paid", invoice["amount_due"], "invoice_payment_failed", "sms")
    keyless.later(8 * DAY)
    assert len(keyless.texts()) == 1
    assert keyless.ph.store.jobs.counts()["pending"] == 0  # the steps' jobs went with them


@pytest.mark.parametrize(
    ("event_type", "changes", "reason"),
    [
        ("invoice.voided", {"status": "void"}, "voided"),
        ("invoice.marked_uncollectible", {"status": "uncollectible"}, "uncollectible"),
        ("invoice.deleted", {}, "deleted"),
    ],
)
def test_an_event_that_ends_the_invoice_ends_its_sequence(
    keyless: Stripe, event_type: str, changes: dict[str, Any], reason: str
) -> None:
    failed = fail(keyless)
    keyless.later(DAY)
    keyless.send(about(failed, event_type, **changes))
    keyless.later(8 * DAY)
    assert keyless.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "skipped",
        "dunning_final": "skipped",
    }
    sequence = keyless.ph.store.dunning.get(failed["data"]["object"]["id"])
    assert sequence is not None
    assert (sequence["status"], sequence["end_reason"]) == ("ended", reason)
    assert len(keyless.texts()) == 1


def test_a_cancelled_subscription_ends_the_sequence_of_its_invoice(keyless: Stripe) -> None:
    failed = fail(keyless)
    invoice = failed["data"]["object"]
    subscription = invoice["parent"]["subscription_details"]["subscription"]
    deleted = build_event("customer.subscription.deleted", now=keyless.clock.now(), livemode=True)
    deleted["data"]["object"]["id"] = subscription
    keyless.later(4 * DAY)
    assert keyless.steps()["dunning_reminder"] == "sent"
    keyless.send(deleted)
    keyless.later(4 * DAY)
    assert keyless.steps()["dunning_final"] == "skipped"
    sequence = keyless.ph.store.dunning.get(invoice["id"])
    assert sequence is not None
    assert (sequence["status"], sequence["end_reason"]) == ("ended", "subscription_cancelled")
    assert len(keyless.texts()) == 2


def test_a_subscription_cancelled_before_its_invoice_failed_starts_no_sequence(
    keyless: Stripe,
) -> None:
    """A subscription cancelled at its first failure (localstripe sends its deletion first)."""
    events = failure(keyless)
    invoice = events[0]["data"]["object"]
    subscription = invoice["parent"]["subscription_details"]["subscription"]
    deleted = build_event("customer.subscription.deleted", now=keyless.clock.now(), livemode=True)
    deleted["data"]["object"]["id"] = subscription
    keyless.send(deleted)
    for event in events:
        keyless.send(event)
    keyless.later(8 * DAY)
    assert keyless.texts() == []
    sequence = keyless.ph.store.dunning.get(invoice["id"])
    assert sequence is not None
    assert (sequence["status"], sequence["end_reason"]) == ("ended", "subscription_cancelled")
    assert keyless.ph.store.dunning.sequences() == []  # none was started


def test_repeated_deliveries_and_stripes_retries_make_one_sequence(keyless: Stripe) -> None:
    """50 deliveries of the failure and 3 of Stripe's retry attempts of the invoice (new
    events, a higher attempt_count): one text a step."""
    events = failure(keyless)
    failed = events[0]
    for _ in range(50):
        keyless.send(failed, pause=1)
    for event in events[1:]:
        keyless.send(event)
    for attempt in (2, 3, 4):
        keyless.later(DAY)
        keyless.send(about(failed, "invoice.payment_failed", attempt_count=attempt))
    keyless.later(7 * DAY)
    assert keyless.steps() == dict.fromkeys(STEPS, "sent")
    assert len(keyless.texts()) == 3
    rows = [r for r in keyless.ph.store.list_notifications(limit=1000) if r["rule"] in STEPS]
    assert len(rows) == 3


def test_a_payment_that_arrives_before_the_failure_keeps_the_sequence_from_starting(
    keyless: Stripe,
) -> None:
    events = failure(keyless)
    invoice = events[0]["data"]["object"]
    paid = about(events[0], "invoice.paid", status="paid", amount_paid=invoice["amount_due"])
    keyless.send(paid)
    for event in events:
        keyless.send(event)
    keyless.later(8 * DAY)
    assert keyless.steps() == {}
    assert keyless.texts() == []


@pytest.mark.parametrize(
    ("now", "reason"),
    [
        ({"status": "paid"}, "paid"),
        ({"status": "void"}, "voided"),
        ({"status": "uncollectible"}, "uncollectible"),
        (None, "deleted"),
    ],
)
def test_before_each_step_the_invoice_is_read_from_stripe(
    keyed: Stripe, standin: StripeStandIn, now: dict[str, Any] | None, reason: str
) -> None:
    invoice, _ = fail_as_stripe_knows(keyed, standin)
    assert keyed.steps()["invoice_payment_failed"] == "sent"
    if now is None:
        del standin.objects[invoice["id"]]
    else:
        standin.add(invoice | now)
    keyed.later(8 * DAY)
    assert keyed.steps() == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "skipped",
        "dunning_final": "skipped",
    }
    sequence = keyed.ph.store.dunning.get(invoice["id"])
    assert sequence is not None
    assert sequence["end_reason"] == reason
    assert sequence["status"] == ("recovered" if reason == "paid" else "ended")
    assert len(keyed.texts()) == 1


def test_an_invoice_the_key_cannot_see_for_its_mode_is_not_taken_for_deleted(
    database_url: str, standin: StripeStandIn
) -> None:
    """A test key is told "no such invoice" of a live invoice: that says nothing of it."""
    for keyed in _stripe(database_url, standin, key="sk_test_standin"):
        invoice, _ = fail_as_stripe_knows(keyed, standin)
        del standin.objects[invoice["id"]]
        keyed.later(3 * DAY + 3600)
        reminder = next(
            row
            for row in keyed.ph.store.list_notifications(limit=100)
            if row["rule"] == "dunning_reminder"
        )
        assert reminder["status"] == "pending"  # retried, not skipped
        assert "a test-mode key, and the invoice is live-mode" in reminder["error"]
        sequence = keyed.ph.store.dunning.get(invoice["id"])
        assert sequence is not None
        assert sequence["status"] == "open"


def test_a_step_held_for_the_night_reads_the_invoice_again_when_the_window_opens(
    database_url: str, standin: StripeStandIn
) -> None:
    for keyed in _stripe(database_url, standin, quiet_hours=QuietHours()):
        _held_for_the_night(keyed, standin)


def _held_for_the_night(keyed: Stripe, standin: StripeStandIn) -> None:
    local = keyed.clock.now().astimezone(ZoneInfo("America/Los_Angeles"))  # PHONE's zone
    night = local.replace(hour=23, minute=0, second=0, microsecond=0)
    keyed.clock.advance((night - local).total_seconds() % DAY)
    invoice, _ = fail_as_stripe_knows(keyed, standin)
    assert keyed.steps()["invoice_payment_failed"] == "pending"  # until 08:00 there
    # Paid in the night, and the event of it lost: only Stripe knows.
    standin.add(invoice | {"status": "paid", "amount_paid": invoice["amount_due"]})
    reads = standin.requested(f"/v1/invoices/{invoice['id']}")
    keyed.later(10 * 3600)
    assert standin.requested(f"/v1/invoices/{invoice['id']}") > reads
    assert keyed.steps()["invoice_payment_failed"] == "skipped"
    assert keyed.texts() == []
    sequence = keyed.ph.store.dunning.get(invoice["id"])
    assert sequence is not None
    assert (sequence["status"], sequence["recovered_rule"]) == ("recovered", None)


def test_a_subscription_cancelled_in_stripe_ends_the_sequence_before_a_step(
    keyed: Stripe, standin: StripeStandIn
) -> None:
    invoice, subscription = fail_as_stripe_knows(keyed, standin)
    keyed.later(3 * DAY)
    assert keyed.steps()["dunning_reminder"] == "sent"
    standin.add({"id": subscription, "object": "subscription", "status": "canceled"})
    keyed.later(4 * DAY)
    assert keyed.steps()["dunning_final"] == "skipped"
    sequence = keyed.ph.store.dunning.get(invoice["id"])
    assert sequence is not None
    assert sequence["end_reason"] == "subscription_cancelled"
    assert len(keyed.texts()) == 2


def test_a_stripe_error_before_a_step_retries_it_and_never_sends_on_a_guess(
    keyed: Stripe, standin: StripeStandIn
) -> None:
    invoice, _ = fail_as_stripe_knows(keyed, standin)
    standin.fail_next = 1000  # Stripe is down when the reminder falls due
    keyed.clock.advance(3 * DAY)
    keyed.ph.worker.run_until_idle()
    assert keyed.steps()["dunning_reminder"] == "pending"
    assert len(keyed.texts()) == 1
    standin.fail_next = 0
    standin.add(invoice | {"status": "paid", "amount_paid": invoice["amount_due"]})
    keyed.later(DAY)
    assert keyed.steps()["dunning_reminder"] == "skipped"
    assert len(keyed.texts()) == 1


def test_a_retry_of_stripe_after_the_steps_were_pruned_queues_none_again(
    keyless: Stripe,
) -> None:
    """Only the failure that started a sequence queues its steps: once retention has
    deleted them, Stripe's next retry of the invoice does not start them over."""
    failed = fail(keyless)
    keyless.later(8 * DAY)
    assert len(keyless.texts()) == 3
    with keyless.ph.engine.begin() as connection:
        connection.execute(delete(notifications).where(notifications.c.sequence.is_not(None)))
    keyless.send(about(failed, "invoice.payment_failed", attempt_count=4))
    keyless.later(8 * DAY)
    assert keyless.steps() == {}
    assert len(keyless.texts()) == 3


def test_a_step_held_by_a_worker_when_the_invoice_is_paid_is_not_sent(keyless: Stripe) -> None:
    failed = fail(keyless)
    invoice = failed["data"]["object"]
    keyless.clock.advance(3 * DAY)
    (held,) = keyless.ph.store.queue.claim(worker_id="w", limit=5, lease=60)
    assert held.rule == "dunning_reminder"
    keyless.send(about(failed, "invoice.paid", status="paid", amount_paid=invoice["amount_due"]))
    assert not keyless.ph.store.queue.mark_sending(
        held, to=PHONE, body="Reminder", channel="sms", lease=60
    )
    keyless.later(DAY)
    assert keyless.steps()["dunning_reminder"] == "skipped"
    assert len(keyless.texts()) == 1
