"""`payherald run`, `serve` and `worker` as systemd stops them (SIGTERM), and `run` and
`serve` as a second copy meets a port that is taken."""

from __future__ import annotations

import signal
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl

import httpx
import pytest

from tests.acceptance.test_cli import PAYHERALD, clean_env, cli
from tests.peers import free_port
from tests.support import SECRET, answer_json, event_body, serving, sign

# How long the Twilio stand-in takes to accept a message: long enough that SIGTERM always
# finds sends in flight.
SEND_SECONDS = 0.3


class SlowTwilio(ThreadingHTTPServer):
    """Twilio's Messages API on 127.0.0.1, accepting each message after SEND_SECONDS."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowTwilioHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.accepted = 0


class _SlowTwilioHandler(BaseHTTPRequestHandler):
    server: SlowTwilio

    def do_POST(self) -> None:
        form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        time.sleep(SEND_SECONDS)
        with self.server.lock:
            self.server.accepted += 1
            sid = f"SM{self.server.accepted:032x}"
        answer_json(
            self,
            201,
            {
                "sid": sid,
                "to": form["To"],
                "from": form.get("From"),
                "body": form["Body"],
                "status": "queued",
                "date_created": format_datetime(datetime.now(UTC), usegmt=True),
            },
        )

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def twilio() -> Iterator[SlowTwilio]:
    with serving(SlowTwilio()) as server:
        yield server


def start(cwd: Path, command: str, port: int, **env: str) -> subprocess.Popen[str]:
    """`payherald COMMAND --port PORT` in ``cwd``, once it answers /healthz."""
    log = (cwd / f"{command}.log").open("w")
    process = subprocess.Popen(
        [*PAYHERALD, command, "--port", str(port)],
        cwd=cwd,
        env=clean_env(cwd, PAYHERALD_LOG_FORMAT="json", **env),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    log.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(
                f"payherald {command} did not start:\n" + (cwd / f"{command}.log").read_text()
            )
        time.sleep(0.1)


def post_event(url: str) -> bool:
    """Post one signed live-mode payment; whether payherald acknowledged it."""
    body = event_body(livemode=True)
    try:
        answer = httpx.post(
            url,
            content=body,
            headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
            timeout=10,
        )
    except httpx.HTTPError:
        return False  # the server stopped listening: what SIGTERM does
    return answer.status_code == 200


def statuses(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as connection:
        return dict(
            connection.execute("SELECT status, count(*) FROM notifications GROUP BY status")
        )


def test_sigterm_during_a_burst_stops_the_worker_cleanly_and_exits_0(
    tmp_path: Path, twilio: SlowTwilio
) -> None:
    database = tmp_path / "payherald.db"
    port = free_port()
    process = start(
        tmp_path,
        "run",
        port,
        PAYHERALD_DATABASE_URL=f"sqlite:///{database}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="f" * 32,
        TWILIO_FROM_NUMBER="+15005550006",
        TWILIO_API_BASE=twilio.url,
        PAYHERALD_WORKER_CONCURRENCY="4",
    )
    url = f"http://127.0.0.1:{port}/webhooks/stripe"
    try:
        with ThreadPoolExecutor(8) as posters:
            acknowledged = [posters.submit(post_event, url) for _ in range(200)]
            deadline = time.monotonic() + 30
            while twilio.accepted < 4:  # the worker is sending, and more is queued
                assert time.monotonic() < deadline, "payherald never sent a message"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)  # what `systemctl stop` sends
            code = process.wait(60)
        assert any(future.result() for future in acknowledged)
    finally:
        if process.poll() is None:
            process.kill()
    log = (tmp_path / "run.log").read_text()
    assert code == 0, log
    assert '"event": "worker_stopped"' in log, log
    left = statuses(database)
    assert "sending" not in left, left
    assert "claimed" not in left, left
    assert left.get("sent") == twilio.accepted, left  # each message Twilio took is recorded


def test_serve_exits_0_on_sigterm(tmp_path: Path) -> None:
    env = {"PAYHERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'payherald.db'}"}
    assert cli(tmp_path, "migrate", **env).returncode == 0
    process = start(tmp_path, "serve", free_port(), **env)
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0, (tmp_path / "serve.log").read_text()


def test_worker_exits_0_on_sigterm_once_stopped(tmp_path: Path) -> None:
    env = {"PAYHERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'payherald.db'}"}
    assert cli(tmp_path, "migrate", **env).returncode == 0
    log = tmp_path / "worker.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*PAYHERALD, "worker"],
            cwd=tmp_path,
            env=clean_env(tmp_path, PAYHERALD_LOG_FORMAT="json", **env),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while '"event": "worker_started"' not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
    assert '"event": "worker_stopped"' in log.read_text()


@pytest.mark.parametrize("command", ["run", "serve"])
def test_a_port_in_use_is_refused_in_one_sentence_before_listening(
    tmp_path: Path, command: str
) -> None:
    assert cli(tmp_path, "migrate").returncode == 0
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = cli(tmp_path, command, "--port", str(port))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == (
        f"payherald: Cannot listen on 127.0.0.1:{port}: another program (perhaps another "
        "payherald) is already listening there; stop it, or pass --port with a free port."
    )
    assert "worker_started" not in result.stderr


def test_sigterm_with_a_dashboard_open_ends_its_live_feed_and_exits_0(tmp_path: Path) -> None:
    """An open live feed (a dashboard left open) does not hold `payherald run` up: the
    stream ends and the server stops as it would with no browser connected."""
    port = free_port()
    process = start(
        tmp_path,
        "run",
        port,
        PAYHERALD_DATABASE_URL=f"sqlite:///{tmp_path / 'payherald.db'}",
        PAYHERALD_ADMIN_TOKEN="shutdown-admin-token",
    )
    ended = threading.Event()

    def watch() -> None:
        with httpx.stream(
            "GET",
            f"http://127.0.0.1:{port}/api/feed",
            headers={"Authorization": "Bearer shutdown-admin-token"},
            timeout=60,
        ) as response:
            assert response.status_code == 200
            for _ in response.iter_lines():
                pass
        ended.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    time.sleep(1.0)  # the stream is open
    process.send_signal(signal.SIGTERM)
    assert process.wait(15) == 0, (tmp_path / "run.log").read_text()
    assert ended.wait(5), "the live feed's stream did not end"
