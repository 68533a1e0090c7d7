"""Amounts in Stripe's smallest unit, formatted per currency and locale."""

from __future__ import annotations

import pytest

from payherald.money import format_money


@pytest.mark.parametrize(
    ("amount", "currency", "locale", "expected"),
    [
        (2000, "usd", "en_US", "$20.00"),
        (199, "USD", "en_US", "$1.99"),
        (2000, "eur", "de_DE", "20,00\xa0€"),
        (123456, "eur", "fr_FR", "1\u202f234,56\xa0€"),
        (2000, "jpy", "en_US", "¥2,000"),
        (123456, "krw", "en_US", "₩123,456"),
        (12345, "kwd", "en_US", "KWD12.345"),
        (1050, "bhd", "en_US", "BHD1.050"),
        (0, "usd", "en_US", "$0.00"),
    ],
)
def test_amounts_are_formatted_per_currency(
    amount: int, currency: str, locale: str, expected: str
) -> None:
    assert format_money(amount, currency, locale) == expected


def test_unknown_locale_falls_back_to_english() -> None:
    assert format_money(2000, "usd", "xx_NOPE") == "$20.00"
