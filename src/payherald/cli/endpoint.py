"""`payherald endpoint`: the Stripe webhook endpoint."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from payherald.cli.common import _operations, _settings, _stripe
from payherald.cli.output import _guard, _print_rows, _warning, out

__all__ = ["app"]

app = typer.Typer(help="The Stripe webhook endpoint.", no_args_is_help=True)

ENDPOINT_FIELDS = ("id", "url", "status", "livemode", "api_version", "enabled_events")


@app.command("register")
def endpoint_register(
    url: Annotated[str, typer.Argument(help="payherald's public address, https://…")],
) -> None:
    """Create the Stripe webhook endpoint for URL, or update the one already there."""
    from payherald.api_versions import NEWEST_SUPPORTED
    from payherald.endpoints import register, repin_advice, webhook_url

    settings = _settings()
    _guard(lambda: webhook_url(url))
    client = _stripe(settings, "endpoint register")
    ops = _operations(settings)
    result = _guard(lambda: register(client, url, ops.rules.event_types, store=ops.store))
    ops.close()
    if result.created:
        out.print(f"Created {result.endpoint_id} for {result.url}")
        out.print(f"  pinned to API version {result.api_version}")
        out.print(f"  events: {', '.join(result.added)}")
        out.print("Its signing secret, shown only this once:")
        # Marked with the endpoint's mode (the key's), so that it signs only events of it.
        mark = f"{settings.stripe_key_mode}:" if settings.stripe_key_mode else ""
        sys.stdout.write(f"\n    export STRIPE_WEBHOOK_SECRET={mark}{result.secret}\n\n")
        out.print("Set it where payherald runs, then restart payherald.")
    else:
        out.print(f"Updated {result.endpoint_id} for {result.url} (no new endpoint was made)")
        if result.added:
            out.print(f"  added: {', '.join(result.added)}")
        if result.removed:
            out.print(f"  removed: {', '.join(result.removed)}")
        if not (result.added or result.removed):
            out.print("  its events were already the ones the rules need")
        out.print("Its signing secret is unchanged (Stripe shows it only at creation).")
        if result.api_version != NEWEST_SUPPORTED:
            on = (
                f"is on API version {result.api_version}"
                if result.api_version
                else "has no API version of its own (Stripe sends it the account's default)"
            )
            _warning(
                f"{result.endpoint_id} {on}, not {NEWEST_SUPPORTED}, the one payherald pins; "
                f"{repin_advice(result.endpoint_id, url)}."
            )
    if result.duplicates:
        _warning(
            f"other endpoints have the same URL: {', '.join(result.duplicates)}; each "
            "delivers every event again. Delete them in Developers > Webhooks."
        )


@app.command("list")
def endpoint_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
) -> None:
    """The account's webhook endpoints."""
    from payherald.endpoints import list_endpoints

    client = _stripe(_settings(), "endpoint list")
    rows: list[dict[str, Any]] = []
    for endpoint in _guard(lambda: list_endpoints(client)):
        row = {name: getattr(endpoint, name, None) for name in ENDPOINT_FIELDS}
        row["enabled_events"] = ",".join(row["enabled_events"] or ())
        rows.append(row)
    _print_rows(rows, ENDPOINT_FIELDS, as_json, ENDPOINT_FIELDS)
