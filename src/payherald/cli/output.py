"""What the commands print, in one place: the two consoles, payherald's error and
warning lines, rows as a table or JSON, and the options every listing takes."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from payherald.exceptions import PayheraldError
from payherald.terminal import OperatorConsole

__all__ = [
    "JsonOption",
    "LimitOption",
    "_error",
    "_fail",
    "_guard",
    "_print_rows",
    "_warning",
    "err",
    "out",
]

# Markup and emoji codes are off: what payherald prints is mostly not its own text (rule
# names, message bodies, Stripe's and the database's words), and Rich would swallow a
# "[teams.finance]" in it as a style tag. Payherald's own styling passes markup=True and
# escapes what it puts inside. Terminal escapes in that text are printed escaped
# (OperatorConsole), never sent to the terminal.
err = OperatorConsole(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
out = OperatorConsole(highlight=False, soft_wrap=True, markup=False, emoji=False)
T = TypeVar("T")


def _error(message: str) -> None:
    """Print ``message`` as payherald's error, on standard error."""
    err.print(f"[bold red]payherald:[/] {escape(message)}", markup=True)


def _warning(message: str) -> None:
    """Print ``message`` as a warning, on standard error."""
    err.print(f"[yellow]warning:[/] {escape(message)}", markup=True)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _error(message)
    return typer.Exit(code)


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``, turning payherald's errors into a sentence and an exit status."""
    try:
        return action()
    except PayheraldError as exc:
        raise _fail(exc.message) from None


def _jsonable(row: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    return {
        name: (row[name].isoformat() if isinstance(row[name], datetime) else row[name])
        for name in fields
    }


def _print_rows(
    rows: list[dict[str, Any]], fields: tuple[str, ...], as_json: bool, columns: tuple[str, ...]
) -> None:
    items = [_jsonable(row, fields) for row in rows]
    if as_json:
        sys.stdout.write(json.dumps(items, indent=2) + "\n")
        return
    table = Table(*columns)
    for item in items:
        table.add_row(*("" if item[c] is None else str(item[c]) for c in columns))
    out.print(table)


LimitOption = Annotated[int, typer.Option(help="At most this many, newest first.", min=1)]
JsonOption = Annotated[bool, typer.Option("--json", help="Print a JSON array.")]
