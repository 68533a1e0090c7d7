"""What payherald prints on the operator's terminal: text from outside shown, never obeyed.

Most of what the commands print is not payherald's own words: event types and errors from
Stripe, message bodies with a customer's name in them, a provider's refusal, a cell of an
imported CSV. Any of it may hold a terminal escape (``\\x1b[2J`` clears the screen, an OSC
sequence retitles the window or writes a link) or a bidirectional override that shows text
in another order than it is stored. ``printable`` writes each such character as a visible
escape (``\\x1b``, ``\\u202e``); line breaks and tabs, which a body or a traceback means,
are kept. ``OperatorConsole`` applies it to every string it prints.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.text import Text

__all__ = ["CONTROL_CHARACTERS", "OperatorConsole", "printable"]

# What controls a terminal, or the order and lines text is shown in, instead of showing as
# text: C0 controls, DEL, C1 controls (0x9b is a one-byte CSI), the line and paragraph
# separators, and the bidirectional marks, embeddings, overrides and isolates. Templates
# drop them from customer values (``sandbox``); the terminal shows them escaped.
CONTROL_CHARACTERS = frozenset(
    [chr(code) for code in range(0x20)]
    + [chr(code) for code in range(0x7F, 0xA0)]
    + [chr(code) for code in range(0x202A, 0x202F)]
    + [chr(code) for code in range(0x2066, 0x206A)]
    + ["\u200e", "\u200f", "\u061c", "\u2028", "\u2029"]
)
# On a terminal, line feeds and tabs are what a body or a traceback means: kept.
_UNPRINTABLE = re.compile("[" + re.escape("".join(sorted(CONTROL_CHARACTERS - {"\t", "\n"}))) + "]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """``text`` with every control character but line feed and tab written as an escape."""
    return _UNPRINTABLE.sub(_visible, text)


class OperatorConsole(Console):
    """A Rich console whose every printed string (a ``print`` argument, a table cell, a
    table header) passes through ``printable`` first, so that no command can forget to.
    Markup is still only read where a caller asks for it (``markup=True``) and escapes
    what it puts inside."""

    def render_str(self, text: str, **options: Any) -> Text:
        return super().render_str(printable(text), **options)
