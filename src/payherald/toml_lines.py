"""Where a key is in a TOML file, so that a mistake in it can be reported with its line.

``tomllib`` parses to plain values and keeps no positions; this finds them again in the
text: a key under its ``[table]`` header, a dotted ``name.key =`` under the parent table,
or the header itself; keys bare or quoted, and lines inside a multi-line string passed over.
"""

from __future__ import annotations

import re

__all__ = ["line_of"]


def _name(part: str) -> str:
    """A TOML key as it may be written: bare, "double" or 'single' quoted."""
    return rf"""(?:"{re.escape(part)}"|'{re.escape(part)}'|{re.escape(part)})"""


def _code_lines(lines: list[str]) -> list[tuple[int, str]]:
    """(line number, text) of the lines that are not inside a multi-line string."""
    code, inside = [], None
    for number, line in enumerate(lines, start=1):
        if inside is None:
            code.append((number, line))
        for quote in ('"""', "'''"):
            if line.count(quote) % 2 and inside in (None, quote):
                inside = None if inside == quote else quote
    return code


def line_of(lines: list[str], where: tuple[str, ...], key: str | None) -> int | None:
    """The line of ``key`` in the table ``where``, or of the table's header (or of a dotted
    ``name.key =`` under the parent table); None when it cannot be found."""
    code = _code_lines(lines)
    dot = r"\s*\.\s*"
    sections: list[tuple[tuple[str, ...], str | None]] = [(where, key)]
    if where:
        # `[rules]` with `name.key = ...`, or `[rules]` with `name = { ... }`.
        sections.append((where[:-1], where[-1] + ("." + key if key else "")))
    for table, name in sections:
        start = 0
        if table:
            header = re.compile(r"^\s*\[\s*" + dot.join(_name(p) for p in table) + r"\s*\]")
            found = next((i for i, (_, text) in enumerate(code) if header.match(text)), None)
            if found is None:
                continue
            if name is None:
                return code[found][0]
            start = found + 1
        elif name is None:
            return None
        parts = name.split(".")
        pattern = re.compile(r"^\s*" + dot.join(_name(p) for p in parts) + r"\s*[=.]")
        for number, text in code[start:]:
            if text.lstrip().startswith("["):
                break
            if pattern.match(text):
                return number
    if where and key is not None:
        return line_of(lines, where, None)
    return None
