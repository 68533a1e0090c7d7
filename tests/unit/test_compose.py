"""The composer on fakes: who receives a message, in which words, and what carries it,
decided once, with no database, no Stripe and no provider."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest

from payherald import FrozenClock, RecipientNotFound, parse_event
from payherald.channels import ChannelRouter
from payherald.compose import Composer, NotificationDeferred, NotificationSkipped
from payherald.config import Config
from payherald.messages import MessageContext, TemplateRenderer
from payherald.quiet_hours import QuietHours
from payherald.rules import Rule, Team
from payherald.simulate import build_event
from payherald.store import ClaimedNotification
from payherald.testing import ScriptedChannel
from payherald.webhook import StripeEvent

PHONE = "+14155550123"
EMAIL = "jenny@example.com"
TEAM_PHONE = "+14155550100"
# Noon in San Francisco, the customer's number's zone: inside the default window.
AFTERNOON = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
# Midnight in San Francisco.
NIGHT = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)


class Payments:
    """Settles nothing: every payment may be told, with nothing to add."""

    def settle(
        self, notification: ClaimedNotification, event: StripeEvent, rule: Rule
    ) -> Mapping[str, Any]:
        return {}


class Customers:
    def __init__(self, customers: Mapping[str, Mapping[str, Any]]) -> None:
        self._customers = customers

    def get(self, customer_id: str) -> Mapping[str, Any] | None:
        return self._customers.get(customer_id)

    def has_earlier_payment(
        self, customer_id: str, *, payment: set[str], before: datetime | None
    ) -> bool:
        return False


class Parts:
    def __init__(self, now: datetime, *, customer: Mapping[str, Any] | None = None) -> None:
        self.sms = ScriptedChannel("sms")
        self.email = ScriptedChannel("email")
        self.console = ScriptedChannel("console")
        self.router = ChannelRouter(
            channels={"sms": self.sms, "email": self.email}, console=self.console
        )
        teams = {"finance": Team(name="finance", sms=(TEAM_PHONE,))}
        self.rules = Config(teams=teams).rule_book(TemplateRenderer())
        self.clock = FrozenClock(now)
        self.composer = Composer(
            rules=self.rules,
            router=self.router,
            customers=Customers({"cus_1": customer or {}}),
            lookups=None,
            payments=Payments(),
            context=MessageContext(
                business_name="Acme",
                locale="en_US",
                update_card_url=None,
                timezone="America/New_York",
            ),
            quiet_hours=QuietHours(),
            clock=self.clock,
        )


def claimed(
    event_type: str = "payment_intent.succeeded",
    *,
    rule: str = "payment_confirmation",
    livemode: bool = True,
    recipient: str = "customer",
    channel: str = "sms",
    to: str | None = None,
    refusals: tuple[tuple[str, str], ...] = (),
    **changes: Any,
) -> ClaimedNotification:
    payload = build_event(event_type, now=AFTERNOON, livemode=livemode)
    payload["data"]["object"].update(changes)
    return ClaimedNotification(
        id=1,
        key="k",
        event_id=payload["id"],
        rule=rule,
        recipient=recipient,
        channel=channel,
        livemode=livemode,
        to=to,
        body=None,
        status="claimed",
        attempts=0,
        attempt_started_at=None,
        event_payload=json.dumps(payload),
        claim="test/1",
        refusals=refusals,
    )


CUSTOMER = {"id": "cus_1", "name": "Jenny Rosen", "phone": PHONE, "email": EMAIL}


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
