"""`payherald optout`: the opt-out list, who must not be messaged."""

from __future__ import annotations

import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from payherald.cli.common import _settings, _store
from payherald.cli.output import JsonOption, _fail, _guard, _print_rows, err

if TYPE_CHECKING:
    from payherald.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="The opt-out list: who must not be messaged.", no_args_is_help=True)


def _phone(settings: Settings, raw: str) -> str:
    from payherald.recipients import normalise_phone

    number = normalise_phone(raw, settings.default_region)
    if number is None:
        raise _fail(f"{raw!r} is not a phone number; write it in E.164 form, like +14155550123.")
    return number


@app.command("add")
def optout_add(
    phone: Annotated[str, typer.Argument(help="The phone number.")],
    reason: Annotated[str, typer.Option(help="Why, for the record.")] = "added by an operator",
) -> None:
    """Never message this number again (as a customer)."""
    settings = _settings()
    store = _store(settings)
    number = _phone(settings, phone)
    changed = _guard(
        lambda: store.consents.record(
            address=number,
            action="opt_out",
            channel="cli",
            words=reason,
            source="cli",
            write_back=settings.stripe_secret_key is not None,
        )
    )
    err.print(f"{number} opted out." if changed else f"{number} was already opted out.")


@app.command("remove")
def optout_remove(phone: Annotated[str, typer.Argument(help="The phone number.")]) -> None:
    """Take a number off the opt-out list (only with the person's consent)."""
    settings = _settings()
    store = _store(settings)
    number = _phone(settings, phone)
    changed = _guard(
        lambda: store.consents.record(
            address=number,
            action="opt_in",
            channel="cli",
            words="removed by an operator",
            source="cli",
            write_back=settings.stripe_secret_key is not None,
        )
    )
    err.print(
        f"{number} may be messaged again." if changed else f"{number} was not on the opt-out list."
    )


@app.command("list")
def optout_list(as_json: JsonOption = False) -> None:
    """Everyone who must not be messaged, oldest first."""
    store = _store(_settings())
    rows = _guard(store.consents.suppressed)
    _print_rows(
        rows,
        ("address", "reason", "source", "created_at"),
        as_json,
        ("address", "reason", "source", "created_at"),
    )


@app.command("export")
def optout_export(
    file: Annotated[Path | None, typer.Argument(help="Write here instead of stdout.")] = None,
) -> None:
    """Every consent record (who opted in or out, when, how, in which words) as CSV; a file
    is written readable by you only, and cells a spreadsheet would run as formulas start
    with a single quote."""
    from payherald.consent import write_consent_csv
    from payherald.files import open_private

    store = _store(_settings())
    rows = _guard(store.consents.records)
    try:
        stream = open_private(file) if file else nullcontext(sys.stdout)
    except OSError as exc:
        raise _fail(f"Cannot write {file}: {exc.strerror}.") from None
    with stream as opened:
        write_consent_csv(opened, rows)
    if file:
        err.print(f"Wrote {len(rows)} consent records to {file}.")


@app.command("import")
def optout_import(
    file: Annotated[
        Path,
        typer.Argument(
            help="A CSV with a 'phone' column; optional 'action' (opt_out, opt_in) and 'words'."
        ),
    ],
    skip_bad: Annotated[
        bool, typer.Option("--skip-bad", help="Import the good rows of a file that has bad ones.")
    ] = False,
) -> None:
    """Import an existing opt-out list. A file with a bad row imports nothing, and every
    bad row is named by its line, unless --skip-bad is given."""
    from payherald.consent import read_consent_csv

    settings = _settings()
    store = _store(settings)
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise _fail(f"Cannot read {file}: {exc.strerror}.") from None
    rows, problems = read_consent_csv(text, default_region=settings.default_region)
    for problem in problems:
        err.print(f"{file}: {problem}")
    if problems and not skip_bad:
        raise _fail(
            f"Nothing was imported: {len(problems)} bad row"
            f"{'s' if len(problems) != 1 else ''}. Fix them, or pass --skip-bad to "
            f"import the {len(rows)} good ones."
        )
    changed = _guard(
        lambda: store.consents.import_rows(
            rows,
            source=f"import:{file.name}",
            write_back=settings.stripe_secret_key is not None,
        )
    )
    skipped = f", {len(problems)} bad rows skipped" if problems else ""
    err.print(f"Imported {len(rows)} rows ({changed} changed the opt-out list){skipped}.")
