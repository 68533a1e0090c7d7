"""A small stand-in of today's Stripe API on 127.0.0.1, for the few endpoints localstripe
lacks or answers in its 2017 shapes: invoice payments, and invoices, payment intents,
charges, prices and customers as today's API returns them.

Tests tell it what Stripe knows (``add``, ``link``) and point the real ``stripe`` SDK at it
with ``STRIPE_API_BASE``. It answers like Stripe: list objects, 404 with an error body for
an unknown id, and it honours ``invoice``, ``payment[payment_intent]`` and ``customer``
filters. It makes billing portal sessions (``POST /v1/billing_portal/sessions``), one per
idempotency key as Stripe does. Every request is recorded in ``requests``, and every
session made in ``portal_sessions``.
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
}


class StripeStandIn:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.invoice_payments: list[dict[str, Any]] = []
        self.requests: list[str] = []
        self.fail_next = 0  # answer this many requests 500 first
        # Idempotency key: (the form posted, the session made).
        self.portal_sessions: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
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
            if path != "/v1/billing_portal/sessions":
                return 404, _error("invalid_request_error", f"Unrecognized request URL ({path}).")
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

    def _expanded(self, obj: Mapping[str, Any], query: Mapping[str, str]) -> dict[str, Any]:
        expanded = json.loads(json.dumps(obj))
        expand = {value for key, value in query.items() if key.startswith("expand[")}
        if "data.payment.payment_intent" in expand and obj.get("object") == "invoice_payment":
            intent = expanded["payment"].get("payment_intent")
            if intent in self.objects:
                expanded["payment"]["payment_intent"] = self.objects[intent]
        if "product" in expand and isinstance(expanded.get("product"), str):
            expanded["product"] = self.objects.get(expanded["product"], expanded["product"])
        return dict(expanded)


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
