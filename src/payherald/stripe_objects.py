"""One reading of Stripe's objects, whatever the API version that shaped them.

Stripe moves fields between versions: from 2025-03-31 (basil) an invoice no longer names
its payment intent or charge, nor says ``paid``; its subscription moved under
``parent.subscription_details``; its lines' price and product under
``pricing.price_details``; a subscription's period end moved to its items; payment intents
and charges no longer name their invoice, and a refund names its charge and payment intent
but not its customer. ``read_object`` turns a payment intent, charge, invoice, invoice
payment, refund, dispute, subscription, checkout session, review or early fraud warning of
any supported version (see ``api_versions``) into the fields payherald uses. Rules,
subjects, recipients and templates read a ``StripeObject``, never a version's own paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "LEGACY_FIELDS",
    "Card",
    "InvoiceLine",
    "StripeObject",
    "as_int",
    "as_mapping",
    "default_card",
    "object_id",
    "read_object",
]

# The fields read only from objects of versions before basil (2025-03-31), which the
# installed SDK's model of today's API no longer has; each has today's counterpart above.
LEGACY_FIELDS = frozenset(
    {
        "charge.invoice",
        "invoice.charge",
        "invoice.lines.data[].plan",
        "invoice.lines.data[].price",
        "invoice.paid",
        "invoice.payment_intent",
        "invoice.subscription",
        "invoice.subscription_details",
        "payment_intent.invoice",
        "subscription.current_period_end",
        "subscription.plan",
    }
)

_Map = Mapping[str, Any]
_EMPTY: _Map = {}


def as_mapping(value: Any) -> _Map:
    """``value`` if it is a mapping (an object Stripe expanded), else an empty one."""
    return value if isinstance(value, Mapping) else _EMPTY


def object_id(value: Any) -> str | None:
    """An id, whether the field holds it or the expanded object."""
    if isinstance(value, Mapping):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def as_int(value: Any) -> int | None:
    """``value`` if it is an integer (an amount, a Unix timestamp), else None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _present(*values: Any) -> Any:
    """The first value that is there: a real 0 counts, a missing field does not."""
    return next((value for value in values if value is not None), None)


def _data(value: Any) -> list[_Map]:
    data = as_mapping(value).get("data")
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


@dataclass(frozen=True, slots=True)
class InvoiceLine:
    """A line of an invoice or an item of a subscription: what was bought."""

    price: str | None
    product: str | None
    plan: str | None
    name: str  # the price's nickname or the product's name, when the object carries them
    interval: str | None
    unit_amount: int | None
    quantity: int


def _line(item: _Map) -> InvoiceLine:
    # Before basil: ``price`` and ``plan`` on the line. From basil: ``pricing.price_details``,
    # whose ``price`` and ``product`` are ids unless expanded.
    details = as_mapping(as_mapping(item.get("pricing")).get("price_details"))
    price_field = item.get("price") or details.get("price")
    price, plan = as_mapping(price_field), as_mapping(item.get("plan"))
    product_field = price.get("product") or details.get("product") or plan.get("product")
    product = as_mapping(product_field)
    return InvoiceLine(
        price=object_id(price_field) or object_id(plan),
        product=object_id(product_field),
        plan=object_id(plan) or object_id(price_field),
        name=str(price.get("nickname") or plan.get("nickname") or product.get("name") or ""),
        interval=as_mapping(price.get("recurring")).get("interval") or plan.get("interval"),
        unit_amount=as_int(_present(price.get("unit_amount"), plan.get("amount"))),
        quantity=as_int(item.get("quantity")) or 1,
    )


