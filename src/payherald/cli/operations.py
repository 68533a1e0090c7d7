"""Operations commands: backfill, replay, prune, endpoint register|list, doctor (F30-F32).

Registered on the `payherald` command by ``payherald.cli`` (the package).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from payherald.cli import (
    _build,
    _error,
    _fail,
    _guard,
    _print_rows,
    _settings,
    _store,
    _warning,
    app,
    err,
    out,
)
from payherald.exceptions import PayheraldError

if TYPE_CHECKING:
    import stripe

    from payherald.app import Payherald
    from payherald.settings import Settings

__all__ = ["endpoint_app"]

endpoint_app = typer.Typer(help="The Stripe webhook endpoint.", no_args_is_help=True)
app.add_typer(endpoint_app, name="endpoint")

ENDPOINT_FIELDS = ("id", "url", "status", "livemode", "api_version", "enabled_events")


def _built(settings: Settings) -> Payherald:
    return _build(settings)


def _stripe(settings: Settings, needed_for: str) -> stripe.StripeClient:
    from payherald.app import stripe_client

    client = stripe_client(settings)
    if client is None:
        raise _fail(f"{needed_for} needs STRIPE_SECRET_KEY; export it and run this again.")
    return client


@app.command()
def backfill(
    since: Annotated[
        str, typer.Option(help="How far back: 30m, 24h, 7d, or an ISO date (Stripe keeps 30 days).")
    ],
    type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this event type (repeat for several)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be done; change nothing.")
    ] = False,
) -> None:
    """Bring in events Stripe has that payherald never received, once each."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from payherald.backfill import Backfill, BackfillSummary, parse_since
    from payherald.clock import SystemClock

    settings = _settings()
    clock = SystemClock()
    start = _guard(lambda: parse_since(since, now=clock.now()))
    client = _stripe(settings, "backfill")
    ph = _built(settings)
    job = Backfill(store=ph.store, rules=ph.rules, client=client, clock=clock)
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    ) as bar:
        task = bar.add_task("asking Stripe for events…", total=None)

        def show(summary: BackfillSummary) -> None:
            bar.update(
                task,
                description=f"{summary.fetched} events, {summary.new} new, "
                f"{summary.already_seen} already seen",
            )

        result = _guard(lambda: job.run(start, types=type, dry_run=dry_run, progress=show))
    ph.engine.dispose()
    prefix = "Dry run: " if dry_run else ""
    out.print(f"{prefix}since {start:%Y-%m-%d %H:%M:%S} UTC, {result.describe(dry_run=dry_run)}")
    if result.notifications and not dry_run:
        out.print("A running `payherald run` or `payherald worker` sends them.")


@app.command()
def replay(
    event_id: Annotated[str | None, typer.Argument(help="The event to process again.")] = None,
    failed: Annotated[
        bool, typer.Option("--failed", help="Every event whose processing failed.")
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="With --failed: only events received since (24h, ISO).")
    ] = None,
) -> None:
    """Process stored events again after a fix; nothing already sent is sent again."""
    from payherald.backfill import parse_since
    from payherald.clock import SystemClock
    from payherald.replay import ReplayError
    from payherald.replay import replay as replay_event

    if (event_id is None) == (not failed):
        raise _fail("Give an EVENT_ID, or --failed (with --since to limit it); not both.")
    settings = _settings()
    ph = _built(settings)
    if event_id is not None:
        ids = [event_id]
    else:
        start = _guard(lambda: parse_since(since, now=SystemClock().now())) if since else None
        ids = _guard(lambda: ph.store.replayable_events(since=start))
        if not ids:
            out.print("No event has failed processing" + (f" since {since}." if since else "."))
            return
    queued, still_failing = 0, 0
    for one in ids:
        try:
            result = replay_event(ph.store, ph.rules, one)
        except ReplayError as exc:
            # One event that still fails must not keep the others from being replayed;
            # the exit status says that something was left.
            _error(exc.message)
            still_failing += 1
            continue
        except PayheraldError as exc:
            raise _fail(exc.message) from None
        out.print(result.describe())
        queued += result.new + result.again
    ph.engine.dispose()
    if queued:
        out.print(
            f"{queued} notification(s) queued; a running `payherald run` or `worker` sends them."
        )
    if still_failing:
        raise _fail(f"{still_failing} of {len(ids)} event(s) could not be replayed; see above.")


