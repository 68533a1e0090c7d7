"""Stripe objects in the shape of an API version: payherald's simulated events are built in
the shape of 2024-06-20, then moved to the version asked for.

From 2025-03-31 (basil): an invoice loses ``paid``, ``payment_intent``, ``charge`` and
``subscription`` (which moves under ``parent.subscription_details``); its lines lose
``price``, ``plan``, ``type``, ``proration`` and ``subscription_item`` (the price and
product move under ``pricing.price_details``, as ids; the subscription item under
``parent``); a subscription's current period moves to its items and it loses ``plan``;
payment intents and charges lose ``invoice``; lists lose ``total_count``; a refund does not
say ``livemode``. The versions after basil change none of the fields built here.
"""

from __future__ import annotations

from typing import Any

from payherald.api_versions import FAMILIES, NEWEST_SUPPORTED, parse_api_version

__all__ = ["to_api_version"]

_Object = dict[str, Any]


def _line_today(line: _Object) -> _Object:
    """An invoice line as basil and later send it: the price and product under
    ``pricing.price_details`` (ids), the subscription item under ``parent``."""
    price = line.pop("price", None) or {}
    line.pop("plan", None)
    kind = line.pop("type", None)
    proration = line.pop("proration", False)
    item = line.pop("subscription_item", None)
    invoice_item = line.pop("invoice_item", None)
    line["pricing"] = {
        "type": "price_details",
        "price_details": {"price": price.get("id"), "product": price.get("product")},
        "unit_amount_decimal": price.get("unit_amount_decimal"),
    }
    details = {"proration": proration, "proration_details": {"credited_items": None}}
    if kind == "subscription":
        line["parent"] = {
            "type": "subscription_item_details",
            "invoice_item_details": None,
            "subscription_item_details": details
            | {
                "invoice_item": None,
                "subscription": line["subscription"],
                "subscription_item": item,
            },
        }
    else:
        line["parent"] = {
            "type": "invoice_item_details",
            "invoice_item_details": details
            | {"invoice_item": invoice_item, "subscription": line.get("subscription")},
            "subscription_item_details": None,
        }
    return line


def _invoice_today(obj: _Object) -> _Object:
    for field_name in ("paid", "payment_intent", "charge"):
        obj.pop(field_name, None)
    subscription = obj.pop("subscription", None)
    obj["parent"] = (
        {
            "type": "subscription_details",
            "quote_details": None,
            "subscription_details": {"metadata": {}, "subscription": subscription},
        }
        if subscription
        else None
    )
    obj["lines"]["data"] = [_line_today(line) for line in obj["lines"]["data"]]
    return obj


def _subscription_today(obj: _Object) -> _Object:
    """A subscription from basil on: the current period is each item's."""
    start, end = obj.pop("current_period_start", None), obj.pop("current_period_end", None)
    obj.pop("plan", None)
    obj.pop("quantity", None)
    for item in obj["items"]["data"]:
        item.update(current_period_start=start, current_period_end=end)
    return obj


def _without_total_count(value: Any) -> None:
    """Lists lost ``total_count`` in basil."""
    if isinstance(value, dict):
        if value.get("object") == "list":
            value.pop("total_count", None)
        for item in value.values():
            _without_total_count(item)
    elif isinstance(value, list):
        for item in value:
            _without_total_count(item)


def _today(obj: _Object) -> _Object:
    kind = obj.get("object")
    _without_total_count(obj)
    if kind in ("payment_intent", "charge"):
        obj.pop("invoice", None)
    elif kind == "refund":
        obj.pop("livemode", None)  # a refund does not say
    elif kind == "invoice":
        _invoice_today(obj)
    elif kind == "subscription":
        _subscription_today(obj)
    return obj


def to_api_version(event: dict[str, Any], api_version: str) -> dict[str, Any]:
    """``event`` (built in the shape of 2024-06-20) in the shape of ``api_version``: from
    basil on, its object (and ``previous_attributes``) take today's shape."""
    version = parse_api_version(api_version)
    if version is None:
        raise ValueError(f"{api_version!r} is not a Stripe API version, like {NEWEST_SUPPORTED}.")
    event["api_version"] = api_version
    if version.date >= FAMILIES["basil"]:
        data = event["data"]
        _today(data["object"])
        previous = data.get("previous_attributes")
        if previous and data["object"].get("object") == "subscription":
            previous.pop("plan", None)
    return event
