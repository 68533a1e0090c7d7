"""Real test peers for payherald: localstripe (fake Stripe) and Prism (fake Twilio).

Plain helpers meant to be wrapped by pytest fixtures. Install the peers with
``bash .ci/peers.sh``; they are looked up under ``<repo>/.peers`` first, then
on ``PATH``. Every server binds to 127.0.0.1 only.
"""

from __future__ import annotations

import http.client
import importlib.util
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

if TYPE_CHECKING:
    import stripe
    from twilio.rest import Client as TwilioClient

REPO_ROOT = Path(__file__).resolve().parent.parent
PEERS_DIR = REPO_ROOT / ".peers"
LOCALSTRIPE_VENV_PYTHON = PEERS_DIR / "localstripe-venv" / "bin" / "python"
TWILIO_SPEC = Path("@twilio-alpha/mcp/twilio-oai/spec/json/twilio_api_v2010.json")

# localstripe's own CLI binds [::]:PORT (all interfaces) and pickles its store
# to the shared /tmp/localstripe.pickle. This launcher serves the same aiohttp
# app on 127.0.0.1 only with an in-memory store, and exits when the parent
# closes its stdin (so a killed test run leaves no orphan server).
#
# localstripe has no /v1/webhook_endpoints. The launcher adds them, shaped like Stripe's
# (the secret only in the answer to a create; `enabled_events` replaced on update), and
# registers each endpoint with localstripe's own webhook sender, so an endpoint created
# through the API really receives signed events.
_LOCALSTRIPE_LAUNCHER = """
import os, secrets, sys, threading, time
from aiohttp import web
from localstripe import resources, server
from localstripe.webhooks import _webhooks, register_webhook
resources.Store.dump_to_disk = lambda self: None
threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
endpoints = {}

def public(endpoint):
    return {k: v for k, v in endpoint.items() if k != "secret"}

def register(endpoint):
    events = endpoint["enabled_events"]
    active = endpoint["status"] == "enabled"
    register_webhook(
        endpoint["id"],
        endpoint["url"] if active else "http://127.0.0.1:9/",
        endpoint["secret"],
        None if "*" in events else list(events),
    )

async def create(request):
    data = await server.get_post_data(request) or {}
    if not data.get("url") or not data.get("enabled_events"):
        raise resources.UserError(400, "url and enabled_events are required")
    endpoint = {
        "id": "we_" + secrets.token_hex(12), "object": "webhook_endpoint",
        "url": data["url"], "enabled_events": list(data["enabled_events"]),
        "description": data.get("description"), "metadata": data.get("metadata") or {},
        "api_version": data.get("api_version"), "status": "enabled", "livemode": False,
        "created": int(time.time()), "secret": "whsec_" + secrets.token_hex(16),
    }
    endpoints[endpoint["id"]] = endpoint
    register(endpoint)
    return web.json_response(endpoint)

async def update(request):
    endpoint = endpoints.get(request.match_info["id"])
    if endpoint is None:
        raise resources.UserError(404, "No such webhook endpoint")
    data = await server.get_post_data(request) or {}
    for key in ("url", "enabled_events", "description", "metadata"):
        if key in data:
            endpoint[key] = list(data[key]) if key == "enabled_events" else data[key]
    if "disabled" in data:
        endpoint["status"] = "disabled" if data["disabled"] == "true" else "enabled"
    register(endpoint)
    return web.json_response(public(endpoint))

async def remove(request):
    endpoint = endpoints.pop(request.match_info["id"], None)
    if endpoint is None:
        raise resources.UserError(404, "No such webhook endpoint")
    _webhooks.pop(endpoint["id"], None)
    return web.json_response({"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True})

async def listing(request):
    data = [public(e) for e in sorted(endpoints.values(), key=lambda e: e["created"])]
    return web.json_response(
        {"object": "list", "data": data, "has_more": False, "url": "/v1/webhook_endpoints"}
    )

async def retrieve(request):
    endpoint = endpoints.get(request.match_info["id"])
    if endpoint is None:
        raise resources.UserError(404, "No such webhook endpoint")
    return web.json_response(public(endpoint))

server.app.router.add_post("/v1/webhook_endpoints", create)
server.app.router.add_get("/v1/webhook_endpoints", listing)
server.app.router.add_get("/v1/webhook_endpoints/{id}", retrieve)
server.app.router.add_post("/v1/webhook_endpoints/{id}", update)
server.app.router.add_delete("/v1/webhook_endpoints/{id}", remove)
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None)
"""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _http(
    method: str,
    port: int,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> int:
    """Send one request to 127.0.0.1:``port``; return the status (OSError if nobody listens)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body or None, headers=headers or {})
        with conn.getresponse() as resp:
            resp.read()
            return resp.status
    finally:
        conn.close()


class _Process:
    """One server subprocess (output to a temp log file), stoppable once, context manager."""

    def __init__(self, argv: list[str], name: str) -> None:
        # Lives as long as the server; closed (and so deleted) by stop().
        self._log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log")  # noqa: SIM115
        self.log_path = Path(self._log.name)
        self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=self._log, stderr=subprocess.STDOUT
        )

    def log(self) -> str:
        """The server's output so far (handy in assertion messages)."""
        return self.log_path.read_text(errors="replace") if not self._log.closed else ""

    def _wait_until_answers(self, port: int, path: str, timeout: float) -> None:
        """Poll 127.0.0.1:``port`` until any HTTP answer; stop and raise on death or timeout."""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                assert self._proc is not None
                if self._proc.poll() is not None:
                    raise RuntimeError(f"{self._proc.args!r} exited:\n{self.log()[-2000:]}")
                try:
                    _http("GET", port, path, timeout=1)  # any status means it is up
                    return
                except OSError:
                    time.sleep(0.1)
            raise TimeoutError(f"port {port} silent after {timeout}s:\n{self.log()[-2000:]}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Terminate the process we started (by its pid; killed if it lingers); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdin is not None:
                proc.stdin.close()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=5)
        self._log.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# ------------------------------------------------------------------------------ localstripe


def localstripe_python() -> str | None:
    """Return a Python that can import localstripe (.peers venv, this one, PATH), or None."""
    if LOCALSTRIPE_VENV_PYTHON.exists():
        return str(LOCALSTRIPE_VENV_PYTHON)
    if importlib.util.find_spec("localstripe") is not None:
        return sys.executable
    script = shutil.which("localstripe")  # a pip console script: reuse its interpreter
    shebang = Path(script).read_text(errors="replace").split("\n")[0] if script else ""
    if shebang.startswith("#!") and Path(shebang[2:].strip()).exists():
        return shebang[2:].strip()
    return None


def localstripe_available() -> str | None:
    """Return why localstripe cannot be started, or None when it can."""
    return None if localstripe_python() else "localstripe not installed (run: bash .ci/peers.sh)"


class LocalStripe(_Process):
    """A fresh, empty localstripe on ``.url`` = http://127.0.0.1:<free port>."""

    def __init__(self, startup_timeout: float = 30.0) -> None:
        python = localstripe_python()
        if python is None:
            raise RuntimeError(localstripe_available())
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        super().__init__([python, "-c", _LOCALSTRIPE_LAUNCHER, str(self.port)], "localstripe")
        self._wait_until_answers(self.port, "/v1/customers", startup_timeout)

    def _send(self, method: str, path: str, fields: Sequence[tuple[str, str]] = ()) -> None:
        body = urllib.parse.urlencode(list(fields)).encode()
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        status = _http(method, self.port, path, body, headers)
        if status >= 300:
            raise RuntimeError(f"localstripe {method} {path} answered {status}")

    def register_webhook(
        self, name: str, url: str, secret: str, events: Sequence[str] | None = None
    ) -> None:
        """Deliver events signed with ``secret`` to ``url``: only ``events`` types if given.

        Each event is POSTed once (no retries), about 1 s after it happens.
        """
        fields = [("url", url), ("secret", secret)] + [("events[]", e) for e in events or ()]
        self._send("POST", f"/_config/webhooks/{urllib.parse.quote(name)}", fields)

    def flush(self) -> None:
        """Delete every stored object (customers, intents, ...); webhooks stay registered."""
        self._send("DELETE", "/_config/data")

    def stripe_client(self, api_key: str = "sk_test_payherald") -> stripe.StripeClient:
        """Return an official ``stripe.StripeClient`` talking to this server (no retries)."""
        import stripe

        return stripe.StripeClient(api_key, base_addresses={"api": self.url}, max_network_retries=0)


def create_customer_and_succeeded_payment(
    client: stripe.StripeClient, phone: str = "+14155550123", amount: int = 2000
) -> tuple[str, str]:
    """Create a US customer with ``phone`` and a confirmed ``pm_card_visa`` PaymentIntent.

    localstripe then POSTs a signed ``payment_intent.succeeded`` event (~1 s later)
    to the registered webhooks. Returns ``(customer_id, payment_intent_id)``.
    """
    customer = client.v1.customers.create(
        params={"name": "Ada Lovelace", "phone": phone, "address": {"country": "US"}}
    )
    intent = client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_visa",
        }
    )
    intent = client.v1.payment_intents.confirm(intent.id)
    if intent.status != "succeeded":
        raise RuntimeError(f"PaymentIntent {intent.id} is {intent.status}, not succeeded")
    return customer.id, intent.id


