"""Which Stripe API versions payherald reads, and how it tells them apart.

An event is shaped by the API version of the endpoint that received it (``api_version``
on the event). payherald reads every version from ``OLDEST_SUPPORTED`` to the version the
installed ``stripe`` SDK pins (``stripe.api_version``, ``NEWEST_SUPPORTED``). Since
2024-09-30 a version names its release family after the date (``2025-03-31.basil``); the
families that changed what payherald reads are listed in ``FAMILIES``.

A version older than ``OLDEST_SUPPORTED`` (localstripe sends 2017-08-15) is read as the
oldest supported one: its payment objects carry the same fields. A version newer than the
SDK's, or one that is not a version at all, cannot be read with confidence: such an event
is stored and flagged, never told.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import stripe

__all__ = [
    "FAMILIES",
    "INVOICE_PAYMENT_EVENTS",
    "NEWEST_SUPPORTED",
    "OLDEST_SUPPORTED",
    "REFUNDS_HAVE_EVENTS",
    "ApiVersion",
    "parse_api_version",
    "unsupported_reason",
]

OLDEST_SUPPORTED = "2024-06-20"
NEWEST_SUPPORTED: str = stripe.api_version

# Release families, by their first version. Versions before acacia have no family name.
FAMILIES: dict[str, str] = {
    "acacia": "2024-09-30",
    "basil": "2025-03-31",
    "clover": "2025-09-30",
    "dahlia": "2026-03-25",
    "endive": "2026-09-30",
}

# From this version, Stripe sends invoice_payment.paid.
INVOICE_PAYMENT_EVENTS = "2025-05-28"
# From this version, Stripe sends refund.created for every refund; before it, a charge's
# refund was reported by charge.refunded alone.
REFUNDS_HAVE_EVENTS = "2024-10-28"

_VERSION = re.compile(r"^(\d{4}-\d{2}-\d{2})(?:\.([a-z]+))?$")


@dataclass(frozen=True, slots=True, order=True)
class ApiVersion:
    """A Stripe API version: its date (``2025-03-31``) and family (``basil``, or None)."""

    date: str
    family: str | None = None

    def __str__(self) -> str:
        return f"{self.date}.{self.family}" if self.family else self.date

    @property
    def sends_invoice_payment_events(self) -> bool:
        """From 2025-05-28, ``invoice_payment.paid`` links a paid invoice to its payment."""
        return self.date >= INVOICE_PAYMENT_EVENTS

    @property
    def links_invoices_by_payments(self) -> bool:
        """From basil on, invoices, payment intents and charges no longer name one
        another: only invoice payments (``invoice_payment.paid``) link them."""
        return self.date >= FAMILIES["basil"]


def parse_api_version(value: object) -> ApiVersion | None:
    """``value`` as an ApiVersion, or None when it is not a Stripe API version."""
    if not isinstance(value, str):
        return None
    match = _VERSION.match(value.strip())
    if match is None:
        return None
    return ApiVersion(match.group(1), match.group(2))


def unsupported_reason(value: object) -> str | None:
    """Why an event of API version ``value`` cannot be read, or None when it can.

    An event without a version (a hand-made one) is read as the newest shape would be;
    versions older than the oldest supported are read as it (their payment fields match).
    """
    if value is None:
        return None
    version = parse_api_version(value)
    newest = parse_api_version(NEWEST_SUPPORTED)
    assert newest is not None
    if version is None:
        return (
            f"API version {value!r} is not a Stripe API version; payherald reads "
            f"{OLDEST_SUPPORTED} to {NEWEST_SUPPORTED}."
        )
    if version.date > newest.date:
        return (
            f"API version {version} is newer than {NEWEST_SUPPORTED}, the newest this "
            "payherald reads (the installed stripe SDK's); upgrade payherald, or pin the "
            f"endpoint to {NEWEST_SUPPORTED} with `payherald endpoint register`."
        )
    if version.family is not None and version.family not in FAMILIES:
        return (
            f"API version {version} names a release family payherald does not know "
            f"({', '.join(FAMILIES)}); upgrade payherald."
        )
    return None
