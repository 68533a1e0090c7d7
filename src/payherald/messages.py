"""Message templates: Jinja2 in a sandbox with strict undefined, and what they can see.

A template sees a flat context built from the event (``amount``, ``currency``,
``reference``, ``customer_name``...) and the filter ``money``. The sandbox keeps a
template from reaching Python internals; strict undefined turns a misspelt variable into
a RenderError instead of an empty gap in a customer's message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from payherald.exceptions import RenderError
from payherald.money import format_money
from payherald.webhook import StripeEvent

__all__ = ["MessageContext", "TemplateRenderer", "decline_reason", "message_context"]

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


def decline_reason(error: Mapping[str, Any] | None) -> str:
    """Plain words for a PaymentIntent's ``last_payment_error`` (or a charge's outcome)."""
    if not error:
        return _GENERIC_DECLINE
    for field in ("decline_code", "code"):
        code = error.get(field)
        if isinstance(code, str) and code in _DECLINE_REASONS:
            return _DECLINE_REASONS[code]
    return _GENERIC_DECLINE


@dataclass(frozen=True, slots=True)
class MessageContext:
    """What a template may use, beyond the event itself."""

    business_name: str | None
    locale: str
    update_card_url: str | None


def message_context(
    event: StripeEvent, customer: Mapping[str, Any] | None, context: MessageContext
) -> dict[str, Any]:
    """The variables a template sees for ``event`` (and its customer, when known)."""
    obj = event.object
    metadata: Mapping[str, Any] = _mapping(obj.get("metadata"))
    shipping: Mapping[str, Any] = _mapping(obj.get("shipping"))
    customer = customer or {}
    amount = obj.get("amount_received") or obj.get("amount")
    customer_name = customer.get("name") or shipping.get("name") or ""
    fix_url = (
        metadata.get("update_card_url")
        or obj.get("hosted_invoice_url")
        or context.update_card_url
        or ""
    )
    return {
        "event_type": event.type,
        "livemode": event.livemode,
        # Not an integer: left as it is, so that `money` refuses it rather than print $0.00.
        "amount": amount,
        "currency": str(obj.get("currency") or "usd"),
        "reference": str(obj.get("id") or event.id),
        "description": str(obj.get("description") or ""),
        "order": str(metadata.get("order_id") or metadata.get("order") or ""),
        "customer_name": str(customer_name),
        "first_name": str(customer_name).split(" ")[0] if customer_name else "",
        "business": context.business_name or "",
        "decline_reason": decline_reason(obj.get("last_payment_error")),
        "fix_url": str(fix_url),
        "metadata": dict(metadata),
    }


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


class TemplateRenderer:
    """Compiles and renders message templates in a sandbox."""

    def __init__(self, *, locale: str = "en_US") -> None:
        self._env = SandboxedEnvironment(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )

        def money(amount: Any, currency: Any) -> str:
            if isinstance(amount, bool) or not isinstance(amount, int):
                raise RenderError(
                    f"The event has no amount in Stripe's integer form (got {amount!r}), so "
                    "the message would state a wrong amount."
                )
            return format_money(amount, str(currency), locale)

        self._env.filters["money"] = money

    def check(self, template: str) -> None:
        """Raise RenderError if ``template`` does not compile."""
        try:
            self._env.from_string(template)
        except TemplateError as exc:
            raise RenderError(f"The template does not compile: {exc}") from exc

    def render(self, template: str, variables: Mapping[str, Any]) -> str:
        """Render ``template``; collapse runs of white space so that a template can be
        written over several lines and still yield one SMS."""
        try:
            text = self._env.from_string(template).render(variables)
        except TemplateError as exc:
            raise RenderError(f"The message could not be rendered: {exc}") from exc
        return " ".join(text.split())
