"""What payherald asks the Stripe API about payments before telling them.

On today's API an invoice's events do not name its payment, a payment intent's do not
name its invoice, and a refund names its charge but not its customer. With
``STRIPE_SECRET_KEY`` set, the worker asks: the invoice payments of an invoice or of a
payment intent (``GET /v1/invoice_payments``), and an object's current state
(``GET /v1/invoices/ID``, ``/v1/payment_intents/ID``, ``/v1/charges/ID``), and a price's
name (``/v1/prices/ID``: today's invoice lines name their price by id only). Every failure
to ask raises TransientDeliveryError, so that the notification is retried with backoff and
never sent on a guess. Charges and prices are cached (a refund's customer does not change).

It makes one thing too: a billing portal session for a customer
(``POST /v1/billing_portal/sessions``), whose link a message may carry, with an idempotency
key derived from the message, so that a retried message gets the same session (Stripe
keeps a key for 24 hours). The session lets the customer sign in again by email once its
short life is over (``after_expiration``), so that a link read hours later still works.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import stripe
import structlog

from payherald.cache import TtlCache
from payherald.exceptions import TransientDeliveryError
from payherald.stripe_objects import StripeObject, read_object

__all__ = ["InMemoryStripeLookups", "StripeApiLookups", "StripeLookups"]

_log = structlog.get_logger("payherald.lookups")

RETRIEVABLE = ("invoice", "payment_intent", "charge", "price", "subscription")
# What does not change once made, and so may be cached: a charge's customer and billing
# details, a price's name.
_CACHED = frozenset({"charge", "price"})


class StripeLookups(Protocol):
    """Questions about payments, answered by the Stripe API."""

    def invoice_payments(
        self, *, invoice: str | None = None, payment_intent: str | None = None
    ) -> list[StripeObject]:
        """The invoice payments of ``invoice``, or of ``payment_intent`` (one of the two)."""
        ...

    def retrieve(self, kind: str, object_id: str) -> Mapping[str, Any] | None:
        """The current ``kind`` (one of ``RETRIEVABLE``) ``object_id``, or None when Stripe
        has no such object."""
        ...

    def portal_url(self, customer: str, *, key: str, return_url: str | None) -> str | None:
        """The link of a billing portal session for ``customer``, made once per ``key``
        (its idempotency key); None when Stripe refuses to make one (no portal is set up
        in this mode, the customer is gone), which asking again would not change."""
        ...


class StripeApiLookups:
    """The lookups through the Stripe API (``client``); charges and prices cached for
    ``ttl`` seconds, at most ``cache_size`` of them."""

    def __init__(
        self,
        *,
        client: stripe.StripeClient,
        ttl: float = 300.0,
        cache_size: int = 10_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._cache: TtlCache[Mapping[str, Any] | None] = TtlCache(
            ttl=ttl, size=cache_size, monotonic=monotonic
        )

    def invoice_payments(
        self, *, invoice: str | None = None, payment_intent: str | None = None
    ) -> list[StripeObject]:
        params: dict[str, Any] = {"limit": 10, "expand": ["data.payment.payment_intent"]}
        if invoice is not None:
            params["invoice"] = invoice
        else:
            params["payment"] = {"type": "payment_intent", "payment_intent": payment_intent}
        what = f"the invoice payments of {invoice or payment_intent}"
        try:
            page = self._ask(
                what,
                lambda: self._client.v1.invoice_payments.list(params=params),  # type: ignore[arg-type]
            )
        except _NotFound:
            return []  # an API without invoice payments (older fakes): nothing links them
        return [read_object(item.to_dict()) for item in page.data]

    def retrieve(self, kind: str, object_id: str) -> Mapping[str, Any] | None:
        if kind in _CACHED:
            return self._cache.get_or_fetch(object_id, lambda: self._retrieve(kind, object_id))
        return self._retrieve(kind, object_id)

    def portal_url(self, customer: str, *, key: str, return_url: str | None) -> str | None:
        params: dict[str, Any] = {
            "customer": customer,
            "after_expiration": {"type": "customer_login"},
        }
        if return_url:
            params["return_url"] = return_url
        what = f"a billing portal session for {customer}"
        try:
            session = self._client.v1.billing_portal.sessions.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": key},
            )
        except stripe.InvalidRequestError as exc:  # 400 or 404: it will not work later either
            _log.warning(
                "portal_session_refused",
                customer=customer,
                reason=exc.user_message or str(exc),
            )
            return None
        except stripe.StripeError as exc:
            raise _transient(what, exc) from exc
        return str(session.url)

    def _retrieve(self, kind: str, object_id: str) -> Mapping[str, Any] | None:
        v1 = self._client.v1
        retrieve: Callable[[str], Any] = {  # type: ignore[assignment]
            "invoice": v1.invoices.retrieve,
            "payment_intent": v1.payment_intents.retrieve,
            "charge": v1.charges.retrieve,
            "subscription": v1.subscriptions.retrieve,
            "price": lambda price: v1.prices.retrieve(price, params={"expand": ["product"]}),
        }[kind]
        try:
            found = self._ask(f"{kind} {object_id}", lambda: retrieve(object_id))
        except _NotFound:
            return None
        return dict(found.to_dict())

    @staticmethod
    def _ask(what: str, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except stripe.StripeError as exc:
            if exc.http_status == 404:
                raise _NotFound() from exc
            raise _transient(what, exc) from exc


class _NotFound(Exception):
    """Stripe answered 404."""


def _transient(what: str, exc: stripe.StripeError) -> TransientDeliveryError:
    """A failure to ask Stripe about ``what``, as a retryable error that says why."""
    if isinstance(exc, stripe.InvalidRequestError):
        return TransientDeliveryError(
            f"Stripe refused the request for {what}: {exc.user_message or exc}",
            code="stripe_invalid_request",
        )
    if isinstance(exc, stripe.AuthenticationError):
        return TransientDeliveryError(
            f"Stripe refused STRIPE_SECRET_KEY while reading {what}; check the key.",
            code="stripe_auth",
        )
    if isinstance(exc, stripe.PermissionError):
        return TransientDeliveryError(
            f"STRIPE_SECRET_KEY may not read {what}: give the restricted key read access "
            "to invoices, payment intents, charges and prices.",
            code="stripe_permission",
        )
    return TransientDeliveryError(
        f"Could not read {what} at Stripe: {exc.user_message or exc}",
        code="stripe_unavailable",
    )


class InMemoryStripeLookups:
    """Fixed answers, for unit tests: ``objects`` by id, ``payments`` (invoice payment
    objects as Stripe sends them)."""

    def __init__(
        self,
        objects: Mapping[str, Mapping[str, Any]] | None = None,
        payments: list[Mapping[str, Any]] | None = None,
    ) -> None:
        self._objects = dict(objects or {})
        self._payments = [read_object(payment) for payment in payments or ()]
        self.calls: list[tuple[str, str]] = []

    def invoice_payments(
        self, *, invoice: str | None = None, payment_intent: str | None = None
    ) -> list[StripeObject]:
        self.calls.append(("invoice_payments", str(invoice or payment_intent)))
        return [
            payment
            for payment in self._payments
            if (invoice is not None and payment.invoice == invoice)
            or (payment_intent is not None and payment.payment_intent == payment_intent)
        ]

    def retrieve(self, kind: str, object_id: str) -> Mapping[str, Any] | None:
        self.calls.append((kind, object_id))
        found = self._objects.get(object_id)
        return found if found is not None and found.get("object") == kind else None

    def portal_url(self, customer: str, *, key: str, return_url: str | None) -> str | None:
        self.calls.append(("portal", key))
        return f"https://billing.stripe.com/p/session/test_{key}"
