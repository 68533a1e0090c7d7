"""End to end against real peers: localstripe sends the event, Prism plays Twilio.

localstripe (a stateful fake of the Stripe API) signs and delivers the webhook itself and
answers payherald's customer lookup; Twilio's own OpenAPI spec under Prism validates the
SMS request that payherald's Twilio channel makes with the official SDK.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from payherald import PermanentDeliveryError
from payherald.channels import Message, ReconcileOutcome, TwilioSmsChannel, twilio_client
from tests import peers
from tests.support import SECRET, LiveServer, build_for_tests

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
FROM_NUMBER = "+15005550006"
CUSTOMER_PHONE = "+14155550123"


def wait_for(condition: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true after {timeout} s")
        time.sleep(0.05)


def provider_settings(
    localstripe: peers.LocalStripe, twilio: peers.TwilioMock, **extra: str
) -> dict[str, str]:
    return {
        "STRIPE_SECRET_KEY": "sk_test_payherald",
        "STRIPE_API_BASE": localstripe.url,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": "f" * 32,
        "TWILIO_FROM_NUMBER": FROM_NUMBER,
        "TWILIO_API_BASE": twilio.url,
        **extra,
    }


@pytest.fixture
def running(
    sqlite_url: str,
    localstripe: peers.LocalStripe,
    twilio: peers.TwilioMock,
    request: pytest.FixtureRequest,
) -> Iterator[Any]:
    """payherald on real HTTP with real Stripe and Twilio clients, webhook registered."""
    allowlist = getattr(request, "param", CUSTOMER_PHONE)
    settings = provider_settings(localstripe, twilio, PAYHERALD_TEST_ALLOWLIST=allowlist)
    ph = build_for_tests(sqlite_url, settings=settings)
    twilio.clear()
    with LiveServer(ph.http_app) as server:
        name = f"payherald-{server.port}"
        localstripe.register_webhook(
            name, f"{server.url}/webhooks/stripe", SECRET, events=["payment_intent.succeeded"]
        )
        ph.start_worker()
        try:
            yield ph
        finally:
            # localstripe keeps webhooks; point this one nowhere useful once we are gone.
            localstripe.register_webhook(name, "http://127.0.0.1:9/", SECRET, events=["x.y"])
            ph.stop()
            ph.engine.dispose()


def settled(ph: Any, count: int) -> bool:
    rows = ph.store.list_notifications()
    return len(rows) == count and all(r["status"] in ("sent", "skipped", "failed") for r in rows)


def test_a_payment_delivered_by_localstripe_reaches_twilio_with_the_right_to_and_body(
    running: Any, localstripe: peers.LocalStripe, twilio: peers.TwilioMock
) -> None:
    client = localstripe.stripe_client()
    customer, intent = peers.create_customer_and_succeeded_payment(client, CUSTOMER_PHONE)
    wait_for(lambda: settled(running, 2))  # the confirmation, and a first-payment welcome
    messages = {m.form["Body"]: m for m in twilio.messages()}
    assert set(messages) == {
        f"Payment of $20.00 received, thank you! Ref: {intent}",
        "Welcome, Ada! Thank you for your first payment.",
    }
    message = messages[f"Payment of $20.00 received, thank you! Ref: {intent}"]
    assert message.form["To"] == CUSTOMER_PHONE  # from the customer, via the Stripe API
    assert message.form["From"] == FROM_NUMBER
    assert message.path == f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    (row,) = running.store.list_notifications(status="sent", limit=1)
    assert row["provider_id"].startswith(("SM", "MM"))

    # A second payment: confirmed, but Stripe's records say it is not the first.
    second = client.v1.payment_intents.create(
        params={
            "amount": 500,
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    wait_for(lambda: settled(running, 4))
    welcomes = sorted(
        (r["status"], r["error"])
        for r in running.store.list_notifications()
        if r["rule"] == "welcome"
    )
    assert welcomes == [("sent", None), ("skipped", "Not the customer's first successful payment.")]
    assert f"Payment of $5.00 received, thank you! Ref: {second.id}" in {
        m.form["Body"] for m in twilio.messages()
    }
    assert len(twilio.messages()) == 3


@pytest.mark.parametrize("running", [""], indirect=True)
def test_a_test_mode_payment_never_reaches_twilio_unless_allowlisted(
    running: Any, localstripe: peers.LocalStripe, twilio: peers.TwilioMock
) -> None:
    client = localstripe.stripe_client()
    peers.create_customer_and_succeeded_payment(client, CUSTOMER_PHONE)
    wait_for(lambda: settled(running, 2))
    rows = running.store.list_notifications()
    assert {(row["channel"], row["to"]) for row in rows} == {("console", CUSTOMER_PHONE)}
    assert twilio.messages() == []


def test_the_sms_channel_can_send_through_a_messaging_service(twilio: peers.TwilioMock) -> None:
    twilio.clear()
    channel = TwilioSmsChannel(
        client=twilio_client(ACCOUNT_SID, "f" * 32, api_base=twilio.url),
        messaging_service_sid="MG" + "0123456789abcdef" * 2,
    )
    sid = channel.send(Message(notification_id=7, to=CUSTOMER_PHONE, body="Hello"))
    assert sid.startswith(("SM", "MM"))
    (message,) = twilio.messages()
    assert message.form == {
        "To": CUSTOMER_PHONE,
        "Body": "Hello",
        "MessagingServiceSid": "MG" + "0123456789abcdef" * 2,
    }


def test_a_request_twilio_refuses_is_a_permanent_failure(twilio: peers.TwilioMock) -> None:
    channel = TwilioSmsChannel(
        client=twilio_client(ACCOUNT_SID, "f" * 32, api_base=twilio.url),
        messaging_service_sid="MG-not-a-valid-sid",
    )
    with pytest.raises(PermanentDeliveryError, match="Twilio refused"):
        channel.send(Message(notification_id=8, to=CUSTOMER_PHONE, body="Hello"))


@pytest.fixture(scope="module")
def twilio_examples() -> Iterator[peers.TwilioMock]:
    """Prism answering the spec's fixed examples, where random answers would make a flaky
    test (dynamic list pages point at random next pages)."""
    if reason := peers.prism_available():
        pytest.skip(reason)
    with peers.TwilioMock(dynamic=False) as mock:
        yield mock


def test_reconciliation_asks_twilio_a_question_its_spec_accepts(
    twilio_examples: peers.TwilioMock,
) -> None:
    twilio = twilio_examples
    client = twilio_client(ACCOUNT_SID, "f" * 32, api_base=twilio.url)
    client.messages.list(to=CUSTOMER_PHONE, limit=20)  # raises if Prism refuses the request
    twilio.clear()
    channel = TwilioSmsChannel(client=client, from_number=FROM_NUMBER)
    message = Message(notification_id=9, to=CUSTOMER_PHONE, body="A text Prism never invents")
    recent = datetime.now(UTC) - timedelta(seconds=30)
    long_ago = datetime.now(UTC) - timedelta(minutes=30)
    assert channel.reconcile(message, recent).outcome is ReconcileOutcome.UNDETERMINED
    assert channel.reconcile(message, long_ago).outcome is ReconcileOutcome.NOT_DELIVERED
    listed = [r for r in twilio.requests if r.method == "GET"]
    # The example messages are from 2019, older than either attempt: one page each.
    assert len(listed) == 2
    assert all(f"To={CUSTOMER_PHONE.replace('+', '%2B')}" in r.path for r in listed)
