"""Realistic, correctly signed Stripe events, as `stripe trigger` would send them.

The payloads take the shape of the API version asked for: by default the one the
installed ``stripe`` SDK pins (``api_versions.NEWEST_SUPPORTED``), in which an invoice
names neither its payment intent nor its charge (``invoice_payment.paid`` links them), its
subscription is under ``parent.subscription_details``, its lines' price under
``pricing.price_details``, and a subscription's period end is on its items. For a version
before 2025-03-31 (basil) they take the older shape: invoices carry ``payment_intent``,
``charge``, ``paid`` and ``subscription``, charges and payment intents carry ``invoice``,
subscriptions carry ``current_period_end``. The objects inside the events, and where each
carries the customer's phone number, are in ``simulated_payments`` and
``simulated_billing``.

Ids are random per call; `build_payment_events`, `build_subscription_payment_events` and
`build_failure_events` return events that share them, as the events Stripe sends for one
payment do.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

from payherald import simulated_billing, simulated_payments
from payherald.api_versions import FAMILIES, NEWEST_SUPPORTED, parse_api_version
from payherald.simulated_payments import JsonObject, PaymentIds, Scenario, new_id
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


_BUILDERS: dict[str, Callable[[Scenario, PaymentIds], JsonObject]] = {
    "payment_intent.succeeded": simulated_payments.payment_intent,
    "payment_intent.payment_failed": simulated_payments.payment_failed,
    "charge.succeeded": simulated_payments.charge,
    "charge.failed": simulated_payments.charge_failed,
    "charge.refunded": partial(simulated_payments.charge, refunded=True),
    "checkout.session.completed": simulated_payments.checkout_session,
    "invoice.paid": simulated_billing.invoice,
    "invoice.payment_succeeded": simulated_billing.invoice,
    "invoice.payment_failed": partial(simulated_billing.invoice, status="open"),
    "invoice.upcoming": simulated_billing.upcoming_invoice,
    "refund.created": simulated_payments.refund,
    "charge.dispute.created": simulated_payments.dispute,
    "radar.early_fraud_warning.created": simulated_payments.early_fraud_warning,
    "review.opened": simulated_payments.review,
    "customer.subscription.deleted": simulated_billing.subscription_deleted,
    "customer.subscription.trial_will_end": simulated_billing.subscription_trialing,
    "customer.subscription.updated": simulated_billing.subscription,
    "customer.created": simulated_payments.customer,
    "invoice_payment.paid": simulated_billing.invoice_payment,
}
_PREVIOUS_ATTRIBUTES: dict[str, Callable[[Scenario, PaymentIds], JsonObject]] = {
    "customer.subscription.updated": simulated_billing.previous_plan,
}
SIMULATED_EVENT_TYPES = tuple(sorted(_BUILDERS))


def _sim(now: datetime, phone: str, amount: int, currency: str, livemode: bool) -> Scenario:
    return Scenario(int(now.timestamp()), phone, amount, currency.lower(), livemode)


def _event(event_type: str, sim: Scenario, ids: PaymentIds, api_version: str) -> JsonObject:
    data: JsonObject = {"object": _BUILDERS[event_type](sim, ids)}
    if event_type in _PREVIOUS_ATTRIBUTES:
        data["previous_attributes"] = _PREVIOUS_ATTRIBUTES[event_type](sim, ids)
    return {
        "id": new_id("evt"),
        "object": "event",
        "api_version": api_version,
        "created": sim.created,
        "data": data,
        "livemode": sim.livemode,
        "pending_webhooks": 1,
        "request": {"id": new_id("req"), "idempotency_key": secrets.token_hex(16)},
        "type": event_type,
    }


def _versioned(event: JsonObject) -> JsonObject:
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
    return _versioned(_event(event_type, sim, PaymentIds(), api_version))


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
    sim, ids = _sim(now, phone, amount, currency, livemode), PaymentIds()
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
        invoice_item=new_id("ii"),
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
    sim, ids = _sim(now, phone, amount, currency, livemode), PaymentIds()
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
    sim, ids = _sim(now, phone, amount, currency, livemode), PaymentIds()
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
    sim, ids = _sim(now, phone, amount, currency, livemode), PaymentIds()
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
    invoice: str | None = None,
) -> list[dict[str, Any]]:
    """The events `payherald simulate EVENT_TYPE` posts, the one asked for last: alone, or,
    where today's API would leave it waiting for another event of the same payment, after
    the event Stripe sends with it (as ``stripe trigger`` sends a whole flow). A paid
    invoice comes after the ``invoice_payment.paid`` that links it to its payment; a
    failed invoice after its payment intent's failure, which says why the card was
    declined. With ``invoice``, the events are about that invoice (its id in place of the
    one made up), so that a simulated payment can end a simulated failure's dunning."""
    options: dict[str, Any] = {
        "now": now,
        "phone": phone,
        "amount": amount,
        "currency": currency,
        "livemode": livemode,
        "api_version": api_version,
    }
    events = _simulation(event_type, options)
    made_up = next(filter(None, map(_invoice_id, events)), None)
    if invoice is None or made_up is None:
        return events
    swapped: list[dict[str, Any]] = json.loads(json.dumps(events).replace(made_up, invoice))
    return swapped


def _simulation(event_type: str, options: dict[str, Any]) -> list[dict[str, Any]]:
    version = parse_api_version(options["api_version"])
    today = version is not None and version.date >= FAMILIES["basil"]
    if today and event_type in ("invoice.paid", "invoice.payment_succeeded"):
        _, _, invoice, linking = build_subscription_payment_events(**options)
        invoice["type"] = event_type
        return [linking, invoice] if linking["type"] == "invoice_payment.paid" else [invoice]
    if event_type == "invoice.payment_failed":
        invoice, intent, _ = build_renewal_failure_events(**options)
        return [intent, invoice]
    return [build_event(event_type, **options)]


def _invoice_id(event: dict[str, Any]) -> str | None:
    """The invoice ``event`` is about, when it is about one."""
    obj = event["data"]["object"]
    found = obj.get("id") if obj.get("object") == "invoice" else obj.get("invoice")
    return found if isinstance(found, str) and found.startswith("in_") else None


def sign_payload(event: dict[str, Any], secret: str, *, timestamp: int) -> tuple[bytes, str]:
    """The body and the Stripe-Signature header Stripe would send for ``event``."""
    import stripe  # here, not at the top: `payherald --help` lists SIMULATED_EVENT_TYPES

    body = json.dumps(event, indent=2)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    return body.encode(), header
