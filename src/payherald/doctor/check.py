"""One line of ``payherald doctor``: what a check found, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Check"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    # Passed, but worth a look: printed as "warn", not counted as a problem.
    warning: bool = False
