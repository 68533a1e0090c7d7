"""Built-in rules for payment_intent.* (F7, F8): which notifications, which key, which text."""

from __future__ import annotations

import json

import pytest

from payherald import RenderError
from payherald.messages import MessageContext, TemplateRenderer, message_context
from payherald.rules import BUILTIN_RULES, Rule, RuleBook
from payherald.webhook import parse_event
from tests.support import event_body

RENDERER = TemplateRenderer()
BOOK = RuleBook(BUILTIN_RULES, renderer=RENDERER)
PLAIN = MessageContext(business_name=None, locale="en_US", update_card_url=None)


def render(body: bytes, context: MessageContext = PLAIN) -> str:
    event = parse_event(body)
    (planned,) = BOOK.plan(event)
    rule = BOOK.get(planned.rule)
    assert rule is not None
    return RENDERER.render(rule.template, message_context(event, None, context))


def with_object(body: bytes, **changes: object) -> bytes:
    event = json.loads(body)
    event["data"]["object"].update(changes)
    return json.dumps(event).encode()


def test_payment_succeeded_confirmation_text() -> None:
    body = with_object(event_body("payment_intent.succeeded"), id="pi_123")
    assert render(body) == "Payment of $20.00 received, thank you! Order 1001. Ref: pi_123"


def test_payment_succeeded_with_business_name_and_no_order() -> None:
    body = with_object(event_body(), id="pi_123", metadata={}, amount=5000, amount_received=5000)
    context = MessageContext(business_name="Acme", locale="en_US", update_card_url=None)
    assert render(body, context) == "Acme: Payment of $50.00 received, thank you! Ref: pi_123"


def test_payment_failed_text_has_the_reason_in_plain_words() -> None:
    body = event_body("payment_intent.payment_failed")
    assert render(body) == (
        "Your payment of $20.00 did not go through: the card has insufficient funds. "
        "Please try another card."
    )


def test_payment_failed_links_to_fix_the_card_when_configured() -> None:
    context = MessageContext(
        business_name=None, locale="en_US", update_card_url="https://billing.example.com/card"
    )
    text = render(event_body("payment_intent.payment_failed"), context)
    assert text.endswith("Update your card: https://billing.example.com/card")


def test_an_unknown_decline_code_is_a_generic_decline() -> None:
    body = with_object(
        event_body("payment_intent.payment_failed"),
        last_payment_error={"code": "card_declined", "decline_code": "fraudulent"},
    )
    assert "the card was declined by the bank" in render(body)


def test_confirmation_key_is_the_payment_intent() -> None:
    first = parse_event(with_object(event_body(), id="pi_same"))
    second = parse_event(with_object(event_body(), id="pi_same"))
    assert first.id != second.id
    assert [p.key for p in BOOK.plan(first)] == [p.key for p in BOOK.plan(second)]
    assert BOOK.plan(first)[0].key == "payment_confirmation:pi_same"


def test_each_failed_charge_is_its_own_failure() -> None:
    body = event_body("payment_intent.payment_failed")
    first = parse_event(
        with_object(body, id="pi_1", last_payment_error={"charge": "ch_a", "code": "x"})
    )
    second = parse_event(
        with_object(body, id="pi_1", last_payment_error={"charge": "ch_b", "code": "x"})
    )
    assert BOOK.plan(first)[0].key == "payment_failed:pi_1:ch_a"
    assert BOOK.plan(second)[0].key == "payment_failed:pi_1:ch_b"


def test_events_without_a_rule_plan_nothing() -> None:
    assert BOOK.plan(parse_event(event_body("customer.created"))) == []


def test_a_misspelt_variable_is_a_render_error_not_an_empty_gap() -> None:
    with pytest.raises(RenderError, match="amout"):
        RENDERER.render("Paid {{ amout }}", {"amount": 1})


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(RenderError):
        RENDERER.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_a_rule_book_refuses_two_rules_with_one_name() -> None:
    rule = BUILTIN_RULES[0]
    with pytest.raises(ValueError, match="two rules"):
        RuleBook([rule, rule], renderer=RENDERER)


def test_a_rule_book_refuses_a_template_that_does_not_compile() -> None:
    broken = Rule(
        name="x", event_types=frozenset({"x"}), template="{% if %}", subject=lambda event: event.id
    )
    with pytest.raises(RenderError, match="does not compile"):
        RuleBook([broken], renderer=RENDERER)