# ------------------------------------------------------------------------------ Twilio (Prism)


def prism_binary() -> str | None:
    """Return the prism executable (repo .peers first, then PATH), or None."""
    local = PEERS_DIR / "node_modules" / ".bin" / "prism"
    return str(local) if local.exists() else shutil.which("prism")


def twilio_spec() -> Path | None:
    """Return Twilio's api v2010 OpenAPI spec shipped by @twilio-alpha/mcp, or None."""
    dirs = [PEERS_DIR / "node_modules"]
    prism = prism_binary()
    if prism:  # e.g. a global install: the node_modules that holds prism-cli
        dirs += [d for d in Path(prism).resolve().parents if d.name == "node_modules"]
    return next((d / TWILIO_SPEC for d in dirs if (d / TWILIO_SPEC).is_file()), None)


def prism_available() -> str | None:
    """Return why the Twilio mock cannot be started, or None when it can."""
    if shutil.which("node") is None:
        return "node not installed"
    if prism_binary() is None:
        return "@stoplight/prism-cli not installed (run: bash .ci/peers.sh)"
    if twilio_spec() is None:
        return "@twilio-alpha/mcp (twilio_api_v2010.json) not installed (run: bash .ci/peers.sh)"
    return None


@dataclass(frozen=True)
class RecordedRequest:
    """One request seen by the recording proxy; ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host"}


class _RecordingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, recorded: list[RecordedRequest], lock: threading.Lock) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream_port = port
        self.recorded = recorded
        self.lock = lock


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _RecordingProxy
    protocol_version = "HTTP/1.1"

    def _proxy(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in self.headers.items()}
        form: dict[str, str] = {}
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            form = dict(urllib.parse.parse_qsl(body.decode(), keep_blank_values=True))
        with self.server.lock:
            self.server.recorded.append(
                RecordedRequest(self.command, self.path, headers, body, form)
            )
        upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream_port, timeout=30)
        try:
            fwd = {k: v for k, v in headers.items() if k not in _HOP_BY_HOP}
            upstream.request(self.command, self.path, body=body or None, headers=fwd)
            resp = upstream.getresponse()
            payload = resp.read()
        finally:
            upstream.close()
        self.send_response(resp.status, resp.reason)
        for key, value in resp.getheaders():
            if key.lower() not in _HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _proxy

    def log_message(self, format: str, *args: object) -> None:
        """Stay quiet: requests are in ``TwilioMock.requests``."""


class TwilioMock(_Process):
    """Prism serving Twilio's api v2010 spec, behind a recording proxy on 127.0.0.1.

    ``.url`` replaces ``https://api.twilio.com``. ``dynamic=True`` (``prism -d``)
    answers random schema-valid bodies; ``dynamic=False`` answers the spec's fixed
    examples (message sid ``SMaaaa...``, status ``queued``).
    """

    def __init__(self, dynamic: bool = True, startup_timeout: float = 60.0) -> None:
        prism, spec = prism_binary(), twilio_spec()
        if prism is None or spec is None:
            raise RuntimeError(prism_available())
        self.prism_port = free_port()
        self.prism_url = f"http://127.0.0.1:{self.prism_port}"
        argv = [prism, "mock", *(["-d"] if dynamic else []), "-h", "127.0.0.1"]
        super().__init__([*argv, "-p", str(self.prism_port), str(spec)], "prism")
        self._wait_until_answers(self.prism_port, "/", startup_timeout)
        self._recorded: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._proxy: _RecordingProxy | None = _RecordingProxy(
            self.prism_port, self._recorded, self._lock
        )
        threading.Thread(target=self._proxy.serve_forever, name="twilio-proxy", daemon=True).start()
        self.url = f"http://127.0.0.1:{self._proxy.server_address[1]}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every request received so far, oldest first (kept after stop)."""
        with self._lock:
            return list(self._recorded)

    def messages(self) -> list[RecordedRequest]:
        """The recorded message-create requests (``POST .../Messages.json``)."""
        return [
            r for r in self.requests if r.method == "POST" and r.path.endswith("/Messages.json")
        ]

    def clear(self) -> None:
        """Forget the recorded requests."""
        with self._lock:
            self._recorded.clear()

    def twilio_client(
        self,
        account_sid: str = "AC" + "0" * 32,
        token: str = "token",  # noqa: S107
    ) -> TwilioClient:
        """Return an official twilio ``Client`` whose api.twilio.com domain is ``.url``."""
        from twilio.rest import Client

        client = Client(account_sid, token)
        client.api.base_url = self.url
        return client

    def stop(self) -> None:
        """Stop the proxy, then Prism; idempotent."""
        proxy, self._proxy = getattr(self, "_proxy", None), None
        if proxy is not None:
            proxy.shutdown()
            proxy.server_close()
        super().stop()
