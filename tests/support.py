"""Helpers shared by the test tiers: signing, a loopback server, a TCP proxy, databases."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from email import message_from_bytes
from email.message import Message as EmailMessage
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlencode

import httpx
import stripe
import uvicorn
from sqlalchemy import create_engine, text

from tests.peers import free_port

SECRET = "whsec_test_secret_for_payherald_tests"
OTHER_SECRET = "whsec_another_endpoint_secret_value"
POSTGRES_ENV = "PAYHERALD_TEST_POSTGRES_URL"


def sign(body: bytes | str, secret: str = SECRET, *, timestamp: int | None = None) -> str:
    payload = body.decode() if isinstance(body, bytes) else body
    return stripe.WebhookSignature.generate_signature_header(
        payload, secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )


def event_body(
    event_type: str = "payment_intent.succeeded",
    *,
    event_id: str | None = None,
    livemode: bool = False,
    obj: dict[str, Any] | None = None,
) -> bytes:
    """A realistic event body; types simulate does not know get a payment intent object."""
    from payherald.clock import SystemClock
    from payherald.simulate import SIMULATED_EVENT_TYPES, build_event

    known = event_type if event_type in SIMULATED_EVENT_TYPES else "payment_intent.succeeded"
    event = build_event(known, now=SystemClock().now(), livemode=livemode)
    event["type"] = event_type
    if event_id:
        event["id"] = event_id
    if obj is not None:
        event["data"]["object"] = obj
    return json.dumps(event).encode()


class LiveServer:
    """An ASGI app served by uvicorn on 127.0.0.1 in a background thread, configured as
    `payherald run` serves it (``serving.uvicorn_config``) with ``settings`` (the defaults
    when not given)."""

    def __init__(self, app: Any, settings: Any = None) -> None:
        from payherald import load_settings
        from payherald.serving import uvicorn_config

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn_config(app, settings or load_settings(), host="127.0.0.1", port=self.port)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start in 10 s")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


DUNNING_STEPS = ("invoice_payment_failed", "dunning_reminder", "dunning_final")


def move_clock(ph: Any, clock: Any, seconds: float) -> None:
    """``seconds`` later on ``clock``, in hourly steps, ``ph``'s worker doing what falls due
    on the way."""
    while seconds > 0:
        step = min(seconds, 3600)
        clock.advance(step)
        ph.worker.run_until_idle()
        seconds -= step


def dunning_steps(ph: Any) -> dict[str, str]:
    """Each dunning step's notification (the last of each rule): its status."""
    return {
        row["rule"]: row["status"]
        for row in ph.store.list_notifications(limit=1000)
        if row["rule"] in DUNNING_STEPS
    }


class StripeOnLoopback:
    """payherald served on loopback (``server``), posted events as Stripe posts them."""

    def __init__(self, ph: Any, server: LiveServer, clock: Any, sms: Any) -> None:
        self.ph, self.server, self.clock, self.sms = ph, server, clock, sms
        self.client = httpx.Client(base_url=server.url, timeout=30)

    def __enter__(self) -> StripeOnLoopback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.client.close()

    def send(self, event: dict[str, Any], *, pause: float = 2.0) -> None:
        """Post ``event`` as Stripe would, ``pause`` seconds after the one before, and let
        the worker do all it can before the next one arrives."""
        from payherald.simulate import sign_payload

        self.clock.advance(pause)
        body, header = sign_payload(event, SECRET, timestamp=int(self.clock.now().timestamp()))
        response = self.client.post(
            "/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
        )
        assert response.status_code == 200, response.text
        self.ph.worker.run_until_idle()


@contextlib.contextmanager
def served_with_admin_token(
    database_url: str, token: str, **settings: str
) -> Iterator[StripeOnLoopback]:
    """payherald on loopback as the dashboard's tests want it: ``token`` as
    PAYHERALD_ADMIN_TOKEN, Twilio's settings with a scripted SMS channel (``sms``), a clock
    frozen at 2026-12-04 15:00 UTC, and ``settings`` besides."""
    from datetime import UTC, datetime

    from payherald import FrozenClock
    from payherald.testing import ScriptedChannel

    clock, sms = FrozenClock(datetime(2026, 12, 4, 15, 0, tzinfo=UTC)), ScriptedChannel()
    ph = build_for_tests(
        database_url,
        settings={**TWILIO_SETTINGS, "PAYHERALD_ADMIN_TOKEN": token, **settings},
        clock=clock,
        channels={"sms": sms},
    )
    try:
        with LiveServer(ph.http_app) as server, StripeOnLoopback(ph, server, clock, sms) as on:
            yield on
    finally:
        ph.engine.dispose()


class TcpProxy:
    """A loopback TCP proxy that can be cut, to make a real database unreachable."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._open = True
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while self._open:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self._open:
                client.close()
                return
            try:
                upstream = socket.create_connection(self._target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        """Refuse new connections and drop open ones, like a stopped server."""
        self._open = False
        # close() alone does not wake a thread blocked in accept() on Linux; shutdown does.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for one test; dropped afterwards."""
    base = os.environ[POSTGRES_ENV]
    name = "payherald_t_" + secrets.token_hex(6)
    admin = create_engine(_sqlalchemy(base), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def _sqlalchemy(url: str) -> str:
    return url.replace("postgresql://", "postgresql+psycopg://", 1)


def build_for_tests(database_url: str, **kwargs: Any) -> Any:
    """A payherald built on ``database_url`` with the test secret, migrated, quiet hours
    off; keyword arguments go to ``build`` (clock, console, channels, customers,
    quiet_hours)."""
    import io

    from payherald import ConsoleChannel, build, load_settings
    from payherald.quiet_hours import QuietHours

    overrides = {
        "PAYHERALD_DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        # A test that wants the scheduled reconciliation turns it on.
        "PAYHERALD_RECONCILE_INTERVAL_SECONDS": "0",
        # And the scheduled prune.
        "PAYHERALD_RETENTION_DAYS": "0",
    }
    overrides.update(kwargs.pop("settings", {}))
    settings = load_settings(**overrides)
    kwargs.setdefault("console", ConsoleChannel(stream=io.StringIO()))
    # Tests run at any hour; quiet hours are tested with a clock set to the hour wanted.
    kwargs.setdefault("quiet_hours", QuietHours(enabled=False))
    return build(settings, migrate_schema=True, **kwargs)


@contextlib.contextmanager
def serving(server: Any) -> Iterator[Any]:
    """Run an ``http.server`` server on a daemon thread; shut it down after."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def answer_json(handler: Any, status: int, body: Any) -> None:
    """Answer an ``http.server`` request with ``body`` as JSON."""
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


TWILIO_TOKEN = "f" * 32
PUBLIC_URL = "https://payherald.example.com"
TWILIO_SETTINGS = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": TWILIO_TOKEN,
    "TWILIO_FROM_NUMBER": "+15005550006",
    "PAYHERALD_PUBLIC_URL": PUBLIC_URL,
}


def post_as_twilio(
    base: str,
    path: str,
    params: dict[str, str],
    *,
    token: str = TWILIO_TOKEN,
    client: Any = None,
) -> Any:
    """POST ``params`` to ``path`` signed as Twilio signs a request to PUBLIC_URL + path."""
    import httpx
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, params)
    return (client or httpx).post(
        f"{base}{path}",
        content=urlencode(params),
        headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )


def opt_out_as_older_payherald(database_url: str, address: str, *, words: str = "STOP") -> None:
    """Record a STOP from ``address`` as payherald did before it read a reply's sender to
    E.164: the suppression and the consent under the sender as Twilio wrote it."""
    from datetime import UTC, datetime, timedelta

    from payherald.store.engine import create_store_engine, migrate
    from payherald.store.schema import consents, suppressions

    engine = create_store_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    migrate(engine)  # the schema only, as a migration by the older payherald left it
    at = datetime.now(UTC) - timedelta(days=400)
    with engine.begin() as connection:
        connection.execute(
            suppressions.insert().values(
                address=address, reason=f"opted out (reply: {words})", source="reply", created_at=at
            )
        )
        connection.execute(
            consents.insert().values(
                address=address,
                action="opt_out",
                channel="sms",
                words=words,
                source="reply",
                created_at=at,
            )
        )
    engine.dispose()


class Mailbox:
    """An aiosmtpd handler that keeps what it is sent, and refuses whom it is told to."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.refuse: dict[str, str] = {}

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: Any
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.content))
        )
        return "250 Message accepted for delivery"


class SlackReceiver(BaseHTTPRequestHandler):
    posts: list[tuple[str, dict[str, Any]]]
    answer: tuple[int, str, dict[str, str]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append((self.path, json.loads(body)))
        status, text, headers = self.answer
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, format: str, *args: object) -> None:
        pass
