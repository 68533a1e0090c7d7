"""`payherald events list` and `payherald notifications list`."""

from __future__ import annotations

from typing import Annotated

import typer

from payherald.cli.common import _settings, _store
from payherald.cli.output import JsonOption, LimitOption, _fail, _guard, _print_rows

__all__ = ["events_app", "notifications_app"]

events_app = typer.Typer(help="Inspect received Stripe events.", no_args_is_help=True)
notifications_app = typer.Typer(help="Inspect notifications.", no_args_is_help=True)

NOTIFICATION_FIELDS = (
    "id",
    "event_id",
    "rule",
    "recipient",
    "channel",
    "to",
    "body",
    "status",
    "provider_id",
    "error",
    "error_code",
    "attempts",
    "run_at",
    "livemode",
    "notes",
    "delivery_status",
    "delivery_error_code",
    "created_at",
    "updated_at",
    "sent_at",
)
EVENT_FIELDS = ("id", "type", "livemode", "status", "error", "received_at", "stripe_created_at")


@events_app.command("list")
def events_list(
    type: Annotated[str | None, typer.Option(help="Only this event type.")] = None,
    as_json: JsonOption = False,
    limit: LimitOption = 100,
) -> None:
    """Received Stripe events, newest first."""
    store = _store(_settings())
    rows = _guard(lambda: store.list_events(type=type, limit=limit))
    _print_rows(rows, EVENT_FIELDS, as_json, ("id", "type", "livemode", "status", "received_at"))


@notifications_app.command("list")
def notifications_list(
    status: Annotated[str | None, typer.Option(help="Only this status (sent, failed...).")] = None,
    as_json: JsonOption = False,
    limit: LimitOption = 100,
) -> None:
    """Notifications and what became of them, newest first."""
    from payherald.store.queue import STATUSES

    if status is not None and status not in STATUSES:
        raise _fail(
            f"--status {status!r} is not a notification status; use one of {', '.join(STATUSES)}."
        )
    store = _store(_settings())
    rows = _guard(lambda: store.list_notifications(status=status, limit=limit))
    _print_rows(
        rows,
        NOTIFICATION_FIELDS,
        as_json,
        ("id", "event_id", "rule", "channel", "to", "status", "body"),
    )
