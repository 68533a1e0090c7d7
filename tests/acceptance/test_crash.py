"""A worker killed between the provider accepting a message and recording that it did:
after a restart, no message is sent twice and none is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest

from payherald import load_settings, parse_event
from payherald.app import build
from tests.acceptance.test_cli import clean_env
from tests.support import SECRET, answer_json, event_body

HELD_BODY_MARK = "pi_0_"  # the first payment's message is the one held at the provider


class TwilioPeer(ThreadingHTTPServer):
    """Twilio's Messages API on 127.0.0.1: create and list. It keeps a message the moment
    it arrives, and holds the answer to the first one until released."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        self.holding = threading.Event()
        self.release = threading.Event()


class _Handler(BaseHTTPRequestHandler):
    server: TwilioPeer

    def do_POST(self) -> None:
        form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        peer = self.server
        with peer.lock:
            sid = f"SM{len(peer.messages):032x}"
            peer.messages.append(
                {
                    "sid": sid,
                    "to": form["To"],
                    "from": form.get("From"),
                    "body": form["Body"],
                    "status": "queued",
                    "date_created": format_datetime(datetime.now(UTC), usegmt=True),
                }
            )
        if HELD_BODY_MARK in form["Body"] and not peer.holding.is_set():
            peer.holding.set()
            peer.release.wait(30)  # the worker is killed while it waits for this answer
        self._answer(
            201,
            peer.messages[-1]
            if HELD_BODY_MARK not in form["Body"]
            else {"sid": sid, "status": "queued"},
        )

    def do_GET(self) -> None:
        query = parse_qs(urlsplit(self.path).query)
        with self.server.lock:
            found = [m for m in reversed(self.server.messages) if m["to"] == query["To"][0]]
        self._answer(
            200,
            {
                "messages": found,
                "next_page_uri": None,
                "page": 0,
                "page_size": 50,
                "uri": self.path,
            },
        )

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        answer_json(self, status, body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def peer() -> Iterator[TwilioPeer]:
    server = TwilioPeer()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def test_a_worker_killed_mid_send_neither_duplicates_nor_loses(
    tmp_path: Path, peer: TwilioPeer
) -> None:
    env = clean_env(
        tmp_path,
        PAYHERALD_DATABASE_URL=f"sqlite:///{tmp_path / 'p.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="f" * 32,
        TWILIO_FROM_NUMBER="+15005550006",
        TWILIO_API_BASE=peer.url,
        PAYHERALD_LEASE_SECONDS="2",
        PAYHERALD_WORKER_CONCURRENCY="1",
        PAYHERALD_POLL_INTERVAL="0.1",
    )
    settings = load_settings(
        **{k: v for k, v in env.items() if k.startswith(("PAYHERALD_", "STRIPE_", "TWILIO_"))}
    )
    ph = build(settings, migrate_schema=True)
    for index in range(5):  # five live payments, the first of which will be held
        body = event_body(event_id=f"evt_{index}", livemode=True)
        event = parse_event(body.replace(b'"id": "pi_', f'"id": "pi_{index}_'.encode(), 1))
        ph.store.record_event(event, ph.rules.plan(event))

    worker = subprocess.Popen(
        [sys.executable, "-m", "payherald", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert peer.holding.wait(30), "the worker never sent the first message"
    os.kill(worker.pid, signal.SIGKILL)  # Twilio has the message; payherald never heard back
    worker.wait(10)
    held = [row for row in ph.store.list_notifications() if HELD_BODY_MARK in (row["body"] or "")]
    assert [row["status"] for row in held] == ["sending"]

    restarted = subprocess.Popen(
        [sys.executable, "-m", "payherald", "worker"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while ph.store.count_notifications(status="sent") < 5:
            assert time.monotonic() < deadline, ph.store.list_notifications()
            time.sleep(0.2)
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    bodies = [m["body"] for m in peer.messages]
    assert len(bodies) == 5
    assert len(set(bodies)) == 5
    rows = ph.store.list_notifications()
    assert {row["provider_id"] for row in rows} == {m["sid"] for m in peer.messages}
    (held_row,) = [row for row in rows if HELD_BODY_MARK in row["body"]]
    assert held_row["provider_id"] == peer.messages[0]["sid"]  # found by reconciliation
    ph.engine.dispose()
