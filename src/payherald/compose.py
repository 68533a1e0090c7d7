"""Composing a message: who receives it, on which channel, in which words.

For a customer, the rule's channels are tried in order: SMS, WhatsApp and calls need a
phone number (``recipients.resolve_phone``), email an address; the first channel that can
reach the customer is used, and each one passed over is noted on the notification. A team
member's address was fixed when the event arrived. Conditions that need the customer, and
the first-payment check of the welcome message, are decided here, with Stripe's data.
So are quiet hours: a customer text or call that is not exempt, due outside the
recipient's local window, is deferred (``NotificationDeferred``) to when the window opens.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol
from zoneinfo import ZoneInfo

import phonenumbers
from phonenumbers import timezone as phone_timezones

from payherald.channels.base import Channel
from payherald.channels.router import ChannelRouter
from payherald.channels.slack import escape_mrkdwn
from payherald.clock import Clock
from payherald.digest import digest_variables
from payherald.exceptions import RecipientNotFound, RenderError, TransientDeliveryError
from payherald.fraud import FRAUD_RULE, FraudSettings, question_for
from payherald.lookups import StripeLookups
from payherald.quiet_hours import QuietHours
from payherald.recipients import CustomerDirectory, resolve_email, resolve_phone
from payherald.rules import Rule, RuleBook
from payherald.store import ClaimedNotification
from payherald.store.questions import Question
from payherald.stripe_objects import read_object
from payherald.subjects import payment_aliases
from payherald.variables import MessageContext, message_context
from payherald.webhook import StripeEvent, parse_event

__all__ = [
    "Composed",
    "Composer",
    "NotificationDeferred",
    "NotificationSkipped",
    "PaymentSettler",
]

_PHONE_CHANNELS = frozenset({"sms", "whatsapp", "voice"})
# Objects about a charge, that may name no customer of their own.
_CHARGE_KINDS = frozenset({"refund", "dispute", "review", "radar.early_fraud_warning"})
_OWN_CHARGE_WINDOW = timedelta(minutes=10)
# Channels whose text is markup: what a template prints from the variables is escaped.
_MARKUP_ESCAPES = {"slack": escape_mrkdwn}


class NotificationSkipped(Exception):
    """The notification is deliberately not sent; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotificationDeferred(Exception):
    """Not now: the notification is due again at ``until``; ``reason`` says why."""

    def __init__(self, until: datetime, reason: str) -> None:
        super().__init__(reason)
        self.until = until
        self.reason = reason


class PaymentSettler(Protocol):
    """Settles what a notification is about before it is composed (``payments``)."""

    def settle(
        self, notification: ClaimedNotification, event: StripeEvent, rule: Rule
    ) -> Mapping[str, Any]:
        """Return, if it may be told now, what the event alone could not tell the message
        (``decline_reason``, say); else raise NotificationSkipped or NotificationDeferred
        (or TransientDeliveryError: Stripe could not be asked)."""
        ...


@dataclass(frozen=True, slots=True)
class Composed:
    """A message ready to send: to whom, in which words, on which of the rule's channels
    (``channel``), and what carries it there (``carrier``: the console, for a test-mode
    message to someone not on the test allowlist). Decided once, here."""

    to: str
    channel: str
    carrier: Channel
    body: str
    notes: str | None = None
    # For a customer: every address of theirs that payherald knows (phone, email). An
    # opt-out of any one of them stops the message, whichever channel carries it: the
    # worker checks them in the statement that commits the send.
    addresses: tuple[str, ...] = ()
    # The question the message asks (the fraud check), opened as it is sent.
    question: Question | None = None


