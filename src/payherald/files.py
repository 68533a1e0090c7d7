"""Files that hold personal data (the SQLite database, consent exports): readable and
writable by their owner only, whatever the umask."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TextIO

__all__ = ["PRIVATE_FILE_MODE", "create_private", "open_private"]

PRIVATE_FILE_MODE = 0o600


def create_private(path: str | Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist; an existing file is left
    as it is. Raises OSError (a missing or read-only directory)."""
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE_MODE))


def open_private(path: str | Path) -> TextIO:
    """``path`` opened for writing text from its start, with mode 0600: created so, or
    made so if it existed (it is about to hold personal data). Raises OSError."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(descriptor, PRIVATE_FILE_MODE)
        return os.fdopen(descriptor, "w", newline="", encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise
