"""The HTTP API answers as its own OpenAPI document (``/api/openapi.json``) says, checked by
schemathesis over real HTTP on loopback, on SQLite and PostgreSQL: payherald built with an
admin token and a few events stored; every operation of the document asked with the
bearer token, with values generated from its parameters' schemas (derandomized, a bounded
number of examples each). Checked: no answer is a 5xx, every status is one the document
lists for the operation, and every body matches the schema given for its status.

The live feed (``GET /api/feed``) is left out: a stream that never ends is not a response
schemathesis can check. ``POST /api/paylinks`` is in: with no STRIPE_SECRET_KEY it answers
503, as its document says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from payherald.exceptions import PermanentDeliveryError
from payherald.simulate import (
    build_event,
    build_failure_events,
    build_payment_events,
    sign_payload,
)
from tests.support import SECRET, StripeOnLoopback, served_with_admin_token

TOKEN = "schema-admin-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# Examples for each operation: the whole run stays well under a minute on both stores.
EXAMPLES = 25
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
LEFT_OUT = {("GET", "/api/feed")}
# With no STRIPE_SECRET_KEY, payment links are off: 503, documented as such. Every other
# operation must never answer 5xx here.
DOCUMENTED_5XX = {("POST", "/api/paylinks")}


@pytest.fixture
def stripe(database_url: str) -> Iterator[StripeOnLoopback]:
    """payherald on loopback with an admin token: payments, a declined card, a refund, one
    notification failed."""
    with served_with_admin_token(database_url, TOKEN) as stripe:
        now = stripe.clock.now()
        stripe.sms.script(PermanentDeliveryError("carrier refused", code="twilio_30007"))
        for event in [
            *build_payment_events(now=now, livemode=True),
            *build_failure_events(now=now, livemode=True, phone="+14155550199"),
            build_event("refund.created", now=now),
            build_event("customer.created", now=now),
        ]:
            stripe.send(event, pause=1.0)
        yield stripe


def answers_as_documented(
    operation: schemathesis.APIOperation, url: str, checks: list[Any]
) -> Callable[[], None]:
    """A hypothesis test that asks ``operation`` at ``url`` and runs ``checks``."""

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def asked(case: schemathesis.Case) -> None:
        case.call_and_validate(base_url=url, headers=BEARER, checks=checks, timeout=10)

    return asked


def test_every_operation_answers_as_its_openapi_document_says(
    stripe: StripeOnLoopback,
) -> None:
    url = stripe.server.url
    schema = schemathesis.openapi.from_url(f"{url}/api/openapi.json", timeout=10)
    asked, problems = [], []
    for found in schema.get_all_operations():
        operation = found.ok()
        if (operation.method.upper(), operation.path) in LEFT_OUT:
            continue
        asked.append(f"{operation.method.upper()} {operation.path}")
        checks = CHECKS
        if (operation.method.upper(), operation.path) in DOCUMENTED_5XX:
            checks = [check for check in CHECKS if check is not not_a_server_error]
        try:
            answers_as_documented(operation, url, checks)()
        # Each operation's failures are reported, not only the first operation's.
        except (Exception, BaseExceptionGroup) as failed:
            problems.append(f"{asked[-1]}: {failed}")
    assert "GET /api/events" in asked, asked
    assert "POST /webhooks/stripe" in asked, asked
    assert problems == [], "\n\n".join(problems)


def test_a_stripe_event_is_answered_as_the_document_says(stripe: StripeOnLoopback) -> None:
    """The generated requests above are all refused (none is signed); a signed event's
    200 is checked against the document too."""
    schema = schemathesis.openapi.from_url(f"{stripe.server.url}/api/openapi.json", timeout=10)
    operation = schema["/webhooks/stripe"]["POST"]
    event = build_event("payment_intent.succeeded", now=stripe.clock.now(), livemode=True)
    body, header = sign_payload(event, SECRET, timestamp=int(stripe.clock.now().timestamp()))
    headers = {"Stripe-Signature": header, "Content-Type": "application/json"}

    answer = stripe.client.post("/webhooks/stripe", content=body, headers=headers)

    assert answer.status_code == 200, answer.text
    operation.Case(body=event, headers=headers).validate_response(answer, checks=CHECKS)
