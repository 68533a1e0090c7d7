"""The built-in catalogue: which events cause which messages, in which words."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from payherald import ConfigurationError, FrozenClock, RenderError, parse_event
from payherald.builtin_rules import BUILTIN_RULES
from payherald.config import Config
from payherald.rules import Rule, RuleBook, Team
from payherald.simulate import build_event
from payherald.templates import TemplateRenderer
from payherald.variables import MessageContext, message_context
from payherald.webhook import StripeEvent

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
RENDERER = TemplateRenderer()
TEAMS = {"finance": Team(name="finance", sms=("+14155550100",))}
BOOK = Config(teams=TEAMS, high_value={"usd": 100_000}).rule_book(RENDERER)
PLAIN = MessageContext(
    business_name=None, locale="en_US", update_card_url=None, timezone="America/New_York"
)
CUSTOMER = {"id": "cus_1", "name": "Jenny Rosen", "metadata": {"tags": "vip"}}


# The shape before basil (2025-03-31), where an invoice's lines carry the price's nickname.
LEGACY = "2024-06-20"


def event(event_type: str, api_version: str | None = None, **changes: Any) -> StripeEvent:
    payload = build_event(
        event_type,
        now=FrozenClock(NOW).now(),
        **({"api_version": api_version} if api_version else {}),
    )
    payload["data"]["object"].update(changes)
    return parse_event(json.dumps(payload).encode())


def messages(ev: StripeEvent, context: MessageContext = PLAIN) -> dict[tuple[str, str], str]:
    """(rule, recipient) -> text, for every notification ``ev`` causes."""
    rendered = {}
    for planned in BOOK.plan(ev):
        rule = BOOK.get(planned.rule)
        assert rule is not None
        variables = message_context(ev, CUSTOMER, context, high_value=BOOK.high_value)
        rendered[(planned.rule, planned.recipient)] = RENDERER.render(rule.template, variables)
    return rendered


def test_payment_intent_succeeded() -> None:
    ev = event("payment_intent.succeeded", id="pi_1", customer="cus_1")
    assert messages(ev) == {
        (
            "payment_confirmation",
            "customer",
        ): "Payment of $20.00 received, thank you! Order 1001. Ref: pi_1",
        ("welcome", "customer"): "Welcome, Jenny! Thank you for your first payment.",
    }


def test_a_business_name_prefixes_customer_messages() -> None:
    context = MessageContext(business_name="Acme", locale="en_US", update_card_url=None)
    ev = event("payment_intent.succeeded", id="pi_1", metadata={})
    assert messages(ev, context) == {
        ("payment_confirmation", "customer"): "Acme: Payment of $20.00 received, thank you! "
        "Ref: pi_1",
    }


@pytest.mark.parametrize("event_type", ["payment_intent.payment_failed", "charge.failed"])
def test_payment_failed_in_plain_words(event_type: str) -> None:
    assert messages(event(event_type)) == {
        ("payment_failed", "customer"): "Your payment of $20.00 did not go through: the card "
        "has insufficient funds. Please try another card.",
    }


def test_payment_failed_links_to_fix_the_card_when_configured() -> None:
    context = MessageContext(
        business_name=None, locale="en_US", update_card_url="https://billing.example.com/card"
    )
    (text,) = messages(event("payment_intent.payment_failed"), context).values()
    assert text.endswith("Update your card: https://billing.example.com/card")


def test_an_unknown_decline_code_is_a_generic_decline() -> None:
    ev = event(
        "payment_intent.payment_failed",
        last_payment_error={"code": "card_declined", "decline_code": "fraudulent"},
    )
    (text,) = messages(ev).values()
    assert "the card was declined by the bank" in text


def test_invoice_payment_failed_links_to_the_invoice() -> None:
    ev = event(
        "invoice.payment_failed",
        number="INV-7",
        hosted_invoice_url="https://invoice.stripe.com/i/x",
    )
    assert messages(ev) == {
        ("invoice_payment_failed", "customer"): "We could not collect $20.00 for invoice INV-7:"
        " the card was declined by the bank. Pay or update your card: "
        "https://invoice.stripe.com/i/x",
        # The later steps of its dunning, queued with it, each due days later.
        ("dunning_reminder", "customer"): "Reminder: $20.00 for invoice INV-7 is still unpaid."
        " Pay or update your card: https://invoice.stripe.com/i/x",
        ("dunning_final", "customer"): "Final notice: $20.00 for invoice INV-7 is still unpaid"
        " and your subscription may be cancelled. Pay or update your card: "
        "https://invoice.stripe.com/i/x",
    }


def test_a_refund_tells_the_customer_and_the_team() -> None:
    ev = event("refund.created", id="re_1")
    assert messages(ev) == {
        ("refund_customer", "customer"): "We have refunded $20.00 to your card. It usually "
        "appears within 5-10 business days. Ref: re_1",
        ("refund_team", "team:finance"): "Refund issued: $20.00 to Jenny Rosen. Ref: re_1",
    }


def test_charge_refunded_is_not_a_second_refund_message() -> None:
    assert messages(event("charge.refunded")) == {}


def test_two_partial_refunds_of_one_amount_are_two_refunds() -> None:
    first = event("refund.created", id="re_1", charge="ch_1", amount=500)
    second = event("refund.created", id="re_2", charge="ch_1", amount=500)
    assert BOOK.plan(first)[0].subject != BOOK.plan(second)[0].subject


def test_charge_refunded_states_this_refund_not_the_running_total() -> None:
    from payherald.variables import condition_context

    payload = build_event("charge.refunded", now=NOW)
    payload["data"]["object"].update(amount_refunded=800, refunds=None)
    payload["data"]["previous_attributes"] = {"amount_refunded": 500}
    assert condition_context(parse_event(json.dumps(payload).encode()))["refund_amount"] == 300


def test_a_zero_invoice_is_not_a_payment() -> None:
    ev = event("invoice.paid", amount_paid=0, total=0, customer="cus_1")
    assert messages(ev) == {}


def test_a_charge_of_an_invoice_leaves_the_failure_to_the_invoice_rule() -> None:
    assert messages(event("charge.failed", invoice="in_1")) == {}


def test_a_failure_without_a_charge_is_its_own() -> None:
    ev = event(
        "payment_intent.payment_failed",
        id="pi_1",
        latest_charge="ch_old",
        last_payment_error={"code": "authentication_required"},
    )
    assert BOOK.plan(ev)[0].subject == (f"pi_1:{ev.id}",)


def test_a_subscription_amount_counts_every_item_and_quantity() -> None:
    from payherald.variables import condition_context

    payload = build_event("customer.subscription.trial_will_end", now=NOW)
    payload["data"]["object"]["items"]["data"] = [
        {"price": {"id": "price_a", "unit_amount": 1000}, "quantity": 3},
        {"price": {"id": "price_b", "unit_amount": 250}, "quantity": 2},
    ]
    assert condition_context(parse_event(json.dumps(payload).encode()))["amount"] == 3500


def test_a_plan_change_on_a_second_item_is_a_plan_change() -> None:
    from payherald.variables import condition_context

    payload = build_event("customer.subscription.updated", now=NOW)
    items = [
        {"price": {"id": "price_a", "unit_amount": 1000}},
        {"price": {"id": "price_b", "unit_amount": 500}},
    ]
    payload["data"]["object"]["items"]["data"] = items
    payload["data"]["previous_attributes"] = {
        "items": {"data": [items[0], {"price": {"id": "price_c", "unit_amount": 500}}]}
    }
    assert condition_context(parse_event(json.dumps(payload).encode()))["plan_changed"]
    payload["data"]["previous_attributes"] = {"items": {"data": items}}  # only quantities
    assert not condition_context(parse_event(json.dumps(payload).encode()))["plan_changed"]


def test_a_condition_on_missing_metadata_is_false_and_spares_the_other_rules() -> None:
    rules = [
        *BUILTIN_RULES,
        Rule(
            name="gold",
            events=frozenset({"payment_intent.succeeded"}),
            when="metadata.tier == 'gold'",
            template="Gold!",
        ),
        Rule(
            name="broken",
            events=frozenset({"payment_intent.succeeded"}),
            when="amount > 'text'",
            template="never",
        ),
    ]
    book = RuleBook(rules, renderer=RENDERER)
    planned = {p.rule for p in book.plan(event("payment_intent.succeeded", metadata={}))}
    assert planned == {"payment_confirmation"}


def test_a_dispute_alerts_the_team_with_reason_and_deadline() -> None:
    due = int(datetime(2026, 11, 29, 3, 0, tzinfo=UTC).timestamp())  # Nov 28 in New York
    ev = event("charge.dispute.created", id="dp_1", evidence_details={"due_by": due})
    assert messages(ev) == {
        ("dispute_alert", "team:finance"): "URGENT: dispute opened on $20.00 (reported as "
        "fraud). Evidence due Nov 28, 2026. Dispute dp_1",
    }


def test_subscription_lifecycle_messages() -> None:
    day = int(datetime(2026, 12, 1, 17, 0, tzinfo=UTC).timestamp())
    assert messages(event("customer.subscription.deleted", canceled_at=day)) == {
        ("subscription_cancelled", "customer"): "Your Pro monthly subscription is cancelled, "
        "effective Dec 1, 2026. We are sorry to see you go.",
    }
    assert messages(event("customer.subscription.trial_will_end", trial_end=day)) == {
        ("trial_ending", "customer"): "Your Pro monthly trial ends on Dec 1, 2026. Your card "
        "will then be charged $20.00.",
    }
    assert messages(event("invoice.upcoming", LEGACY, next_payment_attempt=day)) == {
        ("renewal_reminder", "customer"): "Reminder: your Pro monthly subscription renews on "
        "Dec 1, 2026 for $20.00.",
    }
    assert messages(event("customer.subscription.updated")) == {
        ("plan_changed", "customer"): "Your plan changed from Basic monthly to Pro monthly: "
        "$20.00 per month.",
    }


def test_a_renewal_reminder_of_today_without_the_price_at_hand_names_no_plan() -> None:
    # Today's invoice lines name their price by id only: the nickname needs a Stripe
    # lookup, which the composer makes when it has a key (see test_catalogue).
    day = int(datetime(2026, 12, 1, 17, 0, tzinfo=UTC).timestamp())
    assert messages(event("invoice.upcoming", next_payment_attempt=day)) == {
        ("renewal_reminder", "customer"): "Reminder: your subscription renews on "
        "Dec 1, 2026 for $20.00.",
    }


def test_per_plan_conditions_read_todays_invoice_lines() -> None:
    ev = event("invoice.paid")
    price = ev.object["lines"]["data"][0]["pricing"]["price_details"]["price"]
    book = RuleBook(
        [
            Rule(
                name="pro",
                events=frozenset({"invoice.paid"}),
                when=f"'{price}' in prices",
                template="Pro!",
            )
        ],
        renderer=RENDERER,
    )
    assert [p.rule for p in book.plan(ev)] == ["pro"]


def test_a_subscription_update_that_is_not_a_plan_change_says_nothing() -> None:
    payload = build_event("customer.subscription.updated", now=NOW)
    payload["data"]["previous_attributes"] = {"metadata": {}}
    assert BOOK.plan(parse_event(json.dumps(payload).encode())) == []


def test_a_high_value_payment_alerts_the_team() -> None:
    ev = event(
        "payment_intent.succeeded",
        id="pi_big",
        amount=250_000,
        amount_received=250_000,
        metadata={},
    )
    assert messages(ev)[("high_value_alert", "team:finance")] == (
        "High-value payment: $2,500.00 from Jenny Rosen. Ref: pi_big"
    )
    assert ("high_value_alert", "team:finance") not in messages(event("payment_intent.succeeded"))


def test_the_four_events_of_one_payment_share_the_confirmations_subject_before_basil() -> None:
    from payherald.simulate import build_payment_events

    subjects = set()
    for payload in build_payment_events(now=NOW, api_version=LEGACY):
        ev = parse_event(json.dumps(payload).encode())
        (confirmation,) = [p for p in BOOK.plan(ev) if p.rule == "payment_confirmation"]
        subjects.add(confirmation.subject[0])
    assert len(subjects) == 1
    assert next(iter(subjects)).startswith("pi_")


def test_todays_checkout_session_names_what_each_other_event_of_its_payment_names() -> None:
    # Today an invoice names no payment intent, so the events' subjects differ; the
    # session names the payment intent and the invoice, and the store links them all.
    from payherald.simulate import build_payment_events

    subjects = []
    for payload in build_payment_events(now=NOW):
        ev = parse_event(json.dumps(payload).encode())
        (confirmation,) = [p for p in BOOK.plan(ev) if p.rule == "payment_confirmation"]
        subjects.append(set(confirmation.subject))
    intent, charge, session, invoice = subjects
    assert len({frozenset(s) for s in subjects}) > 1
    assert all(subject & session for subject in (intent, charge, invoice))


def test_each_failed_charge_is_its_own_failure() -> None:
    first = event(
        "payment_intent.payment_failed",
        id="pi_1",
        last_payment_error={"charge": "ch_a", "code": "x"},
    )
    second = event(
        "payment_intent.payment_failed",
        id="pi_1",
        last_payment_error={"charge": "ch_b", "code": "x"},
    )
    assert BOOK.plan(first)[0].subject == ("ch_a",)
    assert BOOK.plan(second)[0].subject == ("ch_b",)


def test_team_messages_go_to_every_member_on_the_first_channel_they_have() -> None:
    teams = {
        "finance": Team(
            name="finance", sms=("+14155550100", "+14155550101"), email=("f@example.com",)
        )
    }
    book = Config(teams=teams).rule_book(RENDERER)
    planned = book.plan(event("charge.dispute.created"))
    assert [(p.channel, p.to) for p in planned] == [
        ("sms", "+14155550100"),
        ("sms", "+14155550101"),
    ]


def test_a_rule_for_an_undefined_team_plans_nothing() -> None:
    book = RuleBook(BUILTIN_RULES, renderer=RENDERER)
    assert book.plan(event("charge.dispute.created")) == []


def test_events_without_a_rule_plan_nothing() -> None:
    assert BOOK.plan(event("customer.created")) == []


def test_a_misspelt_variable_is_a_render_error_not_an_empty_gap() -> None:
    with pytest.raises(RenderError, match="amout"):
        RENDERER.render("Paid {{ amout }}", {"amount": 1})


def test_the_sandbox_refuses_python_internals() -> None:
    with pytest.raises(RenderError):
        RENDERER.render("{{ ''.__class__.__mro__[1].__subclasses__() }}", {})


def test_a_rule_book_refuses_two_rules_with_one_name() -> None:
    rule = BUILTIN_RULES[0]
    with pytest.raises(ConfigurationError, match="Two rules"):
        RuleBook([rule, rule], renderer=RENDERER)


def test_a_rule_book_refuses_a_template_that_does_not_compile() -> None:
    broken = Rule(name="x", events=frozenset({"x"}), template="{% if %}")
    with pytest.raises(RenderError, match="does not compile"):
        RuleBook([broken], renderer=RENDERER)


def test_charge_refunded_tells_a_refund_only_before_refunds_had_events_of_their_own() -> None:
    # From 2024-10-28 every refund sends refund.created, which tells it; charge.refunded
    # cannot name the refund, so it is passed over there.
    before = event("charge.refunded", LEGACY)
    today = event("charge.refunded")
    assert {p.rule for p in BOOK.plan(before)} == {"refund_customer", "refund_team"}
    assert BOOK.plan(today) == []
    assert {p.rule for p in BOOK.plan(event("refund.created"))} == {
        "refund_customer",
        "refund_team",
    }


def test_the_rules_need_the_event_that_links_an_invoice_to_its_payment() -> None:
    # endpoint register subscribes to these: without invoice_payment.paid, today's invoices
    # could not be linked to their payment with no key.
    assert "invoice_payment.paid" in BOOK.event_types
    only_intents = RuleBook(
        [Rule(name="x", events=frozenset({"payment_intent.succeeded"}), template="Paid")],
        renderer=RENDERER,
    )
    assert only_intents.event_types == ["payment_intent.succeeded"]
