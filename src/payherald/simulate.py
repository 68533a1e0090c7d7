"""Realistic, correctly signed Stripe events, as `stripe trigger` would send them.

The payloads take the shape of the API version asked for: by default the one the
installed ``stripe`` SDK pins (``api_versions.NEWEST_SUPPORTED``), in which an invoice
names neither its payment intent nor its charge (``invoice_payment.paid`` links them), its
subscription is under ``parent.subscription_details``, its lines' price under
``pricing.price_details``, and a subscription's period end is on its items. For a version
before 2025-03-31 (basil) they take the older shape: invoices carry ``payment_intent``,
``charge``, ``paid`` and ``subscription``, charges and payment intents carry ``invoice``,
subscriptions carry ``current_period_end``. Every object carries the customer's phone
number where Stripe would put it, so the whole path runs with no Stripe or Twilio account
and no customer lookup:

==============================  =========================================================
object                          phone
==============================  =========================================================
payment_intent                  ``shipping.phone``
charge                          ``billing_details.phone``
checkout.session                ``customer_details.phone``
invoice                         ``customer_phone`` (``customer_address.country`` is "US")
refund, dispute, subscription   ``metadata.phone`` (Stripe has no contact field there)
customer                        ``phone``
==============================  =========================================================

Customer ids are ``cus_...`` strings, never expanded objects. Ids are random per call;
`build_payment_events`, `build_subscription_payment_events` and `build_failure_events`
return events that share them, as the events Stripe sends for one payment do.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any

from payherald.api_versions import FAMILIES, NEWEST_SUPPORTED, parse_api_version
from payherald.stripe_shapes import to_api_version

__all__ = [
    "SIMULATED_EVENT_TYPES",
    "build_event",
    "build_failure_events",
    "build_payment_events",
    "build_renewal_failure_events",
    "build_simulation",
    "build_subscription_payment_events",
    "sign_payload",
    "to_api_version",
]

DAY = 86_400
MONTH = 30 * DAY
EMAIL = "jenny.rosen@example.com"
NAME = "Jenny Rosen"

_Object = dict[str, Any]


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class _Sim:
    """What the caller chose: who pays, how much, when, in which mode."""

    created: int
    phone: str
    amount: int
    currency: str
    livemode: bool


@dataclass(frozen=True, slots=True)
class _Ids:
    """The ids of the Stripe objects one payment touches; shared to link events."""

    payment_intent: str = field(default_factory=partial(_id, "pi"))
    charge: str = field(default_factory=partial(_id, "ch"))
    invoice: str = field(default_factory=partial(_id, "in"))
    session: str = field(default_factory=partial(_id, "cs"))
    customer: str = field(default_factory=partial(_id, "cus"))
    subscription: str = field(default_factory=partial(_id, "sub"))
    price: str = field(default_factory=partial(_id, "price"))
    product: str = field(default_factory=partial(_id, "prod"))


def _address() -> _Object:
    return {
        "line1": "510 Townsend St",
        "line2": None,
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94103",
        "country": "US",
    }


def _list(data: list[_Object], url: str) -> _Object:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def _payment_intent(sim: _Sim, ids: _Ids) -> _Object:
    # Tests compare rendered text built from this shape: change it only with them.
    return {
        "id": ids.payment_intent,
        "object": "payment_intent",
        "amount": sim.amount,
        "amount_capturable": 0,
        "amount_received": sim.amount,
        "capture_method": "automatic",
        "client_secret": None,
        "confirmation_method": "automatic",
        "created": sim.created,
        "currency": sim.currency,
        "customer": None,
        "description": "Order #1001",
        "latest_charge": ids.charge,
        "last_payment_error": None,
        "livemode": sim.livemode,
        "metadata": {"order_id": "1001"},
        "payment_method": _id("pm"),
        "payment_method_types": ["card"],
        "receipt_email": "jenny.rosen@example.com",
        "shipping": {
            "name": "Jenny Rosen",
            "phone": sim.phone,
            "address": _address(),
            "carrier": None,
            "tracking_number": None,
        },
        "status": "succeeded",
    }


def _payment_failed(sim: _Sim, ids: _Ids) -> _Object:
    obj = _payment_intent(sim, ids)
    obj.update(
        amount_received=0,
        status="requires_payment_method",
        last_payment_error={
            "charge": obj["latest_charge"],
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card has insufficient funds.",
            "type": "card_error",
        },
    )
    return obj


def _head(sim: _Sim, kind: str, object_id: str) -> _Object:
    """The fields every object here starts with."""
    obj = {"id": object_id, "object": kind, "created": sim.created, "currency": sim.currency}
    return obj | {"livemode": sim.livemode}


def _contact(sim: _Sim) -> _Object:
    return {"address": _address(), "email": EMAIL, "name": NAME, "phone": sim.phone}


def _charge(sim: _Sim, ids: _Ids, *, refunded: bool = False) -> _Object:
    card = {"brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2034, "last4": "4242"}
    return _head(sim, "charge", ids.charge) | {
        "amount": sim.amount,
        "amount_captured": sim.amount,
        "amount_refunded": sim.amount if refunded else 0,
        "balance_transaction": _id("txn"),
        "billing_details": _contact(sim),
        "captured": True,
        "customer": ids.customer,
        "description": "Order #1001",
        "failure_code": None,
        "failure_message": None,
        "invoice": ids.invoice,
        "metadata": {"order_id": "1001"},
        "outcome": {
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "seller_message": "Payment complete.",
            "type": "authorized",
        },
        "paid": True,
        "payment_intent": ids.payment_intent,
        "payment_method": _id("pm"),
        "payment_method_details": {"card": card, "type": "card"},
        "refunded": refunded,
        "status": "succeeded",
    }


def _charge_failed(sim: _Sim, ids: _Ids) -> _Object:
    obj = _charge(sim, ids)
    obj["payment_method_details"]["card"]["last4"] = "9995"  # Stripe's "insufficient funds" card
    obj["outcome"].update(
        network_status="declined_by_network",
        reason="insufficient_funds",
        seller_message="The bank returned the decline code `insufficient_funds`.",
        type="issuer_declined",
    )
    obj.update(
        amount_captured=0,
        balance_transaction=None,
        captured=False,
        failure_code="card_declined",
        failure_message="Your card has insufficient funds.",
        invoice=None,  # a declined one-off payment by a guest: no invoice behind it
        customer=None,
        paid=False,
        status="failed",
    )
    return obj


def _checkout_session(sim: _Sim, ids: _Ids) -> _Object:
    return _head(sim, "checkout.session", ids.session) | {
        "amount_subtotal": sim.amount,
        "amount_total": sim.amount,
        "customer": ids.customer,
        "customer_details": _contact(sim) | {"tax_exempt": "none", "tax_ids": []},
        "invoice": ids.invoice,
        "invoice_creation": {"enabled": True, "invoice_data": {"metadata": {"order_id": "1001"}}},
        "metadata": {"order_id": "1001"},
        "mode": "payment",
        "payment_intent": ids.payment_intent,
        "payment_status": "paid",
        "phone_number_collection": {"enabled": True},
        "status": "complete",
        "subscription": None,
    }


def _price_and_plan(sim: _Sim, ids: _Ids, nickname: str = "Pro monthly") -> tuple[_Object, _Object]:
    """A recurring monthly price and its legacy ``plan`` view, which shares the price's id."""
    shared = {"active": True, "nickname": nickname, "product": ids.product, "metadata": {}}
    price = _head(sim, "price", ids.price) | shared
    price.update(
        recurring={"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        type="recurring",
        unit_amount=sim.amount,
        unit_amount_decimal=str(sim.amount),
    )
    plan = _head(sim, "plan", ids.price) | shared
    plan.update(amount=sim.amount, interval="month", interval_count=1, usage_type="licensed")
    return price, plan


def _invoice_line(sim: _Sim, ids: _Ids, *, start: int) -> _Object:
    price, plan = _price_and_plan(sim, ids)
    return {
        "id": _id("il"),
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
        "subscription_item": _id("si"),
        "type": "subscription",
    }


def _invoice(sim: _Sim, ids: _Ids, *, status: str = "paid") -> _Object:
    """An invoice of the subscription ``ids.subscription``, ``paid`` or ``open`` (failed)."""
    paid = status == "paid"
    page = f"https://invoice.stripe.com/i/acct_1Demo/{'live' if sim.livemode else 'test'}_"
    line = _invoice_line(sim, ids, start=sim.created)
    return _head(sim, "invoice", ids.invoice) | {
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
        "customer_address": _address(),
        "customer_email": EMAIL,
        "customer_name": NAME,
        "customer_phone": sim.phone,
        "hosted_invoice_url": page + secrets.token_urlsafe(32),
        "lines": _list([line], f"/v1/invoices/{ids.invoice}/lines"),
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


def _upcoming_invoice(sim: _Sim, ids: _Ids) -> _Object:
    renews = sim.created + 7 * DAY
    obj = _invoice(sim, ids, status="draft")
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
        lines=_list([_invoice_line(sim, ids, start=renews)], "/v1/invoices/upcoming/lines"),
        next_payment_attempt=renews,
        number=None,
        paid=False,
        payment_intent=None,
        period_end=renews,
        period_start=renews - MONTH,
    )
    return obj


def _refund(sim: _Sim, ids: _Ids) -> _Object:
    return _head(sim, "refund", _id("re")) | {
        "amount": sim.amount,
        "balance_transaction": _id("txn"),
        "charge": ids.charge,
        # Not realistic: a refund has no contact field, so the simulation puts the phone in
        # metadata, to reach the customer without a Stripe lookup.
        "metadata": {"phone": sim.phone},
        "payment_intent": ids.payment_intent,
        "reason": "requested_by_customer",
        "status": "succeeded",
    }


def _dispute(sim: _Sim, ids: _Ids) -> _Object:
    evidence = ("customer_email_address", "customer_name", "product_description", "receipt")
    return _head(sim, "dispute", _id("dp")) | {
        "amount": sim.amount,
        "balance_transactions": [],
        "charge": ids.charge,
        "evidence": dict.fromkeys(evidence),
        "evidence_details": {
            "due_by": sim.created + 7 * DAY,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        # Disputes carry no customer contact (``evidence.customer_*`` is what the merchant
        # submits); the phone goes in metadata so a customer message needs no lookup.
        "metadata": {"phone": sim.phone},
        "payment_intent": ids.payment_intent,
        "reason": "fraudulent",
        "status": "needs_response",
    }


def _subscription_items(sim: _Sim, ids: _Ids, nickname: str = "Pro monthly") -> _Object:
    price, plan = _price_and_plan(sim, ids, nickname)
    item = {"id": _id("si"), "object": "subscription_item", "created": sim.created - 60 * DAY}
    item.update(metadata={}, plan=plan, price=price, quantity=1, subscription=ids.subscription)
    return _list([item], f"/v1/subscription_items?subscription={ids.subscription}")


def _subscription(sim: _Sim, ids: _Ids) -> _Object:
    period_end = sim.created + 7 * DAY
    items = _subscription_items(sim, ids)
    return _head(sim, "subscription", ids.subscription) | {
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


def _subscription_deleted(sim: _Sim, ids: _Ids) -> _Object:
    obj = _subscription(sim, ids)
    obj["cancellation_details"]["reason"] = "cancellation_requested"
    obj.update(canceled_at=sim.created, ended_at=sim.created, status="canceled")
    return obj


def _subscription_trialing(sim: _Sim, ids: _Ids) -> _Object:
    obj = _subscription(sim, ids)
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


def _previous_plan(sim: _Sim, ids: _Ids) -> _Object:
    """``previous_attributes`` of a plan change: the customer was on "Basic monthly", at
    half the price, under another price and product."""
    basic = _Sim(sim.created, sim.phone, sim.amount // 2, sim.currency, sim.livemode)
    items = _subscription_items(basic, _Ids(subscription=ids.subscription), "Basic monthly")
    return {"items": items, "plan": items["data"][0]["plan"]}


def _customer(sim: _Sim, ids: _Ids) -> _Object:
    return (
        _head(sim, "customer", ids.customer)
        | _contact(sim)
        | {
            "balance": 0,
            "currency": None,
            "description": None,
            "metadata": {},
            "preferred_locales": [],
            "shipping": None,
        }
    )


def _invoice_payment(sim: _Sim, ids: _Ids) -> _Object:
    """The invoice payment that links a paid invoice to its payment intent (from
    2025-05-28, ``invoice_payment.paid``)."""
    return {
        "id": _id("inpay"),
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


_BUILDERS: dict[str, Callable[[_Sim, _Ids], _Object]] = {
    "payment_intent.succeeded": _payment_intent,
    "payment_intent.payment_failed": _payment_failed,
    "charge.succeeded": _charge,
    "charge.failed": _charge_failed,
    "charge.refunded": partial(_charge, refunded=True),
    "checkout.session.completed": _checkout_session,
    "invoice.paid": _invoice,
    "invoice.payment_succeeded": _invoice,
    "invoice.payment_failed": partial(_invoice, status="open"),
    "invoice.upcoming": _upcoming_invoice,
    "refund.created": _refund,
    "charge.dispute.created": _dispute,
    "customer.subscription.deleted": _subscription_deleted,
    "customer.subscription.trial_will_end": _subscription_trialing,
    "customer.subscription.updated": _subscription,
    "customer.created": _customer,
    "invoice_payment.paid": _invoice_payment,
}
_PREVIOUS_ATTRIBUTES: dict[str, Callable[[_Sim, _Ids], _Object]] = {
    "customer.subscription.updated": _previous_plan,
}
SIMULATED_EVENT_TYPES = tuple(sorted(_BUILDERS))


def _sim(now: datetime, phone: str, amount: int, currency: str, livemode: bool) -> _Sim:
    return _Sim(int(now.timestamp()), phone, amount, currency.lower(), livemode)


def _event(event_type: str, sim: _Sim, ids: _Ids, api_version: str) -> _Object:
    data: _Object = {"object": _BUILDERS[event_type](sim, ids)}
    if event_type in _PREVIOUS_ATTRIBUTES:
        data["previous_attributes"] = _PREVIOUS_ATTRIBUTES[event_type](sim, ids)
    return {
        "id": _id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": sim.created,
        "data": data,
        "livemode": sim.livemode,
        "pending_webhooks": 1,
        "request": {"id": _id("req"), "idempotency_key": secrets.token_hex(16)},
        "type": event_type,
    }


def _versioned(event: _Object) -> _Object:
    return to_api_version(event, event["api_version"])


def build_event(
    event_type: str,
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
    api_version: str = NEWEST_SUPPORTED,
) -> dict[str, Any]:
    """A Stripe event of ``event_type`` (one of `SIMULATED_EVENT_TYPES`) with fresh ids, in
    the shape of ``api_version``; KeyError for a type simulate does not know. ``amount`` is
    in the smallest unit."""
    sim = _sim(now, phone, amount, currency, livemode)
    return _versioned(_event(event_type, sim, _Ids(), api_version))


def build_payment_events(
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
    api_version: str = NEWEST_SUPPORTED,
) -> list[dict[str, Any]]:
    """The four events Stripe sends for one card payment through Checkout with an invoice:
    payment_intent.succeeded, charge.succeeded, checkout.session.completed, invoice.paid.

    They share one payment intent, charge, invoice, session and customer, and each
    refers to the others as Stripe does in ``api_version``; event ids differ.
    """
    sim, ids = _sim(now, phone, amount, currency, livemode), _Ids()
    events = [
        _event(event_type, sim, ids, api_version)
        for event_type in (
            "payment_intent.succeeded",
            "charge.succeeded",
            "checkout.session.completed",
            "invoice.paid",
        )
    ]
    intent, _, _, invoice = (event["data"]["object"] for event in events)
    intent.update(customer=ids.customer, invoice=ids.invoice)
    # A Checkout payment-mode invoice is a one-off, not a subscription's.
    invoice.update(billing_reason="manual", subscription=None, metadata={"order_id": "1001"})
    line = invoice["lines"]["data"][0]
    line["price"].update(recurring=None, type="one_time", nickname=None)
    line.update(
        description="Order #1001",
        plan=None,
        subscription=None,
        subscription_item=None,
        type="invoiceitem",
        invoice_item=_id("ii"),
    )
    return [_versioned(event) for event in events]


def build_subscription_payment_events(
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
    api_version: str = NEWEST_SUPPORTED,
) -> list[dict[str, Any]]:
    """The four events Stripe sends for one subscription payment: payment_intent.succeeded,
    charge.succeeded, invoice.paid, and the invoice payment that links the invoice to its
    payment intent (``invoice_payment.paid``; ``invoice.payment_succeeded`` for versions
    before it existed). In ``api_version``'s shape: from basil on, only the invoice payment
    names both the invoice and the payment intent."""
    sim, ids = _sim(now, phone, amount, currency, livemode), _Ids()
    version = parse_api_version(api_version)
    linking = (
        "invoice_payment.paid"
        if version is not None and version.sends_invoice_payment_events
        else "invoice.payment_succeeded"
    )
    events = [
        _event(event_type, sim, ids, api_version)
        for event_type in ("payment_intent.succeeded", "charge.succeeded", "invoice.paid", linking)
    ]
    intent = events[0]["data"]["object"]
    intent.update(
        customer=ids.customer, invoice=ids.invoice, description="Subscription creation", metadata={}
    )
    return [_versioned(event) for event in events]


def build_renewal_failure_events(
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
    api_version: str = NEWEST_SUPPORTED,
) -> list[dict[str, Any]]:
    """The three events Stripe sends for a subscription renewal whose card is declined:
    invoice.payment_failed, payment_intent.payment_failed and charge.failed, sharing one
    invoice, payment intent, charge and customer."""
    sim, ids = _sim(now, phone, amount, currency, livemode), _Ids()
    events = [
        _event(event_type, sim, ids, api_version)
        for event_type in (
            "invoice.payment_failed",
            "payment_intent.payment_failed",
            "charge.failed",
        )
    ]
    _, intent, charge = (event["data"]["object"] for event in events)
    intent.update(
        customer=ids.customer, invoice=ids.invoice, description="Subscription update", metadata={}
    )
    charge.update(
        customer=ids.customer, invoice=ids.invoice, description="Subscription update", metadata={}
    )
    return [_versioned(event) for event in events]


def build_failure_events(
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
    api_version: str = NEWEST_SUPPORTED,
) -> list[dict[str, Any]]:
    """The two events Stripe sends for one declined card payment: payment_intent.
    payment_failed then charge.failed, sharing one payment intent, charge and customer."""
    sim, ids = _sim(now, phone, amount, currency, livemode), _Ids()
    events = [
        _event(t, sim, ids, api_version) for t in ("payment_intent.payment_failed", "charge.failed")
    ]
    for event in events:
        event["data"]["object"]["customer"] = ids.customer
    return [_versioned(event) for event in events]


def build_simulation(
    event_type: str,
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
    api_version: str = NEWEST_SUPPORTED,
) -> list[dict[str, Any]]:
    """The events `payherald simulate EVENT_TYPE` posts, the one asked for last: alone, or,
    where today's API would leave it waiting for another event of the same payment, after
    the event Stripe sends with it (as ``stripe trigger`` sends a whole flow). A paid
    invoice comes after the ``invoice_payment.paid`` that links it to its payment; a
    failed invoice after its payment intent's failure, which says why the card was
    declined."""
    options: dict[str, Any] = {
        "now": now,
        "phone": phone,
        "amount": amount,
        "currency": currency,
        "livemode": livemode,
        "api_version": api_version,
    }
    version = parse_api_version(api_version)
    today = version is not None and version.date >= FAMILIES["basil"]
    if today and event_type in ("invoice.paid", "invoice.payment_succeeded"):
        _, _, invoice, linking = build_subscription_payment_events(**options)
        invoice["type"] = event_type
        return [linking, invoice] if linking["type"] == "invoice_payment.paid" else [invoice]
    if event_type == "invoice.payment_failed":
        invoice, intent, _ = build_renewal_failure_events(**options)
        return [intent, invoice]
    return [build_event(event_type, **options)]


def sign_payload(event: dict[str, Any], secret: str, *, timestamp: int) -> tuple[bytes, str]:
    """The body and the Stripe-Signature header Stripe would send for ``event``."""
    import stripe  # here, not at the top: `payherald --help` lists SIMULATED_EVENT_TYPES

    body = json.dumps(event, indent=2)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    return body.encode(), header
