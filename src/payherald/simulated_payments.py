"""The Stripe objects of a simulated payment, as Stripe would send them in an event.

A `Scenario` is what the caller chose (who pays, how much, when, in which mode); the
`PaymentIds` are the ids of the objects one payment touches, shared so that events link
as Stripe's do. The objects are built in the shape of 2024-06-20; ``simulate`` moves
each event to the API version asked for (``stripe_shapes``). Every object carries the
customer's phone number where Stripe would put it, so the whole path runs with no Stripe
or Twilio account and no customer lookup:

==============================  =========================================================
object                          phone
==============================  =========================================================
payment_intent                  ``shipping.phone``
charge                          ``billing_details.phone``
checkout.session                ``customer_details.phone``
invoice                         ``customer_phone`` (``customer_address.country`` is "US")
refund, dispute, subscription   ``metadata.phone`` (Stripe has no contact field there)
review, early fraud warning     the ``charge`` they are about, expanded (they have neither
                                contact fields nor metadata)
customer                        ``phone``
==============================  =========================================================

Customer ids are ``cus_...`` strings, never expanded objects. Invoices and subscriptions
are in ``simulated_billing``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = [
    "DAY",
    "EMAIL",
    "MONTH",
    "NAME",
    "JsonObject",
    "PaymentIds",
    "Scenario",
    "address",
    "charge",
    "charge_failed",
    "checkout_session",
    "contact_details",
    "customer",
    "dispute",
    "early_fraud_warning",
    "new_id",
    "object_head",
    "payment_failed",
    "payment_intent",
    "refund",
    "review",
    "stripe_list",
]

DAY = 86_400
MONTH = 30 * DAY
EMAIL = "jenny.rosen@example.com"
NAME = "Jenny Rosen"

JsonObject = dict[str, Any]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the caller chose: who pays, how much, when, in which mode."""

    created: int
    phone: str
    amount: int
    currency: str
    livemode: bool


@dataclass(frozen=True, slots=True)
class PaymentIds:
    """The ids of the Stripe objects one payment touches; shared to link events."""

    payment_intent: str = field(default_factory=partial(new_id, "pi"))
    charge: str = field(default_factory=partial(new_id, "ch"))
    invoice: str = field(default_factory=partial(new_id, "in"))
    session: str = field(default_factory=partial(new_id, "cs"))
    customer: str = field(default_factory=partial(new_id, "cus"))
    subscription: str = field(default_factory=partial(new_id, "sub"))
    price: str = field(default_factory=partial(new_id, "price"))
    product: str = field(default_factory=partial(new_id, "prod"))


def address() -> JsonObject:
    return {
        "line1": "510 Townsend St",
        "line2": None,
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94103",
        "country": "US",
    }


def stripe_list(data: list[JsonObject], url: str) -> JsonObject:
    return {"object": "list", "data": data, "has_more": False, "total_count": len(data), "url": url}


def payment_intent(sim: Scenario, ids: PaymentIds) -> JsonObject:
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
        "payment_method": new_id("pm"),
        "payment_method_types": ["card"],
        "receipt_email": "jenny.rosen@example.com",
        "shipping": {
            "name": "Jenny Rosen",
            "phone": sim.phone,
            "address": address(),
            "carrier": None,
            "tracking_number": None,
        },
        "status": "succeeded",
    }


def payment_failed(sim: Scenario, ids: PaymentIds) -> JsonObject:
    obj = payment_intent(sim, ids)
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


def object_head(sim: Scenario, kind: str, object_id: str) -> JsonObject:
    """The fields every object here starts with."""
    obj = {"id": object_id, "object": kind, "created": sim.created, "currency": sim.currency}
    return obj | {"livemode": sim.livemode}


def contact_details(sim: Scenario) -> JsonObject:
    return {"address": address(), "email": EMAIL, "name": NAME, "phone": sim.phone}


def charge(sim: Scenario, ids: PaymentIds, *, refunded: bool = False) -> JsonObject:
    card = {"brand": "visa", "country": "US", "exp_month": 12, "exp_year": 2034, "last4": "4242"}
    return object_head(sim, "charge", ids.charge) | {
        "amount": sim.amount,
        "amount_captured": sim.amount,
        "amount_refunded": sim.amount if refunded else 0,
        "balance_transaction": new_id("txn"),
        "billing_details": contact_details(sim),
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
        "payment_method": new_id("pm"),
        "payment_method_details": {"card": card, "type": "card"},
        "refunded": refunded,
        "status": "succeeded",
    }


def charge_failed(sim: Scenario, ids: PaymentIds) -> JsonObject:
    obj = charge(sim, ids)
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


def checkout_session(sim: Scenario, ids: PaymentIds) -> JsonObject:
    return object_head(sim, "checkout.session", ids.session) | {
        "amount_subtotal": sim.amount,
        "amount_total": sim.amount,
        "customer": ids.customer,
        "customer_details": contact_details(sim) | {"tax_exempt": "none", "tax_ids": []},
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


def refund(sim: Scenario, ids: PaymentIds) -> JsonObject:
    return object_head(sim, "refund", new_id("re")) | {
        "amount": sim.amount,
        "balance_transaction": new_id("txn"),
        "charge": ids.charge,
        # Not realistic: a refund has no contact field, so the simulation puts the phone in
        # metadata, to reach the customer without a Stripe lookup.
        "metadata": {"phone": sim.phone},
        "payment_intent": ids.payment_intent,
        "reason": "requested_by_customer",
        "status": "succeeded",
    }


def dispute(sim: Scenario, ids: PaymentIds) -> JsonObject:
    evidence = ("customer_email_address", "customer_name", "product_description", "receipt")
    return object_head(sim, "dispute", new_id("dp")) | {
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


def _charge_reviewed(sim: Scenario, ids: PaymentIds) -> JsonObject:
    """The charge a review or a warning is about, expanded: a one-off card payment (a
    charge names no invoice in today's API)."""
    obj = charge(sim, ids)
    del obj["invoice"]
    obj["calculated_statement_descriptor"] = "JENNYS SHOP"  # what the card statement says
    return obj


def review(sim: Scenario, ids: PaymentIds) -> JsonObject:
    """A payment held for review by a Radar rule."""
    return {
        "id": new_id("prv"),
        "object": "review",
        "billing_zip": "94107",
        # Not realistic: Stripe names the charge by its id. The simulation expands it, so
        # that the customer and the amount are known without a Stripe lookup.
        "charge": _charge_reviewed(sim, ids),
        "closed_reason": None,
        "created": sim.created,
        "ip_address": "203.0.113.7",
        "ip_address_location": {
            "city": "San Francisco",
            "country": "US",
            "latitude": 37.77,
            "longitude": -122.42,
            "region": "CA",
        },
        "livemode": sim.livemode,
        "open": True,
        "opened_reason": "rule",
        "reason": "rule",
        "session": None,
    }


def early_fraud_warning(sim: Scenario, ids: PaymentIds) -> JsonObject:
    """The card issuer's warning that a charge may be fraudulent."""
    return {
        "id": new_id("issfr"),
        "object": "radar.early_fraud_warning",
        "actionable": True,
        "charge": _charge_reviewed(sim, ids),  # expanded, as in ``review``
        "created": sim.created,
        "fraud_type": "made_with_stolen_card",
        "livemode": sim.livemode,
    }


def customer(sim: Scenario, ids: PaymentIds) -> JsonObject:
    return (
        object_head(sim, "customer", ids.customer)
        | contact_details(sim)
        | {
            "balance": 0,
            "currency": None,
            "description": None,
            "metadata": {},
            "preferred_locales": [],
            "shipping": None,
        }
    )
