"""`payherald optout`: add, remove, list, export and import an opt-out list."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import stat
from pathlib import Path

from tests.acceptance.test_cli import cli
from tests.support import opt_out_as_older_payherald


def opted_out(tmp_path: Path) -> list[str]:
    result = cli(tmp_path, "optout", "list", "--json")
    assert result.returncode == 0, result.stderr
    return [row["address"] for row in json.loads(result.stdout)]


def test_add_list_remove(tmp_path: Path) -> None:
    assert cli(tmp_path, "migrate").returncode == 0
    added = cli(tmp_path, "optout", "add", "(415) 555-0123", "--reason", "asked by phone")
    assert "+14155550123 opted out." in added.stderr
    assert opted_out(tmp_path) == ["+14155550123"]
    assert "already opted out" in cli(tmp_path, "optout", "add", "+14155550123").stderr
    assert "may be messaged again" in cli(tmp_path, "optout", "remove", "+14155550123").stderr
    assert opted_out(tmp_path) == []


def test_list_shows_a_bracketed_reason_as_written(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    cli(tmp_path, "optout", "add", "+14155550123", "--reason", "[ticket 42] asked by phone")
    result = cli(tmp_path, "optout", "list", COLUMNS="250")
    assert result.returncode == 0, result.stderr
    assert "[ticket 42] asked by phone" in result.stdout


def test_a_bad_number_is_refused_with_a_sentence(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    result = cli(tmp_path, "optout", "add", "call me")
    assert result.returncode == 2
    assert "'call me' is not a phone number" in result.stderr


def test_import_then_export_keeps_when_how_and_what_words(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    (tmp_path / "list.csv").write_text(
        "phone,words\n+14155550123,STOP\n415-555-0124,asked by email\n"
    )
    result = cli(tmp_path, "optout", "import", "list.csv")
    assert result.returncode == 0, result.stderr
    assert "Imported 2 rows (2 changed the opt-out list)" in result.stderr
    assert opted_out(tmp_path) == ["+14155550123", "+14155550124"]
    exported = list(csv.DictReader(io.StringIO(cli(tmp_path, "optout", "export").stdout)))
    # An E.164 number is a constant to a spreadsheet, not a formula: it is exported bare.
    assert [(r["address"], r["action"], r["words"], r["source"]) for r in exported] == [
        ("+14155550123", "opt_out", "STOP", "import:list.csv"),
        ("+14155550124", "opt_out", "asked by email", "import:list.csv"),
    ]
    assert all(r["created_at"] for r in exported)


def test_a_file_with_bad_rows_imports_nothing_and_names_each_line(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    (tmp_path / "list.csv").write_text(
        "phone,action\n+14155550123,opt_out\nnot a number,opt_out\n+14155550125,maybe\n"
    )
    result = cli(tmp_path, "optout", "import", "list.csv")
    assert result.returncode == 2
    assert "list.csv: line 3: 'not a number' is not a phone number." in result.stderr
    assert "list.csv: line 4: action 'maybe' must be opt_out or opt_in." in result.stderr
    assert "Nothing was imported: 2 bad rows" in result.stderr
    assert opted_out(tmp_path) == []
    skipped = cli(tmp_path, "optout", "import", "list.csv", "--skip-bad")
    assert "Imported 1 rows (1 changed the opt-out list), 2 bad rows skipped." in (skipped.stderr)
    assert opted_out(tmp_path) == ["+14155550123"]


def test_a_file_without_a_phone_column_says_what_it_needs(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    (tmp_path / "list.csv").write_text("number\n+14155550123\n")
    result = cli(tmp_path, "optout", "import", "list.csv")
    assert result.returncode == 2
    assert "the header needs a 'phone' column" in result.stderr


FORMULAS = ('=HYPERLINK("https://evil.example","click")', "+1+2", "-3+4", "@SUM(A1)")


def test_export_neutralises_formulas_and_its_file_imports_back(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    rows = "".join(
        f'+1415555012{index},"{words.replace(chr(34), chr(34) * 2)}"\n'
        for index, words in enumerate(FORMULAS)
    )
    (tmp_path / "list.csv").write_text("phone,words\n" + rows)
    assert cli(tmp_path, "optout", "import", "list.csv").returncode == 0
    assert cli(tmp_path, "optout", "export", "export.csv").returncode == 0
    exported = list(csv.reader(io.StringIO((tmp_path / "export.csv").read_text())))
    cells = [cell for row in exported[1:] for cell in row]
    formulas = [cell for cell in cells if cell[:1] in ("=", "+", "-", "@", "\t", "\r")]
    # Only the phone numbers start with +, and they are bare E.164: constants, not formulas.
    assert formulas == [row[0] for row in exported[1:]]
    assert all(re.fullmatch(r"\+1415555012[0-9]", cell) for cell in formulas)
    assert [row[3] for row in exported[1:]] == [f"'{words}" for words in FORMULAS]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli(elsewhere, "migrate")
    (elsewhere / "export.csv").write_bytes((tmp_path / "export.csv").read_bytes())
    imported = cli(elsewhere, "optout", "import", "export.csv")
    assert imported.returncode == 0, imported.stderr
    assert opted_out(elsewhere) == opted_out(tmp_path)
    again = list(csv.DictReader(io.StringIO(cli(elsewhere, "optout", "export").stdout)))
    assert [row["words"] for row in again] == [f"'{words}" for words in FORMULAS]


def test_an_export_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    cli(tmp_path, "migrate")
    cli(tmp_path, "optout", "add", "+14155550123")
    (tmp_path / "old.csv").write_text("was readable by all\n")
    (tmp_path / "old.csv").chmod(0o644)
    previous = os.umask(0o022)
    try:
        for name in ("new.csv", "old.csv"):
            result = cli(tmp_path, "optout", "export", name)
            assert result.returncode == 0, result.stderr
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name
    finally:
        os.umask(previous)
    assert "+14155550123" in (tmp_path / "old.csv").read_text()


def test_migrate_carries_an_older_opt_out_over_to_e164_once_and_doctor_names_the_rest(
    tmp_path: Path,
) -> None:
    """An older payherald recorded a STOP under the sender as Twilio wrote it; `payherald
    migrate` makes it hold for the E.164 number payherald texts. One that does not read in
    the default region is left, and doctor names it."""
    database = f"sqlite:///{tmp_path / 'payherald.db'}"
    for address in ("4155550123", "5550199", "jane@example.com"):
        opt_out_as_older_payherald(database, address)

    first = cli(tmp_path, "migrate")
    assert first.returncode == 0, first.stderr
    assert "1 opt-out(s) recorded by an older payherald" in first.stderr
    assert "legacy_opt_out_upgraded" in first.stderr
    assert "4155550123" not in first.stderr  # the log line is masked
    listed = ["+14155550123", "4155550123", "5550199", "jane@example.com"]
    assert sorted(opted_out(tmp_path)) == listed
    exported = list(csv.DictReader(io.StringIO(cli(tmp_path, "optout", "export").stdout)))
    assert [(r["address"], r["source"]) for r in exported][-1] == (
        "+14155550123",
        "upgrade: read 4155550123 as +14155550123",
    )

    second = cli(tmp_path, "migrate")
    assert second.returncode == 0, second.stderr
    assert "opt-out(s)" not in second.stderr
    assert "legacy_opt_out_upgraded" not in second.stderr
    assert sorted(opted_out(tmp_path)) == listed
    assert len(list(csv.DictReader(io.StringIO(cli(tmp_path, "optout", "export").stdout)))) == 4

    doctor = cli(tmp_path, "doctor", COLUMNS="400")
    (line,) = [text for text in doctor.stdout.splitlines() if "opt-outs:" in text]
    assert line.startswith("warn opt-outs: 1 opt-out(s)")
    assert "'***0199'" in line
    assert "PAYHERALD_DEFAULT_REGION=US" in line
    fix = doctor.stdout.splitlines()[doctor.stdout.splitlines().index(line) + 1]
    assert "payherald optout add +<number>" in fix
