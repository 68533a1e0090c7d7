"""`payherald paylink send` as an operator runs it, against a stand-in of today's Stripe:
it prints the link with its UTM parameters and queues the text; a mistake makes nothing."""

from __future__ import annotations

import json
from pathlib import Path

from tests.acceptance.test_cli import cli
from tests.stripe_standin import stripe_standin

SEND = ("paylink", "send", "--phone", "+14155550123")
SPRING = ("--amount", "2500", "--currency", "usd", "--name", "Spring box", "--campaign", "spring")


def test_paylink_send_prints_the_link_and_queues_its_text(tmp_path: Path) -> None:
    with stripe_standin() as standin:
        env = {
            "PAYHERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'payherald.db'}",
            "STRIPE_SECRET_KEY": "sk_test_standin",
            "STRIPE_API_BASE": standin.url,
        }
        assert cli(tmp_path, "migrate", **env).returncode == 0

        sent = cli(tmp_path, *SEND, *SPRING, **env)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout == (
            "https://buy.stripe.com/test_standin1"
            "?utm_source=payherald&utm_medium=sms&utm_campaign=spring\n"
        )
        assert "Payment link plink_standin1 (test mode" in sent.stderr
        assert "is pending: the worker texts it (`payherald run` or `payherald worker`)" in (
            sent.stderr
        )
        ((key, (form, _)),) = standin.payment_links.items()
        assert key.startswith("payherald-paylink-pl_")
        assert form["metadata[payherald_paylink]"] == key.removeprefix("payherald-paylink-")

        listed = cli(tmp_path, "notifications", "list", "--json", **env)
        (notification,) = json.loads(listed.stdout)
        assert (notification["rule"], notification["status"]) == ("payment_link", "pending")

        as_json = cli(tmp_path, *SEND, "--price", "price_none", "--json", **env)
        assert as_json.returncode == 2
        assert "Stripe has no price price_none in test mode" in as_json.stderr

        bad = cli(tmp_path, *SEND, "--amount", "25.00", "--currency", "usd", "--name", "X", **env)
        assert bad.returncode == 2
        assert "--amount '25.00' is not a positive whole number" in bad.stderr
        assert len(standin.payment_links) == 1
        assert standin.requested("POST /v1/payment_links") == 1

        # Run again with its --request-id (after a dropped connection, say): the same link,
        # no second text.
        for _ in range(2):
            again = cli(tmp_path, *SEND, *SPRING, "--request-id", "spring-jenny", **env)
            assert again.returncode == 0, again.stderr
            assert again.stdout.startswith("https://buy.stripe.com/test_standin2?")
        listed = cli(tmp_path, "notifications", "list", "--json", **env)
        assert len(json.loads(listed.stdout)) == 2
        assert len(standin.payment_links) == 2

        keyless = {name: value for name, value in env.items() if name != "STRIPE_SECRET_KEY"}
        no_key = cli(tmp_path, *SEND, *SPRING, **keyless)
        assert no_key.returncode == 2
        assert "payherald paylink send needs STRIPE_SECRET_KEY" in no_key.stderr
