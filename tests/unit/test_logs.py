"""The log scrubber: configured secrets never appear, phone numbers are masked, wherever
they sit in a log line."""

from __future__ import annotations

from payherald.logs import scrubber

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
