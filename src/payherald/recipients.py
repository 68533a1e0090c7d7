"""Who gets the message: the customer's phone number, found and normalised to E.164.

The chain: the Stripe customer's ``phone``; then the event object's own
contact fields (``customer_details.phone``, ``billing_details.phone``, the latest charge's
``billing_details.phone``, ``customer_phone``, ``shipping.phone``); then metadata keys
(default ``phone``) on the object, on its subscription (an expanded ``subscription``, or an
invoice's subscription details in any API version) and on the customer; last, for a refund
or a dispute, the contact fields of the charge it is about. The customer's address country
is the default region for numbers written without a country code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import getaddresses
from typing import Any, Protocol

import phonenumbers
import stripe

from payherald.cache import TtlCache
from payherald.exceptions import RecipientNotFound, TransientDeliveryError
from payherald.stripe_objects import read_object

__all__ = [
    "CustomerDirectory",
    "InMemoryCustomerDirectory",
    "ResolvedPhone",
    "StripeCustomerDirectory",
    "email_address_problem",
    "mask_address",
    "mask_email",
    "mask_phone",
    "normalise_phone",
    "resolve_email",
    "resolve_phone",
]


class CustomerDirectory(Protocol):
    """What payherald asks Stripe about customers. Both methods raise
    TransientDeliveryError when Stripe cannot be asked, so that the send is retried."""

    def get(self, customer_id: str) -> Mapping[str, Any] | None:
        """The Stripe customer, or None when it does not exist."""
        ...

    def has_earlier_payment(
        self, customer_id: str, *, payment: set[str], before: datetime | None
    ) -> bool:
        """Whether the customer paid successfully before, other than ``payment`` (the
        identifiers of the payment in hand) and before ``before``."""
        ...


def _earlier(
    charges: Iterable[Mapping[str, Any]], payment: set[str], before: datetime | None
) -> bool:
    for charge in charges:
        if charge.get("status") != "succeeded":
            continue
        if {charge.get("id"), charge.get("payment_intent"), charge.get("invoice")} & payment:
            continue
        created = charge.get("created")
        if before is not None and isinstance(created, int) and created >= before.timestamp():
            continue
        return True
    return False


class InMemoryCustomerDirectory:
    """A directory of fixed customers, for tests and for running with no Stripe key."""

    def __init__(
        self,
        customers: Mapping[str, Mapping[str, Any]] | None = None,
        charges: Mapping[str, list[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._customers = dict(customers or {})
        self._charges = dict(charges or {})
        self.lookups = 0

    def get(self, customer_id: str) -> Mapping[str, Any] | None:
        self.lookups += 1
        return self._customers.get(customer_id)

    def has_earlier_payment(
        self, customer_id: str, *, payment: set[str], before: datetime | None
    ) -> bool:
        return _earlier(self._charges.get(customer_id, []), payment, before)


class StripeCustomerDirectory:
    """Customers read through the Stripe API, cached for ``ttl`` seconds, at most
    ``cache_size`` of them."""

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

    def get(self, customer_id: str) -> Mapping[str, Any] | None:
        return self._cache.get_or_fetch(customer_id, lambda: self._retrieve(customer_id))

    def _retrieve(self, customer_id: str) -> Mapping[str, Any] | None:
        try:
            customer: Mapping[str, Any] | None = self._client.v1.customers.retrieve(
                customer_id
            ).to_dict()
        except stripe.InvalidRequestError:
            customer = None  # deleted or unknown: fall through to the event's own fields
        except stripe.AuthenticationError as exc:
            raise TransientDeliveryError(
                "Stripe refused STRIPE_SECRET_KEY while looking up the customer; check the key.",
                code="stripe_auth",
            ) from exc
        except stripe.StripeError as exc:
            raise TransientDeliveryError(
                f"Could not look up customer {customer_id} at Stripe: {exc.user_message or exc}",
                code="stripe_unavailable",
            ) from exc
        if customer is not None and customer.get("deleted"):
            customer = None
        return customer

    def has_earlier_payment(
        self, customer_id: str, *, payment: set[str], before: datetime | None
    ) -> bool:
        try:
            charges = self._client.v1.charges.list(params={"customer": customer_id, "limit": 20})
        except stripe.StripeError as exc:
            raise TransientDeliveryError(
                f"Could not list customer {customer_id}'s payments at Stripe: "
                f"{exc.user_message or exc}",
                code="stripe_unavailable",
            ) from exc
        return _earlier((charge.to_dict() for charge in charges.data), payment, before)


@dataclass(frozen=True, slots=True)
class ResolvedPhone:
    number: str
    source: str


def normalise_phone(raw: str, default_region: str | None) -> str | None:
    """``raw`` in E.164, or None when it is not a valid number."""
    try:
        parsed = phonenumbers.parse(raw, (default_region or "").upper() or None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))


def email_address_problem(raw: str) -> str | None:
    """What is wrong with ``raw`` as one email address (a clause, without its full stop),
    or None when it is exactly one plain address (``name@example.com``)."""
    if any(char in raw for char in "\r\n"):
        return f"{raw!r} holds a line break"
    if len([found for found in getaddresses([raw]) if any(found)]) > 1:
        return f"{raw!r} names more than one email address"
    try:
        address = Address(addr_spec=raw.strip())
    except (HeaderParseError, ValueError, IndexError):
        address = None
    if (
        address is None
        or not address.username
        or not address.domain
        or '"' in raw
        or not raw.strip().isprintable()
    ):
        return f"{raw!r} is not an email address like name@example.com"
    return None


def _dig(obj: Mapping[str, Any] | None, *path: str) -> Any:
    for part in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(part)
    return obj


def _candidates(
    obj: Mapping[str, Any],
    customer: Mapping[str, Any] | None,
    metadata_keys: Sequence[str],
    charge: Mapping[str, Any] | None,
) -> Iterator[tuple[str, Any]]:
    yield "customer.phone", _dig(customer, "phone")
    yield "customer_details.phone", _dig(obj, "customer_details", "phone")
    yield "billing_details.phone", _dig(obj, "billing_details", "phone")
    yield (
        "latest_charge.billing_details.phone",
        _dig(obj, "latest_charge", "billing_details", "phone"),
    )
    charges = _dig(obj, "charges", "data")
    if isinstance(charges, list) and charges:
        yield "charges.billing_details.phone", _dig(charges[0], "billing_details", "phone")
    yield "customer_phone", obj.get("customer_phone")
    yield "shipping.phone", _dig(obj, "shipping", "phone")
    for key in metadata_keys:
        yield f"metadata.{key}", _dig(obj, "metadata", key)
    subscription = read_object(obj).subscription_metadata
    for key in metadata_keys:
        yield f"subscription.metadata.{key}", subscription.get(key)
    for key in metadata_keys:
        yield f"customer.metadata.{key}", _dig(customer, "metadata", key)
    if charge is not None:  # the charge a refund or dispute is about
        yield "charge.billing_details.phone", _dig(charge, "billing_details", "phone")


def _region(
    obj: Mapping[str, Any],
    customer: Mapping[str, Any] | None,
    default: str,
    charge: Mapping[str, Any] | None = None,
) -> str:
    for country in (
        _dig(customer, "address", "country"),
        _dig(customer, "shipping", "address", "country"),
        _dig(obj, "customer_details", "address", "country"),
        _dig(obj, "billing_details", "address", "country"),
        _dig(obj, "shipping", "address", "country"),
        _dig(charge, "billing_details", "address", "country"),
    ):
        if isinstance(country, str) and len(country) == 2:
            return country.upper()
    return default


def resolve_phone(
    obj: Mapping[str, Any],
    customer: Mapping[str, Any] | None,
    *,
    default_region: str = "US",
    metadata_keys: Sequence[str] = ("phone",),
    charge: Mapping[str, Any] | None = None,
) -> ResolvedPhone:
    """The first valid phone number in the chain, in E.164, with where it came from; last,
    the ``charge`` that the object is about (a refund's or a dispute's), when known.

    Raises RecipientNotFound naming every place it looked, so the miss can be read and
    fixed (for example by adding a phone to the Stripe customer).
    """
    region = _region(obj, customer, default_region, charge)
    rejected: list[str] = []
    for source, value in _candidates(obj, customer, metadata_keys, charge):
        if not isinstance(value, str) or not value.strip():
            continue
        number = normalise_phone(value, region)
        if number is not None:
            return ResolvedPhone(number=number, source=source)
        rejected.append(f"{source} ({mask_phone(value)}) is not a valid number")
    looked = "customer.phone, the object's contact fields and metadata " + ", ".join(
        f"'{key}'" for key in metadata_keys
    )
    invalid = "".join(f"; {reason}" for reason in rejected)
    raise RecipientNotFound(
        f"No usable phone number for this customer (looked in {looked}{invalid}). Add a "
        "phone number to the Stripe customer, or collect one at checkout."
    )


def resolve_email(
    obj: Mapping[str, Any],
    customer: Mapping[str, Any] | None,
    charge: Mapping[str, Any] | None = None,
) -> str:
    """The customer's email address: the customer's own, then the object's contact fields,
    then those of the ``charge`` the object is about."""
    for value in (
        _dig(customer, "email"),
        _dig(obj, "customer_details", "email"),
        _dig(obj, "billing_details", "email"),
        _dig(obj, "latest_charge", "billing_details", "email"),
        obj.get("receipt_email"),
        obj.get("customer_email"),
        _dig(charge, "billing_details", "email"),
        _dig(charge, "receipt_email"),
    ):
        if isinstance(value, str) and "@" in value.strip():
            return value.strip()
    raise RecipientNotFound(
        "No email address for this customer (looked in customer.email, customer_details, "
        "billing_details, receipt_email and customer_email)."
    )


def mask_phone(value: str) -> str:
    """Hide all but the last 4 digits: +14155550123 -> +*******0123."""
    digits = [index for index, char in enumerate(value) if char.isdigit()]
    keep = set(digits[-4:])
    return "".join(
        char if (index in keep or not char.isdigit()) else "*" for index, char in enumerate(value)
    )


def mask_email(value: str) -> str:
    """Hide all of the mailbox but its first letter: jane.doe@example.com ->
    j***@example.com. The domain stays, so a log line still says where a message went."""
    local, at, domain = value.rpartition("@")
    if not at:
        return mask_phone(value)
    return f"{local[:1]}***@{domain}"


def mask_address(value: str) -> str:
    """An address payherald messages, masked as its kind is: an email address with
    ``mask_email``, anything else (a phone number in any form) with ``mask_phone``."""
    return mask_email(value) if "@" in value else mask_phone(value)
