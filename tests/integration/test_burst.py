"""Draining a burst through the real Twilio SDK to a loopback Twilio-shaped server that
answers 429 to 30% of requests: every message sent once, never more in flight than the
worker allows, and a per-sender rate limit held.

Prism cannot be told to answer 429, so this peer is a small server of our own speaking
Twilio's Messages API on 127.0.0.1.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest

from payherald import parse_event
from tests.support import answer_json, build_for_tests, event_body, serving


class TwilioBurstPeer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, *, refuse: float, seed: int = 7) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.rng = random.Random(seed)
        self.refuse = refuse
        self.in_flight = self.max_in_flight = 0
        self.created: dict[str, dict[str, str]] = {}
        self.accepted_at: list[float] = []
        self.arrivals: list[tuple[float, str]] = []  # (monotonic time, To) of each request
        self.refused = 0


class _Handler(BaseHTTPRequestHandler):
    server: TwilioBurstPeer

    def do_POST(self) -> None:
        peer = self.server
        form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        with peer.lock:
            peer.arrivals.append((time.monotonic(), form.get("To", "")))
            peer.in_flight += 1
            peer.max_in_flight = max(peer.max_in_flight, peer.in_flight)
            refused = peer.rng.random() < peer.refuse
        time.sleep(0.003)  # the provider's own latency
        with peer.lock:
            peer.in_flight -= 1
            if refused:
                peer.refused += 1
            else:
                sid = f"SM{len(peer.created):032x}"
                peer.created[sid] = form
                peer.accepted_at.append(time.monotonic())
        if refused:
            body = {"code": 20429, "message": "Too Many Requests", "status": 429}
            self._answer(429, body)
        else:
            self._answer(
                201,
                {"sid": sid, "status": "queued", "to": form.get("To"), "body": form.get("Body")},
            )

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        answer_json(self, status, body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[TwilioBurstPeer]:
    with serving(TwilioBurstPeer(refuse=getattr(request, "param", 0.3))) as server:
        yield server


def queue_payments(ph: Any, count: int) -> None:
    for index in range(count):
        body = event_body(event_id=f"evt_{index}", livemode=True)
        event = parse_event(body.replace(b'"id": "pi_', f'"id": "pi_{index}_'.encode(), 1))
        ph.store.record_event(event, ph.rules.plan(event))


def drain(ph: Any, count: int, timeout: float) -> None:
    ph.start_worker()
    try:
        deadline = time.monotonic() + timeout
        while ph.store.count_notifications(status="sent") < count:
            assert time.monotonic() < deadline, ph.store.list_notifications(status="pending")
            time.sleep(0.2)
    finally:
        ph.stop()


def settings_for(peer: TwilioBurstPeer, tmp_path: Any, rules: str = "") -> dict[str, str]:
    config = tmp_path / "payherald.toml"
    config.write_text(rules)
    return {
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "f" * 32,
        "TWILIO_FROM_NUMBER": "+15005550006",
        "TWILIO_API_BASE": peer.url,
        "PAYHERALD_RETRY_BASE_SECONDS": "0.01",
        "PAYHERALD_MAX_ATTEMPTS": "40",
        "PAYHERALD_WORKER_CONCURRENCY": "8",
        "PAYHERALD_POLL_INTERVAL": "0.05",
        "PAYHERALD_CONFIG": str(config),
    }


@pytest.mark.timeout(600)
def test_a_burst_of_2000_with_30_percent_429_is_sent_once_each(
    sqlite_url: str, peer: TwilioBurstPeer, tmp_path: Any
) -> None:
    ph = build_for_tests(sqlite_url, settings=settings_for(peer, tmp_path))
    queue_payments(ph, 2000)
    drain(ph, 2000, timeout=240)
    rows = ph.store.list_notifications(limit=2000)
    assert peer.refused > 300  # the 429s really happened
    assert len(peer.created) == 2000
    assert {row["provider_id"] for row in rows} == set(peer.created)
    assert len({form["Body"] for form in peer.created.values()}) == 2000  # no message twice
    assert peer.max_in_flight <= 8
    ph.engine.dispose()


@pytest.mark.parametrize("peer", [0.0], indirect=True)
def test_a_per_sender_rate_limit_holds_while_draining(
    sqlite_url: str, peer: TwilioBurstPeer, tmp_path: Any
) -> None:
    rules = '[rate_limits]\n"+15005550006" = 40\n'
    ph = build_for_tests(sqlite_url, settings=settings_for(peer, tmp_path, rules))
    queue_payments(ph, 120)
    drain(ph, 120, timeout=60)
    times = sorted(peer.accepted_at)
    # The limiter spaces sends 25 ms apart; what arrives at the provider also carries
    # thread scheduling and network jitter, so the sustained rate is the property, and a
    # single second may see a few more arrivals than the limit.
    sustained = (len(times) - 1) / (times[-1] - times[0])
    assert sustained <= 40 * 1.05
    busiest = max(sum(1 for t in times if start <= t < start + 1.0) for start in times)
    assert busiest <= 40 * 1.25
    ph.engine.dispose()
