"""Renewal reminders: a scheduled scan of the account's subscriptions, told like events.

With ``STRIPE_SECRET_KEY``, a recurring job (``RENEWAL_SCAN_JOB``, hourly) lists the
subscriptions whose current period ends within the furthest reminder (``[renewals] days``,
7, 3 and 1 by default), page by page. Each one that will renew, and whose renewal is within
a reminder's window (``subjects.renewal_offset``), is told by one rule:

    its default card expires before the renewal   renewal_card_expiring
    it is trialing                                trial_ending
    otherwise                                     renewal_reminder

(a variant that is off gives way to the next). The reminder is recorded as an event of
payherald's own, ``RENEWAL_DUE``, with the subscription as its object and an id made of the
subscription, the renewal and the reminder (``evt_payherald_renewal_sub_..._1767225600_7d``),
so that ``events list`` shows what the scan found, a second scan in the same window stores
nothing, and the notification goes the way of every other: rules, consent, quiet hours,
test mode, the send job. Stripe's ``invoice.upcoming`` and
``customer.subscription.trial_will_end`` plan the same rules (subject ``renewal``): every
rule of that subject shares one key per subscription, renewal and reminder, so that an
event and the scan tell each reminder once, whichever comes first.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import stripe
import structlog

from payherald.api_versions import NEWEST_SUPPORTED
from payherald.clock import Clock
from payherald.exceptions import MalformedEvent
from payherald.jobs import Job, JobRunner, RunAgain
from payherald.rules import RuleBook
from payherald.store import PlannedEvent, Store
from payherald.stripe_objects import as_int, as_mapping, default_card
from payherald.subjects import (
    DEFAULT_RENEWAL_DAYS,
    RENEWAL_EARLY_SECONDS,
    renewal_offset,
    renewal_period_end,
)
from payherald.webhook import StripeEvent, parse_event

__all__ = [
    "RENEWAL_DUE",
    "RENEWAL_SCAN_JOB",
    "RenewalScanner",
    "RenewalSettings",
    "ScanSummary",
    "read_renewals",
    "renewal_event",
    "will_renew",
]

_log = structlog.get_logger("payherald.renewals")

RENEWAL_SCAN_JOB = "renewals.scan"
# The type of the events that record what the scan found (not a Stripe event type).
RENEWAL_DUE = "payherald.renewal_due"
_DAY = 86400
_PAGE = 100
# The customer and both default payment methods, so that a page needs no other call.
_EXPAND = [
    "data.customer",
    "data.default_payment_method",
    "data.customer.invoice_settings.default_payment_method",
]
_RENEWING = frozenset({"active", "trialing"})
_CARD_RULE, _TRIAL_RULE, _PLAIN_RULE = "renewal_card_expiring", "trial_ending", "renewal_reminder"
# How long a scan may take before another worker may start it again.
SCAN_LEASE = 900.0
_KEYS = {"days", "enabled"}


@dataclass(frozen=True)
class RenewalSettings:
    """``[renewals]`` in the rules file."""

    days: tuple[int, ...] = DEFAULT_RENEWAL_DAYS
    enabled: bool = True


# What a reminder was sent is known from its event, kept at least 30 days (retention).
_MOST_DAYS = 30


def read_renewals(
    value: Any, problem: Callable[[tuple[str, ...], str | None, str], None]
) -> RenewalSettings:
    """``[renewals]`` as read; each mistake is told to ``problem(where, key, sentence)``
    (which places it on its line), and its setting left at the default."""
    if not isinstance(value, dict):
        problem((), "renewals", "must be a table.")
        return RenewalSettings()
    where = ("renewals",)
    for key in sorted(value.keys() - _KEYS):
        problem(where, key, "unknown setting; renewals can have " + ", ".join(sorted(_KEYS)) + ".")
    settings = RenewalSettings()
    days = value.get("days", list(settings.days))
    if not (
        isinstance(days, list)
        and days
        and all(
            isinstance(day, int) and not isinstance(day, bool) and 0 < day <= _MOST_DAYS
            for day in days
        )
    ):
        problem(
            where,
            "days",
            f"must be a list of whole days before the renewal, each from 1 to {_MOST_DAYS}, "
            "like [7, 3, 1] (a reminder is known to be sent for as long as the events are "
            "kept, 30 days at least).",
        )
    else:
        settings = RenewalSettings(days=tuple(sorted(set(days), reverse=True)))
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        problem(where, "enabled", "must be true or false.")
        enabled = True
    return RenewalSettings(days=settings.days, enabled=enabled)


def will_renew(subscription: Mapping[str, Any], period_end: int | None) -> bool:
    """Whether ``subscription`` is to be charged again at ``period_end``: active or
    trialing, not cancelled at the period's end or before, not paused."""
    cancel_at = as_int(subscription.get("cancel_at"))
    return (
        period_end is not None
        and subscription.get("status") in _RENEWING
        and not subscription.get("cancel_at_period_end")
        and not (cancel_at is not None and cancel_at <= period_end)
        and not subscription.get("pause_collection")
        and not subscription.get("ended_at")
    )


