"""Finding the customer's phone number and saying so when there is none."""

from __future__ import annotations

from typing import Any

import pytest

from payherald import RecipientNotFound
from payherald.recipients import mask_phone, resolve_email, resolve_phone

CUSTOMER = {"id": "cus_1", "phone": "+14155550100", "address": {"country": "US"}}


def test_customer_phone_comes_first() -> None:
    obj = {"shipping": {"phone": "+14155550123"}}
    resolved = resolve_phone(obj, CUSTOMER)
    assert (resolved.number, resolved.source) == ("+14155550100", "customer.phone")


@pytest.mark.parametrize(
    ("obj", "source"),
    [
        ({"customer_details": {"phone": "+14155550123"}}, "customer_details.phone"),
        ({"billing_details": {"phone": "+14155550123"}}, "billing_details.phone"),
        (
            {"latest_charge": {"billing_details": {"phone": "+14155550123"}}},
            "latest_charge.billing_details.phone",
        ),
        (
            {"charges": {"data": [{"billing_details": {"phone": "+14155550123"}}]}},
            "charges.billing_details.phone",
        ),
        ({"customer_phone": "+14155550123"}, "customer_phone"),
        ({"shipping": {"phone": "+14155550123"}}, "shipping.phone"),
        ({"metadata": {"phone": "+14155550123"}}, "metadata.phone"),
        (
            {"subscription": {"id": "sub_1", "metadata": {"phone": "+14155550123"}}},
            "subscription.metadata.phone",
        ),
        (
            {"subscription_details": {"metadata": {"phone": "+14155550123"}}},
            "subscription.metadata.phone",
        ),
        (  # an invoice from API version 2025-03-31 (basil) on
            {"parent": {"subscription_details": {"metadata": {"phone": "+14155550123"}}}},
            "subscription.metadata.phone",
        ),
    ],
)
def test_each_object_field_is_a_source(obj: dict[str, Any], source: str) -> None:
    resolved = resolve_phone(obj, None)
    assert (resolved.number, resolved.source) == ("+14155550123", source)


def test_customer_metadata_is_the_last_source() -> None:
    customer = {"id": "cus_1", "metadata": {"mobile": "+14155550123"}}
    resolved = resolve_phone({}, customer, metadata_keys=("mobile",))
    assert resolved.source == "customer.metadata.mobile"


def test_national_numbers_use_the_customers_country() -> None:
    customer = {"id": "cus_1", "phone": "020 7183 8750", "address": {"country": "GB"}}
    assert resolve_phone({}, customer).number == "+442071838750"


def test_national_numbers_fall_back_to_the_default_region() -> None:
    obj = {"shipping": {"phone": "(415) 555-0123"}}
    assert resolve_phone(obj, None, default_region="US").number == "+14155550123"


def test_an_invalid_number_is_skipped_for_the_next_source() -> None:
    obj = {"customer_phone": "12", "shipping": {"phone": "+14155550123"}}
    assert resolve_phone(obj, None).source == "shipping.phone"


def test_no_phone_anywhere_says_where_it_looked() -> None:
    with pytest.raises(RecipientNotFound, match=r"customer\.phone") as caught:
        resolve_phone({"customer_phone": "12345"}, None)
    assert "not a valid number" in caught.value.message


def test_mask_phone_keeps_the_last_four_digits() -> None:
    assert mask_phone("+14155550123") == "+*******0123"


def test_email_comes_from_the_customer_then_the_object() -> None:
    assert resolve_email({"receipt_email": "r@example.com"}, {"email": "c@example.com"}) == (
        "c@example.com"
    )
    assert resolve_email({"customer_details": {"email": "d@example.com"}}, None) == (
        "d@example.com"
    )
    assert resolve_email({"customer_email": "i@example.com"}, None) == "i@example.com"


def test_no_email_says_where_it_looked() -> None:
    with pytest.raises(RecipientNotFound, match="receipt_email"):
        resolve_email({"receipt_email": "not an address"}, None)
