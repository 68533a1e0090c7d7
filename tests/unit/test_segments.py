"""SMS length and segments: GSM-7 160/153, UCS-2 70/67."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payherald.segments import GSM7_BASIC, GSM7_EXTENSION, SmsSegments, count_segments

EMOJI = "\N{PARTY POPPER}"
CURLY_QUOTE = "\N{RIGHT SINGLE QUOTATION MARK}"


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm_text_is_160_alone_then_153_per_segment(length: int, segments: int) -> None:
    assert count_segments("a" * length) == SmsSegments("GSM-7", length, segments)


@pytest.mark.parametrize(("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3)])
def test_ucs2_text_is_70_alone_then_67_per_segment(length: int, segments: int) -> None:
    assert count_segments("ж" * length) == SmsSegments("UCS-2", length, segments)


@pytest.mark.parametrize("char", sorted(GSM7_EXTENSION))
def test_an_extension_character_counts_two_septets(char: str) -> None:
    assert count_segments("a" + char) == SmsSegments("GSM-7", 3, 1)


def test_extension_characters_push_a_text_past_one_segment() -> None:
    assert count_segments("€" * 80) == SmsSegments("GSM-7", 160, 1)
    assert count_segments("a" + "€" * 80) == SmsSegments("GSM-7", 161, 2)


def test_an_escape_pair_is_not_split_across_segments() -> None:
    # 152 septets then a 2-septet character: 154 does not fit in 153, so it moves on.
    assert count_segments("a" * 152 + "€" + "a" * 7).segments == 2
    assert count_segments("a" * 152 + "€" + "a" * 153).segments == 3
    assert count_segments("a" * 153 + "€" + "a" * 152).segments == 3


def test_one_curly_quote_switches_the_whole_text_to_ucs2() -> None:
    text = f"Your payment of $20.00 didn{CURLY_QUOTE}t go through."
    assert count_segments(text) == SmsSegments("UCS-2", len(text), 1)
    assert count_segments(text.replace(CURLY_QUOTE, "'")).encoding == "GSM-7"


def test_an_emoji_counts_two_code_units() -> None:
    assert count_segments(EMOJI) == SmsSegments("UCS-2", 2, 1)
    assert count_segments("a" * 68 + EMOJI) == SmsSegments("UCS-2", 70, 1)
    assert count_segments("a" * 69 + EMOJI) == SmsSegments("UCS-2", 71, 2)


def test_a_surrogate_pair_is_not_split_across_segments() -> None:
    assert count_segments("a" * 66 + EMOJI + "a" * 3).segments == 2
    assert count_segments("a" * 66 + EMOJI + "a" * 66).segments == 3


def test_gsm_accents_stay_gsm_but_others_do_not() -> None:
    assert count_segments("Café à Zürich, £5").encoding == "GSM-7"
    assert count_segments("ç").encoding == "UCS-2"  # only capital Ç is in GSM 03.38


def test_the_empty_text_is_zero_segments() -> None:
    assert count_segments("") == SmsSegments("GSM-7", 0, 0)


def test_the_escape_character_itself_is_not_gsm_text() -> None:
    assert count_segments("\x1b").encoding == "UCS-2"


def test_the_tables_do_not_overlap() -> None:
    assert not GSM7_BASIC & GSM7_EXTENSION
    assert len(GSM7_BASIC) == 127  # 128 codes less ESC
    assert len(GSM7_EXTENSION) == 10


_GSM = sorted(GSM7_BASIC | GSM7_EXTENSION)
texts = st.text(st.sampled_from(_GSM)) | st.text()
chars = st.sampled_from(_GSM) | st.characters()


@given(texts, chars)
def test_segments_never_decrease_when_a_character_is_appended(text: str, char: str) -> None:
    before, after = count_segments(text), count_segments(text + char)
    assert after.segments >= before.segments
    assert after.segments >= 1


@given(texts)
def test_the_segments_hold_the_text(text: str) -> None:
    result = count_segments(text)
    single, part = (160, 153) if result.encoding == "GSM-7" else (70, 67)
    if result.segments == 1:
        assert 0 < result.length <= single
    elif result.segments > 1:
        assert single < result.length <= result.segments * part
