"""`payherald simulate`: a signed Stripe event sent to a running payherald, and what
became of it."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any

import typer

from payherald.cli.common import _scrub_development_secret, _settings, _store
from payherald.cli.output import _fail, _guard, err
from payherald.exceptions import PayheraldError
from payherald.simulate import SIMULATED_EVENT_TYPES

if TYPE_CHECKING:
    from payherald.settings import Settings
    from payherald.store import Store

__all__ = ["simulate"]


def simulate(
    event_type: Annotated[str, typer.Argument(help="One of: " + ", ".join(SIMULATED_EVENT_TYPES))],
    url: Annotated[
        str,
        typer.Option(
            help="payherald's address (http://127.0.0.1:8000), or its webhook URL "
            "(http://127.0.0.1:8000/webhooks/stripe)."
        ),
    ] = "http://127.0.0.1:8000",
    phone: Annotated[str, typer.Option(help="The customer's phone number.")] = "+14155550123",
    amount: Annotated[int, typer.Option(help="In the currency's smallest unit.", min=0)] = 2000,
    currency: Annotated[str, typer.Option(help="Three-letter currency code.")] = "usd",
    livemode: Annotated[
        bool,
        typer.Option(
            help="Send as a live-mode event, signed with a live: (or unmarked) secret of "
            "STRIPE_WEBHOOK_SECRET; the development secret signs only test-mode events."
        ),
    ] = False,
    api_version: Annotated[
        str | None,
        typer.Option(
            help="The Stripe API version whose shapes to send, from 2024-06-20 on (default: "
            "the installed stripe SDK's)."
        ),
    ] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the messages.")] = 10.0,
    invoice: Annotated[
        str | None,
        typer.Option(
            help="For an invoice event: this invoice's id (in_...) instead of a new one, so "
            "that a simulated payment ends a simulated failure's dunning."
        ),
    ] = None,
) -> None:
    """Send a realistic, signed Stripe event to a running payherald and show what it sent."""
    import httpx

    from payherald.api_versions import NEWEST_SUPPORTED, unsupported_reason
    from payherald.clock import SystemClock
    from payherald.simulate import build_simulation, sign_payload

    if event_type not in SIMULATED_EVENT_TYPES:
        raise _fail(
            f"simulate does not know {event_type!r}; it knows "
            + ", ".join(SIMULATED_EVENT_TYPES)
            + "."
        )
    if invoice is not None and not (
        event_type.startswith("invoice.")
        and event_type != "invoice.upcoming"  # an upcoming invoice has no id yet
        and re.fullmatch(r"in_[A-Za-z0-9]+", invoice)
    ):
        raise _fail(
            "--invoice takes an invoice id (in_ and letters and digits), with an invoice "
            "event such as invoice.paid or invoice.payment_failed."
        )
    version = api_version or NEWEST_SUPPORTED
    if api_version is not None and (reason := unsupported_reason(api_version)):
        raise _fail(f"--api-version: {reason}")
    target = _webhook_target(url)
    settings = _settings()
    mode = "live" if livemode else "test"
    if livemode and not settings.webhook_secrets:
        raise _fail(
            "simulate --livemode needs STRIPE_WEBHOOK_SECRET, the signing secret of the "
            "endpoint payherald takes live events on: payherald refuses live-mode events "
            "signed with its development secret."
        )
    signing = [secret for mark, secret in settings.marked_webhook_secrets if mark in (None, mode)]
    if settings.webhook_secrets and not signing:
        raise _fail(
            f"STRIPE_WEBHOOK_SECRET has no secret marked {mode}: (nor an unmarked one) to sign "
            f"a {mode}-mode event with; add the {mode} endpoint's secret, or "
            + ("drop --livemode." if livemode else "pass --livemode.")
        )
    store = None if settings.webhook_secrets and wait <= 0 else _store(settings)
    secret = signing[0] if signing else None
    if secret is None:
        assert store is not None
        secret = _guard(store.meta.development_secret)
        _scrub_development_secret(settings, secret)
    now = SystemClock().now()
    *companions, event = build_simulation(
        event_type,
        now=now,
        phone=phone,
        amount=amount,
        currency=currency,
        livemode=livemode,
        api_version=version,
        invoice=invoice,
    )

    def post(payload: dict[str, Any]) -> httpx.Response:
        body, header = sign_payload(payload, secret, timestamp=int(now.timestamp()))
        try:
            return httpx.post(
                target,
                content=body,
                timeout=10.0,
                headers={
                    "Stripe-Signature": header,
                    "Content-Type": "application/json; charset=utf-8",
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) "
                    "payherald-simulate",
                },
            )
        except httpx.HTTPError as exc:
            raise _fail(
                f"Could not reach payherald at {target} ({exc}). Is `payherald run` running?",
                code=1,
            ) from None

    for companion in companions:
        sent = post(companion)
        err.print(
            f"Sent {companion['type']} {companion['id']} first, as Stripe does: HTTP "
            f"{sent.status_code}",
            markup=False,
        )
    response = post(event)
    err.print(
        f"Sent {event_type} {event['id']} ({'live' if livemode else 'test'} mode) "
        f"to {target}: HTTP {response.status_code} {response.text}"
    )
    if response.status_code == 404:
        raise _fail(
            f"Nothing at {target} takes Stripe webhooks; pass payherald's address as --url, "
            "like http://127.0.0.1:8000.",
            code=1,
        )
    if response.status_code >= 300:
        raise typer.Exit(1)
    if store is not None and wait > 0:
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        _show_outcome(
            store,
            settings,
            event_id=event["id"],
            event_type=event_type,
            wait=wait,
            answer=answer if isinstance(answer, dict) else {},
        )


def _webhook_target(url: str) -> str:
    """Where simulate posts for ``--url``: payherald's address (with or without a path of
    its own, a trailing slash or not) gets the webhook path; its webhook URL is kept."""
    from urllib.parse import urlsplit

    from payherald.endpoints import WEBHOOK_PATH

    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(
            f"--url {url!r} is not a URL; give payherald's address, like http://127.0.0.1:8000."
        )
    path = parts.path.rstrip("/")
    if not path.endswith(WEBHOOK_PATH):
        path += WEBHOOK_PATH
    return parts._replace(path=path).geturl()


def _show_outcome(
    store: Store,
    settings: Settings,
    *,
    event_id: str,
    event_type: str,
    wait: float,
    answer: dict[str, Any],
) -> None:
    """What became of the event the server acknowledged (``answer`` is its reply): each
    notification it queued once settled, or why it queued none."""
    from payherald.recipients import mask_phone
    from payherald.store import TERMINAL_STATUSES

    event = _guard(lambda: store.get_event(event_id))
    if event is None:
        err.print(
            f"The server stored {event_id}, but this database has no such event, so what "
            "became of it cannot be shown (is PAYHERALD_DATABASE_URL the same as the server's?)."
        )
        return
    if answer.get("queued") == 0:
        for line in _nothing_queued(settings, event, duplicate=bool(answer.get("duplicate"))):
            err.print(line)
        return
    deadline = time.monotonic() + wait
    # A notification due after the wait (a later dunning step) is settled: it waits its time.
    later = datetime.now(UTC) + timedelta(seconds=wait)

    def settled(row: dict[str, Any]) -> bool:
        return row["status"] in TERMINAL_STATUSES or (
            row["status"] == "pending" and row["run_at"] > later
        )

    rows = store.list_notifications(event_id=event_id)
    while time.monotonic() < deadline and (not rows or not all(map(settled, rows))):
        time.sleep(0.1)
        rows = store.list_notifications(event_id=event_id)
    if not rows:
        err.print(f"No notification of {event_id} was recorded within {wait:g} s.")
        return
    for row in sorted(rows, key=lambda row: row["id"]):
        outcome = row["status"] + (f" ({row['error']})" if row["error"] else "")
        if row["status"] == "pending" and row["run_at"] > later:
            outcome += f", due {row['run_at']:%Y-%m-%d %H:%M} UTC"
        # A notification that failed before an address was chosen has nobody to name.
        where = f"{row['channel']} to {mask_phone(row['to'])}: " if row["to"] else ""
        err.print(f"  {row['rule']}: {where}{outcome}")
        if row["body"]:
            err.print(f"    {row['body']}")


def _nothing_queued(settings: Settings, event: dict[str, Any], *, duplicate: bool) -> list[str]:
    """Why the server queued no notification for ``event`` (a stored event's row), in the
    words of its rules file: the lines to print."""
    from payherald.config import load_config
    from payherald.templates import TemplateRenderer

    if duplicate:
        return [f"payherald already had {event['id']}, so nothing new was queued."]
    if event["status"] == "failed":
        reason = (event["error"] or "").strip().splitlines()[-1:] or ["see the server's log"]
        return [
            f"Nothing was queued: processing the event failed ({reason[0]}); fix the cause, "
            f"then run `payherald replay {event['id']}`."
        ]
    if event["status"] != "ignored":
        return [
            "Nothing new was queued: this payment's messages were already queued for an "
            "earlier event, and payherald sends each once."
        ]
    path, required = settings.rules_file
    try:
        book = load_config(path, required=required).rule_book(
            TemplateRenderer(locale=settings.locale)
        )
    except PayheraldError as exc:
        return [f"No rule queued anything for it ({exc.message})."]
    event_type = event["type"]
    handling = [rule for rule in book.rules if rule.enabled and event_type in rule.events]
    if not handling:
        return [
            f"No rule handles {event_type}, so nothing was queued; add one to the rules file "
            "(`payherald config check` lists each rule and its events)."
        ]
    lines = ["Nothing was queued for it:"]
    for rule in handling:
        team = book.teams.get(rule.team) if rule.team else None
        if rule.team and team is None:
            why = (
                f"it sends to team {rule.team!r}, which is not defined in {path}; add "
                f"[teams.{rule.team}] with its sms, email or slack_webhook."
            )
        elif team is not None and not any(team.addresses(c) for c in rule.channels):
            why = (
                f"team {rule.team!r} has no address on this rule's channels "
                f"({', '.join(rule.channels)}); add one in [teams.{rule.team}]."
            )
        elif rule.first_payment_only:
            why = "it welcomes a customer's first payment, and the event names no customer."
        elif rule.when:
            why = f"its condition ({rule.when}) does not hold for this event."
        else:
            why = "it planned nothing for this event."
        lines.append(f"  {rule.name}: {why}")
    return lines
