"""The variables a message is rendered with, and that a rule's condition sees.

The variables are flat and the same for every event type (``amount``, ``currency``,
``plan_name``...); a field an event does not have is ``None`` or empty, so that
``{% if ... %}`` can test for it. ``condition_context`` holds what the event alone tells,
known on arrival; ``message_context`` adds the customer's and the operator's settings,
known when the message is sent. ``templates`` renders with them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from payherald.attribution import PAYLINK_EVENT
from payherald.stripe_objects import (
    InvoiceLine,
    StripeObject,
    as_int,
    as_mapping,
    default_card,
    read_object,
)
from payherald.webhook import StripeEvent

__all__ = [
    "CONDITION_VARIABLES",
    "CUSTOMER_VARIABLES",
    "MESSAGE_VARIABLES",
    "SENDING_VARIABLES",
    "MessageContext",
    "condition_context",
    "decline_reason",
    "message_context",
    "payment_error",
]


# Stripe decline codes in words a customer understands. Fraud-related codes are
# deliberately vague: Stripe advises not to tell a possible fraudster why.
_DECLINE_REASONS = {
    "insufficient_funds": "the card has insufficient funds",
    "expired_card": "the card has expired",
    "incorrect_cvc": "the security code (CVC) was incorrect",
    "invalid_cvc": "the security code (CVC) was incorrect",
    "incorrect_number": "the card number was incorrect",
    "invalid_number": "the card number was incorrect",
    "invalid_expiry_month": "the expiry date was incorrect",
    "invalid_expiry_year": "the expiry date was incorrect",
    "incorrect_zip": "the postal code did not match the card",
    "card_velocity_exceeded": "the card's spending limit was reached",
    "withdrawal_count_limit_exceeded": "the card's spending limit was reached",
    "authentication_required": "the bank asked you to confirm the payment",
    "processing_error": "an error occurred while processing the card",
    "card_not_supported": "the card does not support this kind of payment",
    "currency_not_supported": "the card does not support this currency",
}
_GENERIC_DECLINE = "the card was declined by the bank"
_DISPUTE_REASONS = {
    "fraudulent": "reported as fraud",
    "product_not_received": "product not received",
    "product_unacceptable": "product unacceptable",
    "duplicate": "duplicate charge",
    "subscription_canceled": "subscription cancelled",
    "unrecognized": "charge not recognised",
    "credit_not_processed": "credit not processed",
}


def decline_reason(error: Mapping[str, Any] | None) -> str:
    """Plain words for a ``last_payment_error`` (or a charge's outcome and failure code)."""
    if not error:
        return _GENERIC_DECLINE
    for field in ("decline_code", "reason", "code", "failure_code"):
        code = error.get(field)
        if isinstance(code, str) and code in _DECLINE_REASONS:
            return _DECLINE_REASONS[code]
    return _GENERIC_DECLINE


def payment_error(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """Why a payment intent (``last_payment_error``) or a charge (its outcome and failure
    code) was declined, for ``decline_reason``; empty when the object does not say."""
    error = obj.get("last_payment_error")
    if isinstance(error, Mapping):
        return error
    found = {
        "reason": as_mapping(obj.get("outcome")).get("reason"),
        "failure_code": obj.get("failure_code"),
    }
    return {key: value for key, value in found.items() if value}


def _refund_amount(event: StripeEvent, obj: StripeObject) -> Any:
    """This refund's amount: ``charge.refunded`` carries the running total, so the refund
    is what it grew by."""
    if obj.kind != "charge":
        return obj.amount
    previous = as_mapping(as_mapping(event.payload.get("data")).get("previous_attributes"))
    total, before = obj.amount_refunded, previous.get("amount_refunded")
    if isinstance(total, int) and isinstance(before, int):
        return total - before
    return total


def _plan_name(lines: tuple[InvoiceLine, ...]) -> str:
    return lines[0].name if lines else ""


def condition_context(
    event: StripeEvent, *, high_value: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The variables known from the event alone: what conditions see on arrival."""
    raw = event.object
    obj = read_object(raw)
    metadata = obj.metadata
    previous = read_object(
        {"object": obj.kind}
        | dict(as_mapping(as_mapping(event.payload.get("data")).get("previous_attributes")))
    )
    first = obj.lines[0] if obj.lines else None
    currency = obj.currency or "usd"
    card = default_card(raw) if obj.kind == "subscription" else None
    # A plan change shows in previous_attributes as the items (or plan) before it.
    previous_prices = {line.price for line in previous.lines if line.price}
    return {
        "event_type": event.type,
        "api_version": str(event.api_version or ""),
        "livemode": event.livemode,
        "object": raw,
        "metadata": dict(metadata),
        "amount": obj.amount,
        "currency": currency,
        "refund_amount": _refund_amount(event, obj),
        "reference": str(obj.number or obj.id or event.id),
        "description": str(raw.get("description") or ""),
        "order": str(metadata.get("order_id") or metadata.get("order") or ""),
        "invoice_number": str(obj.number or ""),
        "customer_id": obj.customer or "",
        "products": [line.product for line in obj.lines if line.product],
        "prices": [line.price for line in obj.lines if line.price],
        "plan": str((first.plan or first.price or "") if first else ""),
        "plan_name": _plan_name(obj.lines),
        "previous_plan_name": _plan_name(previous.lines),
        "plan_changed": bool(previous_prices)
        and previous_prices != {line.price for line in obj.lines if line.price},
        "interval": str((first.interval if first else None) or "month"),
        "decline_reason": decline_reason(payment_error(raw)),
        "dispute_reason": _DISPUTE_REASONS.get(str(raw.get("reason")), "no reason given"),
        "evidence_due": as_int(as_mapping(raw.get("evidence_details")).get("due_by")),
        "cancel_date": as_int(
            raw.get("canceled_at") or raw.get("ended_at") or raw.get("cancel_at")
        ),
        "trial_end": as_int(raw.get("trial_end")),
        "renewal_date": obj.period_end,
        "card_last4": card.last4 if card else "",
        "card_expiry": card.expiry if card else "",
        "hosted_invoice_url": str(obj.hosted_invoice_url or ""),
        "paylink_url": str(raw.get("url") or "") if obj.kind == PAYLINK_EVENT else "",
        "high_value_threshold": (high_value or {}).get(currency),
    }


# Variables that need the customer, looked up when the message is sent.
CUSTOMER_VARIABLES = frozenset(
    {"customer", "tags", "customer_name", "first_name", "customer_email"}
)
# Variables whose value may need Stripe, so that a condition naming them is checked when
# the message is sent: the customer's, and the plan's name (today's invoice lines name
# their price by id only).
SENDING_VARIABLES = CUSTOMER_VARIABLES | {"plan_name"}


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a template may use beyond the event: the operator's settings."""

    business_name: str | None
    locale: str
    update_card_url: str | None
    timezone: str = "UTC"
    # Where the billing portal sends a customer back to (its configuration's default: None).
    portal_return_url: str | None = None


def message_context(
    event: StripeEvent,
    customer: Mapping[str, Any] | None,
    context: MessageContext,
    *,
    high_value: Mapping[str, int] | None = None,
    timezone: str | None = None,
    metadata_links: bool = False,
    charge: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Every variable a template sees for ``event`` and its customer (when known), and the
    ``charge`` the object is about when it was read (a review's, a refund's; an expanded
    one is read from the object itself).

    ``fix_url`` is the invoice's page, else the operator's ``update_card_url``; an
    object's ``metadata.update_card_url`` comes first only with ``metadata_links`` (the
    rule's ``allow_metadata_links``): whoever can write metadata must not choose where the
    operator's messages send customers."""
    variables = condition_context(event, high_value=high_value)
    obj = event.object
    customer = customer or {}
    details = as_mapping(obj.get("customer_details"))
    name = (
        customer.get("name")
        or details.get("name")
        or as_mapping(obj.get("shipping")).get("name")
        or as_mapping(obj.get("billing_details")).get("name")
        or obj.get("customer_name")
        or ""
    )
    tags = as_mapping(customer.get("metadata")).get("tags") or ""
    variables.update(
        customer=dict(customer),
        tags=[tag.strip() for tag in str(tags).split(",") if tag.strip()],
        customer_name=str(name),
        first_name=str(name).split(" ")[0] if name else "",
        customer_email=str(
            customer.get("email")
            or details.get("email")
            or obj.get("receipt_email")
            or obj.get("customer_email")
            or ""
        ),
        business=context.business_name or "",
        fix_url=str(
            (variables["metadata"].get("update_card_url") if metadata_links else None)
            or variables["hosted_invoice_url"]
            or context.update_card_url
            or ""
        ),
        # Who the customer paid: the operator's name, else the payment's statement
        # descriptor (compose reads it from the charge a review is about).
        merchant=str(
            context.business_name
            or obj.get("calculated_statement_descriptor")
            or obj.get("statement_descriptor")
            or ""
        ),
        timezone=timezone or context.timezone,
        portal_url="",  # a billing portal session's, made when a template uses it (compose)
    )
    expanded = obj.get("charge")
    charge = charge or (expanded if isinstance(expanded, Mapping) else None)
    if charge is not None and variables["amount"] is None:
        # A review or an early fraud warning names its charge, not the amount.
        variables.update(
            amount=charge.get("amount"),
            currency=str(charge.get("currency") or variables["currency"]).lower(),
            merchant=variables["merchant"]
            or str(charge.get("calculated_statement_descriptor") or ""),
        )
    return variables


def _known_variables() -> frozenset[str]:
    sample = StripeEvent(
        id="evt", type="x", livemode=False, created=None, api_version=None, object={}, payload={}
    )
    context = MessageContext(business_name=None, locale="en_US", update_card_url=None)
    return frozenset(message_context(sample, None, context))


MESSAGE_VARIABLES = _known_variables()
# Conditions see the event's variables, and the customer's (decided when sending).
CONDITION_VARIABLES = (
    frozenset(
        condition_context(
            StripeEvent(
                id="evt",
                type="x",
                livemode=False,
                created=None,
                api_version=None,
                object={},
                payload={},
            )
        )
    )
    | CUSTOMER_VARIABLES
)
