"""A dunning step's link to the billing portal, on SQLite and PostgreSQL: a template that
uses ``portal_url`` gets a session made in Stripe (a stand-in of its API on loopback) for
the invoice's customer, once per message, whatever retries the message: the idempotency
key is the message's."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from payherald import FrozenClock
from payherald.exceptions import TransientDeliveryError
from payherald.testing import ScriptedChannel
from tests.integration.test_dunning import DAY, Stripe, fail_as_stripe_knows
from tests.stripe_standin import StripeStandIn, stripe_standin
from tests.support import LiveServer, build_for_tests

RULES = """
[rules.invoice_payment_failed]
template = "We could not collect your payment. Update your card: {{ portal_url }}"

[rules.dunning_reminder]
template = "Reminder: your payment is still due. Update your card: {{ portal_url }}"
"""


@pytest.fixture
def standin() -> Iterator[StripeStandIn]:
    with stripe_standin() as standin:
        yield standin


@pytest.fixture
def portal(database_url: str, standin: StripeStandIn, tmp_path: Path) -> Iterator[Stripe]:
    """payherald with steps that link to the billing portal; the first send fails."""
    rules = tmp_path / "payherald.toml"
    rules.write_text(RULES)
    settings = {
        "STRIPE_SECRET_KEY": "sk_live_standin",  # the events are live
        "STRIPE_API_BASE": standin.url,
        "PAYHERALD_CONFIG": str(rules),
        "PAYHERALD_PORTAL_RETURN_URL": "https://example.com/account",
    }
    clock = FrozenClock()
    sms = ScriptedChannel("sms", script=[TransientDeliveryError("Twilio is down.")])
    ph = build_for_tests(database_url, clock=clock, channels={"sms": sms}, settings=settings)
    with LiveServer(ph.http_app) as server, Stripe(ph, server, clock, sms) as stripe:
        yield stripe
    ph.engine.dispose()


def test_each_step_links_to_its_own_portal_session_made_once(
    portal: Stripe, standin: StripeStandIn
) -> None:
    invoice, _ = fail_as_stripe_knows(portal, standin)
    portal.later(3600)  # the first send fails, and is retried
    assert len(portal.sms.attempts) == 2
    assert [message.body for message in portal.sms.delivered] == [
        "We could not collect your payment. Update your card: "
        "https://billing.stripe.com/p/session/test_1"
    ]
    # Both attempts asked Stripe, with one idempotency key: one session.
    assert standin.requested("POST /v1/billing_portal/sessions") == 2
    assert len(standin.portal_sessions) == 1
    (key, (form, _)) = next(iter(standin.portal_sessions.items()))
    assert key.startswith("payherald-portal-")
    assert form == {
        "customer": invoice["customer"],
        "after_expiration[type]": "customer_login",  # a link read late still works
        "return_url": "https://example.com/account",
    }

    portal.later(3 * DAY)
    assert portal.sms.delivered[-1].body.endswith("https://billing.stripe.com/p/session/test_2")
    assert len(standin.portal_sessions) == 2  # the reminder has its own


def test_without_a_portal_in_stripe_the_step_links_to_the_invoice_page(
    portal: Stripe, standin: StripeStandIn
) -> None:
    standin.portal_configured = False
    invoice, _ = fail_as_stripe_knows(portal, standin)
    portal.later(3600)
    (sent,) = portal.sms.delivered
    assert sent.body.endswith(invoice["hosted_invoice_url"])
    (step,) = [
        row
        for row in portal.ph.store.list_notifications(limit=100)
        if row["rule"] == "invoice_payment_failed"
    ]
    assert "Stripe made no billing portal session" in step["notes"]
