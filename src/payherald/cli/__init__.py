"""The `payherald` command: its Typer app, and every command registered on it.

Each command group is a module of its own (``serving``, ``simulate``, ``operations``,
``checks``, ``listing``, ``optout``, ``endpoint``, ``paylink``, ``dunning``); what they print
goes through ``output``, what they build from the environment through ``common``. Heavy modules
(FastAPI, SQLAlchemy, the Stripe and Twilio SDKs) are imported inside the commands that
need them, so that `payherald --help` answers at once.
"""

from __future__ import annotations

import typer

from payherald.cli import (
    checks,
    dunning,
    endpoint,
    listing,
    operations,
    optout,
    paylink,
    serving,
    simulate,
)

__all__ = ["app", "main"]

app = typer.Typer(
    help="payherald: turn Stripe events into the right SMS, to the right person, exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# The order here is the order `payherald --help` lists them in.
app.command()(serving.run)
app.command()(serving.serve)
app.command()(serving.worker)
app.command(name="migrate")(serving.migrate_command)
app.command()(simulate.simulate)
app.command()(operations.backfill)
app.command()(operations.replay)
app.command()(operations.prune)
app.command()(checks.doctor)
app.add_typer(listing.events_app, name="events")
app.add_typer(listing.notifications_app, name="notifications")
app.add_typer(checks.config_app, name="config")
app.add_typer(optout.app, name="optout")
app.add_typer(endpoint.app, name="endpoint")
app.add_typer(paylink.app, name="paylink")
app.add_typer(dunning.app, name="dunning")
app.add_typer(dunning.report_app, name="report")


def main() -> None:
    app()
