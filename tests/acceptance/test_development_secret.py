"""The development secret as an operator meets it: `run` and `serve` refuse it once anything
real is configured (unless --dev), it is never printed whole, and it is scrubbed from logs."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx
import pytest

from payherald.clock import SystemClock
from payherald.store import Store
from payherald.store.engine import create_store_engine
from tests.acceptance.test_cli import PAYHERALD, clean_env, cli
from tests.peers import free_port
from tests.support import event_body, sign

TWILIO = {
    "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
    "TWILIO_AUTH_TOKEN": "f" * 32,
    "TWILIO_FROM_NUMBER": "+15005550006",
    "TWILIO_API_BASE": "http://127.0.0.1:9",  # never reached: test-mode events go to the console
}
LIVE_KEY = {"STRIPE_SECRET_KEY": "sk_live_" + "a" * 24, "STRIPE_API_BASE": "http://127.0.0.1:9"}


def development_secret(cwd: Path) -> str:
    """The development secret of the database in ``cwd``, as `simulate` reads it."""
    engine = create_store_engine(f"sqlite:///{cwd / 'payherald.db'}")
    try:
        return Store(engine=engine, clock=SystemClock()).meta.development_secret()
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("command", "env", "named"),
    [
        ("run", TWILIO, "sms, voice"),
        ("run", LIVE_KEY, "a live Stripe key"),
        ("serve", TWILIO, "sms, voice"),
    ],
)
def test_start_without_a_webhook_secret_is_refused_when_real_sending_is_configured(
    tmp_path: Path, command: str, env: dict[str, str], named: str
) -> None:
    if command == "serve":  # run migrates by itself
        assert cli(tmp_path, "migrate").returncode == 0
    result = cli(tmp_path, command, "--port", str(free_port()), **env)
    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("payherald: STRIPE_WEBHOOK_SECRET is not set")
    assert f"({named})" in line
    assert "set STRIPE_WEBHOOK_SECRET to your endpoint's signing secret" in line
    assert "--dev" in line
    assert "listening" not in result.stderr


def test_run_with_dev_starts_shows_only_a_fingerprint_and_scrubs_the_secret(
    tmp_path: Path,
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "run.log"
    with log.open("w") as output:
        process = subprocess.Popen(
            [*PAYHERALD, "run", "--dev", "--port", str(port)],
            cwd=tmp_path,
            env=clean_env(tmp_path, PAYHERALD_LOG_FORMAT="json", **TWILIO, **LIVE_KEY),
            stdout=output,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while not _answers(f"{url}/healthz"):
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            secret = development_secret(tmp_path)
            # An event that carries the secret in a field payherald logs.
            body = event_body(event_id=f"evt_{secret}", livemode=False)
            answer = httpx.post(
                f"{url}/webhooks/stripe",
                content=body,
                headers={"Stripe-Signature": sign(body, secret)},
            )
            assert answer.status_code == 200, answer.text
            forged = event_body("payment_intent.payment_failed", livemode=True)
            refused = httpx.post(
                f"{url}/webhooks/stripe",
                content=forged,
                headers={"Stripe-Signature": sign(forged, secret)},
            )
            assert refused.status_code == 400
            deadline = time.monotonic() + 10
            while "event_received" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(15)
    printed = log.read_text()
    assert "using the development secret whsec_dev_…" in printed
    assert secret not in printed
    assert '"event_id": "evt_[redacted]"' in printed


def test_simulate_livemode_without_a_webhook_secret_refuses_before_sending(
    tmp_path: Path,
) -> None:
    port = free_port()  # nothing listens there: a request would say it cannot reach it
    result = cli(
        tmp_path,
        "simulate",
        "payment_intent.succeeded",
        "--livemode",
        "--url",
        f"http://127.0.0.1:{port}",
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "payherald: simulate --livemode needs STRIPE_WEBHOOK_SECRET, the signing secret of the "
        "endpoint payherald takes live events on: payherald refuses live-mode events signed "
        "with its development secret."
    )


def test_simulate_livemode_with_only_a_test_marked_secret_says_which_is_missing(
    tmp_path: Path,
) -> None:
    result = cli(
        tmp_path,
        "simulate",
        "payment_intent.succeeded",
        "--livemode",
        "--url",
        f"http://127.0.0.1:{free_port()}",
        STRIPE_WEBHOOK_SECRET="test:whsec_" + "1" * 32,
    )
    assert result.returncode == 2
    assert "STRIPE_WEBHOOK_SECRET has no secret marked live:" in result.stderr
    assert "Could not reach" not in result.stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
