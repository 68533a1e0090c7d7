"""Inbound replies over real HTTP: signed, acted on once, STOP that always holds."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from payherald import FrozenClock, parse_event
from payherald.consent import upgrade_legacy_opt_outs
from payherald.store.schema import consents, inbound_messages
from payherald.testing import ScriptedChannel
from tests.support import (
    TWILIO_SETTINGS,
    TWILIO_TOKEN,
    LiveServer,
    build_for_tests,
    event_body,
    opt_out_as_older_payherald,
    post_as_twilio,
)

SETTINGS = {
    **TWILIO_SETTINGS,
    "PAYHERALD_BUSINESS_NAME": "Acme",
}
PHONE = "+14155550123"


@pytest.fixture
def ph(database_url: str, sms: ScriptedChannel) -> Iterator[Any]:
    built = build_for_tests(
        database_url, settings=SETTINGS, clock=FrozenClock(), channels={"sms": sms}
    )
    yield built
    built.engine.dispose()


def reply(
    base: str, body: str, sid: str = "SM1", sender: str = PHONE, token: str = TWILIO_TOKEN
) -> httpx.Response:
    params = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
    return post_as_twilio(base, "/webhooks/twilio/inbound", params, token=token)


def inbound_rows(ph: Any) -> list[tuple[str, str | None]]:
    with ph.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(inbound_messages.c.sender, inbound_messages.c.raw_sender)
            )
        ]


def consent_rows(ph: Any) -> list[tuple[str, str, str]]:
    with ph.engine.connect() as connection:
        return [
            tuple(row)
            for row in connection.execute(
                select(consents.c.address, consents.c.action, consents.c.words).order_by(
                    consents.c.id
                )
            )
        ]


def test_stop_suppresses_the_number_and_confirms_once(ph: Any, server: LiveServer) -> None:
    first = reply(server.url, " Stop! ", sid="SM1")
    assert first.status_code == 200
    assert "You will get no more messages from us" in first.text
    assert ph.store.consents.suppression(PHONE) is not None
    replayed = reply(server.url, " Stop! ", sid="SM1")  # Twilio retried the same request
    assert "<Message>" not in replayed.text
    again = reply(server.url, "STOP", sid="SM2")  # already out: recorded, not confirmed
    assert "<Message>" not in again.text
    assert consent_rows(ph) == [(PHONE, "opt_out", "Stop!"), (PHONE, "opt_out", "STOP")]


def test_start_opts_back_in(ph: Any, server: LiveServer) -> None:
    reply(server.url, "STOP", sid="SM1")
    answer = reply(server.url, "unstop", sid="SM2")
    assert "You are subscribed again" in answer.text
    assert ph.store.consents.suppression(PHONE) is None


def test_help_answers_with_the_help_text_each_time_asked(server: LiveServer) -> None:
    for sid in ("SM1", "SM2"):
        assert "Acme: Payment notifications. Reply STOP" in reply(server.url, "info", sid=sid).text
    assert "<Message>" not in reply(server.url, "info", sid="SM2").text  # a replay


def test_an_ordinary_reply_changes_nothing(ph: Any, server: LiveServer) -> None:
    answer = reply(server.url, "please stop texting me about the order")
    assert answer.status_code == 200
    assert "<Message>" not in answer.text
    assert ph.store.consents.suppression(PHONE) is None


def test_a_whatsapp_stop_suppresses_the_number(ph: Any, server: LiveServer) -> None:
    reply(server.url, "STOP", sender=f"whatsapp:{PHONE}")
    assert ph.store.consents.suppression(PHONE) is not None


@pytest.mark.parametrize("token", ["0" * 32, ""])
def test_an_unverified_reply_gets_403_and_changes_nothing(
    ph: Any, server: LiveServer, token: str
) -> None:
    if token:
        answer = reply(server.url, "STOP", token=token)
    else:
        answer = httpx.post(
            f"{server.url}/webhooks/twilio/inbound",
            content=urlencode({"MessageSid": "SM9", "From": PHONE, "Body": "STOP"}),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert answer.status_code == 403
    assert ph.store.consents.suppression(PHONE) is None
    assert consent_rows(ph) == []


def test_a_stop_between_composing_and_sending_wins(ph: Any, sms: ScriptedChannel) -> None:
    """The suppression check is part of the statement that commits the send."""
    event = parse_event(event_body(livemode=True))
    ph.store.record_event(event, ph.rules.plan(event))
    compose = ph.worker._sender._composer.compose

    def compose_then_stop(notification: Any) -> Any:
        composed = compose(notification)
        ph.store.consents.record(
            address=PHONE, action="opt_out", channel="sms", words="STOP", source="test"
        )
        return composed

    ph.worker._sender._composer.compose = compose_then_stop
    ph.worker.run_until_idle()
    ph.worker._sender._composer.compose = compose
    ph.worker.run_until_idle()
    assert sms.attempts == []
    (row,) = ph.store.list_notifications()
    assert row["status"] == "failed"
    assert "must not be messaged" in row["error"]


@pytest.mark.parametrize(
    "sender",
    ["4155550123", "(415) 555-0123", "1-415-555-0123", "whatsapp:+1 415 555 0123"],
)
def test_a_stop_from_a_number_not_in_e164_suppresses_its_e164_form(
    ph: Any, server: LiveServer, sms: ScriptedChannel, sender: str
) -> None:
    """Consent is recorded under the number payherald texts, whatever form the sender was
    written in; the sender as received is kept beside it."""
    answer = reply(server.url, "STOP", sender=sender)
    assert answer.status_code == 200
    assert "You will get no more messages from us" in answer.text
    assert ph.store.consents.suppression(PHONE) is not None
    assert inbound_rows(ph) == [(PHONE, sender)]
    assert consent_rows(ph) == [(PHONE, "opt_out", "STOP")]
    event = parse_event(event_body(livemode=True))  # a payment by the customer at PHONE
    ph.store.record_event(event, ph.rules.plan(event))
    ph.worker.run_until_idle()
    assert sms.attempts == []
    (row,) = ph.store.list_notifications()
    assert row["status"] == "failed"
    assert "+*******0123 must not be messaged: opted out (reply: STOP)" in row["error"]


@pytest.mark.parametrize("sender", ["+1 555 0123", "12345", "whatsapp:Acme"])
def test_a_sender_that_is_no_phone_number_is_answered_logged_and_not_stored(
    ph: Any, server: LiveServer, sender: str
) -> None:
    with capture_logs() as logs:
        answer = reply(server.url, "STOP", sender=sender)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/xml")
    assert "<Message>" not in answer.text
    assert inbound_rows(ph) == []
    assert consent_rows(ph) == []
    assert ph.store.consents.suppressed() == []
    (line,) = [entry for entry in logs if entry["event"] == "inbound_sender_unreadable"]
    assert line["provider_id"] == "SM1"
    assert line["keyword"] == "opt_out"
    digits = "".join(char for char in sender if char.isdigit())
    if len(digits) > 4:
        assert digits not in line["sender"]
        assert line["sender"].endswith(digits[-4:])


def test_an_opt_out_an_older_payherald_recorded_not_in_e164_holds_after_a_migrating_build(
    database_url: str, sms: ScriptedChannel
) -> None:
    """`build(migrate_schema=True)` carries the old row over to the E.164 form payherald
    texts, once, saying why in the consent log; the old row stays."""
    opt_out_as_older_payherald(database_url, "4155550123")
    with capture_logs() as logs:
        built = build_for_tests(
            database_url, settings=SETTINGS, clock=FrozenClock(), channels={"sms": sms}
        )
    try:
        (line,) = [entry for entry in logs if entry["event"] == "legacy_opt_out_upgraded"]
        assert (line["address"], line["reads_as"]) == ("******0123", "+*******0123")
        assert sorted(row["address"] for row in built.store.consents.suppressed()) == [
            "+14155550123",
            "4155550123",
        ]
        assert built.store.consents.suppression(PHONE) == "opted out (reply: STOP)"
        assert consent_rows(built)[-1] == (PHONE, "opt_out", None)
        with built.engine.connect() as connection:
            source = connection.execute(
                select(consents.c.source).where(consents.c.address == PHONE)
            ).scalar_one()
        assert source == "upgrade: read 4155550123 as +14155550123"
        event = parse_event(event_body(livemode=True))  # a payment by the customer at PHONE
        built.store.record_event(event, built.rules.plan(event))
        built.worker.run_until_idle()
        assert sms.attempts == []
        (row,) = built.store.list_notifications()
        assert (row["status"], row["error_code"]) == ("failed", "suppressed")
    finally:
        built.engine.dispose()
    with capture_logs() as logs:
        again = build_for_tests(database_url, settings=SETTINGS, clock=FrozenClock())
    try:
        assert [entry for entry in logs if entry["event"] == "legacy_opt_out_upgraded"] == []
        assert len(consent_rows(again)) == 2
    finally:
        again.engine.dispose()


def test_a_start_under_the_e164_form_since_an_older_opt_out_stands(
    ph: Any, database_url: str
) -> None:
    """The person opted back in under the number payherald now records: the older opt-out
    of the same number is not carried over, then or on any later run."""
    opt_out_as_older_payherald(database_url, "4155550123")
    ph.store.consents.record(
        address=PHONE, action="opt_in", channel="sms", words="START", source="reply"
    )
    for _ in range(2):
        assert upgrade_legacy_opt_outs(ph.store, default_region="US") == []
        assert ph.store.consents.suppression(PHONE) is None
    assert consent_rows(ph) == [("4155550123", "opt_out", "STOP"), (PHONE, "opt_in", "START")]
