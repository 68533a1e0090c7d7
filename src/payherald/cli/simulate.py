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
    event_type: Annotated[
        str,
        typer.Argument(
            help="One of: "
            + ", ".join(SIMULATED_EVENT_TYPES)
            + "; or `reply`, with --text: the customer's SMS reply, as Twilio posts it."
        ),
    ],
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
    text: Annotated[
        str | None,
        typer.Option(help="With `reply`: the words the customer texts back (YES, NO, STOP)."),
    ] = None,
) -> None:
    """Send a realistic, signed Stripe event to a running payherald and show what it sent;
    or, with `reply`, a customer's SMS reply, and what payherald answered."""
    import httpx

    from payherald.api_versions import NEWEST_SUPPORTED, unsupported_reason
    from payherald.clock import SystemClock
    from payherald.simulate import build_simulation, sign_payload

    if event_type == "reply":
        if (amount, currency, livemode, api_version, invoice) != (2000, "usd", False, None, None):
            raise _fail(
                "simulate reply takes --text, --phone, --url and --wait; --amount, "
                "--currency, --livemode, --api-version and --invoice are for events."
            )
        _reply(url=url, phone=phone, text=text, wait=wait)
        return
    if text is not None:
        raise _fail("--text goes with `reply`: payherald simulate reply --text YES.")

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


def _reply(*, url: str, phone: str, text: str | None, wait: float) -> None:
    """Post ``text`` from ``phone`` to payherald's inbound SMS webhook, signed as Twilio
    signs it (with TWILIO_AUTH_TOKEN for PAYHERALD_PUBLIC_URL when they are set, else with
    the development secret), and show the answer and what became of a question it
    answered."""
    import secrets
    from urllib.parse import urlsplit

    import httpx
    from twilio.request_validator import RequestValidator

    from payherald.recipients import mask_phone, normalise_phone

    if text is None or not text.strip():
        raise _fail("simulate reply needs --text, the words of the reply (YES, NO, STOP...).")
    settings = _settings()
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _fail(
            f"--url {url!r} is not a URL; give payherald's address, like http://127.0.0.1:8000."
        )
    path = "/webhooks/twilio/inbound"
    target = parts._replace(path=parts.path.rstrip("/") + path).geturl()
    store = _store(settings)
    if settings.twilio_auth_token is not None:
        if not settings.public_url:
            raise _fail(
                "With TWILIO_AUTH_TOKEN set, payherald checks replies against "
                "PAYHERALD_PUBLIC_URL; set it as the server has it."
            )
        token = settings.twilio_auth_token.get_secret_value()
        signed_for = settings.public_url.rstrip("/") + path
    elif settings.webhook_secrets:
        raise _fail(
            "simulate reply signs as Twilio does: set TWILIO_AUTH_TOKEN and "
            "PAYHERALD_PUBLIC_URL as the server has them (a trial run, with no "
            "STRIPE_WEBHOOK_SECRET, takes replies signed with its development secret)."
        )
    else:
        token = _guard(store.meta.development_secret)
        _scrub_development_secret(settings, token)
        # The server checks a callback against its public address when it has one.
        signed_for = settings.public_url.rstrip("/") + path if settings.public_url else target
    params = {
        "MessageSid": "SM" + secrets.token_hex(16),
        "AccountSid": "AC" + "0" * 32,
        "From": phone,
        "To": settings.twilio_from_number or "+15005550006",
        "Body": text,
    }
    signature = RequestValidator(token).compute_signature(signed_for, params)
    try:
        response = httpx.post(
            target,
            data=params,
            timeout=10.0,
            headers={"X-Twilio-Signature": signature, "User-Agent": "payherald-simulate"},
        )
    except httpx.HTTPError as exc:
        raise _fail(
            f"Could not reach payherald at {target} ({exc}). Is `payherald run` running?",
            code=1,
        ) from None
    err.print(
        f"Sent {text!r} from {mask_phone(phone)} to {target}: HTTP {response.status_code}",
        markup=False,
    )
    if response.status_code >= 300:
        err.print(response.text, markup=False)
        raise typer.Exit(1)
    answered = re.findall(r"<Message>(.*?)</Message>", response.text, flags=re.S)
    from html import unescape

    for words in answered:
        err.print(f"  payherald answered: {unescape(words)}", markup=False)
    if not answered:
        err.print("  payherald did not answer (a reply that changes nothing gets none).")
    _show_question(store, normalise_phone(phone, settings.default_region) or phone, wait)


def _show_question(store: Store, number: str, wait: float) -> None:
    """The latest question to ``number``, once what its answer does is settled."""
    deadline = time.monotonic() + wait

    def latest() -> dict[str, Any] | None:
        asked = [q for q in _guard(lambda: store.questions.list(limit=50)) if q["phone"] == number]
        return asked[0] if asked else None

    question = latest()
    while (
        question is not None
        and question["status"] in ("confirmed", "rejected")
        and not question["outcome"]
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
        question = latest()
    if question is not None:
        outcome = f": {question['outcome']}" if question["outcome"] else ""
        err.print(f"  question {question['id']} is {question['status']}{outcome}", markup=False)


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
