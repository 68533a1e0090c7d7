"""Rules: which Stripe events cause which messages, to whom, on which channels.

A rule names the event types it handles, an optional condition (``when``), the recipient
(``customer`` or ``team:NAME``), the channels to try in order, the template, and its
*subject* (see ``subjects``): what makes two notifications "the same message". The
built-in catalogue below covers the common payment events; ``payherald.toml`` can change
any field of a built-in rule, turn it off, or add rules (see ``config``).

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

from payherald.api_versions import REFUNDS_HAVE_EVENTS
from payherald.exceptions import ConfigurationError, RenderError
from payherald.stripe_objects import read_object
from payherald.subjects import SUBJECTS
from payherald.templates import TemplateRenderer
from payherald.variables import SENDING_VARIABLES, condition_context
from payherald.webhook import StripeEvent

_log = structlog.get_logger("payherald.rules")

__all__ = [
    "BUILTIN_RULES",
    "CHANNELS",
    "LINKED_SUBJECTS",
    "LINKING_EVENT",
    "PlannedNotification",
    "Rule",
    "RuleBook",
    "Team",
]

CHANNELS = ("sms", "whatsapp", "voice", "email", "slack")
# The event that links an invoice to its payment from API version 2025-05-28 on.
LINKING_EVENT = "invoice_payment.paid"
# Subjects whose aliases the store links across events (one payment, many events).
LINKED_SUBJECTS = frozenset({"payment", "failed_attempt", "refund"})
_PREFIX = "{% if business %}{{ business }}: {% endif %}"
# One refund, one message: refund.created tells it. Before API version 2024-10-28 a charge's
# refund sent no refund.created, only charge.refunded, which then tells it; from that version
# on charge.refunded is passed over (it does not name the refund, so the two could not be
# told to be one).
_REFUND_EVENT = (
    "event_type == 'refund.created' or "
    f"(api_version != '' and api_version < '{REFUNDS_HAVE_EVENTS}')"
)


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

    def key(self, canonical: str) -> str:
        suffix = f":{self.channel}:{self.to}" if self.to else ""
        return f"{self.rule}:{canonical}{suffix}"


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
    # Compiled by RuleBook; None when there is no condition.
    _condition: Callable[..., Any] | None = field(default=None, compare=False, repr=False)
    _condition_needs_customer: bool = field(default=False, compare=False, repr=False)

    @property
    def team(self) -> str | None:
        return self.to.removeprefix("team:") if self.to.startswith("team:") else None


BUILTIN_RULES: tuple[Rule, ...] = (
    Rule(
        name="payment_confirmation",
        description="Customer: one confirmation per payment, whichever events report it.",
        events=frozenset(
            {
                "payment_intent.succeeded",
                "charge.succeeded",
                "checkout.session.completed",
                "invoice.paid",
                "invoice.payment_succeeded",
            }
        ),
        subject="payment",
        when="amount != 0",  # a $0 invoice (a trial, a full coupon) is not a payment
        quiet_hours_exempt=True,  # a receipt for what the customer has just done
        template=_PREFIX + "Payment of {{ amount | money(currency) }} received, thank you!"
        "{% if order %} Order {{ order }}.{% endif %} Ref: {{ reference }}",
        fallback=_PREFIX + "Your payment was received, thank you! Ref: {{ reference }}",
    ),
    Rule(
        name="payment_failed",
        description="Customer: a declined payment, with the reason and a link.",
        events=frozenset({"payment_intent.payment_failed", "charge.failed"}),
        subject="failed_attempt",
        # An invoice's failed payment is told by invoice_payment_failed, with its link.
        not_for_invoices=True,
        unless_paid=True,
        template=_PREFIX + "Your payment of {{ amount | money(currency) }} did not go through: "
        "{{ decline_reason }}.{% if fix_url %} Update your card: {{ fix_url }}"
        "{% else %} Please try another card.{% endif %}",
        fallback=_PREFIX + "Your payment did not go through: {{ decline_reason }}. "
        "Please try another card.",
    ),
    Rule(
        name="invoice_payment_failed",
        description="Customer: an invoice could not be collected; first dunning message.",
        events=frozenset({"invoice.payment_failed"}),
        subject="failed_attempt",
        unless_paid=True,
        template=_PREFIX + "We could not collect {{ amount | money(currency) }}"
        "{% if invoice_number %} for invoice {{ invoice_number }}{% endif %}: "
        "{{ decline_reason }}.{% if fix_url %} Pay or update your card: {{ fix_url }}"
        "{% endif %}",
        fallback=_PREFIX + "We could not collect your payment.{% if fix_url %} Pay or update "
        "your card: {{ fix_url }}{% endif %}",
    ),
    Rule(
        name="refund_customer",
        description="Customer: refund acknowledgement with amount and timeline.",
        events=frozenset({"refund.created", "charge.refunded"}),
        when=_REFUND_EVENT,
        subject="refund",
        template=_PREFIX + "We have refunded {{ refund_amount | money(currency) }} to your "
        "card. It usually appears within 5-10 business days. Ref: {{ reference }}",
    ),
    Rule(
        name="refund_team",
        description="Finance: a refund was issued.",
        events=frozenset({"refund.created", "charge.refunded"}),
        when=_REFUND_EVENT,
        to="team:finance",
        channels=("slack", "sms", "email"),
        subject="refund",
        template="Refund issued: {{ refund_amount | money(currency) }}"
        "{% if customer_name %} to {{ customer_name }}{% endif %}. Ref: {{ reference }}",
    ),
    Rule(
        name="dispute_alert",
        description="Finance: urgent dispute alert with reason and evidence deadline.",
        events=frozenset({"charge.dispute.created"}),
        to="team:finance",
        channels=("sms", "slack", "email"),
        template="URGENT: dispute opened on {{ amount | money(currency) }} ({{ dispute_reason }})."
        " Evidence due {{ evidence_due | date }}. Dispute {{ reference }}",
        fallback="URGENT: a dispute was opened. Dispute {{ reference }}",
    ),
    Rule(
        name="dispute_customer",
        description="Customer: a dispute was opened (off by default).",
        events=frozenset({"charge.dispute.created"}),
        enabled=False,
        template=_PREFIX
        + "We received a dispute from your bank for {{ amount | money(currency) }}."
        " Reply or contact us if this was a mistake.",
    ),
    Rule(
        name="subscription_cancelled",
        description="Customer: subscription cancelled, with the effective date.",
        events=frozenset({"customer.subscription.deleted"}),
        template=_PREFIX + "Your {{ plan_name }} subscription is cancelled, effective "
        "{{ cancel_date | date }}. We are sorry to see you go.",
        fallback=_PREFIX + "Your subscription is cancelled.",
    ),
    Rule(
        name="trial_ending",
        description="Customer: the trial ends soon.",
        events=frozenset({"customer.subscription.trial_will_end"}),
        subject="trial",
        template=_PREFIX + "Your {{ plan_name }} trial ends on {{ trial_end | date }}. "
        "Your card will then be charged {{ amount | money(currency) }}.",
        fallback=_PREFIX + "Your trial ends soon.",
    ),
    Rule(
        name="renewal_reminder",
        description="Customer: the subscription renews soon.",
        events=frozenset({"invoice.upcoming"}),
        subject="renewal",
        template=_PREFIX + "Reminder: your {{ plan_name }} subscription renews on "
        "{{ renewal_date | date }} for {{ amount | money(currency) }}.",
        fallback=_PREFIX + "Reminder: your subscription renews soon.",
    ),
    Rule(
        name="plan_changed",
        description="Customer: the subscription moved to another plan.",
        events=frozenset({"customer.subscription.updated"}),
        subject="event",
        when="plan_changed",
        template=_PREFIX + "Your plan changed from {{ previous_plan_name }} to {{ plan_name }}: "
        "{{ amount | money(currency) }} per {{ interval }}.",
    ),
    Rule(
        name="welcome",
        description="Customer: welcome on the first successful payment.",
        events=frozenset(
            {"payment_intent.succeeded", "checkout.session.completed", "invoice.paid"}
        ),
        subject="payment",
        when="amount != 0",
        first_payment_only=True,
        template=_PREFIX + "Welcome{% if first_name %}, {{ first_name }}{% endif %}! "
        "Thank you for your first payment{% if plan_name %} for {{ plan_name }}{% endif %}.",
    ),
    Rule(
        name="high_value_alert",
        description="Finance: a payment above the currency's threshold.",
        events=frozenset(
            {
                "payment_intent.succeeded",
                "charge.succeeded",
                "checkout.session.completed",
                "invoice.paid",
            }
        ),
        to="team:finance",
        channels=("sms", "slack", "email"),
        subject="payment",
        when="high_value_threshold is not none and amount is number "
        "and amount >= high_value_threshold",
        template="High-value payment: {{ amount | money(currency) }}"
        "{% if customer_name %} from {{ customer_name }}{% endif %}. Ref: {{ reference }}",
    ),
)


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
    ) -> None:
        self.renderer = renderer
        self.teams = dict(teams or {})
        self.high_value = {code.lower(): value for code, value in (high_value or {}).items()}
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
        self.renderer.check(rule.template)
        if rule.fallback:
            self.renderer.check(rule.fallback)
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
            checked_now = rule._condition is not None and not rule._condition_needs_customer
            try:
                if checked_now and not self.condition_holds(rule, variables):
                    continue
            except RenderError as exc:
                # One rule's broken condition must not cost the event its other messages.
                _log.warning(
                    "condition_failed", rule=rule.name, event_id=event.id, error=exc.message
                )
                continue
            if rule.first_payment_only and not variables["customer_id"]:
                continue  # no customer, so no "first payment" of theirs to welcome
            if rule.not_for_invoices and read_object(event.object).invoice:
                continue  # named by the payment (API versions before basil)
            subject = tuple(SUBJECTS[rule.subject](event))
            planned.extend(self._recipients(rule, event, subject))
        return planned

    def _recipients(
        self, rule: Rule, event: StripeEvent, subject: tuple[str, ...]
    ) -> list[PlannedNotification]:
        common = {
            "rule": rule.name,
            "livemode": event.livemode,
            "subject_kind": rule.subject,
            "subject": subject,
        }
        if rule.team is None:
            return [PlannedNotification(recipient="customer", channel=rule.channels[0], **common)]  # type: ignore[arg-type]
        team = self.teams.get(rule.team)
        if team is None:
            return []  # the team is not configured: `payherald config check` says so
        for channel in rule.channels:  # the first channel the team can be reached on
            if addresses := team.addresses(channel):
                return [
                    PlannedNotification(recipient=rule.to, channel=channel, to=address, **common)  # type: ignore[arg-type]
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
        """The event types the rules need: the ones they handle, and ``invoice_payment.paid``
        when one tells a payment from an invoice's event (it links the invoice to its
        payment, so that the payment is told once; see ``payments``)."""
        types = set(self._by_type)
        if any(
            rule.subject == "payment" and event_type.startswith("invoice.")
            for event_type, rules in self._by_type.items()
            for rule in rules
        ):
            types.add(LINKING_EVENT)
        return sorted(types)
