"""The CLI as a new user runs it: `payherald run`, `simulate`, then the lists."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.peers import free_port

PAYHERALD = [sys.executable, "-m", "payherald"]


def clean_env(cwd: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: no payherald or provider variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PAYHERALD_", "STRIPE_", "TWILIO_", "SMTP_"))
    }
    env.update(PYTHONUNBUFFERED="1", **extra)
    return env


def cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PAYHERALD, *args],
        cwd=cwd,
        env=clean_env(cwd, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


class Running:
    def __init__(self, cwd: Path, port: int, process: subprocess.Popen[str]) -> None:
        self.cwd, self.port, self.process = cwd, port, process
        self.url = f"http://127.0.0.1:{port}"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    port = free_port()
    log = (tmp_path / "run.log").open("w")
    process = subprocess.Popen(
        [*PAYHERALD, "run", "--port", str(port)],
        cwd=tmp_path,
        env=clean_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Running(tmp_path, port, process)
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(
                "payherald run did not start:\n" + (tmp_path / "run.log").read_text()
            )
        time.sleep(0.1)
    yield server
    process.terminate()
    process.wait(15)
    log.close()


def notifications(cwd: Path) -> list[dict[str, Any]]:
    result = cli(cwd, "notifications", "list", "--json")
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def test_run_then_simulate_shows_one_console_sms_with_the_amount(running: Running) -> None:
    result = cli(
        running.cwd,
        "simulate",
        "payment_intent.succeeded",
        "--url",
        f"{running.url}/webhooks/stripe",
    )
    assert result.returncode == 0, result.stderr
    assert "HTTP 200" in result.stderr
    assert "Payment of $20.00 received" in result.stderr  # simulate shows the outcome
    (item,) = notifications(running.cwd)
    assert item["status"] == "sent"
    assert item["channel"] == "console"
    assert item["to"] == "+14155550123"
    assert item["body"].startswith("Payment of $20.00 received, thank you!")
    for field in (
        "id",
        "event_id",
        "rule",
        "channel",
        "to",
        "body",
        "status",
        "provider_id",
        "error",
        "attempts",
        "created_at",
    ):
        assert field in item
    log = (running.cwd / "run.log").read_text()
    assert "[console SMS] to +*******0123: Payment of $20.00 received" in log
    assert "development secret" in log


def test_simulate_options_and_a_failed_payment(running: Running) -> None:
    url = f"{running.url}/webhooks/stripe"
    result = cli(
        running.cwd,
        "simulate",
        "payment_intent.payment_failed",
        "--url",
        url,
        "--phone",
        "+442071838750",
        "--amount",
        "123456",
        "--currency",
        "jpy",
    )
    assert result.returncode == 0, result.stderr
    (item,) = notifications(running.cwd)
    assert item["to"] == "+442071838750"
    assert item["body"].startswith(
        "Your payment of ¥123,456 did not go through: the card has insufficient funds."
    )


def test_events_list_json_has_the_documented_fields(running: Running) -> None:
    cli(
        running.cwd,
        "simulate",
        "payment_intent.succeeded",
        "--url",
        f"{running.url}/webhooks/stripe",
    )
    result = cli(running.cwd, "events", "list", "--json", "--type", "payment_intent.succeeded")
    (event,) = json.loads(result.stdout)
    assert event["type"] == "payment_intent.succeeded"
    assert event["livemode"] is False
    assert event["status"] == "received"
    assert event["id"].startswith("evt_")
    assert event["received_at"]


def test_simulate_without_a_server_says_what_to_do(tmp_path: Path) -> None:
    assert cli(tmp_path, "migrate").returncode == 0
    port = free_port()
    result = cli(
        tmp_path,
        "simulate",
        "payment_intent.succeeded",
        "--url",
        f"http://127.0.0.1:{port}/webhooks/stripe",
    )
    assert result.returncode == 1
    assert "Is `payherald run` running?" in result.stderr


def test_simulate_an_unknown_type_names_the_known_ones(tmp_path: Path) -> None:
    result = cli(tmp_path, "simulate", "charge.nope")
    assert result.returncode == 2
    assert "payment_intent.succeeded" in result.stderr


def test_a_placeholder_secret_stops_run_with_a_sentence(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", STRIPE_WEBHOOK_SECRET="whsec_...")
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET does not look like a Stripe signing secret" in result.stderr


def test_serve_on_an_unmigrated_database_says_to_migrate(tmp_path: Path) -> None:
    result = cli(tmp_path, "serve")
    assert result.returncode == 2
    assert "run `payherald migrate`" in result.stderr


def test_lists_on_an_unmigrated_database_say_to_migrate(tmp_path: Path) -> None:
    result = cli(tmp_path, "notifications", "list", "--json")
    assert result.returncode == 2
    assert "run `payherald migrate`" in result.stderr


def test_run_on_a_database_path_that_cannot_exist_says_so(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", PAYHERALD_DATABASE_URL="sqlite:////nonexistent-dir/x.db")
    assert result.returncode == 2
    assert "Cannot open the database at sqlite:////nonexistent-dir/x.db" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", "--port", "99999")
    assert result.returncode == 2
    assert "--port" in result.stderr
    assert "65535" in result.stderr
