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
from rich.markup import escape
from rich.table import Table

from payherald.exceptions import PayheraldError
from payherald.settings import Settings, load_settings
from payherald.simulate import SIMULATED_EVENT_TYPES
from payherald.terminal import OperatorConsole

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
# escapes what it puts inside. Terminal escapes in that text are printed escaped
# (OperatorConsole), never sent to the terminal.
err = OperatorConsole(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = OperatorConsole(highlight=False, soft_wrap=True, markup=False, emoji=False)
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


def _build(settings: Settings, *, migrate_schema: bool = False) -> Payherald:
    """payherald built from ``settings``; its development secret, when it made one, is
    scrubbed from the logs like the configured secrets."""
    from payherald.app import build

    ph = _guard(lambda: build(settings, migrate_schema=migrate_schema))
    if ph.development_secret:
        _scrub_development_secret(settings, ph.development_secret)
    return ph


def _scrub_development_secret(settings: Settings, secret: str) -> None:
    """Scrub the development secret from the logs, like the configured secrets."""
    from payherald.logs import configure_logging

    configure_logging(secrets=[*settings.secret_values(), secret], log_format=settings.log_format)


def _refuse_development_secret(ph: Payherald, *, dev: bool) -> None:
    """Exit with a sentence if ``ph`` would take events signed with the development
    secret while something real is configured (a provider channel or a live key),
    unless the operator passed --dev."""
    if ph.development_secret is None or dev:
        return
    real = list(ph.channels)
    if ph.settings.stripe_key_mode == "live":
        real.append("a live Stripe key")
    if real:
        raise _fail(
            f"STRIPE_WEBHOOK_SECRET is not set and real sending is configured "
            f"({', '.join(real)}): set STRIPE_WEBHOOK_SECRET to your endpoint's signing "
            "secret (`payherald endpoint register https://your-host` prints it), or pass "
            "--dev to try payherald out with its development secret."
        )


def _development_fingerprint(secret: str) -> str:
    """How the development secret is shown: enough to tell two apart, never enough to
    sign with (`simulate` reads the secret itself from the store)."""
    from payherald.endpoints import secret_fingerprint

    return f"whsec_dev_…{secret_fingerprint(secret)[:8]}"


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
            f"{escape(_development_fingerprint(ph.development_secret))}[/] for test-mode events\n"
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

    from payherald.serving import uvicorn_config

    server = uvicorn.Server(uvicorn_config(ph.http_app, ph.settings))

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
DevOption = Annotated[
    bool,
    typer.Option(
        "--dev",
        help="Accept test-mode events signed with the development secret even though a "
        "provider or a live key is configured, for trying payherald out (only without "
        "STRIPE_WEBHOOK_SECRET).",
    ),
]


@app.command()
def run(host: HostOption = "127.0.0.1", port: PortOption = 8000, dev: DevOption = False) -> None:
    """Server, worker and schema in one process: the way to start on one machine."""
    settings = _settings()
    ph = _build(settings, migrate_schema=True)
    _refuse_development_secret(ph, dev=dev)
    listener = _listen(host, port)
    _announce(ph, host=host, port=port, worker=True)
    _serve(ph, listener, with_worker=True)


@app.command()
def serve(host: HostOption = "127.0.0.1", port: PortOption = 8000, dev: DevOption = False) -> None:
    """Only the HTTP server (webhooks and health); run `payherald worker` beside it."""
    settings = _settings()
    ph = _build(settings)
    _refuse_development_secret(ph, dev=dev)
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
    settings = _settings()
    ph = _build(settings)
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
    """Create or upgrade the database schema, and carry opt-outs recorded under a number
    not in E.164 over to its E.164 form."""
    from sqlalchemy.exc import SQLAlchemyError

    from payherald.clock import SystemClock
    from payherald.consent import upgrade_legacy_opt_outs
    from payherald.database import cannot_open, create_store_engine, head_revision, migrate
    from payherald.store import Store

    settings = _settings()
    engine = create_store_engine(settings.sqlalchemy_url)
    try:
        migrate(engine)
    except SQLAlchemyError as exc:
        raise _fail(cannot_open(settings.database_url, exc)) from None
    store = Store(engine=engine, clock=SystemClock())
    upgraded = _guard(
        lambda: upgrade_legacy_opt_outs(store, default_region=settings.default_region)
    )
    engine.dispose()
    err.print(f"Database schema is at revision {head_revision()}.")
    if upgraded:
        err.print(
            f"{len(upgraded)} opt-out(s) recorded by an older payherald under a number not in "
            "E.164 now also hold for its E.164 form."
        )


@app.command()
def simulate(
    event_type: Annotated[str, typer.Argument(help="One of: " + ", ".join(SIMULATED_EVENT_TYPES))],
    url: Annotated[
        str,
        typer.Option(
            help="payherald's address (http://127.0.0.1:8000), or its webhook URL "
            "(http://127.0.0.1:8000/webhooks/stripe)."
        ),
    ] = "http://127.0.0.1:8000",
    phone: Annotated[str, typer.Option(help="The customer's phone number.")] = "+14155550123",
    amount: Annotated[int, typer.Option(help="In the currency's smallest unit.", min=0)] = 2000,
    currency: Annotated[str, typer.Option(help="Three-letter currency code.")] = "usd",
    livemode: Annotated[
        bool,
        typer.Option(
            help="Send as a live-mode event, signed with a live: (or unmarked) secret of "
            "STRIPE_WEBHOOK_SECRET; the development secret signs only test-mode events."
        ),
    ] = False,
    api_version: Annotated[
        str | None,
        typer.Option(
            help="The Stripe API version whose shapes to send, from 2024-06-20 on (default: "
            "the installed stripe SDK's)."
        ),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the messages.")] = 10.0,
) -> None:
    """Send a realistic, signed Stripe event to a running payherald and show what it sent."""
    import httpx

    from payherald.api_versions import NEWEST_SUPPORTED, unsupported_reason
    from payherald.clock import SystemClock
    from payherald.simulate import build_simulation, sign_payload

    if event_type not in SIMULATED_EVENT_TYPES:
        raise _fail(
            f"simulate does not know {event_type!r}; it knows "
            + ", ".join(SIMULATED_EVENT_TYPES)
            + "."
        )
    version = api_version or NEWEST_SUPPORTED
    if api_version is not None and (reason := unsupported_reason(api_version)):
        raise _fail(f"--api-version: {reason}")
    target = _webhook_target(url)
    settings = _settings()
    mode = "live" if livemode else "test"
    if livemode and not settings.webhook_secrets:
        raise _fail(
            "simulate --livemode needs STRIPE_WEBHOOK_SECRET, the signing secret of the "
            "endpoint payherald takes live events on: payherald refuses live-mode events "
            "signed with its development secret."
        )
    signing = [secret for mark, secret in settings.marked_webhook_secrets if mark in (None, mode)]
    if settings.webhook_secrets and not signing:
        raise _fail(
            f"STRIPE_WEBHOOK_SECRET has no secret marked {mode}: (nor an unmarked one) to sign "
            f"a {mode}-mode event with; add the {mode} endpoint's secret, or "
            + ("drop --livemode." if livemode else "pass --livemode.")
        )
    store = None if settings.webhook_secrets and wait <= 0 else _store(settings)
    secret = signing[0] if signing else None
    if secret is None:
        assert store is not None
        secret = _guard(store.development_secret)
        _scrub_development_secret(settings, secret)
    now = SystemClock().now()
    *companions, event = build_simulation(
        event_type,
        now=now,
        phone=phone,
        amount=amount,
        currency=currency,
        livemode=livemode,
        api_version=version,
    )

    def post(payload: dict[str, Any]) -> httpx.Response:
        body, header = sign_payload(payload, secret, timestamp=int(now.timestamp()))
        try:
            return httpx.post(
                target,
                content=body,
                timeout=10.0,
                headers={
                    "Stripe-Signature": header,
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) "
                    "payherald-simulate",
                },
            )
        except httpx.HTTPError as exc:
            raise _fail(
                f"Could not reach payherald at {target} ({exc}). Is `payherald run` running?",
                code=1,
            ) from None

    for companion in companions:
        sent = post(companion)
        err.print(
            f"Sent {companion['type']} {companion['id']} first, as Stripe does: HTTP "
            f"{sent.status_code}",
            markup=False,
        )
    response = post(event)
    err.print(
        f"Sent {event_type} {event['id']} ({'live' if livemode else 'test'} mode) "
        f"to {target}: HTTP {response.status_code} {response.text}"
    )
    if response.status_code == 404:
        raise _fail(
            f"Nothing at {target} takes Stripe webhooks; pass payherald's address as --url, "
            "like http://127.0.0.1:8000.",
            code=1,
        )
    if response.status_code >= 300:
        raise typer.Exit(1)
    if store is not None and wait > 0:
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        _show_outcome(
            store,
            settings,
            event_id=event["id"],
            event_type=event_type,
            wait=wait,
            answer=answer if isinstance(answer, dict) else {},
        )


def _webhook_target(url: str) -> str:
    """Where simulate posts for ``--url``: payherald's address (with or without a path of
    its own, a trailing slash or not) gets the webhook path; its webhook URL is kept."""
    from urllib.parse import urlsplit

    from payherald.endpoints import WEBHOOK_PATH

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(
            f"--url {url!r} is not a URL; give payherald's address, like http://127.0.0.1:8000."
        )
    path = parts.path.rstrip("/")
    if not path.endswith(WEBHOOK_PATH):
        path += WEBHOOK_PATH
    return parts._replace(path=path).geturl()


def _show_outcome(
    store: Store,
    settings: Settings,
    *,
    event_id: str,
    event_type: str,
    wait: float,
    answer: dict[str, Any],
) -> None:
    """What became of the event the server acknowledged (``answer`` is its reply): each
    notification it queued once settled, or why it queued none."""
    from payherald.recipients import mask_phone
    from payherald.store import TERMINAL_STATUSES

    event = _guard(lambda: store.get_event(event_id))
    if event is None:
        err.print(
            f"The server stored {event_id}, but this database has no such event, so what "
            "became of it cannot be shown (is PAYHERALD_DATABASE_URL the same as the server's?)."
        )
        return
    if answer.get("queued") == 0:
        for line in _nothing_queued(settings, event, duplicate=bool(answer.get("duplicate"))):
            err.print(line)
        return
    deadline = time.monotonic() + wait
    rows = store.list_notifications(event_id=event_id)
    while time.monotonic() < deadline and (
        not rows or any(row["status"] not in TERMINAL_STATUSES for row in rows)
    ):
        time.sleep(0.1)
        rows = store.list_notifications(event_id=event_id)
    if not rows:
        err.print(f"No notification of {event_id} was recorded within {wait:g} s.")
        return
    for row in rows:
        outcome = row["status"] + (f" ({row['error']})" if row["error"] else "")
        # A notification that failed before an address was chosen has nobody to name.
        where = f"{row['channel']} to {mask_phone(row['to'])}: " if row["to"] else ""
        err.print(f"  {row['rule']}: {where}{outcome}")
        if row["body"]:
            err.print(f"    {row['body']}")


def _nothing_queued(settings: Settings, event: dict[str, Any], *, duplicate: bool) -> list[str]:
    """Why the server queued no notification for ``event`` (a stored event's row), in the
    words of its rules file: the lines to print."""
    from payherald.config import load_config
    from payherald.messages import TemplateRenderer

    if duplicate:
        return [f"payherald already had {event['id']}, so nothing new was queued."]
    if event["status"] == "failed":
        reason = (event["error"] or "").strip().splitlines()[-1:] or ["see the server's log"]
        return [
            f"Nothing was queued: processing the event failed ({reason[0]}); fix the cause, "
            f"then run `payherald replay {event['id']}`."
        ]
    if event["status"] != "ignored":
        return [
            "Nothing new was queued: this payment's messages were already queued for an "
            "earlier event, and payherald sends each once."
        ]
    path, required = settings.rules_file
    try:
        book = load_config(path, required=required).rule_book(
            TemplateRenderer(locale=settings.locale)
        )
    except PayheraldError as exc:
        return [f"No rule queued anything for it ({exc.message})."]
    event_type = event["type"]
    handling = [rule for rule in book.rules if rule.enabled and event_type in rule.events]
    if not handling:
        return [
            f"No rule handles {event_type}, so nothing was queued; add one to the rules file "
            "(`payherald config check` lists each rule and its events)."
        ]
    lines = ["Nothing was queued for it:"]
    for rule in handling:
        team = book.teams.get(rule.team) if rule.team else None
        if rule.team and team is None:
            why = (
                f"it sends to team {rule.team!r}, which is not defined in {path}; add "
                f"[teams.{rule.team}] with its sms, email or slack_webhook."
            )
        elif team is not None and not any(team.addresses(c) for c in rule.channels):
            why = (
                f"team {rule.team!r} has no address on this rule's channels "
                f"({', '.join(rule.channels)}); add one in [teams.{rule.team}]."
            )
        elif rule.first_payment_only:
            why = "it welcomes a customer's first payment, and the event names no customer."
        elif rule.when:
            why = f"its condition ({rule.when}) does not hold for this event."
        else:
            why = "it planned nothing for this event."
        lines.append(f"  {rule.name}: {why}")
    return lines


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
    from payherald.queue import STATUSES

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
    """Every consent record (who opted in or out, when, how, in which words) as CSV; a file
    is written readable by you only, and cells a spreadsheet would run as formulas start
    with a single quote."""
    from payherald.consent import consent_records, write_consent_csv
    from payherald.files import open_private

    store = _store(_settings())
    rows = _guard(lambda: consent_records(store))
    try:
        stream = open_private(file) if file else nullcontext(sys.stdout)
    except OSError as exc:
        raise _fail(f"Cannot write {file}: {exc.strerror}.") from None
    with stream as opened:
        write_consent_csv(opened, rows)
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
from payherald.cli import operations  # noqa: E402, F401
