"""A payment link request, read and checked whole before anything is made: from the
options of ``payherald paylink send`` (``paylink_request``) or the JSON object of ``POST
/api/paylinks`` (``request_from_json``); each refusal is one sentence that names the value
as its caller spells it, and says what to give instead. What is made of a request is in
``paylinks``."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from babel.numbers import list_currencies

from payherald.exceptions import PaylinkRefused
from payherald.recipients import mask_phone, normalise_phone

__all__ = ["MAX_QUANTITY", "PaylinkRequest", "paylink_request", "request_from_json"]

# A line item's quantity, as a Payment Link's page lets a customer change it by default.
MAX_QUANTITY = 99
# The most one price may be, in the smallest unit (Stripe's limit: eight digits).
_MAX_AMOUNT = 99_999_999
_PRICE_ID = re.compile(r"(price|plan)_[A-Za-z0-9_]{1,250}")
_CAMPAIGN = re.compile(r"[A-Za-z0-9_.-]{1,100}")
_MAX_NAME = 250


def _option(field: str) -> str:
    return f"--{field}"


@dataclass(frozen=True, slots=True)
class PaylinkRequest:
    """A checked request: whom to text (E.164), and a price, or an amount in the
    currency's smallest unit with its currency and product name."""

    phone: str
    price: str | None = None
    amount: int | None = None
    currency: str | None = None
    name: str | None = None
    quantity: int = 1
    campaign: str | None = None


def _whole(value: Any) -> int | None:
    """``value`` as a whole number (an integer, or digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        return int(value.strip())
    return None


def paylink_request(
    *,
    phone: Any = None,
    price: Any = None,
    amount: Any = None,
    currency: Any = None,
    name: Any = None,
    quantity: Any = 1,
    campaign: Any = None,
    default_region: str = "US",
    spell: Callable[[str], str] = _option,
) -> PaylinkRequest:
    """The request these values make, checked; raises PaylinkRefused with one sentence
    naming the value (as ``spell`` writes its name: ``--amount`` for the command) and what
    to give instead."""
    if not isinstance(phone, str) or not phone.strip():
        raise PaylinkRefused(
            f"{spell('phone')} is required: the number to text the link to, like +14155550123."
        )
    number = normalise_phone(phone, default_region)
    if number is None:
        raise PaylinkRefused(
            f"{spell('phone')} {mask_phone(phone)!r} is not a phone number payherald can read "
            f"(national numbers are read in PAYHERALD_DEFAULT_REGION={default_region}); "
            "write it with its country code, like +14155550123."
        )
    has_price, has_amount = price not in (None, ""), amount not in (None, "")
    if has_price and has_amount:
        raise PaylinkRefused(
            f"Give {spell('price')} or {spell('amount')}, not both: a price has its own amount."
        )
    if not has_price and not has_amount:
        raise PaylinkRefused(
            f"Give {spell('price')} (a Stripe price, price_...) or {spell('amount')} with "
            f"{spell('currency')} and {spell('name')}."
        )
    count = _whole(quantity)
    if count is None or not 1 <= count <= MAX_QUANTITY:
        raise PaylinkRefused(
            f"{spell('quantity')} {quantity!r} is not a whole number from 1 to {MAX_QUANTITY}."
        )
    if campaign not in (None, "") and (
        not isinstance(campaign, str) or not _CAMPAIGN.fullmatch(campaign)
    ):
        raise PaylinkRefused(
            f"{spell('campaign')} {campaign!r} may hold only letters, digits, '-', '_' and '.', "
            "up to 100 of them, like spring-sale."
        )
    common = PaylinkRequest(phone=number, quantity=count, campaign=campaign or None)
    if has_price:
        if currency not in (None, "") or name not in (None, ""):
            raise PaylinkRefused(
                f"{spell('currency')} and {spell('name')} go with {spell('amount')}; a price "
                "has its own currency and product."
            )
        if not isinstance(price, str) or not _PRICE_ID.fullmatch(price):
            raise PaylinkRefused(
                f"{spell('price')} {price!r} is not a Stripe price id; they look like "
                "price_1Pgc78B7WZ01zgkW."
            )
        return replace(common, price=price)
    return replace(
        common,
        amount=_amount(amount, spell),
        currency=_currency(currency, spell),
        name=_name(name, spell),
    )


def _field(field: str) -> str:
    return f"'{field}'"


def request_from_json(body: Any, *, default_region: str = "US") -> PaylinkRequest:
    """The request of ``POST /api/paylinks``'s JSON object (``phone``, ``price`` or
    ``amount`` with ``currency`` and ``name``, ``quantity``, ``campaign``), checked as
    ``paylink_request`` checks the command's options."""
    if not isinstance(body, dict):
        raise PaylinkRefused(
            'The body must be a JSON object, like {"phone": "+14155550123", "price": "price_..."}.'
        )
    known = ("phone", "price", "amount", "currency", "name", "quantity", "campaign")
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise PaylinkRefused(
            f"Unknown field {_field(unknown[0])}; a paylink takes {', '.join(known)}."
        )
    return paylink_request(
        **{field: body[field] for field in known if field in body and field != "quantity"},
        quantity=body.get("quantity", 1),
        default_region=default_region,
        spell=_field,
    )


def _amount(amount: Any, spell: Callable[[str], str]) -> int:
    value = _whole(amount)
    if value is None or value <= 0:
        raise PaylinkRefused(
            f"{spell('amount')} {amount!r} is not a positive whole number: give it in the "
            "currency's smallest unit (2500 for $25.00, 2500 for ¥2,500)."
        )
    if value > _MAX_AMOUNT:
        raise PaylinkRefused(
            f"{spell('amount')} {value} is more than Stripe takes in one price "
            f"({_MAX_AMOUNT}, in the currency's smallest unit)."
        )
    return value


def _currency(currency: Any, spell: Callable[[str], str]) -> str:
    if currency in (None, ""):
        raise PaylinkRefused(f"{spell('amount')} needs {spell('currency')}, like usd or eur.")
    code = currency.strip().upper() if isinstance(currency, str) else ""
    if len(code) != 3 or code not in list_currencies():
        raise PaylinkRefused(
            f"{spell('currency')} {currency!r} is not an ISO 4217 currency code, like usd or eur."
        )
    return code.lower()


def _name(name: Any, spell: Callable[[str], str]) -> str:
    text = " ".join(name.split()) if isinstance(name, str) else ""
    if not text:
        raise PaylinkRefused(
            f"{spell('amount')} needs {spell('name')}: what the customer pays for, shown on "
            "the payment page."
        )
    if len(text) > _MAX_NAME:
        raise PaylinkRefused(f"{spell('name')} is longer than {_MAX_NAME} characters.")
    return text
