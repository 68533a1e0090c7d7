"""What an operator reads of dunning, on SQLite and PostgreSQL: the sequences with the step
each reached (`payherald dunning list`), stopping one by hand (`dunning stop`), and the
revenue recovered, attributed to the last step told before the payment (`report recovery`)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

from tests.acceptance.test_cli import cli
from tests.integration.test_dunning import (
    DAY,
    GRACE,
    PHONE,
    Stripe,
    about,
    fail,
    failure,
    keyless,
)

__all__ = ["keyless"]  # the fixture, used by name


def pay(stripe: Stripe, failed: dict[str, Any]) -> None:
    invoice = failed["data"]["object"]
    stripe.send(about(failed, "invoice.paid", status="paid", amount_paid=invoice["amount_due"]))


def test_recovered_revenue_goes_to_the_last_step_told_before_the_payment(
    keyless: Stripe,
) -> None:
    start = keyless.clock.now()
    first = fail(keyless)  # paid after the first step
    second = fail(keyless)  # paid after the reminder
    unpaid = fail(keyless)  # still open
    voided = fail(keyless)  # ended without payment
    keyless.later(DAY)
    pay(keyless, first)
    keyless.send(about(voided, "invoice.voided", status="void"))
    keyless.later(3 * DAY)
    paid_second_at = keyless.clock.now()
    pay(keyless, second)

    report = keyless.ph.store.dunning.recovery(start)
    assert report["by_step"] == [
        {
            "rule": rule,
            "channel": "sms",
            "currency": "usd",
            "invoices": 1,
            "amount": first["data"]["object"]["amount_due"],
        }
        for rule in ("dunning_reminder", "invoice_payment_failed")
    ]
    assert report["sequences"] == {"started": 4, "open": 1, "recovered": 2, "ended": 1}
    test_mode = keyless.ph.store.dunning.recovery(start, livemode=False)  # the events are live
    assert (test_mode["by_step"], test_mode["sequences"]["started"]) == ([], 0)
    # Since the first invoice was paid, only the second counts as recovered.
    later = keyless.ph.store.dunning.recovery(paid_second_at - timedelta(seconds=1))
    assert [row["rule"] for row in later["by_step"]] == ["dunning_reminder"]
    assert later["sequences"]["started"] == 0

    listed = {row["invoice_id"]: row for row in keyless.ph.store.dunning.sequences()}
    ids = {
        name: event["data"]["object"]["id"]
        for name, event in {
            "first": first,
            "second": second,
            "unpaid": unpaid,
            "voided": voided,
        }.items()
    }
    assert {name: listed[ids[name]]["status"] for name in ids} == {
        "first": "recovered",
        "second": "recovered",
        "unpaid": "open",
        "voided": "ended",
    }
    still = listed[ids["unpaid"]]
    assert (still["sent"], still["steps"], still["last_step"], still["to"]) == (
        2,
        3,
        "dunning_reminder",
        PHONE,
    )
    # The final step is due 7 days after payherald received the failure.
    assert still["next_due"] == still["started_at"] + timedelta(days=7)
    assert listed[ids["first"]]["next_due"] is None
    assert [row["invoice_id"] for row in keyless.ph.store.dunning.sequences(status="open")] == [
        ids["unpaid"]
    ]


def test_the_commands_list_stop_and_report(keyless: Stripe, tmp_path: Path) -> None:
    env = {"PAYHERALD_DATABASE_URL": keyless.ph.settings.database_url}
    paid, stopped = fail(keyless), fail(keyless)
    keyless.later(DAY)
    pay(keyless, paid)
    invoice = stopped["data"]["object"]["id"]

    result = cli(tmp_path, "dunning", "stop", invoice, **env)
    assert result.returncode == 0, result.stderr
    assert f"The dunning sequence of {invoice} is stopped" in result.stderr
    again = cli(tmp_path, "dunning", "stop", invoice, **env)
    assert again.returncode == 1
    assert "had already ended (ended); nothing changed." in again.stderr
    unknown = cli(tmp_path, "dunning", "stop", "in_unknown", **env)
    assert unknown.returncode == 2
    assert "in_unknown has no dunning sequence" in unknown.stderr
    keyless.later(8 * DAY)
    assert len(keyless.texts()) == 2

    listed = cli(tmp_path, "dunning", "list", "--json", **env)
    assert listed.returncode == 0, listed.stderr
    rows = {row["invoice_id"]: row for row in json.loads(listed.stdout)}
    assert rows[invoice]["status"] == "ended"
    assert rows[invoice]["end_reason"] == "stopped"
    assert rows[invoice]["to"] == "+*******0123"  # masked
    table = cli(tmp_path, "dunning", "list", "--status", "ended", COLUMNS="250", **env)
    assert "stopped by hand" in table.stdout
    assert "+*******0123" in table.stdout
    assert PHONE not in table.stdout
    bad = cli(tmp_path, "dunning", "list", "--status", "closed", **env)
    assert bad.returncode == 2
    assert "use one of open, recovered, ended" in bad.stderr

    report = cli(tmp_path, "report", "recovery", "--since", "30d", COLUMNS="250", **env)
    assert report.returncode == 0, report.stderr
    assert "invoice_payment_failed" in report.stdout
    assert "Total: $20.00" in report.stdout
    assert "Sequences started since then: 2 (1 recovered, 0 open, 1 ended" in report.stdout
    as_json = json.loads(cli(tmp_path, "report", "recovery", "--json", **env).stdout)
    assert as_json["by_step"][0]["rule"] == "invoice_payment_failed"
    refused = cli(tmp_path, "report", "recovery", "--since", "last week", **env)
    assert refused.returncode == 2
    assert "--since 'last week' is neither a duration" in refused.stderr


def test_stopping_an_invoice_with_no_sequence_keeps_none_from_starting(
    keyless: Stripe, tmp_path: Path
) -> None:
    """A mistyped invoice id given to `dunning stop` changes nothing."""
    events = failure(keyless)
    invoice = events[0]["data"]["object"]["id"]
    env = {"PAYHERALD_DATABASE_URL": keyless.ph.settings.database_url}
    assert cli(tmp_path, "dunning", "stop", invoice, **env).returncode == 2
    for event in events:
        keyless.send(event)
    keyless.later(GRACE + 1)
    assert keyless.steps()["invoice_payment_failed"] == "sent"
    assert [row["status"] for row in keyless.ph.store.dunning.sequences()] == ["open"]
