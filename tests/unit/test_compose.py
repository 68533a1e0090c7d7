"""The composer on fakes: who receives a message, in which words, and what carries it,
decided once, with no database, no Stripe and no provider."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payherald import RecipientNotFound, parse_event
from payherald.compose import NotificationDeferred, NotificationSkipped
from payherald.webhook import StripeEvent
from tests.unit.composing import (
    AFTERNOON,
    CUSTOMER,
    EMAIL,
    NIGHT,
    PHONE,
    TEAM_PHONE,
    Parts,
    claimed,
)


def test_a_live_customer_is_texted_by_the_rules_first_channel_carried_by_the_provider() -> None:
    parts = Parts(AFTERNOON, customer=CUSTOMER)
    composed = parts.composer.compose(claimed(customer="cus_1"))
    assert (composed.to, composed.channel) == (PHONE, "sms")
    assert composed.carrier is parts.sms
    assert set(composed.addresses) == {PHONE, EMAIL}
    assert composed.body.startswith("Acme: Payment of $20.00 received")


def test_a_test_mode_message_is_carried_by_the_console_and_not_held_by_quiet_hours() -> None:
    parts = Parts(NIGHT, customer=CUSTOMER)
    failed = claimed(
        "payment_intent.payment_failed", rule="payment_failed", customer="cus_1", livemode=False
    )
    composed = parts.composer.compose(failed)
    assert composed.channel == "sms"
    assert composed.carrier is parts.console
    assert parts.router.prints_only(composed.carrier)


def test_a_live_text_at_night_is_deferred_to_the_morning_in_the_numbers_zone() -> None:
    parts = Parts(NIGHT, customer=CUSTOMER)
    failed = claimed("payment_intent.payment_failed", rule="payment_failed", customer="cus_1")
    with pytest.raises(NotificationDeferred) as deferred:
        parts.composer.compose(failed)
    # +1 415 is San Francisco: 08:00 there.
    assert deferred.value.until == datetime(2026, 11, 23, 16, 0, tzinfo=UTC)
    assert "quiet hours" in deferred.value.reason


def test_a_channel_that_refused_the_message_is_passed_over_for_the_next() -> None:
    parts = Parts(AFTERNOON, customer=CUSTOMER)
    refused = (("sms", "not a mobile number"),)
    composed = parts.composer.compose(claimed(customer="cus_1", refusals=refused))
    assert (composed.to, composed.channel, composed.carrier) == (EMAIL, "email", parts.email)
    assert composed.notes == "sms: refused the message (not a mobile number)"


def test_a_customer_no_channel_can_reach_is_not_found_and_every_reason_is_given() -> None:
    parts = Parts(AFTERNOON, customer={"id": "cus_1", "name": "Jenny Rosen"})
    with pytest.raises(RecipientNotFound) as missing:
        parts.composer.compose(
            claimed(customer="cus_1", receipt_email=None, shipping=None, metadata={})
        )
    assert missing.value.message.startswith("No channel of the rule could reach the customer")
    assert "sms:" in missing.value.message
    assert "email:" in missing.value.message


def test_a_team_member_removed_from_the_team_is_skipped() -> None:
    parts = Parts(AFTERNOON)
    team_alert = claimed(
        "charge.dispute.created",
        rule="dispute_alert",
        recipient="team",
        to="+14155550199",
    )
    with pytest.raises(NotificationSkipped, match="no longer on team 'finance'"):
        parts.composer.compose(team_alert)


def test_a_team_alert_goes_to_the_member_by_the_provider() -> None:
    parts = Parts(AFTERNOON)
    composed = parts.composer.compose(
        claimed("charge.dispute.created", rule="dispute_alert", recipient="team", to=TEAM_PHONE)
    )
    assert (composed.to, composed.channel, composed.carrier) == (TEAM_PHONE, "sms", parts.sms)
    assert composed.addresses == ()


def test_the_stored_event_is_parsed_once_per_compose(monkeypatch: pytest.MonkeyPatch) -> None:
    import payherald.compose

    calls = []

    def counting(body: bytes) -> StripeEvent:
        calls.append(body)
        return parse_event(body)

    monkeypatch.setattr(payherald.compose, "parse_event", counting)
    Parts(AFTERNOON, customer=CUSTOMER).composer.compose(claimed(customer="cus_1"))
    assert len(calls) == 1
