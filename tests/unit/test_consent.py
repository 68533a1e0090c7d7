"""What a reply means: every keyword, any case, padded, only as the whole message;
and the opt-out list as CSV, safe to open in a spreadsheet."""

from __future__ import annotations

import pytest

from payherald.consent import (
    HELP,
    OPT_IN,
    OPT_OUT,
    classify_reply,
    neutralise_cell,
    read_consent_csv,
    reply_sender,
)
from payherald.recipients import normalise_phone


def variants(word: str) -> list[str]:
    return [
        word,
        word.lower(),
        word.title(),
        f"  {word}  ",
        f"{word}!",
        f"'{word}.'",
        f"\n{word.lower()}\t",
    ]


@pytest.mark.parametrize("text", [v for w in sorted(OPT_OUT) for v in variants(w)])
def test_every_opt_out_keyword_opts_out(text: str) -> None:
    assert classify_reply(text) == "opt_out"


@pytest.mark.parametrize("text", [v for w in sorted(OPT_IN) for v in variants(w)])
def test_every_opt_in_keyword_opts_in(text: str) -> None:
    assert classify_reply(text) == "opt_in"


@pytest.mark.parametrize("text", [v for w in sorted(HELP) for v in variants(w)])
def test_help_and_info_ask_for_help(text: str) -> None:
    assert classify_reply(text) == "help"


@pytest.mark.parametrize("text", ["opt   out", "Opt-Out", "OPT OUT!"])
def test_opt_out_may_be_spaced_or_hyphenated(text: str) -> None:
    assert classify_reply(text) == "opt_out"


@pytest.mark.parametrize(
    "text",
    [
        "please stop texting me",
        "stop it now",
        "yes please",
        "Can I get help with my order?",
        "",
        "STOPPED",
        "restart",
    ],
)
def test_a_keyword_inside_a_sentence_is_an_ordinary_reply(text: str) -> None:
    assert classify_reply(text) is None


NATIONAL_FORMS = ["4155550123", "(415) 555-0123", "1-415-555-0123", "+1 415 555 0123"]


@pytest.mark.parametrize("raw", NATIONAL_FORMS)
def test_a_reply_sender_an_optout_add_and_an_import_read_a_number_alike(raw: str) -> None:
    """A STOP by reply, `optout add` and `optout import` record one number under one
    address, so that each form of it is suppressed by any of them."""
    assert reply_sender(raw, default_region="US") == ("sms", "+14155550123")
    assert reply_sender(f"whatsapp:{raw}", default_region="US") == ("whatsapp", "+14155550123")
    assert normalise_phone(raw, "US") == "+14155550123"  # what `optout add` stores
    rows, problems = read_consent_csv(f'phone\n"{raw}"\n', default_region="US")
    assert problems == []
    assert [row.address for row in rows] == ["+14155550123"]


def test_a_national_reply_sender_is_read_in_the_default_region() -> None:
    assert reply_sender("020 7183 8750", default_region="GB") == ("sms", "+442071838750")
    assert reply_sender("020 7183 8750", default_region="US") == ("sms", None)


@pytest.mark.parametrize("raw", ["", "Acme", "12345", "+1 555 0123", "whatsapp:"])
def test_a_sender_that_is_no_phone_number_has_no_address(raw: str) -> None:
    assert reply_sender(raw, default_region="US")[1] is None


@pytest.mark.parametrize("raw", ["+19999999999", "whatsapp:+19999999999"])
def test_a_sender_in_e164_that_the_metadata_does_not_know_is_taken_as_it_is(raw: str) -> None:
    """A STOP from a number in a range newer than the phone-number metadata is recorded
    rather than dropped."""
    assert normalise_phone("+19999999999", "US") is None
    assert reply_sender(raw, default_region="US")[1] == "+19999999999"


@pytest.mark.parametrize("raw", ["+1999999", "+09999999999", "+1999999999999999", "+1 999 x"])
def test_a_sender_only_nearly_in_e164_has_no_address(raw: str) -> None:
    assert reply_sender(raw, default_region="US")[1] is None


def test_cells_that_would_start_a_formula_get_a_leading_quote() -> None:
    for cell in ("=1+1", "+1+cmd|' /C calc'!A0", "+1 415", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise_cell(cell) == "'" + cell
    for cell in ("STOP", "opt_out", "'quoted already", "2026-11-20T08:00:00+00:00", ""):
        assert neutralise_cell(cell) == cell


def test_a_phone_number_in_e164_is_exported_as_it_is() -> None:
    for cell in ("+14155550123", "+447700900123"):
        assert neutralise_cell(cell) == cell


def test_a_neutralised_export_reads_back_as_written() -> None:
    text = "address,action,words\n'+14155550123,opt_out,'=HYPERLINK(\"x\")\n"
    rows, problems = read_consent_csv(text, default_region="US")
    assert problems == []
    assert [(row.address, row.words) for row in rows] == [("+14155550123", '=HYPERLINK("x")')]
