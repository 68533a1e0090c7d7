"""`payherald config check`: every rule rendered against a sample event, with its SMS cost."""

from __future__ import annotations

import json
from pathlib import Path

from payherald.attribution import PAYLINK_RULE
from payherald.clock import SystemClock
from payherald.config import load_config
from payherald.digest import digest_variables, sample_digest
from payherald.exceptions import RenderError
from payherald.fraud import (
    REPORTED_RULE,
    UNANSWERED_RULE,
    UNAPPROVED_RULE,
    sample_question_event,
)
from payherald.paylinks import sample_paylink
from payherald.rules import RENEWAL
from payherald.segments import count_segments
from payherald.simulate import SIMULATED_EVENT_TYPES, build_event
from payherald.templates import TemplateRenderer
from payherald.variables import MessageContext, message_context
from payherald.webhook import parse_event

__all__ = ["render_samples"]

# Over this many segments an SMS costs more than it should; `config check` warns.
SEGMENT_WARNING = 2
_SAMPLE_CUSTOMER = {
    "id": "cus_sample",
    "name": "Jenny Rosen",
    "email": "jenny.rosen@example.com",
    "phone": "+14155550123",
    "metadata": {"tags": "vip"},
}


def render_samples(
    path: Path, *, required: bool, locale: str = "en_US"
) -> tuple[list[str], list[str]]:
    """Load ``path`` (ConfigurationError on any mistake) and render each enabled rule for a
    sample of its first event type. Returns the lines to print and the warnings."""
    config = load_config(path, required=required)
    book = config.rule_book(TemplateRenderer(locale=locale))
    context = MessageContext(
        business_name=None, locale=locale, update_card_url=None, timezone=config.timezone or "UTC"
    )
    lines: list[str] = []
    warnings: list[str] = []
    for rule in book.rules:
        if not rule.enabled:
            lines.append(f"{rule.name}: off")
            continue
        if rule.team and rule.team not in config.teams:
            warnings.append(
                f"rule {rule.name}: no team {rule.team!r} is defined in the rules "
                "file, so this rule sends nothing."
            )
        # A reminder the renewal scan alone chooses is about a subscription.
        scanned = not rule.events and rule.subject == RENEWAL
        answered = rule.name in (REPORTED_RULE, UNANSWERED_RULE, UNAPPROVED_RULE)
        events = ["customer.subscription.updated"] if scanned else sorted(rule.events)
        sample_type = next((t for t in events if t in SIMULATED_EVENT_TYPES), None)
        made_by = (
            "the renewal scan"
            if scanned
            else "the fraud check's answer"
            if answered
            else "payherald paylink send"
            if rule.name == PAYLINK_RULE
            else ", ".join(events) or "every day"
        )
        head = f"{rule.name} ({made_by} -> {rule.to}, {' > '.join(rule.channels)})"
        if rule.variables:  # the daily digest: its text message, as the team would get it
            event, sample_type = sample_digest(SystemClock().now()), "daily digest"
        elif answered:
            event, sample_type = sample_question_event(rule.name, SystemClock().now()), made_by
        elif rule.name == PAYLINK_RULE:  # made by payherald, not by a Stripe event
            event, sample_type = sample_paylink(SystemClock().now()), "payment link"
        elif sample_type is None:
            lines.append(f"{head}\n    (no sample event to render)")
            continue
        else:
            event = parse_event(
                json.dumps(build_event(sample_type, now=SystemClock().now())).encode()
            )
        variables = message_context(event, _SAMPLE_CUSTOMER, context, high_value=config.high_value)
        variables.update(digest_variables(event, "sms", locale=locale))
        try:
            text = book.renderer.render(rule.template, variables)
        except RenderError as exc:
            warnings.append(f"rule {rule.name}: cannot render a {sample_type} event: {exc.message}")
            continue
        cost = count_segments(text)
        lines.append(
            f"{head}\n    {text}\n    [{cost.encoding}, {cost.length} characters, "
            f"{cost.segments} segment{'s' if cost.segments != 1 else ''}]"
        )
        if cost.segments > SEGMENT_WARNING:
            warnings.append(
                f"rule {rule.name}: {cost.segments} SMS segments "
                f"({cost.encoding}); each costs as much as one message. Shorten "
                "the template"
                + (
                    " or drop non-GSM characters such as curly quotes"
                    if cost.encoding == "UCS-2"
                    else ""
                )
                + "."
            )
    return lines, warnings
