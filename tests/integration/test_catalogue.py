"""The catalogue end to end through the store and worker, on SQLite and PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from payherald import FrozenClock, parse_event
from payherald.channels import ConsoleChannel
from payherald.recipients import InMemoryCustomerDirectory
from payherald.simulate import build_event, build_failure_events, build_payment_events
from payherald.testing import ScriptedChannel
from tests.support import build_for_tests

PHONE = "+14155550123"


@pytest.fixture
def email() -> ScriptedChannel:
    return ScriptedChannel("email")


@pytest.fixture
def ph(
    database_url: str,
    clock: FrozenClock,
    sms: ScriptedChannel,
    email: ScriptedChannel,
    tmp_path: Any,
) -> Iterator[Any]:
    rules = tmp_path / "payherald.toml"
    rules.write_text('[teams.finance]\nsms = ["+14155550100"]\n')
    customers = InMemoryCustomerDirectory(
        {"cus_new": {"id": "cus_new", "name": "Ada Lovelace", "email": "ada@example.com"}},
        charges={"cus_old": [{"id": "ch_earlier", "status": "succeeded", "created": 1}]},
    )
    built = build_for_tests(
        database_url,
        clock=clock,
        channels={"sms": sms, "email": email},
        customers=customers,
        settings={"PAYHERALD_CONFIG": str(rules)},
    )
    yield built
    built.engine.dispose()


def receive(ph: Any, payload: dict[str, Any]) -> None:
    event = parse_event(json.dumps(payload).encode())
    ph.store.record_event(event, ph.rules.plan(event))


def rows(ph: Any, rule: str) -> list[dict[str, Any]]:
    return [row for row in ph.store.list_notifications(limit=1000) if row["rule"] == rule]


def payment(clock: FrozenClock, **kwargs: Any) -> list[dict[str, Any]]:
    return build_payment_events(
        now=clock.now(), phone=PHONE, amount=2000, currency="usd", livemode=True, **kwargs
    )


ORDERS = list(itertools.permutations(range(4)))


def test_four_events_of_one_payment_confirm_once_in_every_order(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel
) -> None:
    for order in ORDERS:  # all 24, each a new payment
        events = payment(clock)
        for index in order:
            receive(ph, events[index])
    ph.worker.run_until_idle()
    # Today's invoice names no payment intent: an invoice received before the session that
    # links it queues a confirmation of its own, which is skipped as the same payment's.
    told = [r for r in rows(ph, "payment_confirmation") if r["status"] == "sent"]
    assert len(told) == len(ORDERS)
    welcomes = [r for r in rows(ph, "welcome") if "same payment" not in (r["error"] or "")]
    assert len(welcomes) == len(ORDERS)  # one welcome per payment too
    bodies = [m.body for m in sms.delivered]
    assert sum(body.startswith("Payment of $20.00 received") for body in bodies) == len(ORDERS)
    assert len(ph.store.list_events(limit=1000)) == 4 * len(ORDERS)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(deliveries=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=12))
def test_any_mix_of_repeats_and_orders_confirms_once_before_basil(
    ph: Any, clock: FrozenClock, deliveries: list[int]
) -> None:
    # Before basil every event of the payment names the payment intent.
    events = payment(clock, api_version="2024-06-20")
    for index in deliveries:
        receive(ph, events[index])
    intent = events[0]["data"]["object"]["id"]
    assert len([r for r in rows(ph, "payment_confirmation") if intent in r["key"]]) == 1


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    deliveries=st.lists(st.integers(min_value=0, max_value=3), min_size=0, max_size=11),
    linking_at=st.integers(min_value=0, max_value=11),
)
def test_any_mix_of_repeats_and_orders_with_the_linking_session_confirms_once(
    ph: Any, clock: FrozenClock, deliveries: list[int], linking_at: int
) -> None:
    # Today only the Checkout session names both the payment intent and the invoice: with
    # it among the events, in any place, the payment is told once.
    events = payment(clock)
    deliveries.insert(linking_at, 2)
    for index in deliveries:
        receive(ph, events[index])
    clock.advance(3600)  # past any wait for a link
    ph.worker.run_until_idle()
    ids = {event["id"] for event in events}
    told = [r for r in rows(ph, "payment_confirmation") if r["event_id"] in ids]
    assert [r["status"] for r in told].count("sent") == 1, told


def test_four_events_delivered_at_once_confirm_once(ph: Any, clock: FrozenClock) -> None:
    events = payment(clock)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda payload: receive(ph, payload), events * 3))
    clock.advance(3600)  # past any wait for a link
    ph.worker.run_until_idle()
    assert [r["status"] for r in rows(ph, "payment_confirmation")].count("sent") == 1


@pytest.mark.parametrize("order", [(0, 1), (1, 0)])
def test_a_failure_reported_twice_is_told_once(
    ph: Any, clock: FrozenClock, order: tuple[int, int]
) -> None:
    events = build_failure_events(
        now=clock.now(), phone=PHONE, amount=2000, currency="usd", livemode=True
    )
    for index in order:
        receive(ph, events[index])
    assert len(rows(ph, "payment_failed")) == 1


def test_a_customer_with_no_phone_falls_back_to_email_and_it_is_noted(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel, email: ScriptedChannel
) -> None:
    payload = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
    payload["data"]["object"].update(shipping=None, customer="cus_new")
    receive(ph, payload)
    ph.worker.run_until_idle()
    (row,) = rows(ph, "payment_confirmation")
    assert (row["status"], row["channel"], row["to"]) == ("sent", "email", "ada@example.com")
    assert row["notes"].startswith("sms: No usable phone number")
    assert sms.attempts == [] or all(m.channel != "sms" for m in sms.attempts)
    assert email.delivered[0].to == "ada@example.com"


def test_a_customer_no_channel_can_reach_is_a_recorded_failure(ph: Any, clock: FrozenClock) -> None:
    payload = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
    payload["data"]["object"].update(shipping=None, receipt_email=None)
    receive(ph, payload)
    ph.worker.run_until_idle()
    (row,) = rows(ph, "payment_confirmation")
    assert (row["status"], row["error_code"]) == ("failed", "no_recipient")
    assert "sms: No usable phone number" in row["error"]
    assert "email: No email address" in row["error"]


def test_welcome_goes_to_a_customers_first_payment_only(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel
) -> None:
    for customer in ("cus_new", "cus_old"):
        payload = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
        payload["data"]["object"]["customer"] = customer
        receive(ph, payload)
    ph.worker.run_until_idle()
    outcome = sorted((row["status"], row["error"]) for row in rows(ph, "welcome"))
    assert outcome == [("sent", None), ("skipped", "Not the customer's first successful payment.")]


def test_a_condition_on_the_customer_is_decided_when_sending(
    database_url: str, clock: FrozenClock, tmp_path: Any
) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(
        "[rules.vip_thanks]\n"
        'events = ["payment_intent.succeeded"]\n'
        "when = \"'vip' in tags\"\n"
        'template = "Thank you, VIP!"\n'
    )
    sms = ScriptedChannel("sms")
    customers = InMemoryCustomerDirectory(
        {
            "cus_vip": {"id": "cus_vip", "metadata": {"tags": "vip, early"}},
            "cus_plain": {"id": "cus_plain", "metadata": {}},
        }
    )
    ph = build_for_tests(
        database_url,
        clock=clock,
        channels={"sms": sms},
        customers=customers,
        settings={"PAYHERALD_CONFIG": str(rules)},
    )
    for customer in ("cus_vip", "cus_plain"):
        payload = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
        payload["data"]["object"]["customer"] = customer
        receive(ph, payload)
    ph.worker.run_until_idle()
    outcome = sorted((row["status"], row["body"]) for row in rows(ph, "vip_thanks"))
    assert outcome == [("sent", "Thank you, VIP!"), ("skipped", None)]
    ph.engine.dispose()


def test_team_alerts_reach_the_team_not_the_customer(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel
) -> None:
    receive(ph, build_event("charge.dispute.created", now=clock.now(), livemode=True))
    ph.worker.run_until_idle()
    (row,) = rows(ph, "dispute_alert")
    assert (row["status"], row["to"], row["recipient"]) == ("sent", "+14155550100", "team:finance")
    assert row["body"].startswith("URGENT: dispute opened on $20.00")


def test_every_simulated_type_in_test_mode_goes_to_the_console(
    database_url: str, clock: FrozenClock, tmp_path: Any
) -> None:
    from payherald.simulate import SIMULATED_EVENT_TYPES

    rules = tmp_path / "payherald.toml"
    rules.write_text('[teams.finance]\nsms = ["+14155550100"]\n')
    sms = ScriptedChannel("sms")
    console = ConsoleChannel(stream=__import__("io").StringIO())
    ph = build_for_tests(
        database_url,
        clock=clock,
        channels={"sms": sms},
        console=console,
        settings={"PAYHERALD_CONFIG": str(rules)},
    )
    for event_type in SIMULATED_EVENT_TYPES:
        receive(ph, build_event(event_type, now=clock.now(), livemode=False))
    ph.worker.run_until_idle()
    # Alone, today's invoice.paid waits for the event that would link it to its payment,
    # and a declined card for an invoice failure that would tell it; then they are sent.
    clock.advance(ph.settings.link_grace + 1)
    ph.worker.run_until_idle()
    # The invoice's failure's later dunning steps fall due within a week.
    clock.advance(7 * 86400)
    ph.worker.run_until_idle()
    statuses = {
        (r["rule"], r["status"], r["channel"]) for r in ph.store.list_notifications(limit=1000)
    }
    assert sms.attempts == []
    # Welcomes are skipped: with no STRIPE_SECRET_KEY no first payment can be told.
    assert {(rule, status) for rule, status, _ in statuses if status != "sent"} <= {
        ("welcome", "skipped")
    }
    assert {channel for _, status, channel in statuses if status == "sent"} == {"console"}
    assert {rule for rule, _, _ in statuses} >= {
        "payment_confirmation",
        "payment_failed",
        "invoice_payment_failed",
        "dunning_reminder",
        "dunning_final",
        "refund_customer",
        "refund_team",
        "dispute_alert",
        "subscription_cancelled",
        "trial_ending",
        "renewal_reminder",
        "plan_changed",
    }
    ph.engine.dispose()


def test_a_permanent_refusal_falls_back_to_the_next_channel(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel, email: ScriptedChannel
) -> None:
    from payherald import PermanentDeliveryError

    sms.script(
        PermanentDeliveryError(
            "Twilio refused the message: the 'To' number is not a mobile number",
            code="twilio_21614",
        )
    )
    payload = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
    payload["data"]["object"].update(customer="cus_new")
    receive(ph, payload)
    ph.worker.run_until_idle()
    ph.worker.run_until_idle()
    (row,) = rows(ph, "payment_confirmation")
    assert (row["status"], row["channel"], row["to"]) == ("sent", "email", "ada@example.com")
    assert row["notes"] == (
        "sms: refused the message (Twilio refused the message: the 'To' "
        "number is not a mobile number)"
    )
    confirmations = [m for m in sms.attempts + email.attempts if m.body.startswith("Payment")]
    assert [m.channel for m in confirmations] == ["sms", "email"]


def test_when_every_channel_refuses_the_notification_fails_with_each_reason(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel, email: ScriptedChannel
) -> None:
    from payherald import PermanentDeliveryError

    sms.script(PermanentDeliveryError("not a mobile number", code="twilio_21614"))
    email.script(PermanentDeliveryError("550 no such user", code="smtp_550"))
    payload = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
    payload["data"]["object"].update(customer="cus_new")
    receive(ph, payload)
    for _ in range(3):
        ph.worker.run_until_idle()
    (row,) = rows(ph, "payment_confirmation")
    assert (row["status"], row["error_code"]) == ("failed", "smtp_550")
    assert "sms: refused the message" in row["error"]
    assert "email: refused the message (550 no such user)" in row["error"]
    confirmations = [m for m in sms.attempts + email.attempts if m.body.startswith("Payment")]
    assert [m.channel for m in confirmations] == ["sms", "email"]


def test_a_customer_who_replied_stop_gets_nothing_more_on_any_channel(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel, email: ScriptedChannel
) -> None:
    """An opt-out is the person's: the rule's email fallback is not used either."""
    from payherald import PermanentDeliveryError

    sms.script(
        PermanentDeliveryError(
            "Twilio refused the message: the recipient has replied STOP to this sender",
            code="twilio_21610",
        )
    )
    first = build_event("payment_intent.succeeded", now=clock.now(), livemode=True)
    first["data"]["object"].update(customer="cus_new", metadata={})
    receive(ph, first)
    for _ in range(2):
        ph.worker.run_until_idle()
    assert (
        ph.store.consents.suppression(PHONE)
        == "opted out (twilio: STOP, reported as Twilio error 21610)"
    )
    later = build_event("payment_intent.payment_failed", now=clock.now(), livemode=True)
    later["data"]["object"].update(customer="cus_new")
    receive(ph, later)
    # With no key, a customer's declined card waits for an invoice failure that would tell it.
    clock.advance(ph.settings.link_grace + 1)
    ph.worker.run_until_idle()
    customer_rows = [row for row in ph.store.list_notifications() if row["recipient"] == "customer"]
    assert customer_rows
    assert [row["rule"] for row in customer_rows if row["status"] == "sent"] == []
    # Refused by SMS (21610), the confirmation is not carried by email either.
    (confirmation,) = rows(ph, "payment_confirmation")
    assert (confirmation["status"], confirmation["error_code"]) == ("failed", "suppressed")
    assert confirmation["notes"].startswith("sms: refused the message (Twilio refused")
    (failed,) = rows(ph, "payment_failed")
    assert (failed["status"], failed["error_code"]) == ("failed", "suppressed")
    assert failed["error"] == (
        "+*******0123 must not be messaged: opted out (twilio: STOP, reported as Twilio "
        "error 21610); no channel of the rule may carry it"
    )
    assert email.attempts == []
    assert [m for m in sms.attempts if "did not go through" in m.body] == []


def test_a_stop_between_composing_and_sending_an_email_wins(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel, email: ScriptedChannel
) -> None:
    """The statement that commits a send checks every address of the customer's, not
    only the one the message goes to."""
    from payherald import PermanentDeliveryError

    sms.script(PermanentDeliveryError("Not a mobile number", code="twilio_21614"))
    receive(ph, build_event("payment_intent.payment_failed", now=clock.now(), livemode=True))
    compose = ph.worker._sender._composer.compose
    stopped = []

    def compose_then_stop(notification: Any) -> Any:
        composed = compose(notification)
        if composed.channel == "email" and not stopped:  # the SMS was refused: fallback
            stopped.append(
                ph.store.consents.record(
                    address=PHONE,
                    action="opt_out",
                    channel="sms",
                    words="STOP",
                    source="test",
                )
            )
        return composed

    ph.worker._sender._composer.compose = compose_then_stop
    ph.worker.run_until_idle()
    assert stopped == [True]
    assert email.attempts == []
    (row,) = rows(ph, "payment_failed")
    assert (row["status"], row["error_code"]) == ("failed", "suppressed")
    assert row["error"].startswith("+*******0123 must not be messaged: opted out (test: STOP)")
    assert row["notes"] == "sms: refused the message (Not a mobile number)"


def test_a_customers_opt_out_does_not_silence_team_alerts(
    ph: Any, clock: FrozenClock, sms: ScriptedChannel
) -> None:
    ph.store.consents.record(
        address="+14155550100",
        action="opt_out",
        channel="sms",
        words="STOP",
        source="test",
    )
    receive(ph, build_event("charge.dispute.created", now=clock.now(), livemode=True))
    ph.worker.run_until_idle()
    (row,) = rows(ph, "dispute_alert")
    assert (row["status"], row["to"]) == ("sent", "+14155550100")
