"""A paylink request read and checked, the URL texted, and the payment an event credits."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from payherald.attribution import payment_made
from payherald.exceptions import PaylinkRefused
from payherald.paylink_requests import PaylinkRequest, paylink_request
from payherald.paylinks import paylink_id, with_utm
from payherald.simulate import build_event
from payherald.webhook import parse_event

NOW = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


def test_an_amount_request_is_read_with_the_phone_in_e164_and_the_currency_lower() -> None:
    request = paylink_request(
        phone="020 7183 8750",
        amount="2500",
        currency="GBP",
        name="  Spring   box ",
        quantity="3",
        default_region="GB",
    )
    assert request == PaylinkRequest(
        phone="+442071838750", amount=2500, currency="gbp", name="Spring box", quantity=3
    )


def test_the_command_names_its_options_in_what_it_refuses() -> None:
    with pytest.raises(PaylinkRefused, match=r"^Give --price or --amount, not both"):
        paylink_request(phone="+14155550123", price="price_1", amount=10)


def test_a_zero_decimal_amount_is_taken_in_its_own_unit() -> None:
    request = paylink_request(phone="+14155550123", amount=2500, currency="jpy", name="Box")
    assert (request.amount, request.currency) == (2500, "jpy")


def test_the_same_request_id_makes_the_same_paylink() -> None:
    assert paylink_id("order-1") == paylink_id("order-1") != paylink_id("order-2")
    assert paylink_id("order-1").startswith("pl_")


def test_the_utm_parameters_go_before_a_fragment() -> None:
    assert with_utm("https://buy.stripe.com/x#top", "spring") == (
        "https://buy.stripe.com/x?utm_source=payherald&utm_medium=sms&utm_campaign=spring#top"
    )


def test_the_utm_parameters_join_a_url_that_has_a_query_already() -> None:
    assert with_utm("https://buy.stripe.com/x?locale=fr", None) == (
        "https://buy.stripe.com/x?locale=fr&utm_source=payherald&utm_medium=sms"
    )


def test_a_checkout_session_still_to_be_paid_credits_nothing() -> None:
    event = build_event("checkout.session.completed", now=NOW)
    event["data"]["object"]["payment_status"] = "unpaid"
    assert payment_made(parse_event(json.dumps(event).encode())) is None


def test_a_subscriptions_checkout_session_is_counted_by_its_own_id() -> None:
    event = build_event("checkout.session.completed", now=NOW)
    session = event["data"]["object"]
    session.update(
        payment_intent=None, payment_link="plink_1", metadata={"payherald_paylink": "pl_1"}
    )
    made = payment_made(parse_event(json.dumps(event).encode()))
    assert made is not None
    assert (made.payment, made.paylink, made.stripe_link) == (session["id"], "pl_1", "plink_1")
