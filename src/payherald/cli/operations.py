"""Operations commands: backfill, replay and prune."""

from __future__ import annotations

from typing import Annotated

import typer

from payherald.cli.common import _operations, _settings, _store, _stripe
from payherald.cli.output import _error, _fail, _guard, err, out
from payherald.exceptions import PayheraldError

__all__ = ["backfill", "prune", "replay"]


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
    ops = _operations(settings)
    job = Backfill(store=ops.store, rules=ops.rules, client=client, clock=clock)
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
    ops.close()
    prefix = "Dry run: " if dry_run else ""
    out.print(f"{prefix}since {start:%Y-%m-%d %H:%M:%S} UTC, {result.describe(dry_run=dry_run)}")
    if result.notifications and not dry_run:
        out.print("A running `payherald run` or `payherald worker` sends them.")


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
    ops = _operations(settings)
    if event_id is not None:
        ids = [event_id]
    else:
        start = _guard(lambda: parse_since(since, now=SystemClock().now())) if since else None
        ids = _guard(lambda: ops.store.replayable_events(since=start))
        if not ids:
            out.print("No event has failed processing" + (f" since {since}." if since else "."))
            return
    queued, still_failing = 0, 0
    for one in ids:
        try:
            result = replay_event(ops.store, ops.rules, one)
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
    ops.close()
    if queued:
        out.print(
            f"{queued} notification(s) queued; a running `payherald run` or `worker` sends them."
        )
    if still_failing:
        raise _fail(f"{still_failing} of {len(ids)} event(s) could not be replayed; see above.")


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
    from payherald.clock import SystemClock, parse_instant
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
    store.db.engine.dispose()
    out.print(("Dry run: " if dry_run else "Pruned: ") + summary.describe(dry_run=dry_run))
