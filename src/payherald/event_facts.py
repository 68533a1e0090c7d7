"""What an event is at a glance, read once when it is stored: its kind (a payment that
succeeded, one that failed, a dispute, a refund, anything else), its amount, its customer
and what it is about.

The store keeps these beside the raw event (``events.kind``, ``amount``...), so that the
dashboard lists, filters and charts events on indexed columns instead of parsing every
payload. ``subject`` names the payment, failed attempt, refund or dispute, as the rules key
their messages (``subjects``): two events about one payment have linked subjects, and
count as one payment in the day's figures and the chart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from payherald.exceptions import MalformedEvent
from payherald.stripe_objects import as_int, as_mapping, read_object
from payherald.subjects import failed_attempt, payment_aliases, refund, tells_refund, the_object
from payherald.variables import condition_context
from payherald.webhook import StripeEvent, parse_event

__all__ = [
    "FAILURE_EVENTS",
    "KINDS",
    "EventFacts",
    "event_facts",
    "event_kind",
    "stored_event_facts",
]

# The kinds, in the order the dashboard offers them.
KINDS = ("succeeded", "failed", "dispute", "refund", "other")

_SUCCEEDED = frozenset(
    {
        "payment_intent.succeeded",
        "charge.succeeded",
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "invoice.paid",
        "invoice.payment_succeeded",
        "invoice_payment.paid",
    }
)
_FAILED = frozenset(
    {
        "payment_intent.payment_failed",
        "charge.failed",
        "invoice.payment_failed",
        "checkout.session.async_payment_failed",
    }
)
# The failed kind's events that tell a failed attempt, each once by its charge (an
# invoice's or a Checkout session's failure is its payment's, told by these too).
FAILURE_EVENTS = ("payment_intent.payment_failed", "charge.failed")
_REFUND = frozenset({"charge.refunded", "charge.refund.updated"})
# Longest values the columns hold.
_ID_LENGTH = 255


@dataclass(frozen=True, slots=True)
class EventFacts:
    kind: str
    amount: int | None = None
    currency: str | None = None
    customer: str | None = None  # the Stripe customer's id
    email: str | None = None  # lower case
    name: str | None = None
    # What it tells, counted once however many events tell it: "payment:<id>" (linked
    # with the payment's other identifiers), "failure:", "refund:", "dispute:".
    subject: str | None = None

    def as_row(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "amount": self.amount,
            "currency": self.currency,
            "customer": self.customer,
            "email": self.email,
            "customer_name": self.name,
            "subject": self.subject,
        }


def event_kind(event: StripeEvent) -> str:
    kind = event.type
    if kind in _SUCCEEDED:
        # A Checkout session completed unpaid (a delayed payment method) is paid later, if
        # at all: its payment tells it then.
        if kind == "checkout.session.completed" and event.object.get("payment_status") == (
            "unpaid"
        ):
            return "other"
        return "succeeded"
    if kind in _FAILED:
        return "failed"
    if kind.startswith("charge.dispute.") or kind.startswith("radar.early_fraud_warning."):
        return "dispute"
    if kind in _REFUND or kind.startswith("refund."):
        return "refund"
    return "other"


def event_facts(event: StripeEvent) -> EventFacts:
    """The facts of ``event``; never raises on an object of an unforeseen shape (what is
    not there is None)."""
    kind = event_kind(event)
    raw = event.object
    obj = read_object(raw)
    amount = as_int(obj.amount)
    subject = None
    if kind == "succeeded":
        subject = f"payment:{payment_aliases(event)[0]}"
    elif event.type in FAILURE_EVENTS:
        subject = f"failure:{failed_attempt(event)[0]}"
    elif kind == "refund":
        # What this refund is, of what: on the event that tells it only, so that a refund
        # reported twice (refund.created and charge.refunded) counts once.
        amount = as_int(condition_context(event)["refund_amount"])
        if tells_refund(event):
            subject = f"refund:{refund(event)[0]}"
    elif kind == "dispute" and event.type == "charge.dispute.created":
        subject = f"dispute:{the_object(event)[0]}"
    billing = as_mapping(raw.get("billing_details"))
    details = as_mapping(raw.get("customer_details"))
    customer = as_mapping(raw.get("customer"))  # expanded, or the customer itself
    email = _text(
        raw.get("receipt_email"),
        billing.get("email"),
        raw.get("customer_email"),
        details.get("email"),
        customer.get("email"),
        raw.get("email") if raw.get("object") == "customer" else None,
    )
    name = _text(
        billing.get("name"),
        raw.get("customer_name"),
        details.get("name"),
        customer.get("name"),
        raw.get("name") if raw.get("object") == "customer" else None,
    )
    customer_id = obj.customer or (raw.get("id") if raw.get("object") == "customer" else None)
    return EventFacts(
        kind=kind,
        amount=amount,
        currency=_short(obj.currency.lower() if isinstance(obj.currency, str) else None, 16),
        customer=_short(customer_id if isinstance(customer_id, str) else None),
        email=_short(email.lower() if email else None),
        name=_short(name),
        subject=_short(subject),
    )


def _text(*values: Any) -> str | None:
    for value in values:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _short(value: str | None, length: int = _ID_LENGTH) -> str | None:
    return value[:length] if value is not None else None


def stored_event_facts(payload: str) -> EventFacts:
    """``event_facts`` of an event as stored (the migration that added the columns fills
    them in for the events stored before it); an event that no longer parses is "other"."""
    try:
        return event_facts(parse_event(payload.encode()))
    except MalformedEvent:
        return EventFacts(kind="other")
