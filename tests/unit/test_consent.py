"""What a reply means (F24): every keyword, any case, padded, only as the whole message;
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
)


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


def test_cells_that_would_start_a_formula_get_a_leading_quote() -> None:
    for cell in ("=1+1", "+14155550123", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert neutralise_cell(cell) == "'" + cell
    for cell in ("STOP", "opt_out", "'quoted already", "2026-11-20T08:00:00+00:00", ""):
        assert neutralise_cell(cell) == cell


def test_a_neutralised_export_reads_back_as_written() -> None:
    text = "address,action,words\n'+14155550123,opt_out,'=HYPERLINK(\"x\")\n"
    rows, problems = read_consent_csv(text, default_region="US")
    assert problems == []
    assert [(row.address, row.words) for row in rows] == [("+14155550123", '=HYPERLINK("x")')]
