"""The CLI as a new user runs it: `payherald run`, `simulate`, then the lists."""

from __future__ import annotations

import contextlib
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

from payherald.api_versions import NEWEST_SUPPORTED
from payherald.clock import SystemClock
from payherald.store import Store
from payherald.store.engine import create_store_engine
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


@contextlib.contextmanager
def payherald_run(cwd: Path) -> Iterator[Running]:
    """`payherald run` in ``cwd`` on a free port, until it answers /healthz; stopped after."""
    port = free_port()
    with (cwd / "run.log").open("w") as log:
        process = subprocess.Popen(
            [*PAYHERALD, "run", "--port", str(port)],
            cwd=cwd,
            env=clean_env(cwd),
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server = Running(cwd, port, process)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        "payherald run did not start:\n" + (cwd / "run.log").read_text()
                    )
                time.sleep(0.1)
            yield server
        finally:
            process.terminate()
            process.wait(15)


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    with payherald_run(tmp_path) as server:
        yield server


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


@pytest.mark.parametrize("path", ["", "/", "/webhooks/stripe"])
def test_simulate_takes_payheralds_address_or_its_webhook_url(running: Running, path: str) -> None:
    result = cli(running.cwd, "simulate", "payment_intent.succeeded", "--url", running.url + path)
    assert result.returncode == 0, result.stderr
    assert f"to {running.url}/webhooks/stripe: HTTP 200" in result.stderr
    assert "Payment of $20.00 received" in result.stderr


def test_simulate_an_event_no_rule_handles_says_so(running: Running) -> None:
    result = cli(running.cwd, "simulate", "customer.created", "--url", running.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[1:] == [
        "No rule handles customer.created, so nothing was queued; add one to the rules file "
        "(`payherald config check` lists each rule and its events)."
    ]


def test_simulate_an_event_whose_rule_has_no_team_says_so(running: Running) -> None:
    result = cli(running.cwd, "simulate", "charge.dispute.created", "--url", running.url)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines()[1:] == [
        "Nothing was queued for it:",
        "  dispute_alert: it sends to team 'finance', which is not defined in payherald.toml; "
        "add [teams.finance] with its sms, email or slack_webhook.",
    ]


def test_simulate_against_another_database_says_to_share_it(running: Running) -> None:
    # The server's secret, read from its store as simulate reads it (run prints only a
    # fingerprint).
    engine = create_store_engine(f"sqlite:///{running.cwd / 'payherald.db'}")
    secret = Store(engine=engine, clock=SystemClock()).meta.development_secret()
    engine.dispose()
    assert secret not in (running.cwd / "run.log").read_text()
    other = {"PAYHERALD_DATABASE_URL": f"sqlite:///{running.cwd / 'other.db'}"}
    assert cli(running.cwd, "migrate", **other).returncode == 0
    result = cli(
        running.cwd,
        "simulate",
        "payment_intent.succeeded",
        "--url",
        running.url,
        STRIPE_WEBHOOK_SECRET=secret,
        **other,
    )
    assert result.returncode == 0, result.stderr
    assert "this database has no such event" in result.stderr
    assert "is PAYHERALD_DATABASE_URL the same as the server's?" in result.stderr


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


def test_notifications_list_refuses_an_unknown_status_and_names_the_statuses(
    tmp_path: Path,
) -> None:
    assert cli(tmp_path, "migrate").returncode == 0
    result = cli(tmp_path, "notifications", "list", "--status", "bogus")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == (
        "payherald: --status 'bogus' is not a notification status; use one of pending, "
        "claimed, sending, sent, skipped, failed, unknown."
    )


def test_the_readme_quotes_the_unmigrated_database_error_as_printed(tmp_path: Path) -> None:
    result = cli(tmp_path, "events", "list")
    (line,) = result.stderr.splitlines()
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert f"`` {line} ``" in readme


def test_run_on_a_database_path_that_cannot_exist_says_so(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", PAYHERALD_DATABASE_URL="sqlite:////nonexistent-dir/x.db")
    assert result.returncode == 2
    assert "Cannot open the database at sqlite:////nonexistent-dir/x.db" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "command", [["run"], ["serve"], ["migrate"], ["events", "list"]], ids=" ".join
)
def test_an_unreachable_postgresql_gets_postgresql_advice_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    url = f"postgresql://payherald:hunter2@127.0.0.1:{free_port()}/payherald"
    result = cli(tmp_path, *command, PAYHERALD_DATABASE_URL=url)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "payherald: Cannot open the database at postgresql://payherald:***@127.0.0.1:"
    )
    assert line.endswith(
        "; check that PostgreSQL is running and accepts connections from here at that host "
        "and port, and that the user, password and database in PAYHERALD_DATABASE_URL are "
        "right."
    )
    assert "hunter2" not in line


