"""`payherald dunning`: the sequences that follow failed invoices, and stopping one by hand;
`payherald report recovery`: what they recovered; `payherald report attribution`: the revenue
credited to the messages that brought it."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from payherald.cli.common import _settings, _store
from payherald.cli.output import JsonOption, LimitOption, _fail, _guard, _print_rows, err, out

if TYPE_CHECKING:
    from datetime import datetime

__all__ = ["app", "report_app"]

app = typer.Typer(
    help="Dunning: the messages that follow an invoice whose payment failed.",
    no_args_is_help=True,
)
report_app = typer.Typer(help="Reports of what the messages did.", no_args_is_help=True)

SEQUENCE_FIELDS = (
    "invoice_id",
    "status",
    "livemode",
    "customer_id",
    "subscription_id",
    "to",
    "amount",
    "currency",
    "steps",
    "sent",
    "last_step",
    "next_due",
    "started_at",
    "ended_at",
    "end_reason",
    "recovered_amount",
    "recovered_rule",
    "recovered_channel",
)


@app.command("list")
def dunning_list(
    status: Annotated[
        str | None, typer.Option(help="Only this status: open, recovered or ended.")
    ] = None,
    as_json: JsonOption = False,
    limit: LimitOption = 100,
) -> None:
    """Each sequence, newest first: its invoice, customer (phone masked), amount, the step
    it reached, when the next one is due, and how it ended."""
    from payherald.dunning import REASONS
    from payherald.recipients import mask_address
    from payherald.store.statuses import DunningStatus

    statuses = [status.value for status in DunningStatus]
    if status is not None and status not in statuses:
        raise _fail(
            f"--status {status!r} is not a sequence status; use one of {', '.join(statuses)}."
        )
    store = _store(_settings())
    rows = _guard(lambda: store.dunning.sequences(status=status, limit=limit))
    for row in rows:
        row["to"] = mask_address(row["to"]) if row["to"] else None
        row["due"] = _money(row["amount"], row["currency"])
        row["step"] = f"{row['last_step'] or '-'} ({row['sent']}/{row['steps']})"
        row["next"] = f"{row['next_due']:%Y-%m-%d %H:%M} UTC" if row["next_due"] else None
        row["ended"] = (
            REASONS.get(row["end_reason"], row["end_reason"]) if row["end_reason"] else None
        )
    columns = ("invoice_id", "status", "customer_id", "to", "due", "step", "next", "ended")
    _print_rows(rows, SEQUENCE_FIELDS if as_json else columns, as_json, columns)


@app.command("stop")
def dunning_stop(
    invoice_id: Annotated[str, typer.Argument(help="The invoice (in_...) whose sequence to end.")],
) -> None:
    """End an invoice's sequence by hand: its steps not sent yet are skipped, and the
    sequence is recorded as stopped."""
    store = _store(_settings())
    if _guard(lambda: store.dunning.end(invoice_id, "stopped")):
        err.print(f"The dunning sequence of {invoice_id} is stopped; no more steps are sent.")
        return
    sequence = _guard(lambda: store.dunning.get(invoice_id))
    if sequence is None or sequence["started_at"] is None:
        raise _fail(
            f"{invoice_id} has no dunning sequence; `payherald dunning list` shows the "
            "invoices that have one."
        )
    raise _fail(
        f"The dunning sequence of {invoice_id} had already ended ({sequence['status']}); "
        "nothing changed.",
        code=1,
    )


SinceOption = Annotated[str, typer.Option(help="How far back: 24h, 7d, 30d, or an ISO date.")]
TestOption = Annotated[
    bool, typer.Option("--test", help="Test mode (simulated) instead of live mode.")
]
ReportJsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON object.")]


def _since(since: str) -> datetime:
    from payherald.clock import SystemClock, parse_instant

    try:
        return parse_instant(since, now=SystemClock().now(), option="--since")
    except ValueError as exc:
        raise _fail(str(exc)) from None


@report_app.command("recovery")
def report_recovery(
    since: SinceOption = "30d", test: TestOption = False, as_json: ReportJsonOption = False
) -> None:
    """Revenue recovered by dunning: the invoices paid while their sequence was open, per
    the last step told before the payment and its channel; and how the sequences started
    in the same time stand. Live mode unless --test."""
    start = _since(since)
    store = _store(_settings())
    report = _guard(lambda: store.dunning.recovery(start, livemode=not test))
    if as_json:
        summary = {"since": start.isoformat(), "livemode": not test, **report}
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
        return
    _print_recovery(start, report, "test" if test else "live")


@report_app.command("attribution")
def report_attribution(
    since: SinceOption = "30d", test: TestOption = False, as_json: ReportJsonOption = False
) -> None:
    """Revenue credited to the message that brought it, per rule, channel, campaign and
    currency: payments through a texted payment link, payments that succeeded after their
    failure was told, invoices recovered by a dunning step. Live mode unless --test."""
    start = _since(since)
    store = _store(_settings())
    rows = _guard(lambda: store.attribution.revenue(start, livemode=not test))
    totals: dict[str, int] = {}
    for row in rows:
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["amount"]
    if as_json:
        summary = {"since": start.isoformat(), "livemode": not test, "by_rule": rows}
        sys.stdout.write(json.dumps(summary | {"totals": totals}, indent=2) + "\n")
        return
    mode = "test" if test else "live"
    out.print(f"Revenue credited to messages since {start:%Y-%m-%d %H:%M} UTC ({mode} mode):")
    if not rows:
        out.print("nothing yet.")
        return
    table = Table("rule", "channel", "campaign", "payments", "revenue")
    for row in rows:
        table.add_row(
            row["rule"],
            row["channel"] or "",
            row["campaign"] or "",
            str(row["payments"]),
            _money(row["amount"], row["currency"]),
        )
    out.print(table)
    out.print("Total: " + ", ".join(_money(amount, cur) for cur, amount in totals.items()))


def _money(amount: int | None, currency: str | None) -> str:
    from payherald.money import format_money

    return format_money(amount, currency) if amount is not None and currency else ""


def _print_recovery(start: datetime, report: dict[str, Any], mode: str) -> None:
    table = Table("step", "channel", "invoices", "recovered")
    totals: dict[str, int] = {}
    for row in report["by_step"]:
        table.add_row(
            row["rule"] or "(paid before any step was sent)",
            row["channel"] or "",
            str(row["invoices"]),
            _money(row["amount"], row["currency"]),
        )
        totals[row["currency"]] = totals.get(row["currency"], 0) + row["amount"]
    out.print(f"Recovered by dunning since {start:%Y-%m-%d %H:%M} UTC ({mode} mode):")
    if report["by_step"]:
        out.print(table)
        out.print("Total: " + ", ".join(_money(amount, cur) for cur, amount in totals.items()))
    else:
        out.print("nothing yet.")
    counts = report["sequences"]
    out.print(
        f"Sequences started since then: {counts['started']} ({counts['recovered']} recovered, "
        f"{counts['open']} open, {counts['ended']} ended without payment)."
    )
