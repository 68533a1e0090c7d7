"""Dunning: the messages that follow an invoice whose payment failed, until it is paid.

The first ``invoice.payment_failed`` of an invoice starts its sequence: each rule that is a
step of it (``sequence = "dunning"``; built in: now, after 3 days, after 7 days) queues one
message, due ``after`` seconds after payherald received the failure, on the job queue, so
that a step due in a week survives restarts and runs once. Only the failure that started
the sequence queues steps: Stripe's own retries of the payment (later failures of the same
invoice, with a higher ``attempt_count``) and repeated deliveries add nothing.

The sequence ends, and its steps still waiting are skipped, when:

- an event says so: the invoice is paid (``invoice.paid``, ``invoice.payment_succeeded``,
  ``invoice_payment.paid``: the sequence *recovered* the invoice), voided, marked
  uncollectible or deleted, or its subscription cancelled. An invoice's that arrives before
  the failure it ends (events come in any order) keeps the sequence from starting;
- just before each step is sent, the invoice, read from Stripe (with ``STRIPE_SECRET_KEY``),
  is no longer open, is gone, or its subscription is cancelled (``payments``); a Stripe
  error there retries the step later, never sends it on a guess;
- it is ended by hand (``Store.dunning.end``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from payherald.stripe_objects import as_int, object_id, read_object
from payherald.webhook import StripeEvent

__all__ = [
    "DUNNING",
    "ENDING_EVENTS",
    "REASONS",
    "STARTING_EVENT",
    "DunningEnd",
    "DunningStart",
    "dunning_changes",
    "invoice_of",
    "sequence_key",
]

DUNNING = "dunning"
STARTING_EVENT = "invoice.payment_failed"
# What each event that ends a sequence says of it.
_PAID = "paid"
ENDING_EVENTS: Mapping[str, str] = {
    "invoice.paid": _PAID,
    "invoice.payment_succeeded": _PAID,
    "invoice_payment.paid": _PAID,
    "invoice.voided": "voided",
    "invoice.marked_uncollectible": "uncollectible",
    "invoice.deleted": "deleted",
    "customer.subscription.deleted": "subscription_cancelled",
}
# The words for each reason, in a skipped step's error and `payherald dunning list`.
REASONS: Mapping[str, str] = {
    _PAID: "the invoice was paid",
    "voided": "the invoice was voided",
    "uncollectible": "the invoice was marked uncollectible",
    "deleted": "the invoice was deleted",
    "subscription_cancelled": "the subscription was cancelled",
    "stopped": "stopped by hand",
}


def sequence_key(invoice: str) -> str:
    """What the steps of ``invoice``'s sequence name as their sequence."""
    return f"{DUNNING}:{invoice}"


def invoice_of(sequence: str) -> str:
    """The invoice of the sequence ``sequence`` (``sequence_key``'s inverse)."""
    return sequence.removeprefix(f"{DUNNING}:")


@dataclass(frozen=True, slots=True)
class DunningStart:
    """A sequence to start: the invoice whose payment failed, as its failure showed it."""

    invoice: str
    event_id: str
    livemode: bool
    customer: str | None
    subscription: str | None
    amount: int | None  # due, in the currency's smallest unit
    currency: str | None


@dataclass(frozen=True, slots=True)
class DunningEnd:
    """A sequence to end: of ``invoice``, or of every invoice of ``subscription``, for
    ``reason`` (a key of ``REASONS``); ``amount_paid`` when the invoice was paid."""

    reason: str
    invoice: str | None = None
    subscription: str | None = None
    amount_paid: int | None = None
    livemode: bool = False

    @property
    def recovered(self) -> bool:
        return self.reason == _PAID


def dunning_changes(
    event: StripeEvent, starts: bool
) -> tuple[DunningStart | None, tuple[DunningEnd, ...]]:
    """The sequence ``event`` starts (when ``starts``: a step was planned for it) and the
    ones it ends."""
    if starts and event.type == STARTING_EVENT and object_id(event.object):
        obj = read_object(event.object)
        start = DunningStart(
            invoice=str(obj.invoice),
            event_id=event.id,
            livemode=event.livemode,
            customer=obj.customer,
            subscription=obj.subscription,
            amount=as_int(event.object.get("amount_due")),
            currency=obj.currency,
        )
        return start, ()
    reason = ENDING_EVENTS.get(event.type)
    if reason is None:
        return None, ()
    obj = read_object(event.object)
    if event.type == "customer.subscription.deleted":
        subscription = object_id(event.object)
        ended = DunningEnd(reason, subscription=subscription, livemode=event.livemode)
        return None, ((ended,) if subscription else ())
    if obj.invoice is None:
        return None, ()
    paid = as_int(event.object.get("amount_paid")) if reason == _PAID else None
    return None, (
        DunningEnd(reason, invoice=obj.invoice, amount_paid=paid, livemode=event.livemode),
    )
