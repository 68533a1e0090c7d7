"""Amounts as people read them: Stripe's smallest unit, formatted per currency and locale."""

from __future__ import annotations

from decimal import Decimal

from babel.core import Locale, UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision

__all__ = ["format_money", "to_major_units"]

# Stripe's own exceptions to ISO 4217 minor units (https://docs.stripe.com/currencies):
# ISK and UGX are zero-decimal in ISO terms but Stripe still counts them in hundredths.
_STRIPE_TWO_DECIMAL = frozenset({"ISK", "UGX"})


def to_major_units(amount: int, currency: str) -> Decimal:
    """Convert Stripe's integer amount (cents, yen, fils...) to the currency's major unit."""
    code = currency.upper()
    digits = 2 if code in _STRIPE_TWO_DECIMAL else get_currency_precision(code)
    return Decimal(amount).scaleb(-digits)


def format_money(amount: int, currency: str, locale: str = "en_US") -> str:
    """Format a Stripe amount for ``locale``: 2000 usd -> "$20.00", 2000 jpy -> "¥2,000",
    12345 kwd -> "KWD 12.345", 2000 eur in de_DE -> "20,00 €"."""
    code = currency.upper()
    try:
        Locale.parse(locale)
    except (ValueError, UnknownLocaleError):
        locale = "en_US"
    digits = get_currency_precision(code)
    value = to_major_units(amount, code)
    if code in _STRIPE_TWO_DECIMAL:
        value = value.quantize(Decimal(1).scaleb(-digits))
    return str(format_currency(value, code, locale=locale))
