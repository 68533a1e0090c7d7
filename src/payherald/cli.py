"""The `payherald` command."""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from contextlib import nullcontext
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from payherald.exceptions import PayheraldError
from payherald.settings import Settings, load_settings
from payherald.simulate import SIMULATED_EVENT_TYPES

if TYPE_CHECKING:
    from payherald.app import Payherald
    from payherald.store import Store

# Heavy modules (FastAPI, SQLAlchemy, the Stripe and Twilio SDKs) are imported inside the
# commands that need them, so that `payherald --help` answers at once.

__all__ = ["app", "main"]

app = typer.Typer(
    help="payherald: turn Stripe events into the right SMS, to the right person, exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
events_app = typer.Typer(help="Inspect received Stripe events.", no_args_is_help=True)
config_app = typer.Typer(help="Check the rules file.", no_args_is_help=True)
optout_app = typer.Typer(help="The opt-out list: who must not be messaged.", no_args_is_help=True)
notifications_app = typer.Typer(help="Inspect notifications.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(notifications_app, name="notifications")
app.add_typer(config_app, name="config")
app.add_typer(optout_app, name="optout")

# Markup and emoji codes are off: what payherald prints is mostly not its own text (rule
# names, message bodies, Stripe's and the database's words), and Rich would swallow a
# "[teams.finance]" in it as a style tag. Payherald's own styling passes markup=True and
# escapes what it puts inside.
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = Console(highlight=False, soft_wrap=True, markup=False, emoji=False)
T = TypeVar("T")

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


def _error(message: str) -> None:
    """Print ``message`` as payherald's error, on standard error."""
    err.print(f"[bold red]payherald:[/] {escape(message)}", markup=True)


def _warning(message: str) -> None:
    """Print ``message`` as a warning, on standard error."""
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _error(message)
    return typer.Exit(code)


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``, turning payherald's errors into a sentence and an exit status."""
    try:
        return action()
    except PayheraldError as exc:
        raise _fail(exc.message) from None


def _settings() -> Settings:
    from payherald.logs import configure_logging

    settings = _guard(load_settings)
    configure_logging(secrets=settings.secret_values(), log_format=settings.log_format)
    return settings


def _store(settings: Settings) -> Store:
    from payherald.clock import SystemClock
    from payherald.database import create_store_engine
    from payherald.store import Store

    store = Store(engine=create_store_engine(settings.sqlalchemy_url), clock=SystemClock())
    _guard(store.check_schema)
    return store


def _channels(ph: Payherald) -> str:
    if not ph.channels:
        return "console (no provider configured: messages are printed here)"
    return ", ".join(ph.channels) + " (test-mode events go to the console)"


def _announce(ph: Payherald, *, host: str, port: int, worker: bool) -> None:
    settings = ph.settings
    err.print(f"[bold]payherald[/] listening on {escape(f'http://{host}:{port}')}", markup=True)
    err.print(f"  Stripe webhook: POST http://{host}:{port}/webhooks/stripe")
    err.print(f"  store: {ph.engine.url.render_as_string(hide_password=True)}")
    if worker:
        err.print(f"  channels: {_channels(ph)}")
    if ph.development_secret:
        err.print(
            "  [yellow]No STRIPE_WEBHOOK_SECRET set: using the development secret "
            f"{escape(ph.development_secret)}[/]\n"
            "  (kept in the database; `payherald simulate` signs with it too). Set "
            "STRIPE_WEBHOOK_SECRET before pointing Stripe here.",
            markup=True,
        )
    if settings.stripe_secret_key is None:
        err.print("  No STRIPE_SECRET_KEY: customer phone numbers come from the event only.")


def _listen(host: str, port: int) -> socket.socket:
    """The socket payherald will serve on, bound and listening; or exit with a sentence
    saying why it cannot be, before anything says "listening" or a worker starts."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        return socket.create_server(
            (host, port), family=socket.AF_INET6 if ":" in host else socket.AF_INET
        )
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise _fail(
                f"Cannot listen on {where}: another program (perhaps another payherald) is "
                "already listening there; stop it, or pass --port with a free port."
            ) from None
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise _fail(
            f"Cannot listen on {where}: {reason}; pass --host with an address "
            "of this machine, or --port with a free port."
        ) from None


def _serve(ph: Payherald, listener: socket.socket, *, with_worker: bool) -> None:
    """Serve on ``listener`` until SIGTERM or SIGINT, then stop the worker and return."""
    import uvicorn

    config = uvicorn.Config(
        ph.http_app,
        log_config=None,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)

    def stop_serving(_signum: int, _frame: object) -> None:
        server.should_exit = True

    # uvicorn takes SIGTERM and SIGINT while it serves and, on its way out, puts back the
    # handlers it found and raises the signal again for them. Python's default for SIGTERM
    # would then kill the process before the worker is stopped (exit 143 under systemd,
    # sends cut off mid-call); this handler lets `run` return and the worker stop first.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, stop_serving)
    if with_worker:
        ph.start_worker()
    try:
        server.run(sockets=[listener])
    finally:
        ph.stop()
        listener.close()


HostOption = Annotated[str, typer.Option(help="Address to listen on.")]
PortOption = Annotated[int, typer.Option(help="Port to listen on.", min=1, max=65535)]


@app.command()
def run(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """Server, worker and schema in one process: the way to start on one machine."""
    from payherald.app import build

    settings = _settings()
    ph = _guard(lambda: build(settings, migrate_schema=True))
    listener = _listen(host, port)
    _announce(ph, host=host, port=port, worker=True)
    _serve(ph, listener, with_worker=True)


@app.command()
def serve(host: HostOption = "127.0.0.1", port: PortOption = 8000) -> None:
    """Only the HTTP server (webhooks and health); run `payherald worker` beside it."""
    from payherald.app import build

    settings = _settings()
    ph = _guard(lambda: build(settings))
    listener = _listen(host, port)
    _announce(ph, host=host, port=port, worker=False)
    _serve(ph, listener, with_worker=False)


@app.command()
def worker(
    metrics_port: Annotated[
        int | None,
        typer.Option(help="Serve Prometheus GET /metrics on this port (127.0.0.1).", min=1),
    ] = None,
) -> None:
    """Only the worker: claims queued notifications and sends them."""
    from payherald.app import build

    settings = _settings()
    ph = _guard(lambda: build(settings))
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    err.print(
        f"[bold]payherald worker[/] {escape(ph.worker.worker_id)}, channels: "
        f"{escape(_channels(ph))}",
        markup=True,
    )
    if metrics_port is not None:
        try:
            ph.metrics.serve(port=metrics_port)
        except OSError as exc:
            raise _fail(f"Cannot serve metrics on port {metrics_port}: {exc.strerror}.") from None
        err.print(f"  metrics: http://127.0.0.1:{metrics_port}/metrics")
    ph.start_worker()
    while not stop.is_set():
        stop.wait(0.5)
    ph.stop()


@app.command(name="migrate")
def migrate_command() -> None:
    """Create or upgrade the database schema."""
    from payherald.clock import SystemClock
    from payherald.database import create_store_engine, head_revision, migrate
    from payherald.store import Store

    settings = _settings()
    engine = create_store_engine(settings.sqlalchemy_url)
    _guard(lambda: Store(engine=engine, clock=SystemClock()).ping())
    migrate(engine)
    err.print(f"Database schema is at revision {head_revision()}.")


@app.command()
def simulate(
    event_type: Annotated[str, typer.Argument(help="One of: " + ", ".join(SIMULATED_EVENT_TYPES))],
    url: Annotated[str, typer.Option(help="payherald's Stripe webhook URL.")] = (
        "http://127.0.0.1:8000/webhooks/stripe"
    ),
    phone: Annotated[str, typer.Option(help="The customer's phone number.")] = "+14155550123",
    amount: Annotated[int, typer.Option(help="In the currency's smallest unit.", min=0)] = 2000,
    currency: Annotated[str, typer.Option(help="Three-letter currency code.")] = "usd",
    livemode: Annotated[bool, typer.Option(help="Send as a live-mode event.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the messages.")] = 10.0,
) -> None:
    """Send a realistic, signed Stripe event to a running payherald and show what it sent."""
    import httpx

    from payherald.clock import SystemClock
    from payherald.simulate import build_event, sign_payload

    if event_type not in SIMULATED_EVENT_TYPES:
        raise _fail(
            f"simulate does not know {event_type!r}; it knows "
            + ", ".join(SIMULATED_EVENT_TYPES)
            + "."
        )
    settings = _settings()
    store = None if settings.webhook_secrets and wait <= 0 else _store(settings)
    secret = settings.webhook_secrets[0] if settings.webhook_secrets else None
    if secret is None:
        assert store is not None
        secret = _guard(store.development_secret)
    now = SystemClock().now()
    event = build_event(
        event_type, now=now, phone=phone, amount=amount, currency=currency, livemode=livemode
    )
    body, header = sign_payload(event, secret, timestamp=int(now.timestamp()))
    try:
        response = httpx.post(
            url,
            content=body,
            timeout=10.0,
            headers={
                "Stripe-Signature": header,
                "Content-Type": "application/json; charset=utf-8",
                "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) payherald-simulate",
            },
        )
    except httpx.HTTPError as exc:
        raise _fail(
            f"Could not reach payherald at {url} ({exc}). Is `payherald run` running?", code=1
        ) from None
    err.print(
        f"Sent {event_type} {event['id']} ({'live' if livemode else 'test'} mode) "
        f"to {url}: HTTP {response.status_code} {response.text}"
    )
    if response.status_code >= 300:
        raise typer.Exit(1)
    if store is not None and wait > 0:
        _show_outcome(store, event["id"], wait)


def _show_outcome(store: Store, event_id: str, wait: float) -> None:
    from payherald.recipients import mask_phone
    from payherald.store import TERMINAL_STATUSES

    deadline = time.monotonic() + wait
    rows = store.list_notifications(event_id=event_id)
    while time.monotonic() < deadline and (
        not rows or any(row["status"] not in TERMINAL_STATUSES for row in rows)
    ):
        time.sleep(0.1)
        rows = store.list_notifications(event_id=event_id)
    if not rows:
        err.print(
            "No notification was recorded for it in this database "
            "(is PAYHERALD_DATABASE_URL the same as the server's?)."
        )
        return
    for row in rows:
        outcome = row["status"] + (f" ({row['error']})" if row["error"] else "")
        # A notification that failed before an address was chosen has nobody to name.
        where = f"{row['channel']} to {mask_phone(row['to'])}: " if row["to"] else ""
        err.print(f"  {row['rule']}: {where}{outcome}")
        if row["body"]:
            err.print(f"    {row['body']}")


def _jsonable(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: (row[name].isoformat() if isinstance(row[name], datetime) else row[name])
        for name in fields
    }


def _print_rows(
    rows: list[dict[str, Any]], fields: tuple[str, ...], as_json: bool, columns: tuple[str, ...]
) -> None:
    items = [_jsonable(row, fields) for row in rows]
    if as_json:
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return
    table = Table(*columns)
    for item in items:
        table.add_row(*("" if item[c] is None else str(item[c]) for c in columns))
    out.print(table)


LimitOption = Annotated[int, typer.Option(help="At most this many, newest first.", min=1)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON array.")]


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
    store = _store(_settings())
    rows = _guard(lambda: store.list_notifications(status=status, limit=limit))
    _print_rows(
        rows,
        NOTIFICATION_FIELDS,
        as_json,
        ("id", "event_id", "rule", "channel", "to", "status", "body"),
    )


@config_app.command("check")
def config_check(
    path: Annotated[
        str | None,
        typer.Argument(help="The rules file (default: PAYHERALD_CONFIG or payherald.toml)."),
    ] = None,
) -> None:
    """Validate the rules file and show every rule's message for a sample event."""
    from payherald.config_check import render_samples

    settings = _settings()
    file, required = (Path(path), True) if path else settings.rules_file
    lines, warnings = _guard(
        lambda: render_samples(file, required=required, locale=settings.locale)
    )
    for line in lines:
        out.print(line, markup=False)
    for warning in warnings:
        _warning(warning)
    out.print(f"{file}: OK" if file.exists() else "No rules file: the built-in rules are in use.")


def _phone(settings: Settings, raw: str) -> str:
    from payherald.recipients import normalise_phone

    number = normalise_phone(raw, settings.default_region)
    if number is None:
        raise _fail(f"{raw!r} is not a phone number; write it in E.164 form, like +14155550123.")
    return number


@optout_app.command("add")
def optout_add(
    phone: Annotated[str, typer.Argument(help="The phone number.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "added by an operator",
) -> None:
    """Never message this number again (as a customer)."""
    from payherald.consent import record_consent

    settings = _settings()
    store = _store(settings)
    number = _phone(settings, phone)
    changed = _guard(
        lambda: record_consent(
            store,
            address=number,
            action="opt_out",
            channel="cli",
            words=reason,
            source="cli",
            write_back=settings.stripe_secret_key is not None,
        )
    )
    err.print(f"{number} opted out." if changed else f"{number} was already opted out.")


@optout_app.command("remove")
def optout_remove(phone: Annotated[str, typer.Argument(help="The phone number.")]) -> None:
    """Take a number off the opt-out list (only with the person's consent)."""
    from payherald.consent import record_consent

    settings = _settings()
    store = _store(settings)
    number = _phone(settings, phone)
    changed = _guard(
        lambda: record_consent(
            store,
            address=number,
            action="opt_in",
            channel="cli",
            words="removed by an operator",
            source="cli",
            write_back=settings.stripe_secret_key is not None,
        )
    )
    err.print(
        f"{number} may be messaged again." if changed else f"{number} was not on the opt-out list."
    )


@optout_app.command("list")
def optout_list(as_json: JsonOption = False) -> None:
    """Everyone who must not be messaged, oldest first."""
    from payherald.consent import suppressed

    store = _store(_settings())
    rows = _guard(lambda: suppressed(store))
    _print_rows(
        rows,
        ("address", "reason", "source", "created_at"),
        as_json,
        ("address", "reason", "source", "created_at"),
    )


@optout_app.command("export")
def optout_export(
    file: Annotated[Path | None, typer.Argument(help="Write here instead of stdout.")] = None,
) -> None:
    """Every consent record (who opted in or out, when, how, in which words) as CSV."""
    import csv

    from payherald.consent import CSV_FIELDS, consent_records

    store = _store(_settings())
    rows = _guard(lambda: consent_records(store))
    with file.open("w", newline="") if file else nullcontext(sys.stdout) as stream:
        writer = csv.DictWriter(stream, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "created_at": row["created_at"].isoformat()})
    if file:
        err.print(f"Wrote {len(rows)} consent records to {file}.")


@optout_app.command("import")
def optout_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV with a 'phone' column; optional 'action' (opt_out, opt_in) and 'words'."
        ),
    ],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Import the good rows of a file that has bad ones.")
    ] = False,
) -> None:
    """Import an existing opt-out list. A file with a bad row imports nothing, and every
    bad row is named by its line, unless --skip-bad is given."""
    from payherald.consent import import_consents, read_consent_csv

    settings = _settings()
    store = _store(settings)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise _fail(f"Cannot read {file}: {exc.strerror}.") from None
    rows, problems = read_consent_csv(text, default_region=settings.default_region)
    for problem in problems:
        err.print(f"{file}: {problem}")
    if problems and not skip_bad:
        raise _fail(
            f"Nothing was imported: {len(problems)} bad row"
            f"{'s' if len(problems) != 1 else ''}. Fix them, or pass --skip-bad to "
            f"import the {len(rows)} good ones."
        )
    changed = _guard(
        lambda: import_consents(
            store,
            rows,
            source=f"import:{file.name}",
            write_back=settings.stripe_secret_key is not None,
        )
    )
    skipped = f", {len(problems)} bad rows skipped" if problems else ""
    err.print(f"Imported {len(rows)} rows ({changed} changed the opt-out list){skipped}.")


def main() -> None:
    app()


# The operations commands (backfill, replay, endpoint, doctor) register themselves on `app`.
from payherald import cli_operations  # noqa: E402, F401
