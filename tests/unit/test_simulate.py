"""The simulated Stripe events: every catalogue type, phones where Stripe puts them, linked ids."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from payherald.api_versions import NEWEST_SUPPORTED
from payherald.simulate import (
    SIMULATED_EVENT_TYPES,
    build_event,
    build_failure_events,
    build_payment_events,
    build_renewal_failure_events,
    build_simulation,
    build_subscription_payment_events,
    sign_payload,
)
from payherald.webhook import parse_event

NOW = datetime(2024, 7, 1, 12, 0, tzinfo=UTC)
T = int(NOW.timestamp())
DAY = 86_400
PHONE = "+447700900123"
# The shape before basil (2025-03-31): invoices, payment intents and charges name one another.
LEGACY = "2024-06-20"

# Where each object carries the customer's phone.
PHONE_PATHS = {
    "payment_intent.succeeded": ("shipping", "phone"),
    "payment_intent.payment_failed": ("shipping", "phone"),
    "charge.succeeded": ("billing_details", "phone"),
    "charge.failed": ("billing_details", "phone"),
    "charge.refunded": ("billing_details", "phone"),
    "checkout.session.completed": ("customer_details", "phone"),
    "invoice.paid": ("customer_phone",),
    "invoice.payment_succeeded": ("customer_phone",),
    "invoice.payment_failed": ("customer_phone",),
    "invoice.upcoming": ("customer_phone",),
    "refund.created": ("metadata", "phone"),
    "charge.dispute.created": ("metadata", "phone"),
    "radar.early_fraud_warning.created": ("charge", "billing_details", "phone"),
    "review.opened": ("charge", "billing_details", "phone"),
    "customer.subscription.deleted": ("metadata", "phone"),
    "customer.subscription.trial_will_end": ("metadata", "phone"),
    "customer.subscription.updated": ("metadata", "phone"),
    "customer.created": ("phone",),
}

# Where the amount lands, per type.
AMOUNT_PATHS: dict[str, tuple[tuple[str | int, ...], ...]] = {
    "payment_intent.succeeded": (("amount",), ("amount_received",)),
    "charge.succeeded": (("amount",), ("amount_captured",)),
    "charge.failed": (("amount",),),
    "charge.refunded": (("amount",), ("amount_captured",), ("amount_refunded",)),
    "checkout.session.completed": (("amount_total",),),
    "invoice.paid": (("amount_due",), ("amount_paid",), ("total",)),
    "invoice.payment_succeeded": (("amount_due",), ("amount_paid",), ("total",)),
    "invoice.payment_failed": (("amount_due",), ("total",)),
    "invoice.upcoming": (("amount_due",), ("total",), ("lines", "data", 0, "amount")),
    "refund.created": (("amount",),),
    "charge.dispute.created": (("amount",),),
    "radar.early_fraud_warning.created": (("charge", "amount"),),
    "review.opened": (("charge", "amount"),),
    "customer.subscription.updated": (
        ("items", "data", 0, "price", "unit_amount"),
        ("plan", "amount"),
    ),
}


def dig(obj: Any, path: tuple[str | int, ...]) -> Any:
    for part in path:
        obj = obj[part]
    return obj


def data_object(event_type: str, **kwargs: Any) -> dict[str, Any]:
    obj: dict[str, Any] = build_event(event_type, now=NOW, **kwargs)["data"]["object"]
    return obj


def test_the_simulated_types_are_the_catalogue_plus_customer_and_invoice_payment_sorted() -> None:
    assert list(SIMULATED_EVENT_TYPES) == sorted([*PHONE_PATHS, "invoice_payment.paid"])


@pytest.mark.parametrize("event_type", SIMULATED_EVENT_TYPES)
def test_every_type_builds_an_event_the_webhook_parses(event_type: str) -> None:
    event = build_event(event_type, now=NOW, livemode=True)
    assert set(event) == {
        "id", "object", "api_version", "created", "data", "livemode", "pending_webhooks",
        "request", "type",
    }  # fmt: skip
    assert event["api_version"] == NEWEST_SUPPORTED
    assert (event["type"], event["created"], event["livemode"]) == (event_type, T, True)
    assert event["data"]["object"].get("livemode", True) is True  # a refund does not say
    parsed = parse_event(json.dumps(event).encode())
    assert (parsed.id, parsed.type) == (event["id"], event_type)


@pytest.mark.parametrize("api_version", [LEGACY, NEWEST_SUPPORTED])
@pytest.mark.parametrize("event_type", PHONE_PATHS)
def test_every_object_carries_the_phone_where_documented(event_type: str, api_version: str) -> None:
    obj = data_object(event_type, phone=PHONE, api_version=api_version)
    assert dig(obj, PHONE_PATHS[event_type]) == PHONE


@pytest.mark.parametrize(("event_type", "paths"), AMOUNT_PATHS.items())
def test_amount_and_currency_flow_into_the_natural_fields(
    event_type: str, paths: tuple[tuple[str | int, ...], ...]
) -> None:
    obj = data_object(event_type, amount=123456, currency="JPY", api_version=LEGACY)
    assert [dig(obj, path) for path in paths] == [123456] * len(paths)
    # A review or a warning has no currency of its own: its charge has.
    assert (obj.get("currency") or obj["charge"]["currency"]) == "jpy"


@pytest.mark.parametrize("event_type", SIMULATED_EVENT_TYPES)
def test_customers_are_ids_not_expanded_objects(event_type: str) -> None:
    obj = data_object(event_type)
    customer = obj["id"] if event_type == "customer.created" else obj.get("customer")
    assert customer is None or customer.startswith("cus_")


def test_ids_are_fresh_on_every_call() -> None:
    first, second = (build_event("charge.succeeded", now=NOW) for _ in range(2))
    assert first["id"] != second["id"]
    assert first["data"]["object"]["id"] != second["data"]["object"]["id"]


def test_an_unknown_type_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        build_event("charge.nope", now=NOW)


def test_the_payment_intent_shape_the_rules_rely_on_is_unchanged() -> None:
    obj = data_object("payment_intent.succeeded")
    assert obj["customer"] is None
    assert obj["metadata"] == {"order_id": "1001"}
    assert obj["status"] == "succeeded"
    assert obj["latest_charge"].startswith("ch_")
    failed = data_object("payment_intent.payment_failed")
    assert failed["last_payment_error"]["charge"] == failed["latest_charge"]
    assert failed["last_payment_error"]["decline_code"] == "insufficient_funds"
    assert (failed["amount_received"], failed["status"]) == (0, "requires_payment_method")


def test_a_failed_charge_carries_the_decline() -> None:
    obj = data_object("charge.failed")
    assert obj["status"] == "failed"
    assert obj["failure_code"] == "card_declined"
    assert obj["outcome"]["reason"] == "insufficient_funds"
    assert obj["failure_message"]
    assert (obj["paid"], obj["captured"], obj["amount_captured"]) == (False, False, 0)


def test_a_refunded_charge_is_fully_refunded() -> None:
    obj = data_object("charge.refunded", amount=999)
    assert (obj["refunded"], obj["amount_refunded"]) == (True, 999)
    assert data_object("charge.succeeded")["amount_refunded"] == 0


def test_a_refund_points_at_its_charge_and_payment_intent() -> None:
    obj = data_object("refund.created")
    assert obj["object"] == "refund"
    assert obj["charge"].startswith("ch_")
    assert obj["payment_intent"].startswith("pi_")


def test_a_failed_invoice_has_what_dunning_needs() -> None:
    obj = data_object("invoice.payment_failed", api_version=LEGACY)
    assert obj["hosted_invoice_url"].startswith("https://invoice.stripe.com/")
    assert obj["attempt_count"] == 1
    assert obj["next_payment_attempt"] == T + 3 * DAY
    assert obj["billing_reason"] == "subscription_cycle"
    assert (obj["status"], obj["paid"], obj["amount_paid"]) == ("open", False, 0)


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_succeeded"])
def test_a_paid_invoice_links_its_payment_and_subscription(event_type: str) -> None:
    obj = data_object(event_type, api_version=LEGACY)
    assert obj["billing_reason"] == "subscription_create"
    assert obj["payment_intent"].startswith("pi_")
    assert obj["charge"].startswith("ch_")
    assert obj["subscription"].startswith("sub_")
    assert obj["number"]
    assert obj["hosted_invoice_url"].startswith("https://")
    assert obj["customer_address"]["country"] == "US"
    line = obj["lines"]["data"][0]
    assert line["price"]["product"].startswith("prod_")
    assert line["plan"]["nickname"] == line["price"]["nickname"] == "Pro monthly"


def test_an_upcoming_invoice_has_no_id_and_a_renewal_date() -> None:
    obj = data_object("invoice.upcoming", api_version=LEGACY)
    assert "id" not in obj
    assert obj["subscription"].startswith("sub_")
    assert obj["next_payment_attempt"] == obj["period_end"] == T + 7 * DAY
    line = obj["lines"]["data"][0]
    assert line["price"]["recurring"]["interval"] == "month"
    assert line["plan"]["id"] == line["price"]["id"]


def test_a_dispute_has_reason_status_and_evidence_deadline() -> None:
    obj = data_object("charge.dispute.created")
    assert (obj["reason"], obj["status"]) == ("fraudulent", "needs_response")
    assert obj["evidence_details"]["due_by"] == T + 7 * DAY
    assert isinstance(obj["evidence_details"]["due_by"], int)
    assert obj["charge"].startswith("ch_")
    assert obj["payment_intent"].startswith("pi_")


def test_a_checkout_session_paid_in_payment_mode() -> None:
    obj = data_object("checkout.session.completed")
    assert (obj["mode"], obj["payment_status"]) == ("payment", "paid")
    assert obj["payment_intent"].startswith("pi_")
    assert obj["metadata"] == {"order_id": "1001"}
    details = obj["customer_details"]
    assert (details["email"], details["name"]) == ("jenny.rosen@example.com", "Jenny Rosen")
    assert details["address"]["country"] == "US"


@pytest.mark.parametrize(
    "event_type",
    [
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "customer.subscription.updated",
    ],
)
def test_a_subscription_has_its_plan_and_price(event_type: str) -> None:
    obj = data_object(event_type, amount=1500, api_version=LEGACY)
    price = obj["items"]["data"][0]["price"]
    plan = obj["plan"]
    assert price["id"].startswith("price_")
    assert price["product"].startswith("prod_")
    assert price["recurring"]["interval"] == plan["interval"] == "month"
    assert (price["nickname"], price["unit_amount"]) == ("Pro monthly", 1500)
    assert (plan["id"], plan["nickname"], plan["product"], plan["amount"]) == (
        price["id"],
        "Pro monthly",
        price["product"],
        1500,
    )
    assert obj["current_period_end"] > T


def test_a_deleted_subscription_says_when_it_ended() -> None:
    obj = data_object("customer.subscription.deleted")
    assert (obj["status"], obj["canceled_at"], obj["ended_at"]) == ("canceled", T, T)


def test_an_active_subscription_renews_in_seven_days() -> None:
    assert (
        data_object("customer.subscription.updated", api_version=LEGACY)["current_period_end"]
        == T + 7 * DAY
    )


def test_a_trial_ending_subscription_ends_its_trial_in_three_days() -> None:
    obj = data_object("customer.subscription.trial_will_end")
    assert obj["status"] == "trialing"
    assert obj["trial_end"] == T + 3 * DAY


def test_a_plan_change_carries_the_previous_plan() -> None:
    event = build_event("customer.subscription.updated", now=NOW, api_version=LEGACY)
    previous = event["data"]["previous_attributes"]
    current = event["data"]["object"]
    assert previous["plan"]["nickname"] == "Basic monthly"
    assert previous["items"]["data"][0]["price"]["nickname"] == "Basic monthly"
    assert previous["plan"]["id"] != current["plan"]["id"]
    assert (
        "previous_attributes" not in build_event("customer.subscription.deleted", now=NOW)["data"]
    )


def test_one_checkout_payment_is_four_events_about_the_same_objects() -> None:
    events = build_payment_events(
        now=NOW, phone=PHONE, amount=4200, currency="eur", livemode=True, api_version=LEGACY
    )
    assert [e["type"] for e in events] == [
        "payment_intent.succeeded",
        "charge.succeeded",
        "checkout.session.completed",
        "invoice.paid",
    ]
    assert len({e["id"] for e in events}) == 4
    intent, charge, session, invoice = (e["data"]["object"] for e in events)
    pi, ch, inv, cs = intent["id"], charge["id"], invoice["id"], session["id"]
    assert (pi[:3], ch[:3], inv[:3], cs[:3]) == ("pi_", "ch_", "in_", "cs_")
    assert (intent["invoice"], intent["latest_charge"]) == (inv, ch)
    assert (charge["payment_intent"], charge["invoice"]) == (pi, inv)
    assert (session["payment_intent"], session["invoice"]) == (pi, inv)
    assert (invoice["payment_intent"], invoice["charge"]) == (pi, ch)
    customers = {obj["customer"] for obj in (intent, charge, session, invoice)}
    assert len(customers) == 1
    assert customers.pop().startswith("cus_")
    assert {e["livemode"] for e in events} == {True}
    assert [
        intent["amount"],
        charge["amount"],
        session["amount_total"],
        invoice["amount_paid"],
    ] == [4200] * 4
    assert {obj["currency"] for obj in (intent, charge, session, invoice)} == {"eur"}


def test_two_payments_do_not_share_ids() -> None:
    first, second = build_payment_events(now=NOW), build_payment_events(now=NOW)
    assert first[0]["data"]["object"]["id"] != second[0]["data"]["object"]["id"]


def test_one_declined_payment_is_two_events_about_the_same_charge() -> None:
    failed, charge_failed = build_failure_events(now=NOW, phone=PHONE, amount=777)
    assert (failed["type"], charge_failed["type"]) == (
        "payment_intent.payment_failed",
        "charge.failed",
    )
    assert failed["id"] != charge_failed["id"]
    intent, charge = failed["data"]["object"], charge_failed["data"]["object"]
    assert intent["latest_charge"] == intent["last_payment_error"]["charge"] == charge["id"]
    assert charge["payment_intent"] == intent["id"]
    assert intent["customer"] == charge["customer"]
    assert intent["amount"] == charge["amount"] == 777


def test_sign_payload_signs_the_body_it_returns() -> None:
    import stripe

    event = build_event("invoice.paid", now=NOW)
    body, header = sign_payload(event, "whsec_test", timestamp=T)
    assert json.loads(body) == event
    stripe.WebhookSignature.verify_header(body.decode(), header, "whsec_test", tolerance=None)


# -- today's shapes ----------------------------------------------------------------------


def test_a_paid_invoice_of_today_names_no_payment_and_keeps_its_subscription_under_parent() -> None:
    obj = data_object("invoice.paid")
    assert not {"paid", "payment_intent", "charge", "subscription"} & set(obj)
    assert obj["status"] == "paid"
    assert obj["parent"]["subscription_details"]["subscription"].startswith("sub_")
    line = obj["lines"]["data"][0]
    assert not {"price", "plan", "type", "proration", "subscription_item"} & set(line)
    details = line["pricing"]["price_details"]
    assert (details["price"][:6], details["product"][:5]) == ("price_", "prod_")
    assert line["parent"]["subscription_item_details"]["subscription_item"].startswith("si_")


def test_a_subscription_of_today_keeps_its_period_on_its_items() -> None:
    obj = data_object("customer.subscription.updated")
    assert not {"current_period_end", "current_period_start", "plan"} & set(obj)
    assert obj["items"]["data"][0]["current_period_end"] == T + 7 * DAY


@pytest.mark.parametrize("event_type", ["payment_intent.succeeded", "charge.succeeded"])
def test_a_payment_of_today_names_no_invoice(event_type: str) -> None:
    assert "invoice" not in data_object(event_type)


def test_a_subscription_payment_of_today_is_linked_only_by_its_invoice_payment() -> None:
    events = build_subscription_payment_events(now=NOW, amount=3100)
    assert [e["type"] for e in events] == [
        "payment_intent.succeeded",
        "charge.succeeded",
        "invoice.paid",
        "invoice_payment.paid",
    ]
    intent, charge, invoice, payment = (e["data"]["object"] for e in events)
    assert "invoice" not in intent
    assert "payment_intent" not in invoice
    assert payment["invoice"] == invoice["id"]
    assert payment["payment"] == {"type": "payment_intent", "payment_intent": intent["id"]}
    assert charge["payment_intent"] == intent["id"]
    assert {intent["customer"], charge["customer"], invoice["customer"]} == {invoice["customer"]}
    assert payment["amount_paid"] == invoice["amount_paid"] == 3100


def test_a_subscription_payment_before_invoice_payments_existed_ends_with_the_invoice_event() -> (
    None
):
    events = build_subscription_payment_events(now=NOW, api_version="2025-02-24.acacia")
    assert events[3]["type"] == "invoice.payment_succeeded"
    intent, _, invoice, _ = (e["data"]["object"] for e in events)
    assert (intent["invoice"], invoice["payment_intent"]) == (invoice["id"], intent["id"])


def test_a_failed_renewal_is_three_events_about_one_invoice_and_charge() -> None:
    invoice, intent, charge = (e["data"]["object"] for e in build_renewal_failure_events(now=NOW))
    assert [invoice["object"], intent["object"], charge["object"]] == [
        "invoice",
        "payment_intent",
        "charge",
    ]
    assert invoice["status"] == "open"
    assert intent["last_payment_error"]["charge"] == charge["id"]
    assert "invoice" not in intent
    assert "invoice" not in charge
    assert invoice["customer"] == intent["customer"] == charge["customer"]


@pytest.mark.parametrize("event_type", ["invoice.paid", "invoice.payment_failed"])
def test_a_simulation_can_be_about_a_given_invoice(event_type: str) -> None:
    events = build_simulation(event_type, now=NOW, invoice="in_given")
    invoice = events[-1]["data"]["object"]
    assert invoice["id"] == "in_given"
    made_up = build_simulation(event_type, now=NOW)[-1]["data"]["object"]["id"]
    assert made_up != "in_given"
    if event_type == "invoice.paid":  # today's invoice_payment.paid names it too
        assert events[0]["data"]["object"]["invoice"] == "in_given"
