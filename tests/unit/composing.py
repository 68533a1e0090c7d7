"""The composer, built on fakes: rules from the built-in catalogue, channels that record
what they are given, a customer directory in a dict, and events as simulate builds them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from payherald import FrozenClock
from payherald.channels import ChannelRouter
from payherald.compose import Composer
from payherald.config import Config
from payherald.quiet_hours import QuietHours
from payherald.rules import Rule, Team
from payherald.simulate import build_event
from payherald.store import ClaimedNotification
from payherald.templates import TemplateRenderer
from payherald.testing import ScriptedChannel
from payherald.variables import MessageContext
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
