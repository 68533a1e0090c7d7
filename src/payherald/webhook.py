"""Stripe webhook verification and parsing: nothing is trusted before this says so.

The ``Stripe-Signature`` header is read once, by the rules of Stripe's SDK (items split on
``,``, each name and value split on the first ``=``), and refused before any HMAC if it is
anything but what Stripe sends: longer than ``MAX_SIGNATURE_HEADER_BYTES``, more than
``MAX_SIGNATURE_ITEMS`` items, whitespace around an item, no ``t`` or more than one, a
``t`` that is not a whole number of seconds, or a ``v1`` that is not 64 lowercase hex
digits. The timestamp that is checked for freshness (within the tolerance in *both*
directions; the SDK only refuses old ones) is the very one the signature covers.

Each configured secret is a ``SigningSecret``, marked live or test or neither; an event is
accepted only when a secret that verifies it is allowed its ``livemode`` (the development
secret is a test one), so the holder of a test endpoint's secret cannot have payherald
send a real message. Only a verified body is parsed into a ``StripeEvent``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from payherald.clock import Clock
from payherald.exceptions import MalformedEvent, SignatureInvalid

__all__ = [
    "MAX_BODY_BYTES",
    "MAX_SIGNATURE_HEADER_BYTES",
    "MAX_SIGNATURE_ITEMS",
    "TOLERANCE_SECONDS",
    "SigningSecret",
    "StripeEvent",
    "WebhookVerifier",
    "own_event",
    "parse_event",
]

MAX_BODY_BYTES = 1024 * 1024
# Stripe's header is a timestamp and one v1 per live secret of the endpoint (two while one
# is rolled), about 80 bytes each: these bounds are far above it and far below harm.
MAX_SIGNATURE_HEADER_BYTES = 4096
MAX_SIGNATURE_ITEMS = 16
TOLERANCE_SECONDS = 300

# What Stripe sends (evt_1NG8Du2eZvKYlo2CUI79vXWy; payment_intent.succeeded; 2024-06-20 or
# 2025-03-31.basil), and what every database stores as it is: no NUL or other control
# character, nothing longer than its column.
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,251}")
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.]{1,128}")
_API_VERSION = re.compile(r"[!-~]{0,64}")

_V1 = re.compile(r"[0-9a-f]{64}")
_MALFORMED = (
    "The Stripe-Signature header is malformed: it needs a timestamp t=... and a v1=... signature."
)

Mode = Literal["live", "test"]


@dataclass(frozen=True, slots=True)
class SigningSecret:
    """A webhook signing secret and the mode of the events it may sign: ``mode`` "live"
    or "test", or None for either. ``development`` marks payherald's own secret (a test
    one), kept in the database for trying payherald out."""

    secret: str = field(repr=False)
    mode: Mode | None = None
    development: bool = False

    def __post_init__(self) -> None:
        if self.development and self.mode != "test":
            raise ValueError("the development secret may only sign test-mode events")

    def allows(self, livemode: bool) -> bool:
        return self.mode is None or self.mode == ("live" if livemode else "test")


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


def own_event(
    event_id: str, event_type: str, obj: Mapping[str, Any], *, livemode: bool, now: datetime
) -> StripeEvent:
    """An event payherald records of its own (the daily digest, a paylink texted), in
    Stripe's shape with no API version, created ``now``: it is stored, replayed and read as
    Stripe's are."""
    created = int(now.timestamp())
    payload = {
        "id": event_id,
        "object": "event",
        "type": event_type,
        "api_version": None,
        "created": created,
        "livemode": livemode,
        "data": {"object": obj},
    }
    return StripeEvent(
        id=event_id,
        type=event_type,
        livemode=livemode,
        created=datetime.fromtimestamp(created, UTC),
        api_version=None,
        object=obj,
        payload=payload,
    )


@dataclass(frozen=True, slots=True)
class _Signature:
    """A ``Stripe-Signature`` header as read: its one timestamp and its v1 signatures."""

    timestamp: int
    v1: tuple[str, ...]


