"""Customer text is data, not markup: what a customer typed reaches the team's Slack, SMS
and email as text, an email "address" that is not one address is refused, and an event's
metadata does not choose the operator's links. Through the store and the worker, with the
real Slack and email channels posting to peers on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from payherald import FrozenClock, parse_event
from payherald.channels.email import EmailChannel, SmtpServer
from payherald.channels.slack import SlackChannel
from payherald.sandbox import MAX_VALUE
from payherald.simulate import build_event
from payherald.testing import ScriptedChannel
from tests.support import Mailbox, SlackReceiver, build_for_tests

EVIL_NAME = "<!channel> <https://evil.example|Approve refund> @here & co"
TEAM = """
[high_value]
usd = 100

[rules.high_value_alert]
enabled = false

[teams.finance]
slack_webhook = "https://hooks.slack.com/services/T0/B0/finance"

[teams.phones]
sms = ["+14155550100"]
email = ["ops@example.com"]

[teams.mail]
email = ["ops@example.com"]

[rules.payment_confirmation]
enabled = false

[rules.welcome]
enabled = false

[rules.{name}]
events = ["payment_intent.succeeded"]
to = "team:{team}"
channels = ["{channel}"]
template = "{template}"
"""


def payherald(
    database_url: str, tmp_path: Path, rules: str, channels: dict[str, Any], **settings: str
) -> Any:
    path = tmp_path / "payherald.toml"
    path.write_text(rules)
    return build_for_tests(
        database_url,
        clock=FrozenClock(),
        channels=channels,
        settings={"PAYHERALD_CONFIG": str(path), **settings},
    )


def deliver(ph: Any, event_type: str = "payment_intent.succeeded", **fields: Any) -> None:
    """Record a live event whose object has ``fields``, and send what it causes."""
    payload = build_event(event_type, now=FrozenClock().now(), livemode=True)
    payload["data"]["object"].update(fields)
    event = parse_event(json.dumps(payload).encode())
    ph.store.record_event(event, ph.rules.plan(event))
    ph.worker.run_until_idle()


def email_channel(port: int) -> EmailChannel:
    return EmailChannel(
        server=SmtpServer.from_url(f"smtp://127.0.0.1:{port}"), sender="billing@acme.example"
    )


def test_a_customers_name_is_text_in_slack_and_the_operators_link_stays_a_link(
    database_url: str, tmp_path: Path, slack: tuple[type[SlackReceiver], str]
) -> None:
    receiver, url = slack
    rules = TEAM.format(
        name="big_payment",
        team="finance",
        channel="slack",
        template="Paid by {{ customer_name }}: <https://dashboard.stripe.com/{{ reference }}"
        "|Open in Stripe>",
    )
    channel = SlackChannel(webhooks={"finance": f"{url}/services/T0/B0/finance"})
    ph = payherald(database_url, tmp_path, rules, {"slack": channel})
    try:
        deliver(ph, id="pi_1", shipping={"name": EVIL_NAME})
    finally:
        ph.engine.dispose()
    ((_, payload),) = receiver.posts
    expected = (
        "Paid by &lt;!channel&gt; &lt;https://evil.example|Approve refund&gt; @here &amp; co: "
        "<https://dashboard.stripe.com/pi_1|Open in Stripe>"
    )
    assert payload["text"] == expected
    assert payload["blocks"][0]["text"] == {"type": "mrkdwn", "text": expected}


@pytest.mark.parametrize("channel", ["sms", "email"])
def test_a_customers_name_reaches_team_sms_and_email_cleaned_and_cut(
    database_url: str, tmp_path: Path, smtp: tuple[Mailbox, int], channel: str
) -> None:
    mailbox, port = smtp
    sms = ScriptedChannel("sms")
    rules = TEAM.format(
        name="big_payment",
        team="phones" if channel == "sms" else "mail",
        channel=channel,
        template="Paid by {{ customer_name }}. Ref {{ reference }}",
    )
    ph = payherald(database_url, tmp_path, rules, {"sms": sms, "email": email_channel(port)})
    # A bidi override that would show "Ref" text reversed, controls, a fake second line,
    # and far more than a name's length.
    name = "Jenny\u202e\u2066 Rosen\x1b[31m\r\nRefund approved\u200f\x85" + "z" * 5000
    try:
        deliver(ph, id="pi_2", shipping={"name": name})
    finally:
        ph.engine.dispose()
    if channel == "sms":
        (message,) = sms.delivered
        body = message.body
    else:
        ((_, recipients, mail),) = mailbox.messages
        assert recipients == ["ops@example.com"]
        (plain,) = [part for part in mail.walk() if part.get_content_type() == "text/plain"]
        body = plain.get_payload(decode=True).decode().strip()
        assert mail["Subject"].startswith("Paid by Jenny Rosen")
    assert body.startswith("Paid by Jenny Rosen[31m Refund approved zzz")
    assert body.endswith("…. Ref pi_2")
    assert not any(ch in body for ch in "\u202e\u2066\u200f\x1b\r\n\x85")
    assert len(body) <= len("Paid by . Ref pi_2") + MAX_VALUE


@pytest.mark.parametrize(
    ("address", "words"),
    [
        ("a@x.example, b@evil.example", "names more than one email address"),
        ("a@x.example\r\nBcc: b@evil.example", "holds a line break"),
    ],
)
def test_an_email_address_that_is_not_one_address_fails_for_good_and_nothing_is_mailed(
    database_url: str, tmp_path: Path, smtp: tuple[Mailbox, int], address: str, words: str
) -> None:
    mailbox, port = smtp
    rules = '[rules.payment_confirmation]\nchannels = ["email"]\n'
    ph = payherald(database_url, tmp_path, rules, {"email": email_channel(port)})
    try:
        deliver(ph, receipt_email=address)
        (row,) = [
            r for r in ph.store.list_notifications(limit=10) if r["rule"] == "payment_confirmation"
        ]
    finally:
        ph.engine.dispose()
    assert row["status"] == "failed"
    assert words in row["error"]
    assert "Nothing was sent: " in row["error"]
    assert mailbox.messages == []


@pytest.mark.parametrize(("allowed", "link"), [(False, "billing.example.com"), (True, "evil")])
def test_metadata_replaces_the_operators_card_link_only_where_the_rule_allows(
    database_url: str, tmp_path: Path, allowed: bool, link: str
) -> None:
    sms = ScriptedChannel("sms")
    rules = "[rules.payment_failed]\nallow_metadata_links = true\n" if allowed else ""
    ph = payherald(
        database_url,
        tmp_path,
        rules,
        {"sms": sms},
        PAYHERALD_UPDATE_CARD_URL="https://billing.example.com/card",
    )
    try:
        deliver(
            ph,
            "payment_intent.payment_failed",
            metadata={"update_card_url": "https://evil.example/card"},
        )
    finally:
        ph.engine.dispose()
    (message,) = sms.delivered
    assert "Update your card: https://" in message.body
    assert link in message.body
