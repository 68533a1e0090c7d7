"""The commands that check the setup: `payherald config check` (the rules file) and
`payherald doctor` (the configuration, Stripe, Twilio and the store)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from payherald.cli.common import _settings
from payherald.cli.output import _guard, _warning, out

__all__ = ["config_app", "doctor"]

config_app = typer.Typer(help="Check the rules file.", no_args_is_help=True)


@config_app.command("check")
def config_check(
    path: Annotated[
        str | None,
        typer.Argument(help="The rules file (default: PAYHERALD_CONFIG or payherald.toml)."),
    ] = None,
) -> None:
    """Validate the rules file and show every rule's message for a sample event."""
    from payherald.config_check import render_samples

    settings = _settings()
    file, required = (Path(path), True) if path else settings.rules_file
    lines, warnings = _guard(
        lambda: render_samples(file, required=required, locale=settings.locale)
    )
    for line in lines:
        out.print(line, markup=False)
    for warning in warnings:
        _warning(warning)
    out.print(f"{file}: OK" if file.exists() else "No rules file: the built-in rules are in use.")


def doctor() -> None:
    """Check the configuration, Stripe, Twilio and the store; explain each problem."""
    from payherald.app import rule_book, settings_config, stripe_client
    from payherald.channels import twilio_client
    from payherald.clock import SystemClock
    from payherald.doctor import run_checks
    from payherald.store import open_store

    settings = _settings()
    rules = rule_book(settings, _guard(lambda: settings_config(settings)))
    clock = SystemClock()
    # Not `build`: the store may be the very thing that is wrong, and doctor says so.
    store = open_store(settings.sqlalchemy_url, clock=clock)
    twilio = (
        twilio_client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            api_base=settings.twilio_api_base,
        )
        if settings.twilio_account_sid and settings.twilio_auth_token
        else None
    )
    problems = warnings = 0
    for check in run_checks(
        settings=settings,
        store=store,
        rules=rules,
        stripe_client=stripe_client(settings),
        twilio_client=twilio,
        clock=clock,
    ):
        if not check.ok:
            problems += 1
            label = "[red]FAIL[/]"
        elif check.warning:
            warnings += 1
            label = "[yellow]warn[/]"
        else:
            label = "[green]ok[/]  "
        out.print(f"{label} {escape(check.name)}: {escape(check.detail)}", markup=True)
        if check.fix and (check.warning or not check.ok):
            out.print(f"       fix: {check.fix}")
    store.db.dispose()
    if problems:
        out.print(f"{problems} problem(s) found.")
        raise typer.Exit(1)
    out.print(
        f"Everything checked is ready ({warnings} warning(s) above)."
        if warnings
        else "Everything checked is ready."
    )
