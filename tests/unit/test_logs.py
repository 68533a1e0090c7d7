"""The log scrubber: configured secrets never appear, phone numbers are masked, wherever
they sit in a log line."""

from __future__ import annotations

import json

import pytest
import structlog

from payherald.logs import configure_logging, scrubber

SECRET = "whsec_" + "a1" * 16


def scrub(**fields: object) -> dict[str, object]:
    return dict(scrubber([SECRET])(None, "info", dict(fields)))


def test_secrets_and_numbers_in_strings() -> None:
    line = scrub(event="x", error=f"bad {SECRET} for +14155550123")
    assert line["error"] == "bad [redacted] for +*******0123"


def test_inside_lists_and_mappings() -> None:
    line = scrub(failed=["+14155550123 (gone)"], form={"To": "+447700900123", "n": 3})
    assert line["failed"] == ["+*******0123 (gone)"]
    assert line["form"] == {"To": "+********0123", "n": 3}


def test_url_encoded_numbers() -> None:
    line = scrub(url="https://api.twilio.com/Messages.json?To=%2B14155550123&PageSize=20")
    assert "14155550123" not in str(line["url"])
    assert "0123" in str(line["url"])


def test_email_addresses_anywhere_keep_only_their_first_letter_and_domain() -> None:
    line = scrub(
        error="550 5.1.1 <jane.doe@example.com>: Recipient address rejected",
        url="https://api.example.com/v1/customers?email=jane%40example.co.uk",
        notes=["sent to ops+billing@acme.io"],
    )
    assert line["error"] == "550 5.1.1 <j***@example.com>: Recipient address rejected"
    assert line["url"] == "https://api.example.com/v1/customers?email=j***%40example.co.uk"
    assert line["notes"] == ["sent to o***@acme.io"]


def test_an_at_sign_that_is_no_email_address_is_left_alone() -> None:
    line = scrub(error="could not connect to postgres@127.0.0.1:5432; retry @ 5s")
    assert line["error"] == "could not connect to postgres@127.0.0.1:5432; retry @ 5s"


def test_address_fields_are_masked_in_any_form() -> None:
    line = scrub(
        sender="(415) 555-0123",
        to="jane@example.com",
        raw_sender="whatsapp:+1 415 555 0123",
        recipient="4155550123",
        form={"From": "415.555.0123", "Body": "STOP"},
    )
    assert line["sender"] == "(***) ***-0123"
    assert line["to"] == "j***@example.com"
    assert line["raw_sender"] == "whatsapp:+* *** *** 0123"
    assert line["recipient"] == "******0123"
    assert line["form"] == {"From": "***.***.0123", "Body": "STOP"}


def test_masking_twice_changes_nothing_more() -> None:
    once = scrub(to="jane@example.com", sender="+14155550123", error="for jane@example.com")
    assert scrub(**once) == once


def test_json_log_lines_hold_no_email_address_or_national_number(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(secrets=[SECRET], log_format="json")
    try:
        structlog.get_logger("test").warning(
            "inbound_sender_unreadable",
            sender="(415) 555-0123",
            to="jane.doe@example.com",
            error="SMTP refused jane.doe@example.com",
        )
    finally:
        structlog.reset_defaults()
    (raw,) = capsys.readouterr().err.splitlines()
    line = json.loads(raw)
    assert "555-0123" not in raw
    assert "jane.doe" not in raw
    assert line["sender"] == "(***) ***-0123"
    assert line["to"] == "j***@example.com"
    assert line["error"] == "SMTP refused j***@example.com"


def test_console_log_lines_show_terminal_escapes_escaped(
    capsys: pytest.CaptureFixture[str],
) -> None:
    configure_logging(secrets=[], log_format="console")
    try:
        structlog.get_logger("test").warning("channel_refused", error="bad\x1b[2J\x9b31m")
    finally:
        structlog.reset_defaults()
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\x9b" not in err
    assert "bad\\x1b[2J\\x9b31m" in err


def test_the_database_password_is_scrubbed_as_written_and_decoded() -> None:
    from payherald.settings import load_settings

    url = "postgresql://payherald:s3cret%2Fpw@db.internal:5432/payherald"
    settings = load_settings(PAYHERALD_DATABASE_URL=url)
    line = scrubber(settings.secret_values())(
        None, "error", {"event": "store_failed", "error": f"{url} refused s3cret/pw"}
    )
    assert "s3cret" not in str(line)
    assert line["error"] == (
        "postgresql://payherald:[redacted]@db.internal:5432/payherald refused [redacted]"
    )


def test_the_smtp_password_is_scrubbed_on_its_own_too() -> None:
    from payherald.settings import load_settings

    settings = load_settings(
        SMTP_URL="smtp://billing:m41l%40pw@mail.internal:587",
        PAYHERALD_EMAIL_FROM="billing@example.com",
    )
    line = scrubber(settings.secret_values())(
        None, "error", {"event": "smtp_failed", "error": "535 auth failed for m41l@pw"}
    )
    assert line["error"] == "535 auth failed for [redacted]"
