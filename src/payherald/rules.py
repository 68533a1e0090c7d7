"""The rule registry: which Stripe events cause which notifications.

A rule names the event types it handles, who receives the message, the channels to try
in order, the template, and the *subject* of the message: the Stripe object that makes
two notifications "the same" (a payment intent for a confirmation, the failed charge for
a failure). The notification key is ``rule:subject``, unique in the store, so a repeated
or replayed event can never queue a second message for the same thing.

The registry is checked when this module is imported: every template compiles and no
two rules share a name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from payherald.messages import TemplateRenderer
from payherald.webhook import StripeEvent

__all__ = ["BUILTIN_RULES", "PlannedNotification", "Rule", "RuleBook"]


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    """A notification an event causes, before its recipient is resolved."""

    key: str
    rule: str
    recipient: str
    channel: str
    livemode: bool


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    event_types: frozenset[str]
    template: str
    subject: Callable[[StripeEvent], str]
    recipient: str = "customer"
    channels: tuple[str, ...] = ("sms",)

    def plan(self, event: StripeEvent) -> PlannedNotification:
        return PlannedNotification(
            key=f"{self.name}:{self.subject(event)}",
            rule=self.name,
            recipient=self.recipient,
            channel=self.channels[0],
            livemode=event.livemode,
        )


def _object_id(event: StripeEvent) -> str:
    return str(event.object.get("id") or event.id)


def _failed_attempt(event: StripeEvent) -> str:
    """A failed payment attempt: the charge that failed, else this event.

    A payment intent can fail several times (one card, then another); each failure is
    its own message, but the same failure reported twice is not.
    """
    obj = event.object
    error = obj.get("last_payment_error")
    charge = error.get("charge") if isinstance(error, dict) else None
    charge = charge or obj.get("latest_charge")
    if isinstance(charge, dict):
        charge = charge.get("id")
    return f"{_object_id(event)}:{charge or event.id}"


BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        name="payment_confirmation",
        event_types=frozenset({"payment_intent.succeeded"}),
        subject=_object_id,
        template=(
            "{% if business %}{{ business }}: {% endif %}"
            "Payment of {{ amount | money(currency) }} received, thank you!"
            "{% if order %} Order {{ order }}.{% endif %}"
            " Ref: {{ reference }}"
        ),
    ),
    Rule(
        name="payment_failed",
        event_types=frozenset({"payment_intent.payment_failed"}),
        subject=_failed_attempt,
        template=(
            "{% if business %}{{ business }}: {% endif %}"
            "Your payment of {{ amount | money(currency) }} did not go through: "
            "{{ decline_reason }}."
            "{% if fix_url %} Update your card: {{ fix_url }}"
            "{% else %} Please try another card.{% endif %}"
        ),
    ),
)


class RuleBook:
    """The active rules, indexed by event type."""

    def __init__(self, rules: Iterable[Rule], *, renderer: TemplateRenderer) -> None:
        self._rules: dict[str, Rule] = {}
        self._by_type: dict[str, list[Rule]] = {}
        for rule in rules:
            if rule.name in self._rules:
                raise ValueError(f"two rules are named {rule.name!r}; rule names must differ")
            if not rule.channels:
                raise ValueError(f"rule {rule.name!r} lists no channels")
            renderer.check(rule.template)
            self._rules[rule.name] = rule
            for event_type in rule.event_types:
                self._by_type.setdefault(event_type, []).append(rule)

    def plan(self, event: StripeEvent) -> list[PlannedNotification]:
        """The notifications ``event`` causes; empty for an event no rule handles."""
        return [rule.plan(event) for rule in self._by_type.get(event.type, ())]

    def get(self, name: str) -> Rule | None:
        return self._rules.get(name)

    @property
    def event_types(self) -> Sequence[str]:
        return sorted(self._by_type)


# Checked at import: a broken built-in template fails here, not in a customer's message.
RuleBook(BUILTIN_RULES, renderer=TemplateRenderer())
