"""Payment links by SMS: ``payherald paylink send`` and ``POST /api/paylinks``.

A request is checked whole before anything is made (``paylink_requests``; a price is read
from Stripe first, and refused when it is unknown in the key's mode or archived). Then
``PaylinkSender.send`` makes the Stripe Payment Link, at once, so that its URL can be
printed or answered, with an idempotency key derived from the request's id (a command's
own id, or the API client's ``Idempotency-Key``): the same request made again gets the
same link. The link, and the payment it makes (``payment_intent_data``, or
``subscription_data`` for a recurring price), carry payherald's paylink id and campaign in
their metadata, so that the payment that follows is credited to the message
(``attribution``); the URL texted carries UTM parameters.

The text itself is the ``payment_link`` rule's, recorded as an event of payherald's own
(``payherald.paylink``, id ``evt_paylink_...``) with its notification, through the store's
one path: the job queue, consent, the test-mode console, quiet hours and retries are those
of every message, and a request made again is a duplicate event, texted once. The
notification's id is known once the event is recorded, after the link exists: the link's
metadata names the paylink, and the stored paylink names the notification.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import stripe
import structlog

from payherald.attribution import (
    CAMPAIGN_METADATA,
    PAYLINK_EVENT,
    PAYLINK_METADATA,
    PAYLINK_RULE,
    Paylink,
)
from payherald.clock import Clock
from payherald.exceptions import (
    PaylinkConflict,
    PaylinkFailed,
    PaylinkMisconfigured,
    PaylinkRefused,
)
from payherald.paylink_requests import PaylinkRequest
from payherald.recipients import mask_phone
from payherald.rules import RuleBook
from payherald.store import PlannedEvent, Store
from payherald.stripe_objects import as_int, as_mapping
from payherald.webhook import StripeEvent, own_event

__all__ = [
    "PaylinkSender",
    "SentPaylink",
    "new_request_id",
    "paylink_event",
    "paylink_id",
    "sample_paylink",
    "with_utm",
]

_log = structlog.get_logger("payherald.paylinks")


@dataclass(frozen=True, slots=True)
class SentPaylink:
    """A link made and its text queued (or found made before, for the same request)."""

    id: str
    stripe_id: str
    url: str
    notification_id: int | None
    status: str | None  # the notification's
    livemode: bool
    repeated: bool  # the same request was made before: nothing new was made or queued

    def as_json(self) -> dict[str, Any]:
        return {
            "paylink": self.id,
            "payment_link": self.stripe_id,
            "url": self.url,
            "notification_id": self.notification_id,
            "status": self.status,
            "livemode": self.livemode,
            "repeated": self.repeated,
        }


def new_request_id() -> str:
    """A fresh request id (one per `payherald paylink send`, or per API request without an
    ``Idempotency-Key``)."""
    return secrets.token_hex(16)


def request_fingerprint(request: PaylinkRequest) -> str:
    """What tells one request from another: a request id sent again with another request
    (another phone, amount, price...) is refused, not answered with the first one's link."""
    text = json.dumps(dataclasses.asdict(request), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def paylink_id(request_id: str) -> str:
    """The paylink id a request id makes: the same request, the same paylink."""
    return "pl_" + hashlib.sha256(f"paylink|{request_id}".encode()).hexdigest()[:24]


def with_utm(url: str, campaign: str | None) -> str:
    """``url`` with payherald's UTM parameters, as it is texted."""
    utm = {"utm_source": "payherald", "utm_medium": "sms"}
    if campaign:
        utm["utm_campaign"] = campaign
    parts = urlsplit(url)
    query = f"{parts.query}&{urlencode(utm)}" if parts.query else urlencode(utm)
    return urlunsplit(parts._replace(query=query))


def paylink_event(
    paylink: Paylink,
    *,
    phone: str,
    amount: int | None,
    currency: str | None,
    description: str,
    quantity: int,
    now: datetime,
    request: str | None = None,
) -> StripeEvent:
    """The event a paylink is recorded as: its object carries what the text needs (the
    URL, the amount, the phone number where the recipient chain reads it), and the
    fingerprint of the ``request`` that made it (``request_fingerprint``)."""
    obj: dict[str, Any] = {
        "request": request,
        "id": paylink.id,
        "object": PAYLINK_EVENT,
        "payment_link": paylink.stripe_id,
        "url": paylink.url,
        "amount": amount,
        "currency": currency,
        "quantity": quantity,
        "description": description,
        "customer_phone": phone,
        "livemode": paylink.livemode,
        "metadata": _metadata(paylink.id, paylink.campaign),
    }
    event_id = f"evt_paylink_{paylink.id.removeprefix('pl_')}"
    return own_event(event_id, PAYLINK_EVENT, obj, livemode=paylink.livemode, now=now)


def sample_paylink(now: datetime) -> StripeEvent:
    """A paylink of made-up values, for ``payherald config check`` to render."""
    ours = paylink_id("sample")
    url = with_utm("https://buy.stripe.com/test_3cs5kL0xY9aB1cD2eF", "spring")
    paylink = Paylink(id=ours, stripe_id="plink_sample", url=url, campaign="spring", livemode=False)
    return paylink_event(
        paylink,
        phone="+14155550123",
        amount=2500,
        currency="usd",
        description="Spring box",
        quantity=1,
        now=now,
    )


def _metadata(paylink: str, campaign: str | None) -> dict[str, str]:
    return {PAYLINK_METADATA: paylink, **({CAMPAIGN_METADATA: campaign} if campaign else {})}


class PaylinkSender:
    """Makes payment links at Stripe (``client``) and records their texts in ``store``, by
    the ``payment_link`` rule of ``rules``. ``key_mode`` is the mode of
    ``STRIPE_SECRET_KEY`` (``live``, ``test`` or None), for what a refusal says."""

    def __init__(
        self,
        *,
        store: Store,
        rules: RuleBook,
        client: stripe.StripeClient,
        clock: Clock,
        key_mode: str | None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._client = client
        self._clock = clock
        self._key_mode = key_mode

    def send(self, request: PaylinkRequest, *, request_id: str) -> SentPaylink:
        """Make the link of ``request`` and queue its text, once per ``request_id``.
        Raises PaylinkRefused (nothing was made), PaylinkFailed (Stripe could not be
        reached: the same request may be sent again) or StoreUnavailable."""
        rule = self._rules.get(PAYLINK_RULE)
        if rule is None or not rule.enabled:
            raise PaylinkMisconfigured(
                f"The {PAYLINK_RULE} rule is turned off in the rules file, so the link would "
                f"not be texted; turn it on ([rules.{PAYLINK_RULE}] enabled = true)."
            )
        ours = paylink_id(request_id)
        fingerprint = request_fingerprint(request)
        known = self._store.attribution.paylink(ours)
        if known is not None:
            if self._fingerprint_of(known) != fingerprint:
                raise PaylinkConflict(
                    "This request's id (Idempotency-Key) was used before for another request "
                    "(another number, amount or price); send a new id for a new link."
                )
            return _sent(known, repeated=True)
        suppressed = self._store.consents.suppression(request.phone)
        if suppressed is not None:
            raise PaylinkRefused(
                f"{mask_phone(request.phone)} must not be messaged: {suppressed}; no link was made."
            )
        amount, currency, description, recurring = self._what(request)
        self._check_planned(request, amount, currency, description)
        line: dict[str, Any] = {"quantity": request.quantity}
        if request.price is not None:
            line["price"] = request.price
        else:
            line["price_data"] = {
                "currency": request.currency,
                "unit_amount": request.amount,
                "product_data": {"name": request.name},
            }
        metadata = _metadata(ours, request.campaign)
        params: dict[str, Any] = {"line_items": [line], "metadata": metadata}
        params["subscription_data" if recurring else "payment_intent_data"] = {"metadata": metadata}
        link = self._ask(
            "make the payment link",
            lambda: self._client.v1.payment_links.create(
                params=params,  # type: ignore[arg-type]
                options={"idempotency_key": f"payherald-paylink-{ours}"},
            ),
        )
        paylink = Paylink(
            id=ours,
            stripe_id=str(link["id"]),
            url=with_utm(str(link["url"]), request.campaign),
            campaign=request.campaign,
            livemode=bool(link.get("livemode")),
        )
        event = self._event(paylink, request, amount, currency, description, fingerprint)
        planned = self._rules.plan_rule(PAYLINK_RULE, event)
        result = self._store.record(PlannedEvent(event, tuple(planned), paylink=paylink))
        stored = self._store.attribution.paylink(ours)
        assert stored is not None  # recorded now, or by the same request just before
        _log.info(
            "paylink_made",
            paylink=ours,
            payment_link=paylink.stripe_id,
            event_id=event.id,
            notification_id=stored["notification_id"],
            livemode=paylink.livemode,
            campaign=request.campaign,
            duplicate=result.duplicate,
        )
        return _sent(stored, repeated=result.duplicate)

    def _fingerprint_of(self, known: Mapping[str, Any]) -> str | None:
        payload = self._store.event_payload(str(known["event_id"]))
        if payload is None:
            return None
        obj = as_mapping(as_mapping(json.loads(payload).get("data")).get("object"))
        found = obj.get("request")
        return str(found) if found else None

    def _event(
        self,
        paylink: Paylink,
        request: PaylinkRequest,
        amount: int | None,
        currency: str | None,
        description: str,
        fingerprint: str | None = None,
    ) -> StripeEvent:
        return paylink_event(
            paylink,
            phone=request.phone,
            amount=amount,
            currency=currency,
            description=description,
            quantity=request.quantity,
            now=self._clock.now(),
            request=fingerprint,
        )

    def _check_planned(
        self,
        request: PaylinkRequest,
        amount: int | None,
        currency: str | None,
        description: str,
    ) -> None:
        """Refuse, before anything is made, a request the rule would text nothing for (its
        condition does not hold for it)."""
        draft = Paylink(
            id="pl_draft",
            stripe_id="plink_draft",
            url="https://buy.stripe.com/draft",
            campaign=request.campaign,
            livemode=self._key_mode == "live",
        )
        event = self._event(draft, request, amount, currency, description)
        if not self._rules.plan_rule(PAYLINK_RULE, event):
            raise PaylinkMisconfigured(
                f"The {PAYLINK_RULE} rule would text nothing for this request (its condition "
                "in the rules file does not hold); no link was made."
            )

    def _what(self, request: PaylinkRequest) -> tuple[int | None, str | None, str, bool]:
        """What the link sells: amount (all of it), currency, its name, and whether it is
        a recurring price (the link then makes a subscription). A price is read from
        Stripe, and refused when unknown or archived."""
        if request.price is None:
            assert request.amount is not None
            assert request.name is not None
            return request.amount * request.quantity, request.currency, request.name, False
        price_id = request.price
        price = self._ask(
            f"read price {price_id}",
            lambda: self._client.v1.prices.retrieve(price_id, params={"expand": ["product"]}),
            missing=self._no_such_price(price_id),
        )
        if not price.get("active", True):
            raise PaylinkRefused(
                f"Price {price_id} is archived at Stripe, so a link cannot sell it; use an "
                "active price, or an amount with its currency and name."
            )
        unit = as_int(price.get("unit_amount"))
        product = as_mapping(price.get("product"))
        name = str(price.get("nickname") or product.get("name") or "")
        recurring = price.get("type") == "recurring" or bool(price.get("recurring"))
        currency = price.get("currency")
        return (
            unit * request.quantity if unit is not None else None,
            str(currency).lower() if isinstance(currency, str) else None,
            name,
            recurring,
        )

    def _no_such_price(self, price_id: str) -> str:
        if self._key_mode in ("live", "test"):
            other = "test" if self._key_mode == "live" else "live"
            return (
                f"Stripe has no price {price_id} in {self._key_mode} mode; prices of "
                f"{other} mode need a {other} key (STRIPE_SECRET_KEY)."
            )
        return f"Stripe has no price {price_id} for STRIPE_SECRET_KEY; check the id and the key."

    @staticmethod
    def _ask(what: str, call: Callable[[], Any], *, missing: str | None = None) -> dict[str, Any]:
        """``call``'s answer as a dict; Stripe's errors as what they mean here (``missing``:
        what a 404 means)."""
        try:
            return dict(call().to_dict())
        except stripe.IdempotencyError as exc:
            raise PaylinkConflict(
                "This request's id (Idempotency-Key) was used before for another payment "
                "link; send a new one for a new link."
            ) from exc
        except stripe.AuthenticationError as exc:
            raise PaylinkMisconfigured(
                "Stripe refused STRIPE_SECRET_KEY; check the key (`payherald doctor`)."
            ) from exc
        except stripe.PermissionError as exc:
            raise PaylinkMisconfigured(
                "STRIPE_SECRET_KEY may not do this: give the restricted key write access to "
                "Payment Links and read access to Prices."
            ) from exc
        except stripe.InvalidRequestError as exc:
            if exc.http_status == 404 and missing:
                raise PaylinkRefused(missing) from exc
            raise PaylinkRefused(f"Stripe refused to {what}: {exc.user_message or exc}") from exc
        except stripe.StripeError as exc:
            raise PaylinkFailed(
                f"Could not reach Stripe to {what} ({exc.user_message or exc}); nothing was "
                "texted: send the same request again."
            ) from exc


def _sent(row: Mapping[str, Any], *, repeated: bool) -> SentPaylink:
    return SentPaylink(
        id=str(row["id"]),
        stripe_id=str(row["stripe_id"]),
        url=str(row["url"]),
        notification_id=row["notification_id"],
        status=row["status"],
        livemode=bool(row["livemode"]),
        repeated=repeated,
    )
