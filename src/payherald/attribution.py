"""Attribution: which message brought a payment, so that revenue can be counted per rule,
channel and campaign (`payherald report attribution`).

A payment is credited to one message, once (``Store.attribution``, in the transaction that
records the event that tells it first; a replay or Stripe's retry adds nothing):

- a payment made through a payment link payherald texted (``paylinks``): the link's
  metadata (``payherald_paylink``) reaches the Checkout session it makes, which names the
  link too (``payment_link``), and the payment intent or subscription it pays for, so
  ``checkout.session.completed`` and ``payment_intent.succeeded`` both tell it; the paylink
  names the message that texted it;
- the success of a payment intent whose failure the customer was told (``payment_failed``):
  credited to the last failure message sent about it;
- an invoice paid while its dunning sequence was open: credited to the last step sent
  (``Store.dunning``, which keeps it with the sequence).

A payment is known by its payment intent, else (a subscription's Checkout session, which
names none) by its Checkout session.
"""

from __future__ import annotations

from dataclasses import dataclass

from payherald.stripe_objects import as_int, object_id, read_object
from payherald.webhook import StripeEvent

__all__ = [
    "CAMPAIGN_METADATA",
    "CREDITING_EVENTS",
    "PAYLINK_EVENT",
    "PAYLINK_METADATA",
    "PAYLINK_RULE",
    "Paylink",
    "PaymentMade",
    "payment_made",
]

# What payherald writes in a payment link's metadata, and in its payment's.
PAYLINK_METADATA = "payherald_paylink"
CAMPAIGN_METADATA = "payherald_campaign"
# The built-in rule that texts a payment link, and the event a paylink is recorded as: not a
# Stripe type, so no rule, endpoint or figure mistakes it for one.
PAYLINK_RULE = "payment_link"
PAYLINK_EVENT = "payherald.paylink"
# The events that tell a payment which a message may have brought.
CREDITING_EVENTS = frozenset({"checkout.session.completed", "payment_intent.succeeded"})


@dataclass(frozen=True, slots=True)
class Paylink:
    """A payment link payherald made, to be kept with the event that texts it."""

    id: str  # payherald's own (``pl_...``), in the link's metadata
    stripe_id: str  # Stripe's (``plink_...``)
    url: str  # as texted, with its UTM parameters
    campaign: str | None
    livemode: bool


@dataclass(frozen=True, slots=True)
class PaymentMade:
    """A payment an event tells, as attribution reads it."""

    payment: str  # what it is counted once by: the payment intent, else the session
    payment_intent: str | None
    paylink: str | None  # ``payherald_paylink`` of its metadata
    stripe_link: str | None  # the payment link a Checkout session names
    amount: int | None
    currency: str | None
    livemode: bool


def payment_made(event: StripeEvent) -> PaymentMade | None:
    """The payment ``event`` tells, if it is one a message may have brought: a paid
    Checkout session or a succeeded payment intent. Never raises."""
    if event.type not in CREDITING_EVENTS:
        return None
    try:
        obj = read_object(event.object)
    except Exception:  # a payload nobody foresaw: planning says so, with its traceback
        return None
    if not obj.paid:
        return None  # a session whose payment is still to come (a bank debit)
    payment = obj.payment_intent or obj.session
    if payment is None:
        return None
    paylink = obj.metadata.get(PAYLINK_METADATA)
    return PaymentMade(
        payment=payment,
        payment_intent=obj.payment_intent,
        paylink=paylink if isinstance(paylink, str) and paylink else None,
        stripe_link=object_id(event.object.get("payment_link")),
        amount=as_int(obj.amount),
        currency=obj.currency,
        livemode=event.livemode,
    )