@dataclass(frozen=True, slots=True)
class StripeObject:
    """What payherald uses of one Stripe object. Ids are strings or None; a field the
    object does not carry (in its version) is None, empty, or False."""

    kind: str
    id: str | None
    # What a person would call the amount, in Stripe's smallest unit. A value that is not
    # Stripe's integer is kept as it came, so that a message refuses it by name.
    amount: Any
    currency: str | None
    customer: str | None
    payment_intent: str | None
    charge: str | None
    invoice: str | None
    subscription: str | None
    session: str | None
    status: str | None
    paid: bool  # a paid invoice, a succeeded payment intent or charge
    amount_refunded: int | None
    metadata: _Map
    subscription_metadata: _Map  # an invoice's subscription's, when the invoice carries it
    lines: tuple[InvoiceLine, ...]
    period_end: int | None  # when a subscription's current period (or an invoice's) ends
    hosted_invoice_url: str | None
    number: str | None
    raw: _Map

    @property
    def payment_ids(self) -> list[str]:
        """The payment's identifiers this object knows, most telling first: the payment
        intent, then the invoice, the Checkout session, the charge."""
        ids = (self.payment_intent, self.invoice, self.session, self.charge)
        return [value for value in ids if value]


def read_object(obj: _Map) -> StripeObject:
    """``obj`` (an event's ``data.object``) as payherald reads it, in any version."""
    kind = str(obj.get("object") or "")
    reader = _READERS.get(kind, _generic)
    fields: dict[str, Any] = {
        "kind": kind,
        "id": object_id(obj),
        "amount": obj.get("amount"),
        "currency": str(obj["currency"]).lower() if isinstance(obj.get("currency"), str) else None,
        "customer": object_id(obj.get("customer")),
        "payment_intent": object_id(obj.get("payment_intent")),
        "charge": object_id(obj.get("charge")),
        "invoice": object_id(obj.get("invoice")),  # payment intents and charges before basil
        "subscription": object_id(obj.get("subscription")),
        "session": None,
        "status": obj.get("status") if isinstance(obj.get("status"), str) else None,
        "paid": False,
        "amount_refunded": as_int(obj.get("amount_refunded")),
        "metadata": as_mapping(obj.get("metadata")),
        "subscription_metadata": _subscription_metadata(obj),
        "lines": (),
        "period_end": None,
        "hosted_invoice_url": None,
        "number": None,
        "raw": obj,
    }
    fields.update(reader(obj))
    return StripeObject(**fields)


def _subscription_metadata(obj: _Map) -> _Map:
    """The metadata of the object's subscription, where the object carries it: an invoice's
    ``parent.subscription_details`` (from basil) or ``subscription_details`` (before), or
    an expanded ``subscription``."""
    for details in (
        as_mapping(as_mapping(obj.get("parent")).get("subscription_details")),
        as_mapping(obj.get("subscription_details")),
        as_mapping(obj.get("subscription")),
    ):
        if metadata := as_mapping(details.get("metadata")):
            return metadata
    return _EMPTY


def _generic(obj: _Map) -> dict[str, Any]:
    return {}


def _payment_intent(obj: _Map) -> dict[str, Any]:
    return {
        "payment_intent": object_id(obj),
        "charge": object_id(obj.get("latest_charge")),
        "amount": obj.get("amount_received") or obj.get("amount"),
        "paid": obj.get("status") == "succeeded",
    }


def _charge(obj: _Map) -> dict[str, Any]:
    return {
        "charge": object_id(obj),
        "amount": obj.get("amount_captured") or obj.get("amount"),
        "paid": obj.get("status") == "succeeded",
    }


def _invoice(obj: _Map) -> dict[str, Any]:
    parent = as_mapping(as_mapping(obj.get("parent")).get("subscription_details"))
    intent = object_id(obj.get("payment_intent"))
    for payment in _data(obj.get("payments")):  # from basil, when the payments are included
        if intent is None and payment.get("status") in ("paid", None):
            intent = object_id(as_mapping(payment.get("payment")).get("payment_intent"))
    paid = obj.get("status") == "paid" or obj.get("paid") is True
    amount = (
        _present(obj.get("amount_paid"), obj.get("total"))
        if paid
        else _present(obj.get("amount_due"), obj.get("total"))
    )
    period_end = as_int(obj.get("next_payment_attempt")) or as_int(obj.get("period_end"))
    return {
        "invoice": object_id(obj),
        "payment_intent": intent,
        "subscription": object_id(obj.get("subscription")) or object_id(parent.get("subscription")),
        "amount": amount,
        "paid": paid,
        "lines": tuple(_line(line) for line in _data(obj.get("lines"))),
        "period_end": period_end,
        "hosted_invoice_url": obj.get("hosted_invoice_url") or None,
        "number": obj.get("number") or None,
    }


