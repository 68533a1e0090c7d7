"""Dunning in real worker processes: a worker killed with SIGKILL while it holds a step at
Twilio, and (on PostgreSQL) two workers sharing the steps of many sequences while some
of their invoices are paid. Each step reaches the provider once; a step of a sequence
whose invoice's payment was recorded before it was taken is never sent."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx
import pytest

from payherald import FrozenClock, load_settings, parse_event
from payherald.app import build
from payherald.ingest import plan_event
from payherald.simulate import build_renewal_failure_events, sign_payload
from tests.acceptance.test_cli import clean_env
from tests.peers import free_port
from tests.support import SECRET, TWILIO_SETTINGS, answer_json

DAY = 86400
STEP_OPENINGS = ("We could not collect", "Reminder", "Final notice")
# Tests run at any hour: the customer's quiet hours would hold the steps until morning.
RULES_FILE = "[quiet_hours]\nenabled = false\n"


class TwilioPeer(ThreadingHTTPServer):
    """Twilio's Messages API on 127.0.0.1 (create, and list by recipient). It keeps a
    message the moment it arrives; the answer to the first one whose text starts with
    ``hold`` is held until ``release`` (or 30 s)."""

    daemon_threads = True

    def __init__(self, hold: str | None = None, delay: float = 0) -> None:
        super().__init__(("127.0.0.1", 0), _TwilioHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.hold = hold
        self.delay = delay  # before each answer, as a provider takes its time
        self.lock = threading.Lock()
        self.messages: list[dict[str, Any]] = []
        self.holding = threading.Event()
        self.release = threading.Event()

    def bodies(self) -> list[str]:
        with self.lock:
            return [message["body"] for message in self.messages]


class _TwilioHandler(BaseHTTPRequestHandler):
    server: TwilioPeer

    def do_POST(self) -> None:
        form = dict(parse_qsl(self.rfile.read(int(self.headers["Content-Length"])).decode()))
        peer = self.server
        with peer.lock:
            message = {
                "sid": f"SM{len(peer.messages):032x}",
                "to": form["To"],
                "from": form.get("From"),
                "body": form["Body"],
                "status": "queued",
                "date_created": format_datetime(datetime.now(UTC), usegmt=True),
            }
            peer.messages.append(message)
            held = (
                peer.hold is not None
                and form["Body"].startswith(peer.hold)
                and not peer.holding.is_set()
            )
            if held:
                peer.holding.set()
        if held:
            peer.release.wait(30)  # the worker is killed while it waits for this answer
        elif peer.delay:
            time.sleep(peer.delay)
        with contextlib.suppress(OSError):  # the held one's worker is gone
            answer_json(self, 201, message)

    def do_GET(self) -> None:
        to = parse_qs(urlsplit(self.path).query)["To"][0]
        with self.server.lock:
            found = [m for m in reversed(self.server.messages) if m["to"] == to]
        page = {"messages": found, "next_page_uri": None, "page": 0, "page_size": 50}
        answer_json(self, 200, {**page, "uri": self.path})

    def log_message(self, format: str, *args: object) -> None:
        pass


def serve(peer: TwilioPeer) -> Iterator[TwilioPeer]:
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    yield peer
    peer.release.set()
    peer.shutdown()
    peer.server_close()


def worker_env(cwd: Path, database_url: str, peer: TwilioPeer, **extra: str) -> dict[str, str]:
    """The environment of a ``payherald worker`` sending through ``peer``, with short
    leases (a killed worker's step is taken again two seconds later)."""
    (cwd / "payherald.toml").write_text(RULES_FILE)
    settings = {
        "PAYHERALD_DATABASE_URL": database_url,
        "STRIPE_WEBHOOK_SECRET": SECRET,
        **{key: value for key, value in TWILIO_SETTINGS.items() if key.startswith("TWILIO_")},
        "TWILIO_API_BASE": peer.url,
        "PAYHERALD_LEASE_SECONDS": "2",
        "PAYHERALD_POLL_INTERVAL": "0.1",
        "PAYHERALD_RECONCILE_INTERVAL_SECONDS": "0",
        "PAYHERALD_RETENTION_DAYS": "0",
    }
    return clean_env(cwd, **{**settings, **extra})


def built_in_the_past(env: dict[str, str], cwd: Path, days: float) -> tuple[Any, FrozenClock]:
    """payherald on ``env``'s database with a clock ``days`` in the past: what it records
    is as if received then, so that every dunning step of it is due now."""
    settings = load_settings(
        **{k: v for k, v in env.items() if k.startswith(("PAYHERALD_", "STRIPE_", "TWILIO_"))},
        PAYHERALD_CONFIG=str(cwd / "payherald.toml"),
    )
    clock = FrozenClock(datetime.now(UTC).replace(microsecond=0) - timedelta(days=days))
    return build(settings, migrate_schema=True, clock=clock), clock


def record_failure(ph: Any, clock: FrozenClock, phone: str) -> str:
    """Record a live subscription renewal whose card was declined (the three events Stripe
    sends); its invoice's id."""
    events = build_renewal_failure_events(now=clock.now(), phone=phone, livemode=True)
    for raw in events:
        event = parse_event(json.dumps(raw).encode())
        ph.store.record(plan_event(ph.rules, event))  # as a webhook's event is recorded
    return str(events[0]["data"]["object"]["id"])


def start_worker(cwd: Path, env: dict[str, str], *command: str) -> subprocess.Popen[bytes]:
    """``payherald worker`` (or ``command``) in ``cwd``."""
    return subprocess.Popen(
        [sys.executable, "-m", "payherald", *(command or ("worker",))],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def wait_until(condition: Callable[[], bool], what: Callable[[], object], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what()
        time.sleep(0.2)


def summary(ph: Any) -> list[tuple[Any, ...]]:
    """What became of each notification, for an assertion's message."""
    rows = ph.store.list_notifications(limit=10000)
    return [(row["id"], row["rule"], row["status"], row["error"]) for row in rows]


def opening_of(text: str) -> str:
    """Which step ``text`` is, by its opening words (``STEP_OPENINGS``)."""
    return next((opening for opening in STEP_OPENINGS if text.startswith(opening)), text)


def settled(ph: Any) -> bool:
    """Whether every notification is sent, skipped or failed: nothing left to do."""
    rows = ph.store.list_notifications(limit=10000)
    return all(row["status"] in ("sent", "skipped", "failed") for row in rows)


def no_jobs_left(ph: Any) -> bool:
    """Whether no job is waiting, held or failed."""
    jobs = ph.store.jobs.counts()
    return jobs["pending"] == jobs["running"] == jobs["failed"] == 0


def steps_of(ph: Any) -> list[dict[str, Any]]:
    return [row for row in ph.store.list_notifications(limit=10000) if row["sequence"]]


@pytest.fixture
def held_reminder() -> Iterator[TwilioPeer]:
    """A Twilio peer that holds its answer to the first reminder (the +3 days step)."""
    yield from serve(TwilioPeer(hold="Reminder"))


def test_a_worker_killed_holding_a_step_at_twilio_sends_each_step_once(
    tmp_path: Path, database_url: str, held_reminder: TwilioPeer
) -> None:
    """On a SQLite file, and on PostgreSQL."""
    peer = held_reminder
    env = worker_env(
        tmp_path,
        database_url,
        peer,
        PAYHERALD_WORKER_CONCURRENCY="1",
    )
    ph, clock = built_in_the_past(env, tmp_path, days=8)
    invoice = record_failure(ph, clock, "+14155550123")
    steps = steps_of(ph)
    assert sorted(row["rule"] for row in steps) == [
        "dunning_final",
        "dunning_reminder",
        "invoice_payment_failed",
    ]

    worker = start_worker(tmp_path, env)
    try:
        assert peer.holding.wait(60), "the worker never sent the reminder"
        os.kill(worker.pid, signal.SIGKILL)  # Twilio has the step; payherald never heard back
        worker.wait(10)
    finally:
        stop(worker)
    (held,) = [row for row in steps_of(ph) if row["rule"] == "dunning_reminder"]
    assert held["status"] == "sending"

    restarted = start_worker(tmp_path, env)
    try:
        wait_until(
            lambda: settled(ph) and ph.store.count_notifications(status="sent") == 3,
            lambda: summary(ph),
            timeout=60,
        )
    finally:
        stop(restarted)
    assert sorted(opening_of(body) for body in peer.bodies()) == sorted(STEP_OPENINGS)
    assert len(peer.bodies()) == 3  # nothing sent twice (the payment's own text is skipped)
    rows = [row for row in ph.store.list_notifications(limit=100) if row["status"] == "sent"]
    with peer.lock:
        sids = {message["body"]: message["sid"] for message in peer.messages}
    assert {row["provider_id"] for row in rows} == set(sids.values())
    (reminder,) = [row for row in rows if row["rule"] == "dunning_reminder"]
    assert reminder["provider_id"] == sids[reminder["body"]]  # found by reconciliation
    sequence = ph.store.dunning.get(invoice)
    assert sequence is not None
    assert sequence["status"] == "open"  # never paid: it stays open, with nothing left to send
    assert ph.store.jobs.counts()["pending"] == 0
    ph.engine.dispose()


INVOICES = 30


@pytest.fixture
def slow_twilio() -> Iterator[TwilioPeer]:
    """A Twilio peer that takes 50 ms to answer each message, so that the workers are still
    sending when the payments come."""
    yield from serve(TwilioPeer(delay=0.05))


def paid(failure: dict[str, Any]) -> dict[str, Any]:
    """The invoice.paid of the invoice of the invoice.payment_failed ``failure``."""
    event = copy.deepcopy(failure)
    event.update(id=failure["id"] + "_paid", type="invoice.paid")
    invoice = event["data"]["object"]
    invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
    return event


@contextlib.contextmanager
def serving(cwd: Path, env: dict[str, str]) -> Iterator[str]:
    """`payherald serve` (webhooks only) on a free port of 127.0.0.1, until it answers
    /healthz; its URL. Stopped after."""
    port = free_port()
    process = start_worker(cwd, env, "serve", "--port", str(port))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            assert process.poll() is None, "payherald serve exited"
            assert time.monotonic() < deadline, "payherald serve did not answer in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        stop(process)


def post_as_stripe(client: httpx.Client, url: str, event: dict[str, Any]) -> None:
    body, header = sign_payload(event, SECRET, timestamp=int(time.time()))
    answer = client.post(
        f"{url}/webhooks/stripe", content=body, headers={"Stripe-Signature": header}
    )
    assert answer.status_code == 200, answer.text


def test_two_workers_on_postgresql_send_each_open_step_once_and_none_after_a_payment(
    tmp_path: Path, postgres_url: str, slow_twilio: TwilioPeer
) -> None:
    peer = slow_twilio
    env = worker_env(
        tmp_path,
        postgres_url,
        peer,
        PAYHERALD_WORKER_CONCURRENCY="2",
        # The confirmations of the payments wait no longer for an event to link them.
        PAYHERALD_LINK_GRACE_SECONDS="1",
        # Longer than the test waits for the jobs to go: none may wait for a lease to end.
        PAYHERALD_LEASE_SECONDS="60",
    )
    ph, clock = built_in_the_past(env, tmp_path, days=8)
    phones = [f"+1415555{100 + index:04d}" for index in range(INVOICES)]
    failures = {}
    for phone in phones:
        events = build_renewal_failure_events(now=clock.now(), phone=phone, livemode=True)
        for raw in events:
            ph.store.record(plan_event(ph.rules, parse_event(json.dumps(raw).encode())))
        failures[phone] = events[0]
    assert len(steps_of(ph)) == 3 * INVOICES

    payments: dict[str, datetime] = {}  # invoice: when its payment was recorded
    with serving(tmp_path, env) as url, httpx.Client(timeout=30) as client:
        workers = [start_worker(tmp_path, env) for _ in range(2)]
        try:
            wait_until(lambda: len(peer.bodies()) >= 12, lambda: summary(ph), timeout=60)
            for phone in phones[::3]:  # every third invoice is paid while the workers send
                post_as_stripe(client, url, paid(failures[phone]))
                # Answered 200: stored.
                payments[failures[phone]["data"]["object"]["id"]] = datetime.now(UTC)
                time.sleep(0.05)
            wait_until(lambda: settled(ph), lambda: summary(ph), timeout=90)
            # No job left either, not even of a step a worker held when its invoice was
            # paid: the worker's next claim deletes it, well before its lease ends.
            wait_until(lambda: no_jobs_left(ph), ph.store.jobs.counts, timeout=10)
        finally:
            for worker in workers:
                stop(worker)
    assert all(worker.returncode == 0 for worker in workers)

    with peer.lock:
        told = [(m["to"], opening_of(m["body"])) for m in peer.messages]
    steps = [pair for pair in told if pair[1] in STEP_OPENINGS]
    assert len(steps) == len(set(steps))  # no step reached Twilio twice
    rows = steps_of(ph)
    assert len([row for row in rows if row["status"] == "sent"]) == len(steps)
    for phone in phones:
        invoice = failures[phone]["data"]["object"]["id"]
        mine = [row for row in rows if row["sequence"] == f"dunning:{invoice}"]
        sequence = ph.store.dunning.get(invoice)
        assert sequence is not None
        if invoice not in payments:
            assert sorted(opening for to, opening in steps if to == phone) == sorted(
                STEP_OPENINGS
            ), phone
            assert sequence["status"] == "open"
            continue
        assert sequence["status"] == "recovered"
        for row in mine:
            assert row["status"] in ("sent", "skipped"), row
            if row["status"] == "sent":
                # Taken to the provider before the payment was recorded, never after.
                assert row["attempt_started_at"] < payments[invoice], (row, payments[invoice])
    # Some steps of the paid invoices were still to be sent when they were paid.
    assert any(row["status"] == "skipped" for row in rows)
    assert ph.store.count_notifications(status="sending") == 0
    assert no_jobs_left(ph)
    ph.engine.dispose()
