"""What `payherald run` writes while it works: a log capture over a full run holds
no configured secret and no unmasked phone number, and its JSON lines name the event and
the notification they are about."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payherald.recipients import mask_phone
from tests.acceptance.test_cli import PAYHERALD, clean_env
from tests.peers import free_port
from tests.support import PUBLIC_URL, post_as_twilio, serving, sign

# Every secret payherald is given, each unique, so that finding one is unambiguous.
WEBHOOK_SECRET = "whsec_" + secrets.token_hex(16)
STRIPE_KEY = "sk_test_" + secrets.token_hex(16)
TWILIO_TOKEN = secrets.token_hex(16)
SMTP_PASSWORD = "smtp" + secrets.token_hex(12)
ADMIN_TOKEN = "admin" + secrets.token_hex(12)
SECRETS = (WEBHOOK_SECRET, STRIPE_KEY, TWILIO_TOKEN, SMTP_PASSWORD, ADMIN_TOKEN)

FROM_NUMBER = "+15005550006"
TEAM_NUMBER = "+14155550100"
CUSTOMER = "+442071838750"  # a test-mode customer: the console
LIVE_CUSTOMER = "+14155550142"  # Twilio accepts
REFUSED = "+14155550177"  # Twilio refuses, quoting a number, as it does
STOPPED = "+14155550188"  # replies STOP first
PHONES = (FROM_NUMBER, TEAM_NUMBER, CUSTOMER, LIVE_CUSTOMER, REFUSED, STOPPED)

# Log lines about one notification, and about one event.
NOTIFICATION_LINES = {
    "channel_fallback",
    "channel_refused",
    "claim_lost",
    "notification_crashed",
    "notification_deferred",
    "notification_failed",
    "notification_outcome_unknown",
    "notification_retry",
    "notification_sent",
    "notification_skipped",
    "reconcile_failed",
    "reconciled",
    "suppressed",
    "suppressed_before_send",
}
EVENT_LINES = {"event_received", "event_not_stored", "planning_failed"}


class FakeTwilio(ThreadingHTTPServer):
    """Twilio's message API on 127.0.0.1: accepts every message, except to REFUSED,
    which it refuses with a message that quotes the sender, as Twilio's 21606 does.
    ``accepted`` holds (sid, form) of each message accepted."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TwilioHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.accepted: list[tuple[str, dict[str, str]]] = []


class _TwilioHandler(BaseHTTPRequestHandler):
    server: FakeTwilio

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = dict(parse_qsl(self.rfile.read(length).decode()))
        if form.get("To") == REFUSED:
            status, answer = (
                400,
                {
                    "code": 21606,
                    "message": f"The From phone number {form.get('From')} is not a valid, "
                    "SMS-capable inbound phone number or short code for your account.",
                    "more_info": "https://www.twilio.com/docs/errors/21606",
                    "status": 400,
                },
            )
        else:
            sid = "SM" + secrets.token_hex(16)
            self.server.accepted.append((sid, form))
            status, answer = (
                201,
                {
                    "sid": sid,
                    "status": "queued",
                    "to": form.get("To"),
                    "from": form.get("From"),
                    "body": form.get("Body"),
                },
            )
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilio]:
    with serving(FakeTwilio()) as server:
        yield server


def configured_env(cwd: Path, twilio: FakeTwilio) -> dict[str, str]:
    """A production-like configuration: every secret set; Stripe and SMTP unreachable, so
    that their errors are logged too."""
    nowhere = f"127.0.0.1:{free_port()}"
    return clean_env(
        cwd,
        PAYHERALD_LOG_FORMAT="json",
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        STRIPE_SECRET_KEY=STRIPE_KEY,
        STRIPE_API_BASE=f"http://{nowhere}",
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN=TWILIO_TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE=twilio.url,
        PAYHERALD_PUBLIC_URL=PUBLIC_URL,
        SMTP_URL=f"smtp://apikey:{SMTP_PASSWORD}@{nowhere}",
        PAYHERALD_EMAIL_FROM="billing@acme.example",
        PAYHERALD_ADMIN_TOKEN=ADMIN_TOKEN,
    )


