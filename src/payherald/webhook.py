"""Stripe webhook verification and parsing: nothing is trusted before this says so.

The signature is checked over the raw bytes with the official SDK
(``stripe.WebhookSignature.verify_header``) against every configured secret; the
timestamp must be within the tolerance in *both* directions (the SDK only refuses old
ones). Only a verified body is parsed into a ``StripeEvent``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import stripe

from payherald.clock import Clock
from payherald.exceptions import MalformedEvent, SignatureInvalid

__all__ = ["MAX_BODY_BYTES", "TOLERANCE_SECONDS", "StripeEvent", "WebhookVerifier", "parse_event"]

MAX_BODY_BYTES = 1024 * 1024
TOLERANCE_SECONDS = 300

# What Stripe sends (evt_1NG8Du2eZvKYlo2CUI79vXWy; payment_intent.succeeded; 2024-06-20 or
# 2025-03-31.basil), and what every database stores as it is: no NUL or other control
# character, nothing longer than its column.
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,251}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.]{1,128}")
_API_VERSION = re.compile(r"[!-~]{0,64}")


@dataclass(frozen=True, slots=True)
class StripeEvent:
    """A verified Stripe event; ``object`` is ``data.object``."""

    id: str
    type: str
    livemode: bool
    created: datetime | None
    api_version: str | None
    object: Mapping[str, Any]
    payload: Mapping[str, Any]


class WebhookVerifier:
    """Checks ``Stripe-Signature`` headers against one or more signing secrets."""

    def __init__(
        self, *, secrets: Sequence[str], clock: Clock, tolerance: int = TOLERANCE_SECONDS
    ) -> None:
        if not secrets:
            raise ValueError("at least one webhook signing secret is needed")
        self._secrets = tuple(secrets)
        self._clock = clock
        self._tolerance = tolerance

    def verify(self, payload: bytes, header: str | None) -> None:
        """Return if ``header`` signs ``payload`` with a configured secret; else raise
        SignatureInvalid with a reason fit to answer the sender with."""
        if header is None or not header.strip():
            raise SignatureInvalid(
                "The Stripe-Signature header is missing. Send the event as Stripe does, signed "
                "with the endpoint's signing secret."
            )
        timestamp = _timestamp(header)
        try:
            body = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureInvalid(
                "The body is not UTF-8, so it cannot be a Stripe event."
            ) from exc
        last_error: stripe.SignatureVerificationError | None = None
        for secret in self._secrets:
            try:
                # tolerance=None: the SDK checks the signature; we check the time, both ways.
                stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
            except stripe.SignatureVerificationError as exc:
                last_error = exc
                continue
            break
        else:
            assert last_error is not None
            raise SignatureInvalid(_explain(str(last_error))) from last_error
        skew = self._clock.now().timestamp() - timestamp
        if abs(skew) > self._tolerance:
            direction = "old" if skew > 0 else "in the future"
            raise SignatureInvalid(
                f"The signature timestamp is {abs(int(skew))} s {direction}; payherald accepts "
                f"{self._tolerance} s either way. Check this server's clock, or resend the event."
            )


def _timestamp(header: str) -> int:
    for item in header.split(","):
        name, _, value = item.strip().partition("=")
        if name == "t":
            try:
                return int(value)
            except ValueError:
                break
    raise SignatureInvalid(
        "The Stripe-Signature header is malformed: it needs a timestamp t=... and a v1=... "
        "signature."
    )


def _explain(sdk_message: str) -> str:
    if sdk_message.startswith("No signatures found with expected scheme"):
        return (
            "The Stripe-Signature header has no v1 signature; payherald accepts only v1 "
            "(HMAC-SHA256) signatures."
        )
    if sdk_message.startswith("Unable to extract"):
        return (
            "The Stripe-Signature header is malformed: it needs a timestamp t=... and a v1=... "
            "signature."
        )
    return (
        "The signature does not match the body with any configured signing secret. Check that "
        "STRIPE_WEBHOOK_SECRET holds this endpoint's secret and that nothing rewrote the body."
    )


def parse_event(payload: bytes) -> StripeEvent:
    """Parse a verified body into a StripeEvent, or raise MalformedEvent saying what is wrong."""
    try:
        data = json.loads(payload)
    except (ValueError, RecursionError) as exc:
        raise MalformedEvent("The body is not valid JSON.") from exc
    if not isinstance(data, dict):
        raise MalformedEvent("The body is not a JSON object, so it is not a Stripe event.")
    event_id, event_type = data.get("id"), data.get("type")
    if not isinstance(event_id, str) or not event_id:
        raise MalformedEvent("The event has no 'id'; a Stripe event id looks like evt_...")
    if len(event_id) > 255:
        raise MalformedEvent("The event id is longer than 255 characters.")
    if not _EVENT_ID.fullmatch(event_id):
        raise MalformedEvent(
            "The event id is not a Stripe event id: it should be evt_ followed by letters and "
            "digits."
        )
    if not isinstance(event_type, str) or not event_type or len(event_type) > 128:
        raise MalformedEvent("The event has no 'type' (like payment_intent.succeeded).")
    if not _EVENT_TYPE.fullmatch(event_type):
        raise MalformedEvent(
            "The event's 'type' is not a Stripe event type: it should be letters, digits, "
            "dots and underscores, like payment_intent.succeeded."
        )
    obj = data.get("data", {}).get("object") if isinstance(data.get("data"), dict) else None
    if not isinstance(obj, dict):
        raise MalformedEvent("The event has no 'data.object'; it is not a Stripe event.")
    livemode = data.get("livemode")
    if not isinstance(livemode, bool):
        raise MalformedEvent("The event has no boolean 'livemode'.")
    created = data.get("created")
    try:
        created_at = datetime.fromtimestamp(created, UTC) if isinstance(created, int) else None
    except (OverflowError, OSError, ValueError) as exc:
        raise MalformedEvent("The event's 'created' is not a valid Unix timestamp.") from exc
    api_version = data.get("api_version")
    if isinstance(api_version, str) and not _API_VERSION.fullmatch(api_version):
        raise MalformedEvent(
            "The event's 'api_version' is not a Stripe API version (like 2024-06-20): it "
            "should be up to 64 printable characters."
        )
    return StripeEvent(
        id=event_id,
        type=event_type,
        livemode=livemode,
        created=created_at,
        api_version=api_version if isinstance(api_version, str) else None,
        object=obj,
        payload=data,
    )
