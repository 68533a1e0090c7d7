"""What a notification is *about*, so that two events about one thing notify once.

A card payment can reach payherald as ``payment_intent.succeeded``, ``charge.succeeded``,
``checkout.session.completed`` and ``invoice.paid``, in any order. Each event names some of
the payment's identifiers: the payment intent, the charge, the invoice, the Checkout
session. ``payment_aliases`` lists the ones an event knows, most telling first (the payment
intent). The store links the aliases of every event it sees into one canonical subject
(``Store.record_event``), so that a confirmation keyed on it is queued once, whichever
event arrives first and whichever identifiers it carries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from payherald.api_versions import REFUNDS_HAVE_EVENTS
from payherald.stripe_objects import as_int, as_mapping, object_id, read_object
from payherald.webhook import StripeEvent

__all__ = [
    "DEFAULT_RENEWAL_DAYS",
    "RENEWAL_EARLY_SECONDS",
    "SUBJECTS",
    "Subject",
    "payment_aliases",
    "renewal_offset",
    "renewal_period_end",
    "renewal_subject",
    "tells_refund",
]

# Renewal reminders go out this many days before a renewal, unless [renewals] days says.
DEFAULT_RENEWAL_DAYS = (7, 3, 1)
_DAY = 86400
# A reminder for d days before is due from d days and 12 hours before: the hourly scan then
# comes before Stripe's event of the same day, and an event Stripe sends a little early
# still belongs to its day.
RENEWAL_EARLY_SECONDS = 12 * 3600

# A subject function returns the identifiers of what the event is about, most telling
# first; the first one is also the notification key's subject when none is known yet.
Subject = Callable[[StripeEvent], list[str]]


def payment_aliases(event: StripeEvent) -> list[str]:
    """Identifiers of the payment an event is about: ``pi_``, then ``in_``, ``cs_``, ``ch_``
    (as far as the event's object names them; see ``stripe_objects``)."""
    return read_object(event.object).payment_ids or [object_id(event.object) or event.id]


def failed_attempt(event: StripeEvent) -> list[str]:
    """A failed payment attempt: the charge that failed (a payment intent can fail several
    times, once per card tried; each failure is its own message, each only once). A
    failure with no charge (an authentication that was not completed) is its own event."""
    obj = event.object
    if obj.get("object") == "charge":
        return [alias for alias in (object_id(obj),) if alias] or [event.id]
    error = obj.get("last_payment_error")
    charge = object_id(error.get("charge")) if isinstance(error, Mapping) else None
    if charge:
        return [charge]
    if obj.get("object") == "invoice":
        # Each failed collection attempt of an invoice is its own failure.
        return [f"{object_id(obj) or event.id}:attempt:{obj.get('attempt_count') or 0}"]
    # Not latest_charge: that may be an earlier failure, already told.
    return [f"{object_id(obj) or event.id}:{event.id}"]


def refund(event: StripeEvent) -> list[str]:
    """A refund, by its id. ``charge.refunded`` names the charge; its newest refund is in
    ``refunds`` in API versions before 2022-11-15, and otherwise the charge's running refund
    total tells one refund from the next."""
    obj = event.object
    if obj.get("object") == "refund":
        return [object_id(obj) or event.id]
    refunds = as_mapping(obj.get("refunds")).get("data")
    if isinstance(refunds, list) and refunds and object_id(refunds[0]):
        return [str(object_id(refunds[0]))]
    return [f"{object_id(obj) or event.id}:refunded:{obj.get('amount_refunded')}"]


def tells_refund(event: StripeEvent) -> bool:
    """Whether ``event`` is the one that tells its refund: ``refund.created``, or before API
    version 2024-10-28 (which sent none for a charge's refund) ``charge.refunded``; the
    ``refund_customer`` rule's condition, so that a refund counts once (in the digest and
    the dashboard's figures)."""
    if event.type == "refund.created":
        return True
    if event.type != "charge.refunded":
        return False
    version = str(event.api_version or "")
    return version != "" and version < REFUNDS_HAVE_EVENTS


def the_object(event: StripeEvent) -> list[str]:
    """The event's object itself (a dispute, a cancelled subscription)."""
    return [object_id(event.object) or event.id]


def the_event(event: StripeEvent) -> list[str]:
    """The event itself: every event is its own message (a plan change)."""
    return [event.id]


def trial(event: StripeEvent) -> list[str]:
    """A subscription's trial, by when it ends: one reminder per trial."""
    return [f"{object_id(event.object) or event.id}:trial:{event.object.get('trial_end')}"]


def renewal_offset(period_end: int, at: int, days: Sequence[int]) -> int | None:
    """The reminder whose window ``at`` (a Unix time) falls in, before a renewal at
    ``period_end``: the fewest of ``days`` with the renewal at most that many days (and
    ``RENEWAL_EARLY_SECONDS``) away. None once the renewal is past, or while it is further
    away than every one."""
    left = period_end - at
    due = [day for day in days if left <= day * _DAY + RENEWAL_EARLY_SECONDS]
    return min(due) if left > 0 and due else None


def renewal_period_end(obj: Mapping[str, Any]) -> int | None:
    """When the renewal an upcoming invoice or a subscription announces happens: the
    invoice's ``period_end`` (the end of the period it bills, the subscription's current
    one), or the subscription's current period end (on its items from basil, see
    ``stripe_objects``), else its ``trial_end``."""
    read = read_object(obj)
    if read.kind == "invoice":
        return as_int(obj.get("period_end")) or read.period_end
    return read.period_end or as_int(obj.get("trial_end"))


def renewal_subject(event: StripeEvent, days: Sequence[int] = DEFAULT_RENEWAL_DAYS) -> list[str]:
    """An upcoming renewal, by subscription, date and the reminder (of ``days``) the
    event's time falls in, so that Stripe's ``invoice.upcoming`` or
    ``customer.subscription.trial_will_end`` and payherald's scan tell each reminder once
    (upcoming invoices have no id). Stripe's retries keep the event's ``created``, and so
    its reminder. An event outside every reminder's window (Stripe set to announce
    renewals 30 days ahead) is a reminder of its own, by the whole days left."""
    obj = read_object(event.object)
    subscription = obj.subscription or event.id
    end = renewal_period_end(event.object)
    if end is None or event.created is None:
        return [f"{subscription}:renewal:{end}"]
    at = int(event.created.timestamp())
    offset = renewal_offset(end, at, days)
    if offset is None:
        offset = max(0, -(-(end - at) // _DAY))  # the whole days left, rounded up
    return [f"{subscription}:renewal:{end}:{offset}d"]


def renewal(event: StripeEvent) -> list[str]:
    """An upcoming renewal, with the default reminder days (``renewal_subject``)."""
    return renewal_subject(event)


SUBJECTS: dict[str, Subject] = {
    "payment": payment_aliases,
    "failed_attempt": failed_attempt,
    "refund": refund,
    "object": the_object,
    "event": the_event,
    "trial": trial,
    "renewal": renewal,
}
