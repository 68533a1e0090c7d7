"""A small stand-in of today's Stripe API on 127.0.0.1, for the few endpoints localstripe
lacks or answers in its 2017 shapes: invoice payments, and invoices, payment intents,
charges, prices, customers, subscriptions and payment methods as today's API returns them.

Tests tell it what Stripe knows (``add``, ``link``) and point the real ``stripe`` SDK at it
with ``STRIPE_API_BASE``. It answers like Stripe: list objects, 404 with an error body for
an unknown id, and it honours ``invoice``, ``payment[payment_intent]`` and ``customer``
filters. Subscriptions are listed page by page (``limit``, ``starting_after``, ``has_more``),
filtered on ``current_period_end`` and with their customer and default payment methods
expanded when asked (unless ``expand_payment_methods`` is off, as if the SDK had not asked).
It makes billing portal sessions (``POST /v1/billing_portal/sessions``) and payment links
(``POST /v1/payment_links``), one per idempotency key as Stripe does. It acts on payments as
the fraud check asks: approves a review, refunds a payment (``POST /v1/refunds``), cancels a
payment intent, each once per idempotency key (the same key answers what it answered first,
as Stripe does), refusing as Stripe refuses (a closed review, a refunded charge, a captured
payment intent). Every request is recorded in ``requests``, every session made in
``portal_sessions``, every payment link made in ``payment_links``, with the form posted and
the idempotency key, and every action asked for in ``actions`` (path, form, idempotency
key).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.support import serving

_PATHS = {
    "invoices": "invoice",
    "payment_intents": "payment_intent",
    "charges": "charge",
    "prices": "price",
    "customers": "customer",
    "refunds": "refund",
    "subscriptions": "subscription",
    "payment_methods": "payment_method",
    "reviews": "review",
}


class StripeStandIn:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.invoice_payments: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.fail_next = 0  # answer this many requests 500 first
        self.portal_configured = True  # False: no default portal configuration, as Stripe
        # Idempotency key: (the form posted, the session made).
        self.portal_sessions: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
        # Idempotency key: (the form posted, the payment link made); livemode of those made.
        self.payment_links: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
        self.livemode = False
        self.expand_payment_methods = True
        self.page_size: int | None = None  # at most this many a page, whatever the limit
        # The actions on payments asked for, (path, form, idempotency key), and what each
        # idempotency key was answered the first time.
        self.actions: list[tuple[str, dict[str, str], str | None]] = []
        self._answered: dict[str, tuple[int, Any]] = {}
        self.lose_answers = 0  # act, then answer this many action requests 500 (as if the
        # answer was lost on the way)
        # Refuse every action with (status, error type, message), as Stripe refuses a
        # restricted key without the permission.
        self.refuse_actions: tuple[int, str, str] | None = None
        self._lock = threading.Lock()
        self.url = ""

    def add(self, *objects: Mapping[str, Any]) -> None:
        """Stripe now knows ``objects`` (by id), as they are now."""
        with self._lock:
            for obj in objects:
                self.objects[str(obj["id"])] = dict(obj)

    def link(self, payment: Mapping[str, Any]) -> None:
        """Stripe now knows the invoice payment ``payment``."""
        with self._lock:
            self.invoice_payments.append(dict(payment))

    def requested(self, fragment: str) -> int:
        return sum(fragment in request for request in self.requests)

    # -- answering ----------------------------------------------------------------------

    def answer(self, method: str, target: str) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(f"{method} {target}")
            if self.fail_next:
                self.fail_next -= 1
                return 500, _error("api_error", "Stand-in outage.")
            url = urlsplit(target)
            query = {key: values[0] for key, values in parse_qs(url.query).items()}
            parts = url.path.strip("/").split("/")
            if parts[:2] == ["v1", "invoice_payments"] and len(parts) == 2:
                return 200, _list(self._invoice_payments(query), url.path)
            if len(parts) == 3 and parts[0] == "v1" and parts[1] in _PATHS:
                found = self.objects.get(parts[2])
                if found is None or found.get("object") != _PATHS[parts[1]]:
                    return 404, _error(
                        "invalid_request_error", f"No such {_PATHS[parts[1]]}: '{parts[2]}'"
                    )
                return 200, self._expanded(found, query)
            if len(parts) == 2 and parts[0] == "v1" and parts[1] in _PATHS:
                kind = _PATHS[parts[1]]
                if kind == "subscription":
                    return 200, self._subscriptions(query, url.path)
                found = [
                    obj
                    for obj in self.objects.values()
                    if obj.get("object") == kind
                    and all(
                        obj.get(key) == query[key] for key in ("customer", "charge") if key in query
                    )
                ]
                return 200, _list(found, url.path)
            return 404, _error("invalid_request_error", f"Unrecognized request URL ({url.path}).")

    def create(self, path: str, form: Mapping[str, str], key: str | None) -> tuple[int, Any]:
        with self._lock:
            self.requests.append(f"POST {path}")
            if path.startswith(("/v1/reviews/", "/v1/refunds", "/v1/payment_intents/")):
                return self._action(path, form, key)
            if path == "/v1/payment_links":
                return self._create_payment_link(form, key)
            if path != "/v1/billing_portal/sessions":
                return 404, _error("invalid_request_error", f"Unrecognized request URL ({path}).")
            if not self.portal_configured:
                return 400, _error(
                    "invalid_request_error",
                    "No configuration provided and your live mode default configuration has "
                    "not been created.",
                )
            if key in self.portal_sessions:
                return 200, self.portal_sessions[key][1]  # the same answer, as Stripe gives
            number = len(self.portal_sessions) + 1
            session = {
                "id": f"bps_{number}",
                "object": "billing_portal.session",
                "customer": form.get("customer"),
                "return_url": form.get("return_url"),
                "url": f"https://billing.stripe.com/p/session/test_{number}",
            }
            self.portal_sessions[key or f"none-{number}"] = (dict(form), session)
            return 200, session

    def _action(self, path: str, form: Mapping[str, str], key: str | None) -> tuple[int, Any]:
        """Approve a review, refund, or cancel a payment intent; once per idempotency key."""
        self.actions.append((path, dict(form), key))
        if self.refuse_actions is not None:
            status, kind, message = self.refuse_actions
            return status, _error(kind, message)
        if key is not None and key in self._answered:
            answer = self._answered[key]
        else:
            answer = self._act(path.strip("/").split("/"), form)
            if key is not None:
                self._answered[key] = answer
        if self.lose_answers:
            self.lose_answers -= 1
            return 500, _error("api_error", "Stand-in lost the answer.")
        return answer

    def _act(self, parts: list[str], form: Mapping[str, str]) -> tuple[int, Any]:
        if parts == ["v1", "refunds"]:
            return self._refund(form)
        found = self.objects.get(parts[2]) if len(parts) == 4 else None
        kind = {"reviews": "review", "payment_intents": "payment_intent"}.get(parts[1])
        if found is None or found.get("object") != kind:
            return 404, _error("invalid_request_error", f"No such {kind}: '{parts[2]}'")
        if parts[1:4:2] == ["reviews", "approve"]:
            if not found.get("open"):
                return 400, _error("invalid_request_error", "This review is already closed.")
            found.update(open=False, closed_reason="approved")
            return 200, found
        if parts[3] == "cancel":
            if found.get("status") in ("succeeded", "canceled"):
                error = _error(
                    "invalid_request_error",
                    "You cannot cancel this PaymentIntent because it has a status of "
                    f"{found['status']}.",
                )
                error["error"]["code"] = "payment_intent_unexpected_state"
                return 400, error
            found.update(status="canceled", cancellation_reason=form.get("cancellation_reason"))
            return 200, found
        return 404, _error("invalid_request_error", f"Unrecognized request URL ({parts}).")

    def _refund(self, form: Mapping[str, str]) -> tuple[int, Any]:
        intent = form.get("payment_intent")
        charges = [
            obj
            for obj in self.objects.values()
            if obj.get("object") == "charge"
            and (
                obj.get("id") == form.get("charge")
                or (intent and obj.get("payment_intent") == intent)
            )
        ]
        if not charges:
            return 404, _error("invalid_request_error", "No such charge or payment intent.")
        charge = charges[0]
        if charge.get("amount_refunded", 0) >= charge["amount"]:
            error = _error(
                "invalid_request_error", f"Charge {charge['id']} has already been refunded."
            )
            error["error"]["code"] = "charge_already_refunded"
            return 400, error
        refund = {
            "id": f"re_{len(self.refunds()) + 1}",
            "object": "refund",
            "amount": charge["amount"] - charge.get("amount_refunded", 0),
            "charge": charge["id"],
            "currency": charge.get("currency"),
            "payment_intent": charge.get("payment_intent"),
            "reason": form.get("reason"),
            "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")},
            "status": "succeeded",
        }
        charge.update(amount_refunded=charge["amount"], refunded=True)
        self.objects[refund["id"]] = refund
        return 200, refund

    def refunds(self) -> list[dict[str, Any]]:
        """The refunds made here."""
        return [obj for obj in self.objects.values() if obj.get("object") == "refund"]

    def _create_payment_link(self, form: Mapping[str, str], key: str | None) -> tuple[int, Any]:
        """A payment link of today's shape, made once per idempotency key."""
        if key in self.payment_links:
            return 200, self.payment_links[key][1]  # the same answer, as Stripe gives
        if "line_items[0][quantity]" not in form:
            return 400, _error("invalid_request_error", "Missing required param: line_items.")
        number = len(self.payment_links) + 1
        metadata = {
            name.removeprefix("metadata[").removesuffix("]"): value
            for name, value in form.items()
            if name.startswith("metadata[")
        }
        link = {
            "id": f"plink_standin{number}",
            "object": "payment_link",
            "active": True,
            "currency": form.get("line_items[0][price_data][currency]", "usd"),
            "livemode": self.livemode,
            "metadata": metadata,
            "url": f"https://buy.stripe.com/{'' if self.livemode else 'test_'}standin{number}",
        }
        self.payment_links[key or f"none-{number}"] = (dict(form), link)
        return 200, link

    def _subscriptions(self, query: Mapping[str, str], path: str) -> dict[str, Any]:
        """A page of the subscriptions, in the order they were added."""
        low, high = query.get("current_period_end[gt]"), query.get("current_period_end[lte]")
        found = [
            obj
            for obj in self.objects.values()
            if obj.get("object") == "subscription"
            and (low is None or _period_end(obj) > int(low))
            and (high is None or _period_end(obj) <= int(high))
        ]
        if "starting_after" in query:
            ids = [obj["id"] for obj in found]
            found = found[ids.index(query["starting_after"]) + 1 :]
        limit = min(int(query.get("limit", 10)), self.page_size or 100)
        page = [self._expanded(obj, query, prefix="data.") for obj in found[:limit]]
        return _list(page, path) | {"has_more": len(found) > limit}

    def _invoice_payments(self, query: Mapping[str, str]) -> list[dict[str, Any]]:
        found = []
        for payment in self.invoice_payments:
            if "invoice" in query and payment["invoice"] != query["invoice"]:
                continue
            intent = query.get("payment[payment_intent]")
            if intent is not None and payment["payment"].get("payment_intent") != intent:
                continue
            found.append(self._expanded(payment, query))
        return found

    def _expanded(
        self, obj: Mapping[str, Any], query: Mapping[str, str], *, prefix: str = ""
    ) -> dict[str, Any]:
        expanded = json.loads(json.dumps(obj))
        expand = {value for key, value in query.items() if key.startswith("expand[")}
        if obj.get("object") == "subscription":
            self._expand_subscription(expanded, {e.removeprefix(prefix) for e in expand})
        if "data.payment.payment_intent" in expand and obj.get("object") == "invoice_payment":
            intent = expanded["payment"].get("payment_intent")
            if intent in self.objects:
                expanded["payment"]["payment_intent"] = self.objects[intent]
        if "product" in expand and isinstance(expanded.get("product"), str):
            expanded["product"] = self.objects.get(expanded["product"], expanded["product"])
        return dict(expanded)

    def _expand_subscription(self, sub: dict[str, Any], expand: set[str]) -> None:
        def known(value: Any, wanted: bool) -> Any:
            if wanted and isinstance(value, str) and value in self.objects:
                return json.loads(json.dumps(self.objects[value]))
            return value

        methods = self.expand_payment_methods
        sub["customer"] = known(sub.get("customer"), "customer" in expand)
        sub["default_payment_method"] = known(
            sub.get("default_payment_method"), methods and "default_payment_method" in expand
        )
        settings = (
            sub["customer"].get("invoice_settings") if isinstance(sub["customer"], dict) else None
        )
        wanted = "customer.invoice_settings.default_payment_method" in expand
        if isinstance(settings, dict):
            settings["default_payment_method"] = known(
                settings.get("default_payment_method"), methods and wanted
            )


