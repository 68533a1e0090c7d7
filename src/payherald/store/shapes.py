"""What the dashboard's reads return (``store.history``, ``store.trace``): the columns
read of an event and a notification, and their JSON-ready shapes (times as ISO 8601
strings), which the API returns as they are and the pages render.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from payherald.event_facts import KINDS
from payherald.money import format_money
from payherald.store.schema import events, notifications
from payherald.store.statuses import MAY_HAVE_BEEN_SENT, NotificationStatus

__all__ = [
    "EVENT_COLUMNS",
    "NOTIFICATION_BRIEF",
    "NOTIFICATION_FULL",
    "amount_text",
    "brief_keys",
    "earlier_outcomes",
    "event_json",
    "iso",
    "jsonable",
    "jsonable_value",
    "notification_json",
]

EVENT_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.kind,
    events.c.livemode,
    events.c.status,
    events.c.error,
    events.c.received_at,
    events.c.amount,
    events.c.currency,
    events.c.customer,
    events.c.email,
    events.c.customer_name,
)


NOTIFICATION_BRIEF = (
    notifications.c.id,
    notifications.c.event_id,
    notifications.c.rule,
    notifications.c.channel,
    notifications.c.to,
    notifications.c.status,
    notifications.c.delivery_status,
    notifications.c.error_code,
)


NOTIFICATION_FULL = (
    *NOTIFICATION_BRIEF,
    notifications.c.recipient,
    notifications.c.livemode,
    notifications.c.body,
    notifications.c.provider_id,
    notifications.c.error,
    notifications.c.attempts,
    notifications.c.created_at,
    notifications.c.updated_at,
    notifications.c.attempt_started_at,
    notifications.c.sent_at,
    notifications.c.run_at,
    notifications.c.notes,
    notifications.c.refusals,
    notifications.c.sequence,
    notifications.c.subject,
    notifications.c.earlier,
)


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def jsonable_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: jsonable_value(value) for key, value in row.items()}


def brief_keys() -> list[str]:
    return [column.key for column in NOTIFICATION_BRIEF if column.key != "event_id"]


def amount_text(amount: int | None, currency: str | None, locale: str) -> str | None:
    if amount is None or not currency:
        return None
    try:
        return format_money(amount, currency, locale)
    except ValueError:  # a currency babel does not know
        return f"{amount} {currency.upper()}"


def event_json(row: Mapping[str, Any], told: list[dict[str, Any]], locale: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "kind": row["kind"] if row["kind"] in KINDS else "other",
        "livemode": bool(row["livemode"]),
        "status": row["status"],
        "received_at": iso(row["received_at"]),
        "amount": row["amount"],
        "currency": row["currency"],
        "amount_text": amount_text(row["amount"], row["currency"], locale),
        "customer": row["customer"],
        "email": row["email"],
        "customer_name": row["customer_name"],
        "notifications": told,
    }


def notification_json(
    row: Mapping[str, Any], deliveries: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    found = {
        key: jsonable_value(row[key])
        for key in (
            "id",
            "event_id",
            "rule",
            "recipient",
            "channel",
            "livemode",
            "to",
            "body",
            "status",
            "provider_id",
            "error",
            "error_code",
            "attempts",
            "created_at",
            "updated_at",
            "sent_at",
            "run_at",
            "delivery_status",
            "notes",
            "sequence",
        )
    }
    found["earlier"] = earlier_outcomes(row)
    found["retryable"] = (
        row["status"] == NotificationStatus.FAILED and row["error_code"] != MAY_HAVE_BEEN_SENT
    )
    if deliveries is not None:
        found["deliveries"] = deliveries
    return found


def earlier_outcomes(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The outcomes a notification had before it was queued again, oldest first."""
    found = json.loads(row["earlier"]) if row.get("earlier") else []
    return [entry for entry in found if isinstance(entry, dict)]