def simulate(cwd: Path, env: dict[str, str], url: str, event_type: str, *args: str) -> str:
    result = subprocess.run(
        [*PAYHERALD, "simulate", event_type, "--url", url, "--wait", "0", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout + result.stderr


def metric(url: str, name: str, **labels: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def wait_for(condition: Any, what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{log.read_text()}")
        time.sleep(0.2)


def full_run(cwd: Path, twilio: FakeTwilio) -> tuple[str, str]:
    """Start `payherald run`, drive it as a user and Stripe and Twilio would, stop it;
    return its output and everything the other commands printed."""
    (cwd / "payherald.toml").write_text(f'[teams.finance]\nsms = ["{TEAM_NUMBER}"]\n')
    env = configured_env(cwd, twilio)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    webhook = f"{base}/webhooks/stripe"
    log = cwd / "run.log"
    printed = []
    with log.open("w") as output:
        process = subprocess.Popen(
            [*PAYHERALD, "run", "--port", str(port)],
            cwd=cwd,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            wait_for(lambda: _answers(f"{base}/healthz"), "payherald run to start", log)
            for event_type in (
                "payment_intent.succeeded",
                "payment_intent.payment_failed",
                "charge.dispute.created",
                "checkout.session.completed",  # has a customer: looked up at Stripe
            ):
                printed.append(simulate(cwd, env, webhook, event_type, "--phone", CUSTOMER))
            stop = {"MessageSid": "SM" + "1" * 32, "From": STOPPED, "To": FROM_NUMBER}
            answer = post_as_twilio(
                base, "/webhooks/twilio/inbound", {**stop, "Body": "STOP"}, token=TWILIO_TOKEN
            )
            assert "no more messages" in answer.text
            for phone in (LIVE_CUSTOMER, REFUSED, STOPPED):
                printed.append(
                    simulate(
                        cwd,
                        env,
                        webhook,
                        "payment_intent.succeeded",
                        "--livemode",
                        "--phone",
                        phone,
                    )
                )
            forged = b'{"id": "evt_forged"}'
            rejected = httpx.post(
                webhook, content=forged, headers={"Stripe-Signature": sign(forged, "whsec_x")}
            )
            assert rejected.status_code == 400
            # Sent: the test-mode confirmation, the dispute alert and the live SMS. The
            # declined card waits, retried, to ask the unreachable Stripe whether it has
            # succeeded since (never sent on a guess).
            wait_for(
                lambda: (
                    metric(base, "payherald_notifications_total", status="sent") >= 3
                    and metric(base, "payherald_notifications_total", status="refused") >= 1
                    and metric(base, "payherald_notifications_total", channel="email") >= 2
                ),
                "the notifications to be sent, refused and retried",
                log,
            )
            # Twilio reports the live SMS delivered, to the address payherald gave it.
            (sid, form), *_ = twilio.accepted
            callback = form["StatusCallback"].removeprefix(PUBLIC_URL)
            report = {"MessageSid": sid, "MessageStatus": "delivered", "To": form["To"]}
            answer = post_as_twilio(base, callback, report, token=TWILIO_TOKEN)
            assert answer.json() == {"outcome": "updated"}, answer.text
        finally:
            process.terminate()
            process.wait(15)
    return log.read_text(), "".join(printed)


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory, twilio: FakeTwilio) -> tuple[str, str]:
    """One full run, read by each test below."""
    return full_run(tmp_path_factory.mktemp("run"), twilio)


def test_a_full_run_logs_no_secret_and_no_unmasked_phone_number(
    run_output: tuple[str, str],
) -> None:
    log, printed = run_output
    for secret in SECRETS:
        assert secret not in log
        assert secret not in printed
    for phone in PHONES:
        digits = phone.removeprefix("+")
        # Nor in URL-encoded (%2B...) or any other spelling of its digits.
        assert digits not in log, phone
        assert digits not in printed, phone
    assert not re.search(r"\+\d{7,15}", log)
    # The numbers were written, masked: the console's SMS, the worker's lines.
    assert f"[console SMS] to {mask_phone(CUSTOMER)}: " in log
    assert f"[console SMS] to {mask_phone(TEAM_NUMBER)}: " in log
    assert mask_phone(LIVE_CUSTOMER) in log


def test_json_log_lines_name_their_event_and_notification(run_output: tuple[str, str]) -> None:
    log, _ = run_output
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    seen = {line["event"] for line in lines}
    # What the run was made to do, so that the checks below are not vacuous.
    assert {
        "event_received",
        "webhook_rejected",
        "inbound_message",
        "notification_sent",
        "notification_retry",
        "channel_refused",
        "channel_fallback",
    } <= seen
    for line in lines:
        assert {"event", "level", "timestamp"} <= line.keys(), line
        if line["event"] in EVENT_LINES:
            assert str(line.get("event_id", "")).startswith("evt_"), line
        if line["event"] in NOTIFICATION_LINES:
            assert isinstance(line.get("notification_id"), int), line
            assert str(line.get("event_id", "")).startswith("evt_"), line
    accepted = [line for line in lines if line["event"] == "event_received"]
    assert len(accepted) == 7
    (report,) = [line for line in lines if line["event"] == "delivery_report"]
    assert isinstance(report["notification_id"], int), report
