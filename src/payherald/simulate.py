"""Realistic, correctly signed Stripe events, as `stripe trigger` would send them.

The payloads follow Stripe's API version 2024-06-20 and carry the customer's phone number
in ``shipping.phone``, so the whole path runs with no Stripe or Twilio account.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Any

__all__ = ["SIMULATED_EVENT_TYPES", "build_event", "sign_payload"]

API_VERSION = "2024-06-20"


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _payment_intent(
    *, amount: int, currency: str, phone: str, livemode: bool, created: int
) -> dict[str, Any]:
    return {
        "id": _id("pi"),
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": amount,
        "capture_method": "automatic",
        "client_secret": None,
        "confirmation_method": "automatic",
        "created": created,
        "currency": currency,
        "customer": None,
        "description": "Order #1001",
        "latest_charge": _id("ch"),
        "last_payment_error": None,
        "livemode": livemode,
        "metadata": {"order_id": "1001"},
        "payment_method": _id("pm"),
        "payment_method_types": ["card"],
        "receipt_email": "jenny.rosen@example.com",
        "shipping": {
            "name": "Jenny Rosen",
            "phone": phone,
            "address": {
                "line1": "510 Townsend St",
                "city": "San Francisco",
                "state": "CA",
                "postal_code": "94103",
                "country": "US",
                "line2": None,
            },
            "carrier": None,
            "tracking_number": None,
        },
        "status": "succeeded",
    }


def _payment_failed(**kwargs: Any) -> dict[str, Any]:
    obj = _payment_intent(**kwargs)
    obj.update(
        amount_received=0,
        status="requires_payment_method",
        last_payment_error={
            "charge": obj["latest_charge"],
            "code": "card_declined",
            "decline_code": "insufficient_funds",
            "doc_url": "https://stripe.com/docs/error-codes/card-declined",
            "message": "Your card has insufficient funds.",
            "type": "card_error",
        },
    )
    return obj


_BUILDERS: dict[str, Callable[..., dict[str, Any]]] = {
    "payment_intent.succeeded": _payment_intent,
    "payment_intent.payment_failed": _payment_failed,
}
SIMULATED_EVENT_TYPES = tuple(sorted(_BUILDERS))


def build_event(
    event_type: str,
    *,
    now: datetime,
    phone: str = "+14155550123",
    amount: int = 2000,
    currency: str = "usd",
    livemode: bool = False,
) -> dict[str, Any]:
    """A Stripe event of ``event_type``; KeyError for a type simulate does not know."""
    created = int(now.timestamp())
    obj = _BUILDERS[event_type](
        amount=amount, currency=currency.lower(), phone=phone, livemode=livemode, created=created
    )
    return {
        "id": _id("evt"),
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {"object": obj},
        "livemode": livemode,
        "pending_webhooks": 1,
        "request": {"id": _id("req"), "idempotency_key": secrets.token_hex(16)},
        "type": event_type,
    }


def sign_payload(event: dict[str, Any], secret: str, *, timestamp: int) -> tuple[bytes, str]:
    """The body and the Stripe-Signature header Stripe would send for ``event``."""
    import stripe  # here, not at the top: `payherald --help` lists SIMULATED_EVENT_TYPES

    body = json.dumps(event, indent=2)
    header = stripe.WebhookSignature.generate_signature_header(body, secret, timestamp=timestamp)
    return body.encode(), header
