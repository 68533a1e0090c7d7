"""Every route of the built app refuses whoever does not hold the admin token, over real
HTTP on loopback, on SQLite and PostgreSQL: the routes are enumerated from the app itself
(``http_app.routes``), so a route added later is checked without a line here, and only
the public routes the dashboard contract names are let through.

Each route is asked with every method it takes, its path parameters filled with the ids of
what is stored (so that a route that forgot its check would answer with customer data):
with no credentials, with a wrong bearer token, and with a forged session cookie. The JSON
API answers 401 or 403 with ``{"error": ...}``; a page sends the browser to ``/signin``
(303), or answers 401/403; once wrong tokens from this address are too many, 429 with
Retry-After; nothing answers with a customer's phone, email, name or id.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from starlette.routing import Mount, Route

from payherald import FrozenClock
from payherald.simulate import build_payment_events
from payherald.simulated_payments import EMAIL, NAME
from payherald.testing import ScriptedChannel
from tests.support import (
    TWILIO_SETTINGS,
    LiveServer,
    StripeOnLoopback,
    build_for_tests,
    served_with_admin_token,
)

TOKEN = "routes-admin-token-for-tests"
PHONE = "+14155550187"
# The contract's public routes: (method, path); a path ending in "*" is a prefix.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/webhooks/*"),  # each checks its caller's signature
    ("GET", "/signin"),
    ("POST", "/signin"),
    ("GET", "/static/*"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/docs"),
}
# Routes any payherald has, so that the enumeration cannot come up empty.
KNOWN_PROTECTED = {
    ("GET", "/api/events"),
    ("GET", "/api/events/{event_id}"),
    ("GET", "/api/notifications"),
    ("POST", "/api/notifications/{notification_id}/retry"),
    ("GET", "/api/stats"),
    ("GET", "/api/optouts"),
    ("GET", "/api/sequences"),
    ("GET", "/api/feed"),
    ("POST", "/api/paylinks"),
}
WRONG = (
    ("no credentials", {}, {}),
    ("a wrong bearer token", {"Authorization": "Bearer not-the-admin-token"}, {}),
    ("a token without its scheme", {"Authorization": TOKEN}, {}),
    ("a forged session cookie", {}, {"payherald_session": "forged.9999999999.c2lnbmF0dXJl"}),
)
_PARAMETER = re.compile(r"\{(\w+)(?::(\w+))?\}")


def is_public(method: str, path: str) -> bool:
    for allowed_method, allowed in PUBLIC:
        if method not in (allowed_method, "HEAD" if allowed_method == "GET" else None):
            continue
        if path == allowed or (allowed.endswith("*") and path.startswith(allowed[:-1])):
            return True
    return False


def endpoints(app: Any) -> list[tuple[str, str]]:
    """Every (method, path template) ``app`` answers; a mount as ``<path>/*``."""
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            found.append(("GET", route.path.rstrip("/") + "/*"))
        elif isinstance(route, Route) and route.methods:
            found += [(method, route.path) for method in sorted(route.methods)]
        else:  # a websocket, or a route of a kind this test does not know how to ask
            found.append(("?", getattr(route, "path", repr(route))))
    return found


def fill(path: str, ids: dict[str, str]) -> str:
    """``path`` with its parameters given plausible values: the ids of what is stored."""

    def value(match: re.Match[str]) -> str:
        name, convertor = match.group(1), match.group(2)
        if "event" in name:
            return ids["event"]
        if convertor == "int" or name.endswith("id"):
            return ids["notification"]
        return "x"

    return _PARAMETER.sub(value, path.replace("/*", "/x"))


def refusal_problems(
    client: httpx.Client, app: Any, ids: dict[str, str], secrets: list[str]
) -> list[str]:
    """What is wrong with how ``app``'s non-public routes answer strangers: one sentence
    each, empty when every one refuses."""
    problems = []
    for method, template in endpoints(app):
        if method == "?":
            problems.append(f"{template}: a route this test cannot ask; teach it how")
            continue
        if is_public(method, template):
            continue
        path = fill(template, ids)
        for who, headers, cookies in WRONG:
            client.cookies.clear()
            client.cookies.update(cookies)
            answer = client.request(method, path, headers=headers)
            said = f"{method} {path} with {who} answered {answer.status_code}"
            if answer.status_code == 429 and "Authorization" in headers:
                # Wrong tokens from one address are limited: refused before any look.
                if not answer.headers.get("retry-after"):
                    problems.append(f"{said} without Retry-After")
            elif template.startswith("/api/"):
                if answer.status_code not in (401, 403):
                    problems.append(f"{said}, not 401 or 403")
                elif method != "HEAD" and "error" not in answer.json():
                    problems.append(f"{said} without an error: {answer.text[:200]}")
            elif answer.status_code == 303:
                if not answer.headers.get("location", "").startswith("/signin"):
                    problems.append(f"{said} to {answer.headers.get('location')}, not /signin")
            elif answer.status_code not in (401, 403):
                problems.append(f"{said}, not a 303 to /signin, nor 401 or 403")
            leaked = [secret for secret in secrets if secret.lower() in answer.text.lower()]
            if leaked:
                problems.append(f"{said} and showed {leaked}")
    return problems


@pytest.fixture
def stripe(database_url: str) -> Iterator[StripeOnLoopback]:
    """payherald with an admin token, on loopback, with a payment stored and texted."""
    with served_with_admin_token(database_url, TOKEN) as stripe:
        now = stripe.clock.now()
        for event in build_payment_events(now=now, phone=PHONE, livemode=True)[:2]:
            stripe.send(event)
        yield stripe


def stored(stripe: StripeOnLoopback) -> tuple[dict[str, str], list[str]]:
    """The ids to fill paths with, and what must never be shown to a stranger."""
    notification = stripe.ph.store.list_notifications(limit=10)[-1]
    event = stripe.ph.store.history.event(notification["event_id"])
    assert event is not None
    assert event["customer"], event
    ids = {"event": event["id"], "notification": str(notification["id"])}
    return ids, [PHONE, PHONE[-10:], event["customer"], EMAIL, NAME]


def test_every_route_but_the_public_ones_refuses_a_stranger(stripe: StripeOnLoopback) -> None:
    ids, secrets = stored(stripe)
    app = stripe.ph.http_app
    assert set(endpoints(app)) >= KNOWN_PROTECTED

    assert refusal_problems(stripe.client, app, ids, secrets) == []


def test_a_route_added_without_a_check_is_caught(stripe: StripeOnLoopback) -> None:
    ids, secrets = stored(stripe)
    app = stripe.ph.http_app

    @app.get("/api/unguarded")
    async def unguarded() -> dict[str, str]:
        return {"phone": PHONE}

    @app.get("/customers/{event_id}")
    async def unguarded_page(event_id: str) -> dict[str, str]:
        return {"event": event_id}

    problems = refusal_problems(stripe.client, app, ids, secrets)
    assert any(
        p.startswith("GET /api/unguarded with no credentials answered 200") for p in problems
    )
    assert any(p.startswith(f"GET /customers/{ids['event']} with a wrong") for p in problems)


def test_with_no_admin_token_set_the_api_is_off_and_no_page_shows_anything(
    database_url: str,
) -> None:
    """With no PAYHERALD_ADMIN_TOKEN, the API is off (403) and no page shows anything
    stored, whatever is presented."""
    clock = FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC))
    sms = ScriptedChannel()
    ph = build_for_tests(database_url, settings=TWILIO_SETTINGS, clock=clock, channels={"sms": sms})
    try:
        with (
            LiveServer(ph.http_app) as server,
            StripeOnLoopback(ph, server, clock, sms) as stripe,
        ):
            for event in build_payment_events(now=clock.now(), phone=PHONE, livemode=False)[:2]:
                stripe.send(event)
            ids, secrets = stored(stripe)
            for method, template in endpoints(ph.http_app):
                if is_public(method, template):
                    continue
                path = fill(template, ids)
                answer = stripe.client.request(
                    method, path, headers={"Authorization": f"Bearer {TOKEN}"}
                )
                said = f"{method} {path} answered {answer.status_code}"
                if template.startswith("/api/"):
                    assert answer.status_code == 403, said
                else:
                    assert answer.status_code in (200, 303, 401, 403), said
                assert not [s for s in secrets if s.lower() in answer.text.lower()], said
    finally:
        ph.engine.dispose()