def _invoice_payment(obj: _Map) -> dict[str, Any]:
    payment = as_mapping(obj.get("payment"))
    intent = payment.get("payment_intent")
    return {
        "payment_intent": object_id(intent),
        "charge": object_id(payment.get("charge"))
        or object_id(as_mapping(intent).get("latest_charge")),
        "amount": _present(obj.get("amount_paid"), obj.get("amount_requested")),
        "paid": obj.get("status") == "paid",
        "customer": object_id(as_mapping(intent).get("customer")),
    }


def _session(obj: _Map) -> dict[str, Any]:
    return {
        "session": object_id(obj),
        "amount": obj.get("amount_total"),
        "paid": obj.get("payment_status") == "paid",
    }


def _subscription(obj: _Map) -> dict[str, Any]:
    items = _data(obj.get("items"))
    lines = tuple(_line(item) for item in items)
    amount: int | None = None
    if lines:
        if all(line.unit_amount is not None for line in lines):  # else metered or tiered
            amount = sum((line.unit_amount or 0) * line.quantity for line in lines)
    else:
        amount = as_int(as_mapping(obj.get("plan")).get("amount"))
    # Before basil the period is the subscription's; from basil each item has its own.
    ends = [as_int(item.get("current_period_end")) for item in items]
    period_end = as_int(obj.get("current_period_end")) or min(
        (end for end in ends if end is not None), default=None
    )
    return {
        "subscription": object_id(obj),
        "subscription_metadata": as_mapping(obj.get("metadata")),
        "amount": amount,
        "lines": lines,
        "period_end": period_end,
    }


_READERS = {
    "payment_intent": _payment_intent,
    "charge": _charge,
    "invoice": _invoice,
    "invoice_payment": _invoice_payment,
    "checkout.session": _session,
    "subscription": _subscription,
}


@dataclass(frozen=True, slots=True)
class Card:
    """A card, as its payment method (or a legacy card source) describes it."""

    last4: str
    exp_month: int
    exp_year: int

    @property
    def expires_at(self) -> int:
        """The first moment (Unix time, UTC) it no longer works: a card is good through
        the last day of its expiry month."""
        year, month = divmod(self.exp_year * 12 + self.exp_month, 12)  # the month after
        return int(datetime(year, month + 1, 1, tzinfo=UTC).timestamp())

    @property
    def expiry(self) -> str:
        return f"{self.exp_month:02d}/{self.exp_year}"


def _card(value: Any) -> Card | None:
    payment = as_mapping(value)
    card = as_mapping(payment.get("card")) if payment.get("object") != "card" else payment
    month, year = as_int(card.get("exp_month")), as_int(card.get("exp_year"))
    if month is None or year is None or not 1 <= month <= 12:
        return None
    return Card(last4=str(card.get("last4") or ""), exp_month=month, exp_year=year)


def default_card(obj: _Map) -> Card | None:
    """The card a subscription's renewal is charged to, as far as ``obj`` carries it
    expanded: its ``default_payment_method``, else its customer's
    ``invoice_settings.default_payment_method``. None for another kind of payment method,
    or one given by id only."""
    if obj.get("default_payment_method"):
        return _card(obj.get("default_payment_method"))
    settings = as_mapping(as_mapping(obj.get("customer")).get("invoice_settings"))
    return _card(settings.get("default_payment_method"))