def _period_end(subscription: Mapping[str, Any]) -> int:
    """When a subscription's current period ends, in either shape (on its items from
    2025-03-31): the earliest of its items'."""
    if subscription.get("current_period_end"):
        return int(subscription["current_period_end"])
    return min(int(item["current_period_end"]) for item in subscription["items"]["data"])


def open_invoice_payment(invoice: Mapping[str, Any], intent: Mapping[str, Any]) -> dict[str, Any]:
    """The invoice payment Stripe keeps for an invoice whose payment intent failed."""
    return {
        "id": f"inpay_{invoice['id']}",
        "object": "invoice_payment",
        "invoice": invoice["id"],
        "status": "open",
        "amount_paid": None,
        "amount_requested": invoice["amount_due"],
        "currency": invoice["currency"],
        "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
    }


def _list(data: list[dict[str, Any]], url: str) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": False, "url": url}


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"error": {"type": kind, "message": message}}


@contextmanager
def stripe_standin() -> Iterator[StripeStandIn]:
    standin = StripeStandIn()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self._send(*standin.answer("GET", self.path))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            self._send(*standin.create(self.path, form, self.headers.get("Idempotency-Key")))

        def _send(self, status: int, body: Any) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    with server, serving(server):  # closed after it stops serving
        yield standin