def test_doctor_gives_postgresql_advice_for_an_unreachable_postgresql(tmp_path: Path) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/payherald"
    result = cli(tmp_path, "doctor", PAYHERALD_DATABASE_URL=url)
    lines = result.stdout.splitlines()
    at = next(i for i, text in enumerate(lines) if text.startswith("FAIL store:"))
    assert lines[at + 1].strip().startswith("fix: Check that PostgreSQL is running")
    assert "SQLite" not in lines[at + 1]


def test_a_port_out_of_range_is_refused(tmp_path: Path) -> None:
    result = cli(tmp_path, "run", "--port", "99999")
    assert result.returncode == 2
    assert "--port" in result.stderr
    assert "65535" in result.stderr


def test_config_check_renders_every_rule_with_its_segments(tmp_path: Path) -> None:
    (tmp_path / "payherald.toml").write_text(
        '[teams.finance]\nsms = ["+14155550100"]\n\n'
        "[rules.payment_confirmation]\n"
        # TOML's \u2019 escape: a curly quote, which forces UCS-2 (67 per segment).
        'template = "\\u2019{{ amount | money(currency) }} received.' + " \\u2019" * 70 + '"\n'
    )
    result = cli(tmp_path, "config", "check")
    assert result.returncode == 0, result.stderr
    assert "dispute_alert (charge.dispute.created -> team:finance, sms > slack > email)" in (
        result.stdout
    )
    assert "[GSM-7, " in result.stdout
    assert "warning: rule payment_confirmation: 3 SMS segments (UCS-2)" in result.stderr
    assert result.stdout.rstrip().endswith("payherald.toml: OK")
    # Every built-in rule that is on has a sample to render, the fraud check's included.
    assert "(no sample event to render)" not in result.stdout
    assert "cannot render" not in result.stderr
    assert "Did you make a payment of $20.00 to JENNYS SHOP?" in result.stdout
    assert "fraud_unanswered (the fraud check's answer -> team:finance" in result.stdout


def test_config_check_says_a_runaway_template_is_stopped_naming_its_rule(
    tmp_path: Path,
) -> None:
    (tmp_path / "payherald.toml").write_text(
        "[rules.payment_confirmation]\n"
        'template = "{% for i in range(10000) %}{% for j in range(10000) %}{{ i }}'
        '{% endfor %}{% endfor %}"\n'
        "[rules.welcome]\n"
        "template = \"{{ 'x' * 10**9 }}\"\n"
    )
    started = time.monotonic()
    result = cli(tmp_path, "config", "check")
    assert time.monotonic() - started < 20  # the interpreter's start, not the templates
    assert (
        "warning: rule payment_confirmation: cannot render a charge.succeeded event: The "
        "template takes more than 10,000 loop iterations and calls; payherald stops it "
        "there. Simplify the template." in " ".join(result.stderr.split())
    )
    assert "warning: rule welcome: cannot render" in result.stderr
    assert "builds a value of more than 10,000 characters" in " ".join(result.stderr.split())


def test_config_check_names_the_line_of_a_mistake(tmp_path: Path) -> None:
    (tmp_path / "payherald.toml").write_text('[rules.welcome]\n\nchanels = ["sms"]\n')
    result = cli(tmp_path, "config", "check")
    assert result.returncode == 2
    assert (
        "payherald.toml:3: rules.welcome.chanels: unknown rule setting (did you mean "
        "'channels'?)" in result.stderr
    )


def test_run_refuses_to_start_with_a_broken_rules_file(tmp_path: Path) -> None:
    (tmp_path / "payherald.toml").write_text('[rules.welcome]\ntemplate = "{{ nope }}"\n')
    result = cli(tmp_path, "run")
    assert result.returncode == 2
    assert "payherald.toml:2: rules.welcome.template: The template uses nope" in result.stderr


