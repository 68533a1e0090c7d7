"""What the commands print of text from outside (an event type, a message body with a
customer's name in it, a provider's error, a CSV cell): shown with its terminal escapes
written out, never obeyed, never read as Rich markup; --json stays exact JSON."""

from __future__ import annotations

import csv
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from payherald.store.schema import events, notifications, suppressions
from tests.acceptance.test_cli import cli

# Clear the screen, an 8-bit CSI, a bell, a carriage return that would overwrite the line,
# a right-to-left override, and Rich markup that would style, close or link.
HOSTILE = "Ann\x1b[2J[bold]x[/]\x9b31m\x07\rB\u202eC[link=https://evil.example]y[/link]"
SHOWN = "Ann\\x1b[2J[bold]x[/]\\x9b31m\\x07\\x0dB\\u202eC[link=https://evil.example]y[/link]"
# What must never reach the terminal: control characters but line feed, and bidi controls.
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
WIDE = {"COLUMNS": "1000"}
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated store holding an event, a notification and an opt-out whose text is
    HOSTILE; the commands run in its directory only read it."""
    tmp_path = tmp_path_factory.mktemp("hostile")
    assert cli(tmp_path, "migrate").returncode == 0
    engine = create_engine(f"sqlite:///{tmp_path / 'payherald.db'}")
    with engine.begin() as connection:
        connection.execute(
            events.insert().values(
                id=f"evt_{HOSTILE}",
                type=f"payment_intent.{HOSTILE}",
                livemode=False,
                payload=f"not json {HOSTILE}",
                status="failed",
                error=HOSTILE,
                received_at=NOW,
            )
        )
        connection.execute(
            notifications.insert().values(
                key="k1",
                event_id=f"evt_{HOSTILE}",
                rule=f"rule {HOSTILE}",
                recipient="customer",
                channel="sms",
                livemode=False,
                to=f"+14155550123 {HOSTILE}",
                body=f"Thanks {HOSTILE}, we received $20.00.",
                status="failed",
                error=HOSTILE,
                attempts=1,
                created_at=NOW,
                updated_at=NOW,
                run_at=NOW,
            )
        )
        connection.execute(
            suppressions.insert().values(
                address=f"+14155550123{HOSTILE}",
                reason=HOSTILE,
                source=f"import:{HOSTILE}",
                created_at=NOW,
            )
        )
    engine.dispose()
    return tmp_path


def assert_shown_escaped(output: str) -> None:
    assert RAW.search(output) is None, repr(output)
    assert SHOWN in output, output


@pytest.mark.parametrize(
    "command", [("events", "list"), ("notifications", "list"), ("optout", "list")]
)
def test_a_listing_shows_hostile_stored_text_escaped(
    hostile_store: Path, command: tuple[str, ...]
) -> None:
    result = cli(hostile_store, *command, **WIDE)
    assert result.returncode == 0, result.stderr
    assert_shown_escaped(result.stdout)


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (("events", "list"), "type"),
        (("notifications", "list"), "body"),
        (("optout", "list"), "reason"),
    ],
)
def test_a_json_listing_holds_hostile_stored_text_exactly(
    hostile_store: Path, command: tuple[str, ...], field: str
) -> None:
    result = cli(hostile_store, *command, "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout.isascii()  # every control and non-ASCII character is a \u escape
    (row,) = json.loads(result.stdout)
    assert HOSTILE in row[field]


def test_replay_names_a_hostile_event_escaped(hostile_store: Path) -> None:
    result = cli(hostile_store, "replay", "--failed", **WIDE)
    assert result.returncode == 2  # the event cannot be replayed, and that is said
    assert "its stored payload is not a readable Stripe event" in result.stderr
    assert_shown_escaped(result.stderr)
    assert RAW.search(result.stdout) is None


def test_optout_import_shows_hostile_cells_escaped(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    cell = HOSTILE.replace("\r", "")  # the file is read with universal newlines
    with (tmp_path / "list.csv").open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows(
            [["phone", "words"], [f"+1415555{cell}", "x"], ["+14155550124", cell]]
        )
    refused = cli(tmp_path, "optout", "import", "list.csv", **WIDE)
    assert refused.returncode == 2
    assert "line 2: '+1415555Ann\\x1b[2J[bold]x[/]\\x9b31m" in refused.stderr
    assert RAW.search(refused.stderr) is None, refused.stderr
    imported = cli(tmp_path, "optout", "import", "list.csv", "--skip-bad", **WIDE)
    assert imported.returncode == 0, imported.stderr
    assert RAW.search(imported.stderr) is None
    listed = cli(tmp_path, "optout", "list", **WIDE)
    assert listed.returncode == 0, listed.stderr
    assert RAW.search(listed.stdout) is None
    assert SHOWN.replace("\\x0d", "") in listed.stdout
