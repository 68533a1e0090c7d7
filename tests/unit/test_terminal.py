"""Text from outside on the operator's terminal: every control character shown as an
escape, line breaks and tabs kept, markup read only where payherald asks for it."""

from __future__ import annotations

import io

import pytest
from rich.markup import escape
from rich.table import Table

from payherald.terminal import OperatorConsole, printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),
        ("\x1b]0;title\x07", "\\x1b]0;title\\x07"),
        ("\x9b31m", "\\x9b31m"),
        ("over\rwrite", "over\\x0dwrite"),
        ("back\x08\x7f", "back\\x08\\x7f"),
        ("abc\u202edcb", "abc\\u202edcb"),
        ("line one\nline two\tcolumn", "line one\nline two\tcolumn"),
        ("Zoë paid £20 [bold]", "Zoë paid £20 [bold]"),
    ],
)
def test_printable_writes_out_controls_and_keeps_text(text: str, shown: str) -> None:
    assert printable(text) == shown


def console() -> tuple[OperatorConsole, io.StringIO]:
    stream = io.StringIO()
    return OperatorConsole(file=stream, width=200, markup=False, highlight=False), stream


def test_a_printed_string_and_a_table_cell_are_escaped_and_not_markup() -> None:
    terminal, stream = console()
    table = Table("rule", "body")
    table.add_row("r\x1b[31m", "Thanks [bold]Ann[/], \x1b[2J")
    terminal.print("  payment_confirmation: sms to +*******0123: failed (\x9b[/])")
    terminal.print(table)
    output = stream.getvalue()
    assert "\x1b" not in output
    assert "\x9b" not in output
    assert "failed (\\x9b[/])" in output
    assert "r\\x1b[31m" in output
    assert "Thanks [bold]Ann[/], \\x1b[2J" in output


def test_payherald_markup_styles_and_what_it_escapes_is_shown() -> None:
    terminal, stream = console()
    message = "bad [/] \x1b[2J"
    terminal.print(f"[bold red]payherald:[/] {escape(message)}", markup=True)
    assert stream.getvalue() == "payherald: bad [/] \\x1b[2J\n"
