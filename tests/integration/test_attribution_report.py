"""`payherald report attribution`, on SQLite and PostgreSQL: the revenue credited to the
message that brought it, from live events posted over HTTP as Stripe sends them: an invoice
recovered by a dunning step, and a payment that succeeded after its failure was told."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from payherald.simulate import build_event, build_failure_events
from tests.acceptance.test_cli import cli
from tests.integration.test_dunning import DAY, GRACE, PHONE, Stripe, fail, keyless
from tests.integration.test_dunning_reports import pay

__all__ = ["keyless"]  # the fixture, used by name


def _failure_then_success(stripe: Stripe) -> None:
    """A live card payment declined, its customer told, then paid with another card."""
    failed, charge_failed = build_failure_events(
        now=stripe.clock.now(), phone=PHONE, amount=4999, currency="eur", livemode=True
    )
    stripe.send(failed)
    stripe.send(charge_failed)
    # Without a key, a card's failure waits a grace for an invoice's that would tell it.
    stripe.later(GRACE + 1)
    succeeded = build_event(
        "payment_intent.succeeded",
        now=stripe.clock.now(),
        phone=PHONE,
        amount=4999,
        currency="eur",
        livemode=True,
    )
    succeeded["data"]["object"]["id"] = failed["data"]["object"]["id"]
    stripe.send(succeeded)


def test_report_attribution_counts_dunning_recoveries_and_failure_texts(
    keyless: Stripe, tmp_path: Path
) -> None:
    env = {"PAYHERALD_DATABASE_URL": keyless.ph.settings.database_url}
    paid = fail(keyless)
    keyless.later(DAY)
    pay(keyless, paid)
    _failure_then_success(keyless)
    assert any(m.body.startswith("Your payment of €49.99") for m in keyless.sms.delivered)

    result = cli(tmp_path, "report", "attribution", "--since", "30d", "--json", **env)
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    assert report["livemode"] is True
    assert report["by_rule"] == [
        {
            "rule": "payment_failed",
            "channel": "sms",
            "campaign": None,
            "currency": "eur",
            "payments": 1,
            "amount": 4999,
        },
        {
            "rule": "invoice_payment_failed",
            "channel": "sms",
            "campaign": None,
            "currency": "usd",
            "payments": 1,
            "amount": 2000,
        },
    ]
    assert report["totals"] == {"eur": 4999, "usd": 2000}

    table = cli(tmp_path, "report", "attribution", COLUMNS="250", **env)
    assert table.returncode == 0, table.stderr
    assert "Revenue credited to messages since" in table.stdout
    assert "payment_failed" in table.stdout
    assert "invoice_payment_failed" in table.stdout
    assert "Total: €49.99, $20.00" in table.stdout
    test_mode = cli(tmp_path, "report", "attribution", "--test", **env)
    assert "(test mode):\nnothing yet." in test_mode.stdout
    refused = cli(tmp_path, "report", "attribution", "--since", "soon", **env)
    assert refused.returncode == 2
    assert "--since 'soon' is neither a duration" in refused.stderr