class Composer:
    def __init__(
        self,
        *,
        rules: RuleBook,
        router: ChannelRouter,
        customers: CustomerDirectory | None,
        lookups: StripeLookups | None,
        payments: PaymentSettler,
        context: MessageContext,
        default_region: str = "US",
        metadata_keys: tuple[str, ...] = ("phone",),
        quiet_hours: QuietHours,
        clock: Clock,
        question_wait: float = FraudSettings().wait,
    ) -> None:
        self._rules = rules
        self._router = router
        self._customers = customers
        self._lookups = lookups
        self._payments = payments
        self._context = context
        self._default_region = default_region
        self._metadata_keys = metadata_keys
        self._quiet_hours = quiet_hours
        self._clock = clock
        # How long a customer has to answer a question (``[fraud] reply_within_hours``).
        self._question_wait = question_wait

    def warm_up(self) -> None:
        """Load now what the first message would otherwise wait for (the locale's data)."""
        self._rules.renderer.warm_up()

    def delay_of(self, rule_name: str) -> int:
        """How long after it was queued a notification of ``rule_name`` falls due (a
        dunning step's ``after``), in seconds."""
        rule = self._rules.get(rule_name)
        return rule.after if rule is not None else 0

    def compose(self, notification: ClaimedNotification) -> Composed:
        """Raises NotificationSkipped, NotificationDeferred, RecipientNotFound, RenderError,
        or TransientDeliveryError (Stripe could not be asked). The suppression list is not
        read here: the worker checks ``Composed.addresses`` against it in the statement
        that commits the send, the one check that an opt-out cannot slip past."""
        event = parse_event(notification.event_payload.encode())
        rule = self._rules.get(notification.rule)
        if rule is None:
            raise RenderError(f"No rule named {notification.rule!r} is configured any more.")
        learnt = self._payments.settle(notification, event, rule)
        try:
            charge = self._followed_charge(event)
        except TransientDeliveryError:
            if notification.recipient == "customer":
                raise  # without the charge there is no one to send to
            charge = None  # a team alert goes out without the customer's name
        customer = self._customer(event, charge)
        notes: list[str] = []
        addresses: tuple[str, ...] = ()
        if notification.recipient == "customer":
            contacts = self._contacts(event, customer, charge)
            addresses = tuple(found for found in contacts.values() if isinstance(found, str))
            to, channel = self._reach_customer(
                rule,
                contacts,
                notification.livemode,
                notes,
                dict(notification.refusals),
            )
            carrier = self._router.route(channel, livemode=notification.livemode, to=to)
            zone = _phone_timezone(to) if channel in _PHONE_CHANNELS else None
            if (
                channel in _PHONE_CHANNELS
                and not rule.quiet_hours_exempt
                and not self._router.prints_only(carrier)
            ):
                self._check_quiet_hours(zone or self._context.timezone)
        else:
            assert notification.to is not None
            to, channel = notification.to, notification.channel
            team = self._rules.teams.get(rule.team or "")
            if team is None or to not in team.addresses(channel):
                raise NotificationSkipped(
                    f"{to} is no longer on team {rule.team!r} in the rules file."
                )
            carrier = self._router.route(channel, livemode=notification.livemode, to=to)
            zone = team.timezone
        variables = message_context(
            event,
            customer,
            self._context,
            high_value=self._rules.high_value,
            timezone=zone,
            metadata_links=rule.allow_metadata_links,
            charge=charge,
        )
        variables.update(learnt)
        if rule.variables:
            variables.update(digest_variables(event, channel, locale=self._context.locale))
        if not variables["plan_name"] and "plan_name" in self._uses(rule):
            variables["plan_name"] = self._plan_name(event)
        if rule._condition_needs_customer:
            try:
                holds = self._rules.condition_holds(rule, variables)
            except RenderError as exc:
                raise NotificationSkipped(f"The rule's condition failed: {exc.message}") from exc
            if not holds:
                raise NotificationSkipped(f"The rule's condition is not met: {rule.when}")
        if rule.first_payment_only:
            self._check_first_payment(event, variables["customer_id"])
        if "portal_url" in self._uses(rule) and variables["customer_id"] and self._lookups:
            variables["portal_url"] = self._portal_url(notification, variables, notes)
        body = self._render(rule, variables, notes, channel)
        question = None
        # A question is open only where it was asked: not for a test-mode text printed by
        # the console while a provider really sends (the number's owner never saw it), but
        # on a machine with no provider, where only `simulate reply` can answer.
        asked = not self._router.prints_only(carrier) or self._router.console_only
        if rule.name == FRAUD_RULE and notification.recipient == "customer" and asked:
            question = question_for(
                notification_id=notification.id,
                event=event,
                phone=to,
                variables=variables,
                charge=charge,
                wait=self._question_wait,
            )
        return Composed(
            to=to,
            channel=channel,
            carrier=carrier,
            body=body,
            notes="; ".join(notes) or None,
            addresses=addresses,
            question=question,
        )

    def _portal_url(
        self, notification: ClaimedNotification, variables: Mapping[str, Any], notes: list[str]
    ) -> str:
        """A billing portal session's link for the message's customer, one per message
        whatever retries it (the idempotency key is the message's own); the invoice's page
        (``fix_url``) when Stripe makes none."""
        assert self._lookups is not None
        customer = str(variables["customer_id"])
        cause = hashlib.sha256(f"{notification.key}|{customer}".encode()).hexdigest()[:40]
        url = self._lookups.portal_url(
            customer, key=f"payherald-portal-{cause}", return_url=self._context.portal_return_url
        )
        if url is None:
            notes.append("portal_url: Stripe made no billing portal session; fix_url instead")
            return str(variables["fix_url"])
        return url

    def _followed_charge(self, event: StripeEvent) -> Mapping[str, Any] | None:
        """The charge a refund, dispute or review is about, when the object names no
        customer of its own (today's refunds do not): it names the customer and carries
        the billing details."""
        obj = read_object(event.object)
        if obj.kind not in _CHARGE_KINDS or obj.customer is not None or obj.charge is None:
            return None
        expanded = event.object.get("charge")
        if isinstance(expanded, Mapping):
            return expanded  # expanded in the payload (simulate's, with no Stripe key)
        return self._lookups.retrieve("charge", obj.charge) if self._lookups else None

    def _customer(
        self, event: StripeEvent, charge: Mapping[str, Any] | None
    ) -> Mapping[str, Any] | None:
        customer = event.object.get("customer") or (charge or {}).get("customer")
        if isinstance(customer, Mapping):
            return customer  # expanded in the payload
        if isinstance(customer, str) and customer and self._customers is not None:
            return self._customers.get(customer)
        return None

    def _uses(self, rule: Rule) -> frozenset[str]:
        """The variables ``rule``'s texts and condition name."""
        renderer = self._rules.renderer
        texts = [rule.template, *([rule.fallback] if rule.fallback else [])]
        names = frozenset().union(*(renderer.variables(text) for text in texts))
        return names | ({"plan_name"} if rule.when and "plan_name" in rule.when else set())

    def _plan_name(self, event: StripeEvent) -> str:
        """The name of the first line's price, read from Stripe: today's invoice lines name
        their price by id only."""
        lines = read_object(event.object).lines
        if self._lookups is None or not lines or lines[0].price is None:
            return ""
        price = self._lookups.retrieve("price", lines[0].price) or {}
        product = price.get("product")
        name = price.get("nickname") or (
            product.get("name") if isinstance(product, Mapping) else ""
        )
        return str(name or "")

    def _reach_customer(
        self,
        rule: Rule,
        contacts: Mapping[str, str | RecipientNotFound],
        livemode: bool,
        notes: list[str],
        refused: Mapping[str, str] | None = None,
    ) -> tuple[str, str]:
        """The address and channel of the rule's first channel that can reach the
        customer, from their ``contacts`` (``_contacts``)."""
        for channel in rule.channels:
            if refused and channel in refused:
                notes.append(f"{channel}: refused the message ({refused[channel]})")
                continue
            if not self._router.available(channel, livemode=livemode):
                notes.append(f"{channel}: not configured")
                continue
            found = contacts.get("phone" if channel in _PHONE_CHANNELS else channel)
            if found is None:
                notes.append(f"{channel}: cannot reach a customer")
            elif isinstance(found, RecipientNotFound):
                notes.append(f"{channel}: {found.message}")
            else:
                return found, channel
        raise RecipientNotFound(
            "No channel of the rule could reach the customer: " + "; ".join(notes)
        )

    def _check_quiet_hours(self, zone: str) -> None:
        opening = self._quiet_hours.next_opening(self._clock.now(), zone)
        if opening is not None:
            local = opening.astimezone(ZoneInfo(zone))
            raise NotificationDeferred(
                opening,
                f"quiet hours ({self._quiet_hours.describe()} in {zone}): "
                f"deferred to {local:%Y-%m-%d %H:%M %Z}",
            )

    def _contacts(
        self,
        event: StripeEvent,
        customer: Mapping[str, Any] | None,
        charge: Mapping[str, Any] | None,
    ) -> dict[str, str | RecipientNotFound]:
        """The customer's phone number (``phone``) and email address (``email``), or why
        each cannot be found."""
        contacts: dict[str, str | RecipientNotFound] = {}
        try:
            contacts["phone"] = resolve_phone(
                event.object,
                customer,
                default_region=self._default_region,
                metadata_keys=self._metadata_keys,
                charge=charge,
            ).number
        except RecipientNotFound as exc:
            contacts["phone"] = exc
        try:
            contacts["email"] = resolve_email(event.object, customer, charge)
        except RecipientNotFound as exc:
            contacts["email"] = exc
        return contacts

    def _check_first_payment(self, event: StripeEvent, customer_id: str) -> None:
        if not customer_id:
            raise NotificationSkipped(
                "The payment has no Stripe customer, so it cannot be "
                "told whether it is their first."
            )
        if self._customers is None:
            raise NotificationSkipped(
                "Set STRIPE_SECRET_KEY so that payherald can tell a "
                "customer's first payment from Stripe's records."
            )
        payment = set(payment_aliases(event))
        before = event.created
        if before is not None and not any(alias.startswith("ch_") for alias in payment):
            # From API version 2025-03-31 an invoice's events do not name its charge, so this
            # payment's own charge cannot be told apart; charges just before it are taken
            # to be it.
            before -= _OWN_CHARGE_WINDOW
        if self._customers.has_earlier_payment(customer_id, payment=payment, before=before):
            raise NotificationSkipped("Not the customer's first successful payment.")

    def _render(
        self, rule: Rule, variables: Mapping[str, Any], notes: list[str], channel: str
    ) -> str:
        escape = _MARKUP_ESCAPES.get(channel)
        try:
            return self._rules.renderer.render(rule.template, variables, escape=escape)
        except RenderError as exc:
            if not rule.fallback:
                raise
            notes.append(f"fallback text used: {exc.message}")
            return self._rules.renderer.render(rule.fallback, variables, escape=escape)


def _phone_timezone(number: str) -> str | None:
    """The time zone of a phone number, when the number has only one."""
    try:
        zones = phone_timezones.time_zones_for_number(phonenumbers.parse(number, None))
    except phonenumbers.NumberParseException:
        return None
    return zones[0] if len(zones) == 1 and zones[0] != "Etc/Unknown" else None
