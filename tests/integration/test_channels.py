"""Every channel against a real peer: Twilio's spec under Prism for WhatsApp and calls, a
real SMTP server (aiosmtpd) for email, and a loopback HTTP receiver for Slack."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from payherald import PermanentDeliveryError, TransientDeliveryError
from payherald.channels import (
    Message,
    TwilioSmsChannel,
    TwilioVoiceChannel,
    TwilioWhatsAppChannel,
    twilio_client,
)
from payherald.channels.email import EmailChannel, SmtpServer
from payherald.channels.slack import SlackChannel
from tests import peers
from tests.peers import free_port
from tests.support import Mailbox, SlackReceiver, answer_json, serving

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
PHONE = "+14155550123"


def test_whatsapp_goes_to_whatsapp_addresses(twilio: peers.TwilioMock) -> None:
    twilio.clear()
    channel = TwilioWhatsAppChannel(
        client=twilio_client(ACCOUNT_SID, "f" * 32, api_base=twilio.url),
        from_number="+14155238886",
    )
    sid = channel.send(
        Message(notification_id=1, to=PHONE, body="Paid, thanks!", channel="whatsapp")
    )
    assert sid.startswith(("SM", "MM"))
    (request,) = twilio.messages()
    assert request.form == {
        "To": f"whatsapp:{PHONE}",
        "From": "whatsapp:+14155238886",
        "Body": "Paid, thanks!",
    }


class KeepAliveTwilio(ThreadingHTTPServer):
    """Twilio's Messages API over HTTP/1.1 keep-alive, counting the connections opened."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _KeepAliveHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.lock = threading.Lock()
        self.connections = self.messages = 0


class _KeepAliveHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: KeepAliveTwilio

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.connections += 1

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(0.2)  # long enough for every sender to be in a request at once
        with self.server.lock:
            self.server.messages += 1
            sid = f"SM{self.server.messages:032x}"
        answer_json(self, 201, {"sid": sid, "status": "queued"})

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_bursts_reuse_the_twilio_clients_connections() -> None:
    """Each new connection to Twilio is a TLS handshake. With as many pooled connections as
    sending threads, the first burst opens one per thread and a later burst, after a lull,
    opens none: none was closed for want of room in the pool."""
    senders = 24
    with serving(KeepAliveTwilio()) as peer:
        channel = TwilioSmsChannel(
            client=twilio_client(ACCOUNT_SID, "f" * 32, api_base=peer.url, connections=senders),
            from_number="+15005550006",
        )

        def send(index: int) -> str:
            return channel.send(
                Message(notification_id=index, to=PHONE, body="Paid", channel="sms")
            )

        sids = []
        with ThreadPoolExecutor(senders) as pool:
            for burst in range(2):
                sids += pool.map(send, range(burst * senders, (burst + 1) * senders))
                time.sleep(0.1)  # the lull: every connection goes back to the pool
    assert len(set(sids)) == 2 * senders
    assert peer.connections == senders


def test_a_call_reads_the_message_out_in_the_locales_language(twilio: peers.TwilioMock) -> None:
    twilio.clear()
    channel = TwilioVoiceChannel(
        client=twilio_client(ACCOUNT_SID, "f" * 32, api_base=twilio.url),
        from_number="+15005550006",
        language="de-DE",
    )
    sid = channel.send(
        Message(notification_id=2, to=PHONE, body="Zahlung & Dank <1>", channel="voice")
    )
    assert sid.startswith("CA")
    (request,) = [r for r in twilio.requests if r.path.endswith("/Calls.json")]
    assert request.form["To"] == PHONE
    assert request.form["From"] == "+15005550006"
    assert request.form["Twiml"] == (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        '<Say language="de-DE">Zahlung &amp; Dank &lt;1&gt;</Say>'
        "</Response>"
    )


def email_channel(port: int) -> EmailChannel:
    return EmailChannel(
        server=SmtpServer.from_url(f"smtp://127.0.0.1:{port}"),
        sender="Acme Billing <billing@acme.example>",
        reply_to="help@acme.example",
        subject_prefix="Acme",
    )


def test_an_email_arrives_with_text_html_from_and_reply_to(smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    provider_id = email_channel(port).send(
        Message(
            notification_id=3,
            to="jenny@example.com",
            channel="email",
            body="Payment of $20.00 received, thank you! Ref: pi_1",
        )
    )
    (mail_from, recipients, mail) = mailbox.messages[0]
    assert (mail_from, recipients) == ("billing@acme.example", ["jenny@example.com"])
    assert mail["Subject"] == "Acme: Payment of $20.00 received, thank you! Ref: pi_1"
    assert mail["From"] == "Acme Billing <billing@acme.example>"
    assert mail["Reply-To"] == "help@acme.example"
    assert mail["Message-ID"] == provider_id
    parts = {
        part.get_content_type(): part.get_payload(decode=True).decode()
        for part in mail.walk()
        if not part.is_multipart()
    }
    assert parts["text/plain"].strip() == "Payment of $20.00 received, thank you! Ref: pi_1"
    assert "Payment of $20.00 received" in parts["text/html"]


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        ("550 5.1.1 No such user", PermanentDeliveryError),
        ("451 4.3.0 Try again later", TransientDeliveryError),
    ],
)
def test_a_refused_recipient_is_permanent_or_transient_by_its_code(
    smtp: tuple[Mailbox, int], answer: str, error: type[Exception]
) -> None:
    mailbox, port = smtp
    mailbox.refuse["nobody@example.com"] = answer
    with pytest.raises(error, match=answer.split(" ", 1)[0]):
        email_channel(port).send(
            Message(notification_id=4, to="nobody@example.com", body="Hi", channel="email")
        )
    assert mailbox.messages == []


def test_an_unreachable_smtp_server_is_retried() -> None:
    with pytest.raises(TransientDeliveryError, match="Could not connect"):
        email_channel(free_port()).send(
            Message(notification_id=5, to="a@example.com", body="Hi", channel="email")
        )


def test_slack_gets_a_readable_block_layout(slack: tuple[type[SlackReceiver], str]) -> None:
    receiver, url = slack
    channel = SlackChannel(webhooks={"finance": f"{url}/services/T0/B0/finance"})
    channel.send(
        Message(
            notification_id=6,
            to="slack:finance",
            channel="slack",
            body="URGENT: dispute opened on $20.00",
        )
    )
    ((path, payload),) = receiver.posts
    assert path == "/services/T0/B0/finance"
    assert payload["text"] == "URGENT: dispute opened on $20.00"
    assert payload["blocks"][0] == {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "URGENT: dispute opened on $20.00"},
    }


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        ((404, "no_service", {}), PermanentDeliveryError, "no_service"),
        ((400, "invalid_payload", {}), PermanentDeliveryError, "invalid_payload"),
        ((500, "oops", {}), TransientDeliveryError, "500"),
        ((429, "rate_limited", {"Retry-After": "7"}), TransientDeliveryError, "429"),
    ],
)
def test_slack_refusals_are_classified(
    slack: tuple[type[SlackReceiver], str],
    answer: tuple[int, str, dict[str, str]],
    error: type[Exception],
    words: str,
) -> None:
    receiver, url = slack
    receiver.answer = answer
    channel = SlackChannel(webhooks={"ops": f"{url}/hook"})
    with pytest.raises(error, match=words) as caught:
        channel.send(Message(notification_id=7, to="slack:ops", body="x", channel="slack"))
    if answer[0] == 429:
        assert caught.value.retry_after == 7.0  # type: ignore[attr-defined]