CATALOGUE: dict[str, tuple[str, str, str] | None] = {
    # event type -> (rule, recipient, start of the message)
    "payment_intent.succeeded": ("payment_confirmation", "+14155550123", "Payment of $20.00"),
    "charge.succeeded": ("payment_confirmation", "+14155550123", "Payment of $20.00"),
    "checkout.session.completed": ("payment_confirmation", "+14155550123", "Payment of $20.00"),
    "invoice.paid": ("payment_confirmation", "+14155550123", "Payment of $20.00"),
    "invoice.payment_succeeded": ("payment_confirmation", "+14155550123", "Payment of $20.00"),
    "payment_intent.payment_failed": ("payment_failed", "+14155550123", "Your payment of $20.00"),
    "charge.failed": ("payment_failed", "+14155550123", "Your payment of $20.00 did not"),
    "invoice.payment_failed": ("invoice_payment_failed", "+14155550123", "We could not collect"),
    # refund.created tells of the refund; before API version 2024-10-28, charge.refunded did.
    "charge.refunded": None,
    "refund.created": ("refund_customer", "+14155550123", "We have refunded $20.00"),
    "charge.dispute.created": ("dispute_alert", "+14155550100", "URGENT: dispute opened"),
    "customer.subscription.deleted": ("subscription_cancelled", "+14155550123", "Your Pro"),
    "customer.subscription.trial_will_end": ("trial_ending", "+14155550123", "Your Pro monthly"),
    "customer.subscription.updated": ("plan_changed", "+14155550123", "Your plan changed"),
    # Today's invoice lines name their price by id only: without STRIPE_SECRET_KEY, no plan.
    "invoice.upcoming": ("renewal_reminder", "+14155550123", "Reminder: your subscription"),
    "review.opened": ("fraud_check", "+14155550123", "Did you make a payment of $20.00"),
    "radar.early_fraud_warning.created": (
        "fraud_check",
        "+14155550123",
        "Did you make a payment of $20.00",
    ),
}


def test_simulate_gives_the_documented_message_for_every_catalogue_event(
    tmp_path: Path,
) -> None:
    (tmp_path / "payherald.toml").write_text('[teams.finance]\nsms = ["+14155550100"]\n')
    with payherald_run(tmp_path) as server:
        for event_type, expected in CATALOGUE.items():
            result = cli(tmp_path, "simulate", event_type, "--url", f"{server.url}/webhooks/stripe")
            assert result.returncode == 0, result.stderr
            # An invoice event may follow the one Stripe sends with it: take the one asked for.
            (sent_line,) = [
                line
                for line in result.stderr.splitlines()
                if line.startswith(f"Sent {event_type} ")
            ]
            event_id = sent_line.split()[2]
            mine = [n for n in notifications(tmp_path) if n["event_id"] == event_id]
            if expected is None:
                assert mine == [], (event_type, mine)
                continue
            rule, to, start = expected
            sent = [n for n in mine if n["rule"] == rule]
            assert len(sent) == 1, (event_type, mine)
            assert sent[0]["status"] == "sent", sent
            assert sent[0]["to"] == to, sent
            assert sent[0]["body"].startswith(start), sent


def test_simulate_to_someone_who_opted_out_says_why_nothing_went(running: Running) -> None:
    assert cli(running.cwd, "optout", "add", "+14155550123").returncode == 0
    url = f"{running.url}/webhooks/stripe"
    result = cli(running.cwd, "simulate", "invoice.payment_failed", "--url", url)
    assert result.returncode == 0, result.stderr
    line = next(text for text in result.stderr.splitlines() if "invoice_payment_failed:" in text)
    # Nothing was sent, so no channel and no address are named: only why.
    assert line.strip() == (
        "invoice_payment_failed: failed (+*******0123 must not be messaged: opted out (cli: "
        "added by an operator); no channel of the rule may carry it)"
    )
    assert "None" not in line


def test_config_check_keeps_bracketed_words_in_its_error(tmp_path: Path) -> None:
    (tmp_path / "payherald.toml").write_text('[rules.dispute_alert]\nto = "team:nope"\n')
    result = cli(tmp_path, "config", "check")
    assert result.returncode == 2
    assert "add [teams.nope] with its sms, email or slack_webhook." in result.stderr


def test_an_unknown_template_filter_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "payherald.toml").write_text(
        '[rules.payment_confirmation]\ntemplate = "{{ amount | nosuchfilter }}"\n'
    )
    result = cli(tmp_path, "config", "check")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "payherald: payherald.toml:2: rules.payment_confirmation.template: The template does "
        "not compile: No filter named 'nosuchfilter'; beside Jinja's own filters there are "
        "money, date, datetime."
    ]