@app.command()
def prune(
    before: Annotated[
        str,
        typer.Option(
            help="Delete what was received before this: 90d, or an ISO date (30d at the least)."
        ),
    ],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
    ] = False,
) -> None:
    """Delete old events, their notifications and delivery reports, and blank old inbound
    messages (their ids are kept, so a replayed reply is not acted on again); what is still
    being sent, and consents and the opt-out list, are kept."""
    from payherald.backfill import parse_instant
    from payherald.clock import SystemClock
    from payherald.retention import check_cutoff
    from payherald.retention import prune as prune_store

    now = SystemClock().now()
    try:
        cutoff = parse_instant(before, now=now, option="--before")
    except ValueError as exc:
        raise _fail(str(exc)) from None
    _guard(lambda: check_cutoff(cutoff, now=now))
    store = _store(_settings())
    summary = _guard(lambda: prune_store(store, cutoff, dry_run=dry_run))
    store.engine.dispose()
    out.print(("Dry run: " if dry_run else "Pruned: ") + summary.describe(dry_run=dry_run))


@endpoint_app.command("register")
def endpoint_register(
    url: Annotated[str, typer.Argument(help="payherald's public address, https://…")],
) -> None:
    """Create the Stripe webhook endpoint for URL, or update the one already there."""
    from payherald.api_versions import NEWEST_SUPPORTED
    from payherald.endpoints import register, repin_advice, webhook_url

    settings = _settings()
    _guard(lambda: webhook_url(url))
    client = _stripe(settings, "endpoint register")
    ph = _built(settings)
    result = _guard(lambda: register(client, url, ph.rules.event_types, store=ph.store))
    ph.engine.dispose()
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


@endpoint_app.command("list")
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


@app.command()
def doctor() -> None:
    """Check the configuration, Stripe, Twilio and the store; explain each problem."""
    from payherald.app import stripe_client
    from payherald.channels import twilio_client
    from payherald.clock import SystemClock
    from payherald.config import load_config
    from payherald.database import create_store_engine
    from payherald.doctor import run_checks
    from payherald.messages import TemplateRenderer
    from payherald.store import Store

    settings = _settings()
    path, required = settings.rules_file
    rules = _guard(lambda: load_config(path, required=required)).rule_book(
        TemplateRenderer(locale=settings.locale)
    )
    clock = SystemClock()
    # Not `build`: the store may be the very thing that is wrong, and doctor says so.
    store = Store(engine=create_store_engine(settings.sqlalchemy_url), clock=clock)
    twilio = (
        twilio_client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            api_base=settings.twilio_api_base,
        )
        if settings.twilio_account_sid and settings.twilio_auth_token
        else None
    )
    problems = warnings = 0
    for check in run_checks(
        settings=settings,
        store=store,
        rules=rules,
        stripe_client=stripe_client(settings),
        twilio_client=twilio,
        clock=clock,
    ):
        if not check.ok:
            problems += 1
            label = "[red]FAIL[/]"
        elif check.warning:
            warnings += 1
            label = "[yellow]warn[/]"
        else:
            label = "[green]ok[/]  "
        out.print(f"{label} {escape(check.name)}: {escape(check.detail)}", markup=True)
        if check.fix and (check.warning or not check.ok):
            out.print(f"       fix: {check.fix}")
    store.engine.dispose()
    if problems:
        out.print(f"{problems} problem(s) found.")
        raise typer.Exit(1)
    out.print(
        f"Everything checked is ready ({warnings} warning(s) above)."
        if warnings
        else "Everything checked is ready."
    )