def renewal_event(
    subscription: Mapping[str, Any], period_end: int, offset: int, at: int
) -> StripeEvent:
    """The event that records the reminder ``offset`` days before ``subscription``'s
    renewal at ``period_end``, found at ``at``. Raises MalformedEvent for a subscription
    whose id cannot be part of an event id."""
    payload = {
        "id": f"evt_payherald_renewal_{subscription.get('id')}_{period_end}_{offset}d",
        "object": "event",
        "type": RENEWAL_DUE,
        "api_version": NEWEST_SUPPORTED,  # the SDK's, which the list was asked in
        "created": at,
        "livemode": bool(subscription.get("livemode")),
        "data": {"object": dict(subscription)},
    }
    return parse_event(json.dumps(payload, separators=(",", ":")).encode())


@dataclass
class ScanSummary:
    pages: int = 0
    listed: int = 0  # subscriptions Stripe listed
    due: int = 0  # of them, renewing within a reminder's window
    new: int = 0  # reminders recorded for the first time
    queued: int = 0  # notifications queued by them
    reminders: list[str] = field(default_factory=list)  # the new reminders' event ids


class RenewalScanner:
    """Lists the subscriptions renewing soon and records a reminder for each one due."""

    def __init__(
        self,
        *,
        client: stripe.StripeClient,
        store: Store,
        rules: RuleBook,
        clock: Clock,
        interval: float = 3600.0,
    ) -> None:
        self._client = client
        self._store = store
        self._rules = rules
        self._clock = clock
        self.interval = interval

    def register(self, runner: JobRunner) -> None:
        """Run ``RENEWAL_SCAN_JOB`` on ``runner``: recurring, so retried for ever."""
        runner.register(
            RENEWAL_SCAN_JOB,
            self.run_job,
            lease=SCAN_LEASE,
            max_attempts=None,
            retry_base=min(60.0, self.interval),
            retry_cap=self.interval,
        )

    def run_job(self, job: Job) -> RunAgain:
        """The ``RENEWAL_SCAN_JOB`` handler: scan once, and again ``interval`` seconds
        from now. A failure is logged and raised, for the job runner to retry; what was
        recorded before it stays, and the next scan skips it."""
        try:
            self.scan()
        except stripe.StripeError as exc:
            _log.error("renewal_scan_failed", error=exc.user_message or str(exc))
            raise
        except Exception:
            _log.exception("renewal_scan_failed")  # a bug of ours: the job keeps the traceback
            raise
        return RunAgain(self._clock.now() + timedelta(seconds=self.interval))

    def scan(self) -> ScanSummary:
        """Record the reminder due now for every subscription renewing soon. Raises
        stripe.StripeError when Stripe refuses or stays unreachable (the SDK retries)."""
        now = int(self._clock.now().timestamp())
        days = self._rules.renewal_days
        horizon = now + max(days) * _DAY + RENEWAL_EARLY_SECONDS
        params: dict[str, Any] = {
            "limit": _PAGE,
            "current_period_end": {"gt": now, "lte": horizon},
            "expand": _EXPAND,
        }
        summary = ScanSummary()
        cursor: str | None = None
        while True:
            page = self._client.v1.subscriptions.list(
                params={**params, **({"starting_after": cursor} if cursor else {})}  # type: ignore[arg-type]
            )
            summary.pages += 1
            # Stripe's JSON as sent: the SDK's objects turn decimal strings into Decimals.
            listed = _sent(page)["data"]
            for subscription in listed:
                summary.listed += 1
                self._consider(subscription, now, summary)
            if not page.has_more or not listed:
                break
            cursor = str(listed[-1]["id"])
        _log.info(
            "renewals_scanned",
            pages=summary.pages,
            listed=summary.listed,
            due=summary.due,
            new=summary.new,
            queued=summary.queued,
        )
        return summary

    def _consider(self, subscription: dict[str, Any], now: int, summary: ScanSummary) -> None:
        end = renewal_period_end(subscription)
        if not will_renew(subscription, end):
            return
        assert end is not None
        offset = renewal_offset(end, now, self._rules.renewal_days)
        if offset is None:
            return
        summary.due += 1
        try:
            event = renewal_event(subscription, end, offset, now)
        except MalformedEvent as exc:
            _log.warning(
                "renewal_unrecordable", subscription=subscription.get("id"), error=str(exc)
            )
            return
        if self._store.has_event(event.id):
            return  # told in this window already: nothing to read again
        subscription = self._with_card(subscription)
        event = renewal_event(subscription, end, offset, now)
        rule = self._rule_for(subscription, end)
        planned = self._rules.plan_rule(rule, event)
        if not planned:
            return  # the rule is off, or its condition does not hold
        result = self._store.record(PlannedEvent(event, tuple(planned)))
        if result.duplicate:
            return
        summary.new += 1
        summary.queued += result.queued
        summary.reminders.append(event.id)
        _log.info(
            "renewal_reminder_recorded",
            event_id=event.id,
            subscription=subscription.get("id"),
            days_before=offset,
            rule=rule,
            queued=result.queued,
        )

    def _rule_for(self, subscription: Mapping[str, Any], period_end: int) -> str:
        card = default_card(subscription)
        variant = self._rules.get(_CARD_RULE)
        if card is not None and card.expires_at <= period_end and variant and variant.enabled:
            return _CARD_RULE
        return _TRIAL_RULE if subscription.get("status") == "trialing" else _PLAIN_RULE

    def _with_card(self, subscription: dict[str, Any]) -> dict[str, Any]:
        """``subscription`` with its default payment method read from Stripe where the list
        gave it by id only (its own, else its customer's)."""
        own = subscription.get("default_payment_method")
        if isinstance(own, str):
            return {**subscription, "default_payment_method": self._payment_method(own)}
        customer = as_mapping(subscription.get("customer"))
        settings = as_mapping(customer.get("invoice_settings"))
        theirs = settings.get("default_payment_method")
        if own is None and isinstance(theirs, str):
            settings = {**settings, "default_payment_method": self._payment_method(theirs)}
            return {**subscription, "customer": {**customer, "invoice_settings": settings}}
        return subscription

    def _payment_method(self, payment_method: str) -> dict[str, Any] | str:
        try:
            return _sent(self._client.v1.payment_methods.retrieve(payment_method))
        except stripe.InvalidRequestError:
            return payment_method  # gone since: no card to warn about


def _sent(answer: Any) -> dict[str, Any]:
    """The JSON object Stripe answered with, as it sent it."""
    body: dict[str, Any] = json.loads(answer.last_response.body)
    return body