def test_notifications_list_shows_a_bracketed_body_as_written(tmp_path: Path) -> None:
    from payherald import parse_event
    from tests.support import build_for_tests, event_body

    rules = tmp_path / "payherald.toml"
    rules.write_text('[rules.payment_confirmation]\ntemplate = "[receipt] Paid, thank you."\n')
    ph = build_for_tests(
        f"sqlite:///{tmp_path / 'payherald.db'}", settings={"PAYHERALD_CONFIG": str(rules)}
    )
    event = parse_event(event_body())
    ph.store.record_event(event, ph.rules.plan(event))
    assert ph.worker.run_until_idle() >= 1
    ph.engine.dispose()
    result = cli(tmp_path, "notifications", "list", COLUMNS="250")
    assert result.returncode == 0, result.stderr
    assert "[receipt] Paid, thank you." in result.stdout


def test_simulate_sends_todays_shapes_and_an_older_version_when_asked(running: Running) -> None:
    import sqlite3

    versions = {}
    for asked in (None, "2024-06-20"):
        args = ["simulate", "invoice.paid", "--url", running.url]
        result = cli(running.cwd, *args, *(["--api-version", asked] if asked else []))
        assert result.returncode == 0, result.stderr
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("Sent invoice.paid ")]
        event_id = line.split()[2]
        with contextlib.closing(sqlite3.connect(running.cwd / "payherald.db")) as db:
            (payload,) = db.execute(
                "SELECT payload FROM events WHERE id = ?", (event_id,)
            ).fetchone()
        invoice = json.loads(payload)["data"]["object"]
        versions[asked] = (json.loads(payload)["api_version"], "payment_intent" in invoice)
        told = [n for n in notifications(running.cwd) if n["event_id"] == event_id]
        assert [(n["rule"], n["status"]) for n in told if n["rule"] == "payment_confirmation"] == [
            ("payment_confirmation", "sent")
        ], told
    assert versions == {None: (NEWEST_SUPPORTED, False), "2024-06-20": ("2024-06-20", True)}


def test_simulate_refuses_an_api_version_it_cannot_send(tmp_path: Path) -> None:
    result = cli(tmp_path, "simulate", "payment_intent.succeeded", "--api-version", "2099-01-01")
    assert result.returncode == 2
    assert "--api-version: API version 2099-01-01 is newer than" in result.stderr


def test_simulate_a_fraud_check_and_the_customers_reply(tmp_path: Path) -> None:
    (tmp_path / "payherald.toml").write_text('[teams.finance]\nsms = ["+14155550100"]\n')
    with payherald_run(tmp_path) as server:
        asked = cli(tmp_path, "simulate", "review.opened", "--url", server.url)
        assert asked.returncode == 0, asked.stderr
        assert "Reply YES if you made this payment, NO if not." in asked.stderr
        unclear = cli(tmp_path, "simulate", "reply", "--text", "huh?", "--url", server.url)
        assert "payherald answered: Please reply YES if you made the payment of $20.00" in (
            unclear.stderr
        )
        assert "question 1 is open" in unclear.stderr
        no = cli(tmp_path, "simulate", "reply", "--text", "NO", "--url", server.url)
        assert no.returncode == 0, no.stderr
        # No STRIPE_SECRET_KEY: nothing is done at Stripe, and the team is told to.
        assert "Our team will look into the payment of $20.00." in no.stderr
        assert "question 1 is rejected: Nothing was done at Stripe" in no.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alerts = [n for n in notifications(tmp_path) if n["rule"] == "fraud_reported"]
            if alerts and alerts[0]["status"] == "sent":
                break
            time.sleep(0.1)
        (alert,) = alerts
        assert alert["to"] == "+14155550100"
        assert alert["body"].startswith("Fraud reported: the customer says they did not make")
        again = cli(tmp_path, "simulate", "reply", "--text", "NO", "--url", server.url)
        assert "is closed, so your reply changed nothing" in again.stderr
        # In a trial run only a reply signed with the development secret is taken.
        import httpx

        params = {"MessageSid": "SMforged", "From": "+14155550123", "Body": "STOP"}
        forged = httpx.post(
            f"{server.url}/webhooks/twilio/inbound",
            data=params,
            headers={"X-Twilio-Signature": "bm90IGEgc2lnbmF0dXJl"},
        )
        assert forged.status_code == 403
        assert cli(tmp_path, "optout", "list").stdout.count("+14155550123") == 0


def test_simulate_reply_needs_its_text(tmp_path: Path) -> None:
    result = cli(tmp_path, "simulate", "reply")
    assert result.returncode != 0
    assert "simulate reply needs --text" in result.stderr
