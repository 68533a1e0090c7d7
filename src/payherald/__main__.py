"""`python -m payherald` is `payherald`."""

from __future__ import annotations

from payherald.cli import main

main()
