"""One payment across its events, settled just before a notification about it is told.

Stripe reports one subscription payment as ``payment_intent.succeeded``,
``charge.succeeded``, ``invoice.paid`` and ``invoice_payment.paid``, seconds apart and in
any order. Before 2025-03-31 (basil) each event named the others, and the store linked
them on arrival (``Store.record_event``). From basil on, an invoice names neither its
payment intent nor its charge, and they do not name it: only ``invoice_payment.paid``
links them. So, before a notification about a payment is sent, ``PaymentChecks``:

- links an invoice that nothing has linked yet: it asks Stripe (``GET
  /v1/invoice_payments``) when ``STRIPE_SECRET_KEY`` is set, and otherwise waits a grace
  (``PAYHERALD_LINK_GRACE_SECONDS``) for the linking event;
- leaves to the statement that commits the send the refusal of a notification whose
  twin, about the same payment as linked now, was told (``twin_told`` says what becomes
  of it);
- for a rule marked ``not_for_invoices`` (a declined card), skips a payment that pays an
  invoice: the invoice's own message tells it, with its link;
- for a rule marked ``unless_paid`` (a failure text), re-reads the invoice or payment
  intent from Stripe and skips it when it is paid by now; a step of an invoice's dunning
  is skipped when its sequence has ended, and, read from Stripe, ends it when the invoice
  is paid, void, uncollectible or gone, or its subscription cancelled (``dunning``); and,
  an invoice not saying why its card was declined, learns the decline from its payment
  (from Stripe, or from the payment's own failure event).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from payherald.api_versions import parse_api_version
from payherald.clock import Clock
from payherald.compose import NotificationDeferred, NotificationSkipped
from payherald.dunning import invoice_of
from payherald.exceptions import TransientDeliveryError
from payherald.lookups import StripeLookups
from payherald.rules import Rule
from payherald.store import Store
from payherald.store.records import ClaimedNotification
from payherald.stripe_objects import StripeObject, as_int, as_mapping, read_object
from payherald.variables import decline_reason, payment_error
from payherald.webhook import StripeEvent, parse_event

__all__ = ["PaymentChecks", "twin_told"]

# Identifiers of a payment itself (not of an invoice or a Checkout session).
_PAYMENT_PREFIXES = ("pi_", "ch_", "py_")
_INVOICE_FAILED = "invoice.payment_failed"
_PAYMENT_FAILED = ("payment_intent.payment_failed", "charge.failed")
# How long to wait for a twin that is being sent, before looking again.
_TWIN_SENDING = timedelta(seconds=30)
_TOLD_BY_INVOICE = "The payment pays an invoice: the invoice's own message tells its failure."
# An invoice's status that ends its dunning, and the reason it is recorded with.
_INVOICE_ENDED = {"paid": "paid", "void": "voided", "uncollectible": "uncollectible"}


class PaymentChecks:
    def __init__(
        self,
        *,
        store: Store,
        lookups: StripeLookups | None,
        clock: Clock,
        link_grace: float = 60.0,
        key_mode: str | None = None,
    ) -> None:
        self._store = store
        self._lookups = lookups
        self._clock = clock
        self._grace = timedelta(seconds=link_grace)
        # The mode of STRIPE_SECRET_KEY ("live", "test", or None: unknown); a key of the
        # other mode than an object's is told "no such object" about it.
        self._key_mode = key_mode

    def settle(
        self, notification: ClaimedNotification, event: StripeEvent, rule: Rule
    ) -> dict[str, Any]:
        """Return, if ``notification`` may be told now, the variables learnt on the way (an
        invoice failure's ``decline_reason``, from its payment). Raises
        NotificationSkipped (told already, or not this rule's to tell),
        NotificationDeferred (waiting for the event that links it), or
        TransientDeliveryError (Stripe could not be asked: never a guess)."""
        obj = read_object(event.object)
        # Before basil, an invoice, its payment intent and its charge name one another:
        # what an event does not name is not there, and nothing is to be waited for.
        version = parse_api_version(event.api_version)
        unlinked = version is None or version.links_invoices_by_payments
        about_a_payment = notification.subject is not None and notification.subject.startswith(
            "payment:"
        )
        # Only an event that names an invoice and no payment can be about a payment nothing
        # linked; a twin already told is refused by the statement that commits the send.
        names_no_payment = obj.payment_intent is None and obj.charge is None
        if about_a_payment and unlinked and obj.invoice is not None and names_no_payment:
            waits = version is None or version.sends_invoice_payment_events
            self._link_invoice(notification, waits=waits)
        # (A payment that names its invoice, before basil, was not even queued: RuleBook.plan.)
        if rule.not_for_invoices and unlinked:
            self._skip_if_invoiced(notification, event, obj)
        if notification.sequence is not None:
            self._skip_if_ended(notification)
        elif rule.unless_paid and self._lookups is not None:
            self._skip_if_paid(obj)
        if rule.unless_paid and obj.kind == "invoice" and not obj.paid:
            return self._invoice_decline(notification, event, obj)
        return {}

    # -- linking ----------------------------------------------------------------------

    def _link_invoice(self, notification: ClaimedNotification, *, waits: bool) -> None:
        """Link the invoice of ``notification`` to its payment, if nothing has: ask Stripe,
        or, when the event's version sends ``invoice_payment.paid`` (``waits``), wait for
        it."""
        assert notification.subject is not None
        _, group = self._store.links.subject_group(notification.subject)
        invoices = sorted(alias for alias in group if alias.startswith("in_"))
        if not invoices or any(alias.startswith(_PAYMENT_PREFIXES) for alias in group):
            return
        if self._lookups is not None:
            for payment in self._lookups.invoice_payments(invoice=invoices[0]):
                if payment.status in ("paid", None) and len(payment.payment_ids) > 1:
                    self._store.links.link_payment(payment.payment_ids)
            return
        if not waits:
            return  # 2025-03-31 and 2025-04-30 send no event that would link it
        self._wait(
            notification,
            f"waiting for the event that links invoice {invoices[0]} to its payment "
            "(invoice_payment.paid), so that the payment is told once; set STRIPE_SECRET_KEY "
            "to ask Stripe instead",
        )

    def _wait(self, notification: ClaimedNotification, reason: str) -> None:
        """Defer ``notification`` to the end of the grace after it was queued, if that is
        still to come."""
        if notification.created_at is None:
            return  # not from the store (a hand-made notification): nothing to wait from
        until = notification.created_at + self._grace
        if self._clock.now() < until:
            raise NotificationDeferred(until, f"{reason} (until {until:%H:%M:%S} UTC)")

    # -- a payment that pays an invoice -----------------------------------------------

    def _skip_if_invoiced(
        self, notification: ClaimedNotification, event: StripeEvent, obj: StripeObject
    ) -> None:
        ids = obj.payment_ids
        if ids:
            _, group = self._store.links.subject_group(f"payment:{ids[0]}")
            if any(alias.startswith("in_") for alias in group):
                raise NotificationSkipped(_TOLD_BY_INVOICE)
        if obj.customer is None:
            return  # a one-off payment by a guest: no invoice can be behind it
        if self._lookups is not None:
            if obj.payment_intent is None:
                return
            payments = self._lookups.invoice_payments(payment_intent=obj.payment_intent)
            for payment in payments:
                self._store.links.link_payment(payment.payment_ids)
            if payments:
                raise NotificationSkipped(_TOLD_BY_INVOICE)
            return
        if self._invoice_failed_alike(event, obj):
            raise NotificationSkipped(_TOLD_BY_INVOICE)
        self._wait(
            notification,
            "waiting for an invoice failure of the same customer, amount and currency, which "
            "would tell this one; set STRIPE_SECRET_KEY to ask Stripe instead",
        )

    def _invoice_failed_alike(self, event: StripeEvent, obj: StripeObject) -> bool:
        """Whether an invoice of the same customer, amount and currency failed within the
        grace of ``event`` (how, with no key to ask Stripe, a failed payment is known to
        be an invoice's on API versions that do not link them)."""
        around = event.created or self._clock.now()
        for payload in self._store.event_payloads(
            type=_INVOICE_FAILED, since=around - self._grace, until=around + self._grace
        ):
            invoice = read_object(_data_object(payload))
            if (invoice.customer, invoice.currency) == (obj.customer, obj.currency) and (
                invoice.amount == obj.amount or invoice.raw.get("amount_due") == obj.amount
            ):
                return True
        return False

    # -- what an invoice's failure does not say -----------------------------------------

    def _invoice_decline(
        self, notification: ClaimedNotification, event: StripeEvent, obj: StripeObject
    ) -> dict[str, Any]:
        """The decline of the card that failed to pay the invoice: an invoice does not
        carry it, its payment intent does. With a key, read from the invoice's payments;
        without, from the payment's own failure event, waited for as long as the grace."""
        if self._lookups is not None and obj.invoice is not None:
            # Before basil the invoice names its charge and payment intent: read them.
            for kind, named in (("payment_intent", obj.payment_intent), ("charge", obj.charge)):
                if named is not None and (
                    error := payment_error(self._lookups.retrieve(kind, named) or {})
                ):
                    return {"decline_reason": decline_reason(error)}
            for payment in self._lookups.invoice_payments(invoice=obj.invoice):
                intent = as_mapping(payment.raw.get("payment")).get("payment_intent")
                if error := payment_error(as_mapping(intent)):
                    return {"decline_reason": decline_reason(error)}
            return {}
        if error := self._payment_failure_alike(event, obj):
            return {"decline_reason": decline_reason(error)}
        self._wait(
            notification,
            "waiting for the payment's failure event, which says why the card was declined",
        )
        return {}

    def _payment_failure_alike(self, event: StripeEvent, obj: StripeObject) -> Mapping[str, Any]:
        """The decline of a stored payment failure within the grace of ``event`` that is
        this invoice's: named by it (before basil), or of the same customer, amount and
        currency."""
        around = event.created or self._clock.now()
        for kind in _PAYMENT_FAILED:
            for payload in self._store.event_payloads(
                type=kind, since=around - self._grace, until=around + self._grace
            ):
                raw = _data_object(payload)
                payment = read_object(raw)
                named = obj.invoice is not None and payment.invoice == obj.invoice
                alike = (payment.customer, payment.currency, payment.amount) == (
                    obj.customer,
                    obj.currency,
                    obj.amount,
                )
                if (named or (alike and obj.customer)) and (error := payment_error(raw)):
                    return error
        return {}

    # -- the current state ------------------------------------------------------------

    def _skip_if_ended(self, notification: ClaimedNotification) -> None:
        """Skip a step of a dunning sequence that has ended; with a key to ask Stripe, end
        it (and skip the step) when the invoice is no longer open, is gone, or its
        subscription is cancelled."""
        assert notification.sequence is not None
        invoice = invoice_of(notification.sequence)
        if not self._store.dunning.is_open(notification.sequence):
            raise NotificationSkipped(f"The dunning sequence of invoice {invoice} has ended.")
        if self._lookups is None:
            return
        found = self._lookups.retrieve("invoice", invoice)
        reason = why = None
        if found is None and self._key_mode not in (None, _mode(notification.livemode)):
            raise TransientDeliveryError(
                f"Stripe has no invoice {invoice} for STRIPE_SECRET_KEY, a {self._key_mode}-mode "
                f"key, and the invoice is {_mode(notification.livemode)}-mode: set the key of "
                "the invoice's mode (`payherald doctor` checks them), so that payherald can "
                "tell whether it is still open."
            )
        if found is None:
            reason, why = "deleted", f"Invoice {invoice} is gone from Stripe"
        elif (status := found.get("status")) in _INVOICE_ENDED:
            reason, why = _INVOICE_ENDED[status], f"Invoice {invoice} is {status} now"
        elif subscription := read_object(found).subscription:
            current = self._lookups.retrieve("subscription", subscription)
            if (current or {}).get("status") in ("canceled", "incomplete_expired"):
                reason = "subscription_cancelled"
                why = f"The subscription of invoice {invoice} is cancelled"
        if reason is None:
            return
        paid = as_int(found.get("amount_paid")) if found is not None else None
        self._store.dunning.end(
            invoice,
            reason,
            amount_paid=paid if reason == "paid" else None,
            held=notification.id,  # skipped below, by its worker
        )
        raise NotificationSkipped(f"{why} (read from Stripe before sending).")

    def _skip_if_paid(self, obj: StripeObject) -> None:
        assert self._lookups is not None
        if obj.kind == "invoice" and obj.invoice is not None:
            invoice = self._lookups.retrieve("invoice", obj.invoice)
            status = (invoice or {}).get("status")
            if status in ("paid", "void", "uncollectible"):
                raise NotificationSkipped(
                    f"Invoice {obj.invoice} is {status} now (read from Stripe before sending)."
                )
        elif obj.payment_intent is not None:
            intent = self._lookups.retrieve("payment_intent", obj.payment_intent)
            if (intent or {}).get("status") == "succeeded":
                raise NotificationSkipped(
                    f"Payment {obj.payment_intent} has succeeded since (read from Stripe "
                    "before sending)."
                )


def twin_told(
    sibling: Mapping[str, Any], now: datetime
) -> NotificationSkipped | NotificationDeferred:
    """What becomes of a notification whose twin about the same payment, ``sibling``
    (``Store.told_sibling``), is told: skipped; or, while the twin is still being sent (it
    may yet fail on every channel), asked again a little later."""
    about = f"notification {sibling['id']} (event {sibling['event_id']})"
    if sibling["status"] == "sending":
        return NotificationDeferred(
            now + _TWIN_SENDING, f"waiting for {about}, about the same payment, to be sent"
        )
    return NotificationSkipped(f"Already told: {about} is about the same payment.")


def _data_object(payload: str) -> Mapping[str, Any]:
    """A stored event's object (stored events were verified and parsed on arrival)."""
    return parse_event(payload.encode()).object


def _mode(livemode: bool) -> str:
    return "live" if livemode else "test"
