"""What a message says: the variables a template sees, and the sandbox that renders it.

Templates and conditions are Jinja2 in a bounded sandbox (``sandbox``) with
``StrictUndefined``: the sandbox keeps them away from Python internals and bounds their time
and size, and a misspelt variable is an error, never an empty gap in a customer's message.
What a template prints from the variables is data: cleaned, cut, and escaped for the
channel's markup (``sandbox``). The variables are flat and the same for every
event type (``amount``, ``currency``, ``plan_name``...); a field an event does not have is
``None`` or empty, so that ``{% if ... %}`` can test for it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_datetime
from jinja2 import ChainableUndefined, StrictUndefined, TemplateError, meta, pass_context
from jinja2.runtime import Context

from payherald.exceptions import RenderError
from payherald.money import format_money
from payherald.sandbox import BoundedSandbox
from payherald.stripe_objects import InvoiceLine, StripeObject, as_int, as_mapping, read_object
from payherald.webhook import StripeEvent

__all__ = [
    "CONDITION_VARIABLES",
    "CUSTOMER_VARIABLES",
    "MESSAGE_VARIABLES",
    "SENDING_VARIABLES",
    "MessageContext",
    "TemplateRenderer",
    "condition_context",
    "decline_reason",
    "message_context",
    "payment_error",
]

# Stripe decline codes in words a customer understands. Fraud-related codes are
# deliberately vague: Stripe advises not to tell a possible fraudster why.
_DECLINE_REASONS = {
    "insufficient_funds": "the card has insufficient funds",
    "expired_card": "the card has expired",
    "incorrect_cvc": "the security code (CVC) was incorrect",
    "invalid_cvc": "the security code (CVC) was incorrect",
    "incorrect_number": "the card number was incorrect",
    "invalid_number": "the card number was incorrect",
    "invalid_expiry_month": "the expiry date was incorrect",
    "invalid_expiry_year": "the expiry date was incorrect",
    "incorrect_zip": "the postal code did not match the card",
    "card_velocity_exceeded": "the card's spending limit was reached",
    "withdrawal_count_limit_exceeded": "the card's spending limit was reached",
    "authentication_required": "the bank asked you to confirm the payment",
    "processing_error": "an error occurred while processing the card",
    "card_not_supported": "the card does not support this kind of payment",
    "currency_not_supported": "the card does not support this currency",
}
_GENERIC_DECLINE = "the card was declined by the bank"
_DISPUTE_REASONS = {
    "fraudulent": "reported as fraud",
    "product_not_received": "product not received",
    "product_unacceptable": "product unacceptable",
    "duplicate": "duplicate charge",
    "subscription_canceled": "subscription cancelled",
    "unrecognized": "charge not recognised",
    "credit_not_processed": "credit not processed",
}


def decline_reason(error: Mapping[str, Any] | None) -> str:
    """Plain words for a ``last_payment_error`` (or a charge's outcome and failure code)."""
    if not error:
        return _GENERIC_DECLINE
    for field in ("decline_code", "reason", "code", "failure_code"):
        code = error.get(field)
        if isinstance(code, str) and code in _DECLINE_REASONS:
            return _DECLINE_REASONS[code]
    return _GENERIC_DECLINE


def payment_error(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    """Why a payment intent (``last_payment_error``) or a charge (its outcome and failure
    code) was declined, for ``decline_reason``; empty when the object does not say."""
    error = obj.get("last_payment_error")
    if isinstance(error, Mapping):
        return error
    found = {
        "reason": as_mapping(obj.get("outcome")).get("reason"),
        "failure_code": obj.get("failure_code"),
    }
    return {key: value for key, value in found.items() if value}


def _refund_amount(event: StripeEvent, obj: StripeObject) -> Any:
    """This refund's amount: ``charge.refunded`` carries the running total, so the refund
    is what it grew by."""
    if obj.kind != "charge":
        return obj.amount
    previous = as_mapping(as_mapping(event.payload.get("data")).get("previous_attributes"))
    total, before = obj.amount_refunded, previous.get("amount_refunded")
    if isinstance(total, int) and isinstance(before, int):
        return total - before
    return total


def _plan_name(lines: tuple[InvoiceLine, ...]) -> str:
    return lines[0].name if lines else ""


def condition_context(
    event: StripeEvent, *, high_value: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The variables known from the event alone: what conditions see on arrival."""
    raw = event.object
    obj = read_object(raw)
    metadata = obj.metadata
    previous = read_object(
        {"object": obj.kind}
        | dict(as_mapping(as_mapping(event.payload.get("data")).get("previous_attributes")))
    )
    first = obj.lines[0] if obj.lines else None
    currency = obj.currency or "usd"
    # A plan change shows in previous_attributes as the items (or plan) before it.
    previous_prices = {line.price for line in previous.lines if line.price}
    return {
        "event_type": event.type,
        "api_version": str(event.api_version or ""),
        "livemode": event.livemode,
        "object": raw,
        "metadata": dict(metadata),
        "amount": obj.amount,
        "currency": currency,
        "refund_amount": _refund_amount(event, obj),
        "reference": str(obj.number or obj.id or event.id),
        "description": str(raw.get("description") or ""),
        "order": str(metadata.get("order_id") or metadata.get("order") or ""),
        "invoice_number": str(obj.number or ""),
        "customer_id": obj.customer or "",
        "products": [line.product for line in obj.lines if line.product],
        "prices": [line.price for line in obj.lines if line.price],
        "plan": str((first.plan or first.price or "") if first else ""),
        "plan_name": _plan_name(obj.lines),
        "previous_plan_name": _plan_name(previous.lines),
        "plan_changed": bool(previous_prices)
        and previous_prices != {line.price for line in obj.lines if line.price},
        "interval": str((first.interval if first else None) or "month"),
        "decline_reason": decline_reason(payment_error(raw)),
        "dispute_reason": _DISPUTE_REASONS.get(str(raw.get("reason")), "no reason given"),
        "evidence_due": as_int(as_mapping(raw.get("evidence_details")).get("due_by")),
        "cancel_date": as_int(
            raw.get("canceled_at") or raw.get("ended_at") or raw.get("cancel_at")
        ),
        "trial_end": as_int(raw.get("trial_end")),
        "renewal_date": obj.period_end,
        "hosted_invoice_url": str(obj.hosted_invoice_url or ""),
        "high_value_threshold": (high_value or {}).get(currency),
    }


# Variables that need the customer, looked up when the message is sent.
CUSTOMER_VARIABLES = frozenset(
    {"customer", "tags", "customer_name", "first_name", "customer_email"}
)
# Variables whose value may need Stripe, so that a condition naming them is checked when
# the message is sent: the customer's, and the plan's name (today's invoice lines name
# their price by id only).
SENDING_VARIABLES = CUSTOMER_VARIABLES | {"plan_name"}


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a template may use beyond the event: the operator's settings."""

    business_name: str | None
    locale: str
    update_card_url: str | None
    timezone: str = "UTC"


def message_context(
    event: StripeEvent,
    customer: Mapping[str, Any] | None,
    context: MessageContext,
    *,
    high_value: Mapping[str, int] | None = None,
    timezone: str | None = None,
    metadata_links: bool = False,
) -> dict[str, Any]:
    """Every variable a template sees for ``event`` and its customer (when known).

    ``fix_url`` is the invoice's page, else the operator's ``update_card_url``; an
    object's ``metadata.update_card_url`` comes first only with ``metadata_links`` (the
    rule's ``allow_metadata_links``): whoever can write metadata must not choose where the
    operator's messages send customers."""
    variables = condition_context(event, high_value=high_value)
    obj = event.object
    customer = customer or {}
    details = as_mapping(obj.get("customer_details"))
    name = (
        customer.get("name")
        or details.get("name")
        or as_mapping(obj.get("shipping")).get("name")
        or as_mapping(obj.get("billing_details")).get("name")
        or obj.get("customer_name")
        or ""
    )
    tags = as_mapping(customer.get("metadata")).get("tags") or ""
    variables.update(
        customer=dict(customer),
        tags=[tag.strip() for tag in str(tags).split(",") if tag.strip()],
        customer_name=str(name),
        first_name=str(name).split(" ")[0] if name else "",
        customer_email=str(
            customer.get("email")
            or details.get("email")
            or obj.get("receipt_email")
            or obj.get("customer_email")
            or ""
        ),
        business=context.business_name or "",
        fix_url=str(
            (variables["metadata"].get("update_card_url") if metadata_links else None)
            or variables["hosted_invoice_url"]
            or context.update_card_url
            or ""
        ),
        timezone=timezone or context.timezone,
    )
    return variables


def _known_variables() -> frozenset[str]:
    sample = StripeEvent(
        id="evt", type="x", livemode=False, created=None, api_version=None, object={}, payload={}
    )
    context = MessageContext(business_name=None, locale="en_US", update_card_url=None)
    return frozenset(message_context(sample, None, context))


MESSAGE_VARIABLES = _known_variables()
# Conditions see the event's variables, and the customer's (decided when sending).
CONDITION_VARIABLES = (
    frozenset(
        condition_context(
            StripeEvent(
                id="evt",
                type="x",
                livemode=False,
                created=None,
                api_version=None,
                object={},
                payload={},
            )
        )
    )
    | CUSTOMER_VARIABLES
)


# The filters templates have beside Jinja's own.
_PAYHERALD_FILTERS = ("money", "date", "datetime")


def _not_compiled(what: str, exc: TemplateError, *, filters: tuple[str, ...] = ()) -> RenderError:
    """Jinja's complaint about a template or condition as one sentence: its message,
    without the source location that ``str()`` appends on a line of its own."""
    message = " ".join((exc.message or type(exc).__name__).split()).rstrip(".")
    if filters and message.startswith("No filter named"):
        message += f"; beside Jinja's own filters there are {', '.join(filters)}"
    return RenderError(f"The {what} does not compile: {message}.")


class TemplateRenderer:
    """Compiles and renders templates and conditions in one sandbox."""

    def __init__(self, *, locale: str = "en_US") -> None:
        self._locale = locale
        self._env = BoundedSandbox(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self._env.add_filters(
            dict(zip(_PAYHERALD_FILTERS, (self._money, self._date, self._datetime), strict=True))
        )
        # Conditions test for fields that an event may not have (`metadata.tier == 'gold'`):
        # there, a missing field is simply undefined, and false. Unknown top-level names
        # are still refused when the condition is compiled.
        self._conditions = BoundedSandbox(undefined=ChainableUndefined)
        # The rules' templates are few and rendered for every message: compile each once.
        self._compiled = functools.lru_cache(maxsize=512)(self._env.from_string)
        # The composer asks which variables a rule's texts use, for every message.
        self._variables = functools.lru_cache(maxsize=512)(self._parse_variables)

    def _money(self, amount: Any, currency: Any) -> str:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise RenderError(
                f"The event has no amount in Stripe's integer form (got {amount!r}), so the "
                "message would state a wrong amount."
            )
        return format_money(amount, str(currency), self._locale)

    def _when(self, context: Context, value: Any) -> datetime:
        if as_int(value) is None:
            raise RenderError(f"Expected a Unix timestamp for a date, got {value!r}.")
        try:
            zone = ZoneInfo(str(context.get("timezone") or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return datetime.fromtimestamp(value, UTC).astimezone(zone)

    @pass_context
    def _date(self, context: Context, value: Any) -> str:
        """A date in the recipient's time zone: ``Nov 29, 2026``."""
        return str(format_date(self._when(context, value), format="medium", locale=self._locale))

    @pass_context
    def _datetime(self, context: Context, value: Any) -> str:
        """A date and time in the recipient's time zone, with the zone."""
        when = self._when(context, value)
        return (
            str(format_datetime(when, format="medium", tzinfo=when.tzinfo, locale=self._locale))
            + f" {when.tzname()}"
        )

    def variables(self, template: str) -> frozenset[str]:
        """The variables ``template`` uses (it must compile)."""
        return self._variables(template)

    def _parse_variables(self, template: str) -> frozenset[str]:
        try:
            return frozenset(meta.find_undeclared_variables(self._env.parse(template)))
        except TemplateError as exc:
            raise _not_compiled("template", exc, filters=_PAYHERALD_FILTERS) from exc

    def check(self, template: str) -> None:
        """Raise RenderError if ``template`` does not compile or uses an unknown variable;
        a template that passes is compiled now, not in the first message."""
        unknown = self.variables(template) - MESSAGE_VARIABLES
        if unknown:
            raise RenderError(
                f"The template uses {', '.join(sorted(unknown))}, which payherald does not "
                f"provide; it can use {', '.join(sorted(MESSAGE_VARIABLES - {'object'}))}."
            )
        self._compiled(template)

    def warm_up(self) -> None:
        """Load the locale's data now: Babel reads and merges it on first use, about 0.1 s
        that the first messages after a start would otherwise wait."""
        format_money(100, "usd", self._locale)
        format_date(datetime.now(UTC), format="medium", locale=self._locale)

    def compile_condition(self, expression: str) -> tuple[Callable[..., Any], frozenset[str]]:
        """A condition as a callable of the variables, and the names it uses."""
        try:
            names = frozenset(
                meta.find_undeclared_variables(self._env.parse("{{ (" + expression + ") }}"))
            )
            expression_of = self._conditions.compile_expression(expression)
        except TemplateError as exc:
            raise _not_compiled("condition", exc) from exc

        def compiled(**variables: Any) -> Any:
            return self._conditions.bounded(expression_of, **variables)

        unknown = names - CONDITION_VARIABLES
        if unknown:
            raise RenderError(
                f"The condition uses {', '.join(sorted(unknown))}, which payherald does not "
                "provide."
            )
        return compiled, names

    def render(
        self,
        template: str,
        variables: Mapping[str, Any],
        *,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        """Render ``template``; runs of white space collapse, so that a template can be
        written over several lines and still yield one SMS. ``escape`` is the channel's
        markup escape (Slack's), applied to what the template prints from the variables.
        Raises RenderError, also for a template that overruns the sandbox's bounds."""
        compiled = self._compiled(template)
        try:
            text = self._env.render(compiled, variables, escape=escape)
        except RenderError:
            raise
        except TemplateError as exc:
            raise RenderError(f"The message could not be rendered: {exc}") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
            # Operator text went wrong in plain Python terms: 1/0, range(10**9), an int
            # of a word. The template is at fault, never the event.
            raise RenderError(f"The message could not be rendered: {exc}") from exc
        return " ".join(text.split())
