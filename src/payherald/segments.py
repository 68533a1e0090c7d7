"""How many SMS segments a text costs, counted as carriers and Twilio do.

A text made only of GSM 03.38 characters is sent as GSM-7: one segment holds 160
septets; a longer text is split into segments of 153 (7 septets go to the concatenation
header). Characters of the GSM extension table (``^ { } \\ [ ~ ] | €`` and form feed) are an
escape plus a character, 2 septets, and the pair is never split across two segments.

One character outside that set (a curly quote U+2019, an emoji, most accents) switches the
whole text to UCS-2: length in UTF-16 code units (an emoji is a surrogate pair, 2 units),
70 per single segment, 67 per segment once split, and a surrogate pair is never split.

The empty text costs 0 segments: Twilio refuses an empty body rather than sending one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["GSM7_BASIC", "GSM7_EXTENSION", "SmsSegments", "count_segments"]

# The GSM 03.38 default alphabet, without ESC (0x1B), which only introduces the extension
# table and is never a character of the text itself.
GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True, slots=True)
class SmsSegments:
    """What a text costs: its encoding, its length in that encoding's units (septets for
    GSM-7, UTF-16 code units for UCS-2) and the number of segments sent."""

    encoding: Literal["GSM-7", "UCS-2"]
    length: int
    segments: int


def count_segments(text: str) -> SmsSegments:
    """The encoding, length and segment count of ``text`` as an SMS; 0 segments for ""."""
    if all(char in GSM7_BASIC or char in GSM7_EXTENSION for char in text):
        units = [2 if char in GSM7_EXTENSION else 1 for char in text]
        return SmsSegments("GSM-7", sum(units), _segments(units, GSM7_SINGLE, GSM7_PART))
    units = [2 if ord(char) > 0xFFFF else 1 for char in text]
    return SmsSegments("UCS-2", sum(units), _segments(units, UCS2_SINGLE, UCS2_PART))


def _segments(units: list[int], single: int, part: int) -> int:
    """Segments for characters costing ``units`` each: one if they fit in ``single``,
    else packed in order into segments of ``part``, no character split across two."""
    total = sum(units)
    if total <= single:
        return 1 if total else 0
    segments, used = 1, 0
    for cost in units:
        if used + cost > part:
            segments, used = segments + 1, 0
        used += cost
    return segments
