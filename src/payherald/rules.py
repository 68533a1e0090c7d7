"""Rules: which Stripe events cause which messages, to whom, on which channels.

A rule names the event types it handles, an optional condition (``when``), the recipient
(``customer`` or ``team:NAME``), the channels to try in order, the template, and its
*subject* (see ``subjects``): what makes two notifications "the same message". The
built-in catalogue (``builtin_rules``) covers the common payment events; ``payherald.toml``
can change any field of a built-in rule, turn it off, or add rules (see ``config``).

Conditions are Jinja2 expressions in the same sandbox as the templates (never ``eval``).
A condition that mentions the customer (``customer``, ``tags``) or the plan's name is
checked when the message is sent, after they are looked up; any other is checked on
arrival.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from payherald.dunning import DUNNING, ENDING_EVENTS, STARTING_EVENT, sequence_key
from payherald.exceptions import ConfigurationError, RenderError
from payherald.stripe_objects import read_object
from payherald.subjects import DEFAULT_RENEWAL_DAYS, SUBJECTS, renewal_subject
from payherald.templates import TemplateRenderer
from payherald.variables import SENDING_VARIABLES, condition_context
from payherald.webhook import StripeEvent

_log = structlog.get_logger("payherald.rules")

__all__ = [
    "CHANNELS",
    "LINKED_SUBJECTS",
    "LINKING_EVENT",
    "RENEWAL",
    "RENEWAL_RULES",
    "PlannedNotification",
    "Rule",
    "RuleBook",
    "Team",
    "step_problems",
]

CHANNELS = ("sms", "whatsapp", "voice", "email", "slack")
# The event that links an invoice to its payment from API version 2025-05-28 on.
LINKING_EVENT = "invoice_payment.paid"
# Subjects whose aliases the store links across events (one payment, many events).
LINKED_SUBJECTS = frozenset({"payment", "failed_attempt", "refund"})
# The subject of renewal reminders, one message per subscription, renewal and offset.
RENEWAL = "renewal"
# The built-in reminders of a renewal: variants of one message, whichever is queued first
# tells it (a rule of one's own with subject renewal is a message of its own).
RENEWAL_RULES = frozenset({"renewal_reminder", "renewal_card_expiring", "trial_ending"})


@dataclass(frozen=True, slots=True)
class Team:
    """People to alert: numbers for SMS and calls, addresses, a Slack incoming webhook."""

    name: str
    sms: tuple[str, ...] = ()
    email: tuple[str, ...] = ()
    slack_webhook: str | None = None
    timezone: str | None = None

    def addresses(self, channel: str) -> tuple[str, ...]:
        if channel in ("sms", "whatsapp", "voice"):
            return self.sms
        if channel == "email":
            return self.email
        if channel == "slack":
            return (f"slack:{self.name}",) if self.slack_webhook else ()
        return ()


@dataclass(frozen=True, slots=True)
class PlannedNotification:
    """A notification an event causes; the store turns its subject into its key."""

    rule: str
    recipient: str
    channel: str
    livemode: bool
    subject_kind: str
    subject: tuple[str, ...]
    to: str | None = None  # set for team members; customers are resolved when sending
    # A step of a sequence ("dunning:in_..."): due ``after`` seconds after it is queued.
    sequence: str | None = None
    after: int = 0

    def key(self, canonical: str) -> str:
        suffix = f":{self.channel}:{self.to}" if self.to else ""
        # See RENEWAL_RULES, and ``renewals``.
        head = RENEWAL if self.subject_kind == RENEWAL and self.rule in RENEWAL_RULES else self.rule
        return f"{head}:{canonical}{suffix}"


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    events: frozenset[str]
    template: str
    to: str = "customer"
    channels: tuple[str, ...] = ("sms", "email")
    subject: str = "object"
    when: str | None = None
    fallback: str | None = None
    first_payment_only: bool = False
    # Not told for a payment that pays an invoice: the invoice's own rule tells it.
    not_for_invoices: bool = False
    # Re-read from Stripe just before sending (with STRIPE_SECRET_KEY): not sent about a
    # payment or invoice that is paid by then.
    unless_paid: bool = False
    # Sent to customers at any hour; other customer texts and calls wait for the
    # recipient's daytime.
    quiet_hours_exempt: bool = False
    # An object's metadata.update_card_url may replace the link (fix_url); by default
    # only the invoice's page and PAYHERALD_UPDATE_CARD_URL are used.
    allow_metadata_links: bool = False
    enabled: bool = True
    description: str = ""
    # A step of the dunning sequence (``sequence = "dunning"``), sent ``after`` seconds
    # after the invoice's first failure unless the sequence has ended (see ``dunning``).
    sequence: str | None = None
    after: int = 0
    # What its texts may use beside a message's variables (the daily digest's figures), and
    # the Stripe events it reads beside those it handles (what the figures count).
    variables: frozenset[str] = frozenset()
    reads: frozenset[str] = frozenset()
    # Compiled by RuleBook; None when there is no condition.
    _condition: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    _condition_needs_customer: bool = field(default=False, compare=False, repr=False)

    @property
    def team(self) -> str | None:
        return self.to.removeprefix("team:") if self.to.startswith("team:") else None


class RuleBook:
    """The active rules and teams, indexed by event type; every template and condition is
    compiled here, so that a broken one fails at start, not in a customer's message."""

    def __init__(
        self,
        rules: Iterable[Rule],
        *,
        renderer: TemplateRenderer,
        teams: Mapping[str, Team] | None = None,
        high_value: Mapping[str, int] | None = None,
        renewal_days: Sequence[int] = DEFAULT_RENEWAL_DAYS,
    ) -> None:
        self.renderer = renderer
        self.teams = dict(teams or {})
        self.high_value = {code.lower(): value for code, value in (high_value or {}).items()}
        # Days before a renewal that its reminders are for ([renewals] days).
        self.renewal_days = tuple(renewal_days)
        self._rules: dict[str, Rule] = {}
        self._by_type: dict[str, list[Rule]] = {}
        for rule in rules:
            rule = self._compile(rule)
            self._rules[rule.name] = rule
            if not rule.enabled:
                continue
            for event_type in sorted(rule.events):
                self._by_type.setdefault(event_type, []).append(rule)

    def _compile(self, rule: Rule) -> Rule:
        if rule.name in self._rules:
            raise ConfigurationError(f"Two rules are named {rule.name!r}; rule names must differ.")
        if not rule.channels:
            raise ConfigurationError(f"Rule {rule.name!r} lists no channels.")
        if rule.subject not in SUBJECTS:
            raise ConfigurationError(
                f"Rule {rule.name!r}: subject {rule.subject!r} is not one of "
                + ", ".join(sorted(SUBJECTS))
                + "."
            )
        for setting, sentence in step_problems(rule) if rule.sequence is not None else ():
            raise ConfigurationError(f"Rule {rule.name!r}: {setting}: {sentence}")
        self.renderer.check(rule.template, extra=rule.variables)
        if rule.fallback:
            self.renderer.check(rule.fallback, extra=rule.variables)
        if rule.when is None:
            return rule
        condition, names = self.renderer.compile_condition(rule.when)
        return replace(
            rule, _condition=condition, _condition_needs_customer=bool(names & SENDING_VARIABLES)
        )

    def plan(self, event: StripeEvent) -> list[PlannedNotification]:
        """The notifications ``event`` causes; empty for an event no rule handles."""
        rules = self._by_type.get(event.type, ())
        if not rules:
            return []
        variables = condition_context(event, high_value=self.high_value)
        planned: list[PlannedNotification] = []
        for rule in rules:
            planned.extend(self._plan_rule(rule, event, variables))
        return planned

    def plan_rule(self, name: str, event: StripeEvent) -> list[PlannedNotification]:
        """The notifications rule ``name`` causes for ``event``, whatever its type: a
        message payherald originates (a renewal the scan found, see ``renewals``; the daily
        digest, see ``digest``). Empty when the rule is off or missing, its condition does
        not hold, or its team is not defined."""
        rule = self._rules.get(name)
        if rule is None or not rule.enabled:
            return []
        return self._plan_rule(rule, event, condition_context(event, high_value=self.high_value))

    def _plan_rule(
        self, rule: Rule, event: StripeEvent, variables: Mapping[str, Any]
    ) -> list[PlannedNotification]:
        checked_now = rule._condition is not None and not rule._condition_needs_customer
        try:
            if checked_now and not self.condition_holds(rule, variables):
                return []
        except RenderError as exc:
            # One rule's broken condition must not cost the event its other messages.
            _log.warning("condition_failed", rule=rule.name, event_id=event.id, error=exc.message)
            return []
        if rule.first_payment_only and not variables["customer_id"]:
            return []  # no customer, so no "first payment" of theirs to welcome
        if rule.not_for_invoices and read_object(event.object).invoice:
            return []  # named by the payment (API versions before basil)
        if rule.subject == RENEWAL:
            subject = tuple(renewal_subject(event, self.renewal_days))
        else:
            subject = tuple(SUBJECTS[rule.subject](event))
        step: dict[str, Any] = {}
        if rule.sequence is not None:
            invoice = read_object(event.object).invoice
            if invoice is None:
                return []  # not an invoice's failure: nothing to dun
            step = {"sequence": sequence_key(invoice), "after": rule.after}
        return self._recipients(rule, event, subject, **step)

    def _recipients(
        self, rule: Rule, event: StripeEvent, subject: tuple[str, ...], **step: Any
    ) -> list[PlannedNotification]:
        common = {
            "rule": rule.name,
            "livemode": event.livemode,
            "subject_kind": rule.subject,
            "subject": subject,
            **step,
        }
        if rule.team is None:
            return [PlannedNotification(recipient="customer", channel=rule.channels[0], **common)]
        team = self.teams.get(rule.team)
        if team is None:
            return []  # the team is not configured: `payherald config check` says so
        for channel in rule.channels:  # the first channel the team can be reached on
            if addresses := team.addresses(channel):
                return [
                    PlannedNotification(recipient=rule.to, channel=channel, to=address, **common)
                    for address in addresses
                ]
        return []

    @staticmethod
    def condition_holds(rule: Rule, variables: Mapping[str, Any]) -> bool:
        assert rule._condition is not None
        try:
            return bool(rule._condition(**variables))
        except RenderError:
            raise
        except Exception as exc:
            raise RenderError(f"Rule {rule.name!r}: its condition failed: {exc}") from exc

    def get(self, name: str) -> Rule | None:
        return self._rules.get(name)

    @property
    def rules(self) -> Sequence[Rule]:
        return list(self._rules.values())

    @property
    def event_types(self) -> Sequence[str]:
        """The event types the rules need: the ones they handle or read, and
        ``invoice_payment.paid`` when one tells a payment from an invoice's event (it links
        the invoice to its payment, so that the payment is told once; see ``payments``)."""
        types = set(self._by_type)
        types.update(*(rule.reads for rule in self._rules.values() if rule.enabled))
        if any(rule.sequence is not None for rules in self._by_type.values() for rule in rules):
            types.update(ENDING_EVENTS)  # they end a sequence before its next step
        if any(
            rule.subject == "payment" and event_type.startswith("invoice.")
            for event_type, rules in self._by_type.items()
            for rule in rules
        ):
            types.add(LINKING_EVENT)
        return sorted(types)


def step_problems(rule: Rule) -> list[tuple[str, str]]:
    """What stops ``rule`` from being a step of a sequence: (its setting, a sentence) pairs,
    none for a good step."""
    problems = []
    if rule.sequence != DUNNING:
        problems.append(("sequence", f'the only sequence is "{DUNNING}".'))
    if rule.events != {STARTING_EVENT}:
        problems.append(
            (
                "events",
                f"a dunning step is started by {STARTING_EVENT} alone; "
                f'set events = ["{STARTING_EVENT}"].',
            )
        )
    if rule.after < 0:
        problems.append(("after", "a step cannot come before the failure (0 for at once)."))
    if rule.team is not None:
        problems.append(("to", 'a dunning step is for the customer; set to = "customer".'))
    return problems
