"""The Stripe Billing objects of a simulated payment: prices, invoices, subscriptions.

Built from a `Scenario` and its `PaymentIds` (``simulated_payments``) in the shape of
2024-06-20, like the payment's other objects: an invoice carries the customer's phone in
``customer_phone``, a subscription in ``metadata.phone``.
"""

from __future__ import annotations

import secrets

from payherald.simulated_payments import (
    DAY,
    EMAIL,
    MONTH,
    NAME,
    JsonObject,
    PaymentIds,
    Scenario,
    address,
    new_id,
    object_head,
    stripe_list,
)

__all__ = [
    "invoice",
    "invoice_payment",
    "previous_plan",
    "subscription",
    "subscription_deleted",
    "subscription_trialing",
    "upcoming_invoice",
]


def _price_and_plan(
    sim: Scenario, ids: PaymentIds, nickname: str = "Pro monthly"
) -> tuple[JsonObject, JsonObject]:
    """A recurring monthly price and its legacy ``plan`` view, which shares the price's id."""
    shared = {"active": True, "nickname": nickname, "product": ids.product, "metadata": {}}
    price = object_head(sim, "price", ids.price) | shared
    price.update(
        recurring={"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        type="recurring",
        unit_amount=sim.amount,
        unit_amount_decimal=str(sim.amount),
    )
    plan = object_head(sim, "plan", ids.price) | shared
    plan.update(amount=sim.amount, interval="month", interval_count=1, usage_type="licensed")
    return price, plan


def _invoice_line(sim: Scenario, ids: PaymentIds, *, start: int) -> JsonObject:
    price, plan = _price_and_plan(sim, ids)
    return {
        "id": new_id("il"),
        "object": "line_item",
        "amount": sim.amount,
        "currency": sim.currency,
        "description": "1 x Pro (Pro monthly)",
        "livemode": sim.livemode,
        "metadata": {},
        "period": {"start": start, "end": start + MONTH},
        "plan": plan,
        "price": price,
        "proration": False,
        "quantity": 1,
        "subscription": ids.subscription,
        "subscription_item": new_id("si"),
        "type": "subscription",
    }


def invoice(sim: Scenario, ids: PaymentIds, *, status: str = "paid") -> JsonObject:
    """An invoice of the subscription ``ids.subscription``, ``paid`` or ``open`` (failed)."""
    paid = status == "paid"
    page = f"https://invoice.stripe.com/i/acct_1Demo/{'live' if sim.livemode else 'test'}_"
    line = _invoice_line(sim, ids, start=sim.created)
    return object_head(sim, "invoice", ids.invoice) | {
        "account_country": "US",
        "amount_due": sim.amount,
        "amount_paid": sim.amount if paid else 0,
        "amount_remaining": 0 if paid else sim.amount,
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": "subscription_create" if paid else "subscription_cycle",
        "charge": ids.charge,
        "collection_method": "charge_automatically",
        "customer": ids.customer,
        "customer_address": address(),
        "customer_email": EMAIL,
        "customer_name": NAME,
        "customer_phone": sim.phone,
        "hosted_invoice_url": page + secrets.token_urlsafe(32),
        "lines": stripe_list([line], f"/v1/invoices/{ids.invoice}/lines"),
        "metadata": {},
        "next_payment_attempt": None if paid else sim.created + 3 * DAY,
        "number": f"{secrets.token_hex(4).upper()}-0001",
        "paid": paid,
        "payment_intent": ids.payment_intent,
        "period_end": sim.created,
        "period_start": sim.created,
        "status": status,
        "subscription": ids.subscription,
        "subtotal": sim.amount,
        "total": sim.amount,
    }


def upcoming_invoice(sim: Scenario, ids: PaymentIds) -> JsonObject:
    renews = sim.created + 7 * DAY
    obj = invoice(sim, ids, status="draft")
    del obj["id"]  # Stripe's upcoming invoice does not exist yet, so it has no id
    obj.update(
        amount_paid=0,
        amount_remaining=sim.amount,
        attempt_count=0,
        attempted=False,
        billing_reason="upcoming",
        charge=None,
        created=renews,
        hosted_invoice_url=None,
        lines=stripe_list([_invoice_line(sim, ids, start=renews)], "/v1/invoices/upcoming/lines"),
        next_payment_attempt=renews,
        number=None,
        paid=False,
        payment_intent=None,
        period_end=renews,
        period_start=renews - MONTH,
    )
    return obj


def _subscription_items(
    sim: Scenario, ids: PaymentIds, nickname: str = "Pro monthly"
) -> JsonObject:
    price, plan = _price_and_plan(sim, ids, nickname)
    item = {"id": new_id("si"), "object": "subscription_item", "created": sim.created - 60 * DAY}
    item.update(metadata={}, plan=plan, price=price, quantity=1, subscription=ids.subscription)
    return stripe_list([item], f"/v1/subscription_items?subscription={ids.subscription}")


def subscription(sim: Scenario, ids: PaymentIds) -> JsonObject:
    period_end = sim.created + 7 * DAY
    items = _subscription_items(sim, ids)
    return object_head(sim, "subscription", ids.subscription) | {
        "cancel_at_period_end": False,
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "current_period_end": period_end,
        "current_period_start": period_end - MONTH,
        "customer": ids.customer,
        "ended_at": None,
        "items": items,
        "latest_invoice": ids.invoice,
        # The phone is usually on the customer; metadata keeps the simulation lookup-free.
        "metadata": {"phone": sim.phone},
        "plan": items["data"][0]["plan"],
        "quantity": 1,
        "start_date": sim.created - 60 * DAY,
        "status": "active",
        "trial_end": None,
        "trial_start": None,
    }


def subscription_deleted(sim: Scenario, ids: PaymentIds) -> JsonObject:
    obj = subscription(sim, ids)
    obj["cancellation_details"]["reason"] = "cancellation_requested"
    obj.update(canceled_at=sim.created, ended_at=sim.created, status="canceled")
    return obj


def subscription_trialing(sim: Scenario, ids: PaymentIds) -> JsonObject:
    obj = subscription(sim, ids)
    trial_end = sim.created + 3 * DAY
    # While trialing, Stripe's current period is the trial: it ends when the trial does.
    obj.update(
        current_period_end=trial_end,
        current_period_start=sim.created - 11 * DAY,
        status="trialing",
        trial_end=trial_end,
        trial_start=sim.created - 11 * DAY,
    )
    return obj


def previous_plan(sim: Scenario, ids: PaymentIds) -> JsonObject:
    """``previous_attributes`` of a plan change: the customer was on "Basic monthly", at
    half the price, under another price and product."""
    basic = Scenario(sim.created, sim.phone, sim.amount // 2, sim.currency, sim.livemode)
    items = _subscription_items(basic, PaymentIds(subscription=ids.subscription), "Basic monthly")
    return {"items": items, "plan": items["data"][0]["plan"]}


def invoice_payment(sim: Scenario, ids: PaymentIds) -> JsonObject:
    """The invoice payment that links a paid invoice to its payment intent (from
    2025-05-28, ``invoice_payment.paid``)."""
    return {
        "id": new_id("inpay"),
        "object": "invoice_payment",
        "amount_paid": sim.amount,
        "amount_requested": sim.amount,
        "created": sim.created,
        "currency": sim.currency,
        "invoice": ids.invoice,
        "is_default": True,
        "livemode": sim.livemode,
        "payment": {"type": "payment_intent", "payment_intent": ids.payment_intent},
        "status": "paid",
        "status_transitions": {"canceled_at": None, "paid_at": sim.created},
    }
