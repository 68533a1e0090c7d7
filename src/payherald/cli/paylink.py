"""`payherald paylink send`: make a Stripe Payment Link and text it."""

from __future__ import annotations

import json
import re
import sys
from typing import Annotated

import typer

from payherald.cli.common import _operations, _settings, _stripe
from payherald.cli.output import _fail, _guard, err, out

__all__ = ["app"]

app = typer.Typer(help="Payment links, made at Stripe and texted.", no_args_is_help=True)


@app.command("send")
def paylink_send(
    phone: Annotated[str, typer.Option(help="Whom to text: +14155550123.")],
    price: Annotated[
        str | None, typer.Option(help="A Stripe price (price_...) to sell.", show_default=False)
    ] = None,
    amount: Annotated[
        str | None,
        typer.Option(
            help="Instead of --price: the amount, in the currency's smallest unit (2500).",
            show_default=False,
        ),
    ] = None,
    currency: Annotated[
        str | None, typer.Option(help="With --amount: usd, eur...", show_default=False)
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(help="With --amount: what is paid for, on the page.", show_default=False),
    ] = None,
    quantity: Annotated[str, typer.Option(help="How many, 1 to 99.")] = "1",
    campaign: Annotated[
        str | None,
        typer.Option(help="The campaign (utm_campaign, and in the metadata).", show_default=False),
    ] = None,
    request_id: Annotated[
        str | None,
        typer.Option(
            help="This request's own id (like the API's Idempotency-Key): the command run "
            "again with it makes no second link and no second text. Without it, each run is "
            "a new request.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON object.")] = False,
) -> None:
    """Make a Stripe Payment Link (once: it carries an idempotency key) and queue its text;
    the worker (`payherald run`, or `payherald worker`) sends it. A payment through the
    link is credited to the text (`payherald report attribution`)."""
    from payherald.app import paylink_sender
    from payherald.clock import SystemClock
    from payherald.exceptions import PaylinkRefused
    from payherald.paylink_requests import paylink_request
    from payherald.paylinks import new_request_id

    settings = _settings()
    try:
        request = paylink_request(
            phone=phone,
            price=price,
            amount=amount,
            currency=currency,
            name=name,
            quantity=quantity,
            campaign=campaign,
            default_region=settings.default_region,
        )
    except PaylinkRefused as exc:
        raise _fail(exc.message) from None
    if request_id is not None and not re.fullmatch(r"[!-~]{1,255}", request_id):
        raise _fail("--request-id must be 1 to 255 printable characters, with no spaces.")
    client = _stripe(settings, "payherald paylink send")
    ops = _operations(settings)
    sender = paylink_sender(settings, ops.store, ops.rules, client, SystemClock())
    assert sender is not None  # a client, so a sender
    try:
        sent = _guard(lambda: sender.send(request, request_id=request_id or new_request_id()))
    finally:
        ops.close()
    if as_json:
        sys.stdout.write(json.dumps(sent.as_json(), indent=2) + "\n")
        return
    out.print(sent.url)
    mode = "live" if sent.livemode else "test mode: to the console unless allow-listed"
    err.print(
        f"Payment link {sent.stripe_id} ({mode}); notification {sent.notification_id} is "
        f"{sent.status}: the worker texts it (`payherald run` or `payherald worker`)."
    )
