"""The commands that run payherald: run, serve, worker, and migrate."""

from __future__ import annotations

import errno
import os
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from payherald.cli.common import (
    _build,
    _development_fingerprint,
    _refuse_development_secret,
    _settings,
)
from payherald.cli.output import _fail, _guard, err

if TYPE_CHECKING:
    from payherald.app import Payherald

__all__ = ["migrate_command", "run", "serve", "worker"]


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

    feed = ph.http_app.state.feed

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # The live feed's streams end first: uvicorn waits for every open response
            # before it stops, and a stream would not end by itself.
            feed.close()
            super().handle_exit(sig, frame)

    server = Server(uvicorn_config(ph.http_app, ph.settings))

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


def run(host: HostOption = "127.0.0.1", port: PortOption = 8000, dev: DevOption = False) -> None:
    """Server, worker and schema in one process: the way to start on one machine."""
    settings = _settings()
    ph = _build(settings, migrate_schema=True)
    _refuse_development_secret(ph, dev=dev)
    listener = _listen(host, port)
    _announce(ph, host=host, port=port, worker=True)
    _serve(ph, listener, with_worker=True)


def serve(host: HostOption = "127.0.0.1", port: PortOption = 8000, dev: DevOption = False) -> None:
    """Only the HTTP server (webhooks and health); run `payherald worker` beside it."""
    settings = _settings()
    ph = _build(settings)
    _refuse_development_secret(ph, dev=dev)
    listener = _listen(host, port)
    _announce(ph, host=host, port=port, worker=False)
    _serve(ph, listener, with_worker=False)


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


def migrate_command() -> None:
    """Create or upgrade the database schema, and carry opt-outs recorded under a number
    not in E.164 over to its E.164 form."""
    from payherald.clock import SystemClock
    from payherald.consent import upgrade_legacy_opt_outs
    from payherald.store import open_store
    from payherald.store.engine import head_revision, migrate

    settings = _settings()
    store = open_store(settings.sqlalchemy_url, clock=SystemClock())
    _guard(lambda: migrate(store.db.engine))
    upgraded = _guard(
        lambda: upgrade_legacy_opt_outs(store, default_region=settings.default_region)
    )
    store.db.dispose()
    err.print(f"Database schema is at revision {head_revision()}.")
    if upgraded:
        err.print(
            f"{len(upgraded)} opt-out(s) recorded by an older payherald under a number not in "
            "E.164 now also hold for its E.164 form."
        )