class WebhookVerifier:
    """Checks ``Stripe-Signature`` headers against one or more signing secrets (a plain
    string is a secret for either mode)."""

    def __init__(
        self,
        *,
        secrets: Sequence[SigningSecret | str],
        clock: Clock,
        tolerance: int = TOLERANCE_SECONDS,
    ) -> None:
        if not secrets:
            raise ValueError("at least one webhook signing secret is needed")
        self._secrets = tuple(
            s if isinstance(s, SigningSecret) else SigningSecret(s) for s in secrets
        )
        self._clock = clock
        self._tolerance = tolerance

    def receive(self, payload: bytes, header: str | None) -> StripeEvent:
        """The event ``payload`` holds, if ``header`` signs it with a secret allowed its
        mode; else raise SignatureInvalid or MalformedEvent with a reason fit to answer
        the sender with."""
        signers = self.verify(payload, header)
        event = parse_event(payload)
        if not any(signer.allows(event.livemode) for signer in signers):
            raise SignatureInvalid(_wrong_mode(event.livemode, signers))
        return event

    def verify(self, payload: bytes, header: str | None) -> list[SigningSecret]:
        """The configured secrets whose signature ``header`` carries for ``payload``, at
        least one; else raise SignatureInvalid with a reason fit to answer the sender
        with."""
        signature = _read_header(header)
        skew = self._clock.now().timestamp() - signature.timestamp
        if abs(skew) > self._tolerance:
            direction = "old" if skew > 0 else "in the future"
            raise SignatureInvalid(
                f"The signature timestamp is {abs(int(skew))} s {direction}; payherald accepts "
                f"{self._tolerance} s either way. Check this server's clock, or resend the event."
            )
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SignatureInvalid(
                "The body is not UTF-8, so it cannot be a Stripe event."
            ) from exc
        # Stripe's scheme, computed here rather than by stripe.WebhookSignature.verify_header:
        # the SDK would read the header again by its own, looser rules (it takes " 123" or
        # "+123" as a timestamp), and the timestamp whose freshness was checked above must be
        # the one the signature covers. HMAC-SHA256 over "{t}.{body}" is what the SDK
        # computes (tests sign with the SDK's generate_signature_header).
        signed = str(signature.timestamp).encode("ascii") + b"." + payload
        signers = []
        for candidate in self._secrets:
            expected = hmac.new(candidate.secret.encode("utf-8"), signed, hashlib.sha256)
            digest = expected.hexdigest()
            # Every v1 is compared, without stopping at a match: the time taken does not
            # say which one matched.
            if sum(hmac.compare_digest(digest, v1) for v1 in signature.v1):
                signers.append(candidate)
        if not signers:
            raise SignatureInvalid(
                "The signature does not match the body with any configured signing secret. "
                "Check that STRIPE_WEBHOOK_SECRET holds this endpoint's secret and that "
                "nothing rewrote the body."
            )
        return signers


def _read_header(header: str | None) -> _Signature:
    """The one reading of a Stripe-Signature header, or SignatureInvalid saying what is
    wrong with it. Its length is checked before anything else looks at it."""
    if header is not None and len(header) > MAX_SIGNATURE_HEADER_BYTES:
        raise SignatureInvalid(
            f"The Stripe-Signature header is {len(header)} bytes long; payherald reads at most "
            f"{MAX_SIGNATURE_HEADER_BYTES}. Send the header Stripe sends, unchanged."
        )
    if not header or not header.strip():
        raise SignatureInvalid(
            "The Stripe-Signature header is missing. Send the event as Stripe does, signed "
            "with the endpoint's signing secret."
        )
    items = header.split(",", MAX_SIGNATURE_ITEMS)
    if len(items) > MAX_SIGNATURE_ITEMS:
        raise SignatureInvalid(
            f"The Stripe-Signature header has more than {MAX_SIGNATURE_ITEMS} items; Stripe "
            "sends a timestamp and a signature or two."
        )
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name or name != name.strip() or value != value.strip():
            raise SignatureInvalid(
                f"The Stripe-Signature header is malformed: each item must be name=value, "
                f"without spaces, and {item[:40]!r} is not."
            )
        if name == "t":
            timestamps.append(value)
        elif name == "v1":
            signatures.append(value)
        # Other schemes (v0, and any Stripe adds) are not payherald's to check.
    if len(timestamps) != 1:
        raise SignatureInvalid(
            _MALFORMED
            if not timestamps
            else "The Stripe-Signature header has more than one timestamp t=...; Stripe "
            "sends exactly one."
        )
    (timestamp,) = timestamps
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise SignatureInvalid(
            "The Stripe-Signature header is malformed: its timestamp t=... is not a Unix time "
            "in seconds."
        )
    if not signatures:
        raise SignatureInvalid(
            "The Stripe-Signature header has no v1 signature; payherald accepts only v1 "
            "(HMAC-SHA256) signatures."
        )
    if not all(_V1.fullmatch(v1) for v1 in signatures):
        raise SignatureInvalid(
            "The Stripe-Signature header is malformed: a v1 signature is not 64 lowercase hex "
            "digits, so it cannot be Stripe's."
        )
    return _Signature(timestamp=int(timestamp), v1=tuple(signatures))


def _wrong_mode(livemode: bool, signers: Sequence[SigningSecret]) -> str:
    mode = "live" if livemode else "test"
    if all(signer.development for signer in signers):
        return (
            "This live-mode event is signed with payherald's development secret, which "
            "signs only test-mode events; set STRIPE_WEBHOOK_SECRET to the live endpoint's "
            "signing secret."
        )
    return (
        f"This {mode}-mode event is signed with a secret marked for the other mode in "
        f"STRIPE_WEBHOOK_SECRET; mark the secret of the endpoint that sends {mode}-mode "
        f"events {mode}: (or leave it unmarked)."
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
