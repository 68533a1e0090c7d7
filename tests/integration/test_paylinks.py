"""Payment links by SMS, on SQLite and PostgreSQL: `POST /api/paylinks` over loopback makes
a link at a stand-in of today's Stripe (its metadata, line items and idempotency key
checked), the worker texts it with its UTM parameters, a retried request makes and texts
nothing new, and a bad request makes and records nothing. The payment that follows the link
(signed Checkout and payment intent events, posted seconds apart) is credited to the text
once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from payherald import FrozenClock
from payherald.simulate import build_event
from payherald.testing import ScriptedChannel
from tests.stripe_standin import StripeStandIn, stripe_standin
from tests.support import LiveServer, StripeOnLoopback, build_for_tests

PHONE = "+14155550123"
TOKEN = "paylink-tests-admin-token"
PRICE = {
    "id": "price_gold",
    "object": "price",
    "active": True,
    "currency": "usd",
    "unit_amount": 1500,
    "type": "one_time",
    "recurring": None,
    "nickname": None,
    "product": "prod_gold",
}
PRODUCT = {"id": "prod_gold", "object": "product", "name": "Gold plan"}


class Shop(StripeOnLoopback):
    """payherald served on loopback with a test-mode key to the stand-in, the SMS channel
    that records what it sends (the phone is on the test allowlist)."""

    standin: StripeStandIn

    def paylink(
        self, body: Any, *, key: str | None = None, token: str | None = TOKEN
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if key is not None:
            headers["Idempotency-Key"] = key
        content = body if isinstance(body, bytes) else httpx.Request("POST", "/", json=body).read()
        return self.client.post("/api/paylinks", content=content, headers=headers)

    def made(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        """The payment links the stand-in made: the form posted, the link."""
        return list(self.standin.payment_links.values())


def _shop(database_url: str, standin: StripeStandIn, **settings: str) -> Iterator[Shop]:
    clock, sms = FrozenClock(), ScriptedChannel("sms")
    settings = {
        "STRIPE_SECRET_KEY": "sk_test_standin",
        "STRIPE_API_BASE": standin.url,
        "PAYHERALD_TEST_ALLOWLIST": PHONE,
        **settings,
    }
    ph = build_for_tests(database_url, clock=clock, channels={"sms": sms}, settings=settings)
    with LiveServer(ph.http_app) as server, Shop(ph, server, clock, sms) as shop:
        shop.standin = standin
        yield shop
    ph.engine.dispose()


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with stripe_standin() as standin:
        standin.add(PRICE, PRODUCT)
        yield standin


@pytest.fixture
def shop(database_url: str, standin: StripeStandIn) -> Iterator[Shop]:
    yield from _shop(database_url, standin, PAYHERALD_ADMIN_TOKEN=TOKEN)


SPRING = {
    "phone": "(415) 555-0123",
    "amount": 2500,
    "currency": "usd",
    "name": "Spring box",
    "campaign": "spring",
}


def test_a_paylink_is_made_with_its_metadata_and_key_and_texted_with_utm(shop: Shop) -> None:
    answer = shop.paylink(SPRING, key="order-1001")
    assert answer.status_code == 201, answer.text
    sent = answer.json()
    ((form, link),) = shop.made()
    assert sent["payment_link"] == link["id"]
    assert (sent["status"], sent["livemode"], sent["repeated"]) == ("pending", False, False)
    ours = sent["paylink"]
    assert shop.standin.payment_links[f"payherald-paylink-{ours}"][1] == link
    assert form == {
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": "2500",
        "line_items[0][price_data][product_data][name]": "Spring box",
        "metadata[payherald_paylink]": ours,
        "metadata[payherald_campaign]": "spring",
        "payment_intent_data[metadata][payherald_paylink]": ours,
        "payment_intent_data[metadata][payherald_campaign]": "spring",
    }
    url = urlsplit(sent["url"])
    assert sent["url"].startswith(link["url"] + "?")
    assert parse_qs(url.query) == {
        "utm_source": ["payherald"],
        "utm_medium": ["sms"],
        "utm_campaign": ["spring"],
    }

    shop.ph.worker.run_until_idle()
    (text,) = shop.sms.delivered
    assert (text.to, text.body) == (PHONE, f"Pay $25.00 for Spring box here: {sent['url']}")
    (notification,) = shop.ph.store.list_notifications()
    assert (notification["id"], notification["rule"], notification["status"]) == (
        sent["notification_id"],
        "payment_link",
        "sent",
    )
    (event,) = shop.ph.store.list_events()
    assert (event["type"], event["livemode"]) == ("payherald.paylink", False)


def test_a_retried_request_with_the_same_idempotency_key_makes_one_link_and_one_text(
    shop: Shop,
) -> None:
    first = shop.paylink(SPRING, key="order-1002")
    shop.ph.worker.run_until_idle()
    again = shop.paylink(SPRING, key="order-1002")
    assert again.status_code == 201, again.text
    assert again.json() | {"repeated": False, "status": "pending"} == first.json()
    assert again.json()["repeated"] is True
    shop.ph.worker.run_until_idle()
    assert len(shop.made()) == 1
    assert len(shop.sms.delivered) == 1
    # Another key is another link.
    other = shop.paylink(SPRING, key="order-1003")
    assert other.json()["paylink"] != first.json()["paylink"]
    assert len(shop.made()) == 2


def test_an_idempotency_key_used_before_with_another_request_is_refused(shop: Shop) -> None:
    shop.paylink(SPRING, key="order-1004")
    other = shop.paylink({**SPRING, "phone": "+14155550199", "amount": 9900}, key="order-1004")
    assert other.status_code == 409, other.text
    assert "was used before for another request" in other.json()["error"]
    assert len(shop.made()) == 1
    shop.ph.worker.run_until_idle()
    assert [message.to for message in shop.sms.delivered] == [PHONE]


def test_a_number_that_opted_out_gets_no_link(shop: Shop) -> None:
    shop.ph.store.consents.record(
        address=PHONE, action="opt_out", channel="sms", words="STOP", source="reply"
    )
    refused = shop.paylink(SPRING, key="order-1005")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"].startswith("+*******0123 must not be messaged: opted out")
    assert shop.made() == []
    assert shop.ph.store.list_events(type="payherald.paylink") == []


def test_a_payment_link_rule_turned_off_is_the_operators_to_fix(
    database_url: str, standin: StripeStandIn, tmp_path: Path
) -> None:
    rules = tmp_path / "payherald.toml"
    rules.write_text("[rules.payment_link]\nenabled = false\n")
    for shop in _shop(
        database_url, standin, PAYHERALD_ADMIN_TOKEN=TOKEN, PAYHERALD_CONFIG=str(rules)
    ):
        refused = shop.paylink(SPRING)
        assert refused.status_code == 503, refused.text
        assert "rule is turned off" in refused.json()["error"]
        assert shop.made() == []


def test_a_price_is_read_from_stripe_and_a_recurring_one_makes_a_subscription_link(
    shop: Shop,
) -> None:
    shop.standin.add(PRICE | {"id": "price_monthly", "type": "recurring", "recurring": {}})
    one_time = shop.paylink({"phone": PHONE, "price": "price_gold", "quantity": 2})
    assert one_time.status_code == 201, one_time.text
    monthly = shop.paylink({"phone": PHONE, "price": "price_monthly"})
    assert monthly.status_code == 201, monthly.text
    (gold_form, _), (monthly_form, _) = shop.made()
    assert gold_form["line_items[0][price]"] == "price_gold"
    assert gold_form["line_items[0][quantity]"] == "2"
    assert "payment_intent_data[metadata][payherald_paylink]" in gold_form
    assert (
        monthly_form["subscription_data[metadata][payherald_paylink]"]
        == (monthly.json()["paylink"])
    )
    assert not any(name.startswith("payment_intent_data") for name in monthly_form)
    assert shop.standin.requested("GET /v1/prices/price_gold") == 1
    shop.ph.worker.run_until_idle()
    assert shop.sms.delivered[0].body.startswith("Pay $30.00 for Gold plan here: https://")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"amount": 2500, "currency": "usd", "name": "Box"}, "'phone' is required"),
        (SPRING | {"phone": "12"}, "'phone' '12' is not a phone number payherald can read"),
        (SPRING | {"price": "price_gold"}, "Give 'price' or 'amount', not both"),
        ({"phone": PHONE}, "Give 'price' (a Stripe price, price_...) or 'amount'"),
        (SPRING | {"amount": 25.5}, "'amount' 25.5 is not a positive whole number"),
        (SPRING | {"amount": 0}, "'amount' 0 is not a positive whole number"),
        (SPRING | {"amount": "2500"}, None),  # digits are a whole number: accepted
        (SPRING | {"currency": "usx"}, "'currency' 'usx' is not an ISO 4217 currency code"),
        (SPRING | {"currency": None}, "'amount' needs 'currency'"),
        (SPRING | {"name": " "}, "'amount' needs 'name'"),
        (SPRING | {"quantity": 0}, "'quantity' 0 is not a whole number from 1 to 99"),
        (SPRING | {"quantity": 100}, "'quantity' 100 is not a whole number from 1 to 99"),
        (SPRING | {"campaign": "spring sale"}, "'campaign' 'spring sale' may hold only"),
        ({"phone": PHONE, "price": "gold"}, "'price' 'gold' is not a Stripe price id"),
        (
            {"phone": PHONE, "price": "price_gold", "currency": "usd"},
            "'currency' and 'name' go with 'amount'",
        ),
        (
            {"phone": PHONE, "price": "price_unknown"},
            "Stripe has no price price_unknown in test mode; prices of live mode need a live key",
        ),
        ({"phone": PHONE, "price": "price_old"}, "Price price_old is archived at Stripe"),
        (SPRING | {"utm": "x"}, "Unknown field 'utm'"),
        (["not", "an", "object"], "The body must be a JSON object"),
    ],
)
def test_a_bad_request_is_refused_with_a_sentence_and_nothing_is_made_or_recorded(
    shop: Shop, body: Any, words: str | None
) -> None:
    shop.standin.add(PRICE | {"id": "price_old", "active": False})
    answer = shop.paylink(body)
    if words is None:
        assert answer.status_code == 201, answer.text
        return
    assert answer.status_code == 422, answer.text
    assert words in answer.json()["error"]
    assert shop.made() == []
    assert shop.standin.requested("POST /v1/payment_links") == 0
    assert shop.ph.store.list_events() == []


def test_malformed_json_and_a_bad_idempotency_key_answer_400(shop: Shop) -> None:
    assert shop.paylink(b"{not json").status_code == 400
    assert shop.paylink(SPRING, key="x" * 256).status_code == 400
    assert shop.made() == []
    assert shop.ph.store.list_events() == []


@pytest.mark.parametrize("token", [None, "wrong-token", TOKEN + "x"])
def test_the_api_refuses_a_request_without_the_admin_token(shop: Shop, token: str | None) -> None:
    answer = shop.paylink(SPRING, token=token)
    assert answer.status_code == 401
    assert "Authorization: Bearer" in answer.json()["error"]
    assert shop.made() == []


def test_without_an_admin_token_configured_the_api_is_off(
    database_url: str, standin: StripeStandIn
) -> None:
    for shop in _shop(database_url, standin):
        answer = shop.paylink(SPRING)
        assert answer.status_code == 403
        assert "set PAYHERALD_ADMIN_TOKEN" in answer.json()["error"]
        assert shop.made() == []


# -- attribution ----------------------------------------------------------------------------


def _payment_through(shop: Shop, sent: dict[str, Any]) -> list[dict[str, Any]]:
    """The two events Stripe sends for a payment through the link ``sent``: its Checkout
    session's completion (which names the link and carries its metadata) and its payment
    intent's success (which carries payment_intent_data's)."""
    now = shop.clock.now()
    metadata = {"payherald_paylink": sent["paylink"], "payherald_campaign": "spring"}
    session = build_event("checkout.session.completed", now=now, amount=2500)
    intent = build_event("payment_intent.succeeded", now=now, amount=2500)
    intent_id = session["data"]["object"]["payment_intent"]
    session["data"]["object"].update(payment_link=sent["payment_link"], metadata=metadata)
    intent["data"]["object"].update(id=intent_id, metadata=metadata)
    return [session, intent]


@pytest.mark.parametrize("order", ["session first", "intent first"])
def test_a_payment_through_the_link_is_credited_to_its_text_once(shop: Shop, order: str) -> None:
    since = shop.clock.now()
    sent = shop.paylink(SPRING).json()
    shop.ph.worker.run_until_idle()
    events = _payment_through(shop, sent)
    if order == "intent first":
        events.reverse()
    for event in [*events, events[0]]:  # and Stripe's retry of the first
        shop.send(event)

    assert shop.ph.store.attribution.revenue(since, livemode=False) == [
        {
            "rule": "payment_link",
            "channel": "sms",
            "campaign": "spring",
            "currency": "usd",
            "payments": 1,
            "amount": 2500,
        }
    ]
    assert shop.ph.store.attribution.revenue(since) == []  # live mode: nothing


def test_a_link_whose_text_never_went_is_credited_to_no_channel(shop: Shop) -> None:
    since = shop.clock.now()
    sent = shop.paylink(SPRING).json()
    # The number opts out before the worker sends the text: it is not sent.
    shop.ph.store.consents.record(
        address=PHONE, action="opt_out", channel="sms", words="STOP", source="reply"
    )
    shop.ph.worker.run_until_idle()
    assert shop.sms.delivered == []
    for event in _payment_through(shop, sent):
        shop.send(event)
    (credited,) = shop.ph.store.attribution.revenue(since, livemode=False)
    assert (credited["rule"], credited["channel"]) == ("payment_link", None)


def test_a_failure_text_followed_by_the_payments_success_is_credited_to_it(shop: Shop) -> None:
    since = shop.clock.now()
    failed, charge_failed = _failure(shop)
    shop.send(failed)
    shop.send(charge_failed)
    assert [message.body.split(":")[0] for message in shop.sms.delivered] == [
        "Your payment of $20.00 did not go through"
    ]
    succeeded = build_event("payment_intent.succeeded", now=shop.clock.now())
    intent = failed["data"]["object"]
    succeeded["data"]["object"].update(id=intent["id"], customer=intent["customer"])
    shop.send(succeeded)
    shop.send(succeeded)

    (credit,) = shop.ph.store.attribution.revenue(since, livemode=False)
    assert (credit["rule"], credit["channel"], credit["payments"], credit["amount"]) == (
        "payment_failed",
        "sms",
        1,
        2000,
    )


def _failure(shop: Shop) -> list[dict[str, Any]]:
    """A declined card's two events, whose payment intent the stand-in knows as unpaid."""
    from payherald.simulate import build_failure_events

    events = build_failure_events(now=shop.clock.now())
    shop.standin.add(*(event["data"]["object"] for event in events))
    return events


def test_a_payment_that_no_message_brought_is_credited_to_none(shop: Shop) -> None:
    since = shop.clock.now()
    shop.send(build_event("checkout.session.completed", now=shop.clock.now()))
    shop.send(build_event("payment_intent.succeeded", now=shop.clock.now()))
    assert shop.ph.store.attribution.revenue(since, livemode=False) == []
