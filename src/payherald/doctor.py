"""``payherald doctor``: is this installation ready to go live? One line a check.

Each check says what it found and, when something is wrong, how to fix it. The checks
that need Stripe or Twilio ask them for real (list webhook endpoints, fetch the account
and the sender), so a wrong key or a sender that is not on the account shows up here and
not in a customer's missing text.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import stripe

from payherald.api_versions import FAMILIES, parse_api_version, unsupported_reason
from payherald.clock import Clock
from payherald.consent import legacy_opt_outs
from payherald.endpoints import (
    WEBHOOK_PATH,
    StripeCallFailed,
    StripeKeyRefused,
    StripePermissionMissing,
    StripeUnavailable,
    known_fingerprint,
    list_endpoints,
    repin_advice,
    same_url,
    secret_fingerprint,
)
from payherald.exceptions import PayheraldError
from payherald.recipients import mask_phone
from payherald.rules import RuleBook
from payherald.settings import Settings
from payherald.store import Store
from payherald.store.engine import unreachable_advice

__all__ = ["Check", "run_checks"]

# Endpoints on a version before this one (basil) get the shapes Stripe accounts had before;
# payherald reads them, but new accounts and Stripe's documentation have moved on.
OLD_SHAPES_BEFORE = FAMILIES["basil"]
# Stripe signatures are accepted 300 s either way; a clock this far off eats into that.
_CLOCK_SKEW_LIMIT = 60.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str | None = None
    # Passed, but worth a look: printed as "warn", not counted as a problem.
    warning: bool = False


def run_checks(
    *,
    settings: Settings,
    store: Store,
    rules: RuleBook,
    stripe_client: stripe.StripeClient | None,
    twilio_client: Any | None,
    clock: Clock,
) -> Iterator[Check]:
    """Every check, in the order a person would fix them."""
    store_check = _store_check(store)
    yield store_check
    if (private := _store_file_check(store)) is not None:
        yield private
    if store_check.ok and (legacy := _legacy_opt_out_check(store, settings)) is not None:
        yield legacy
    yield from _stripe_checks(settings, store, rules, stripe_client, clock)
    yield _public_url_check(settings)
    yield from _twilio_checks(settings, twilio_client)


def _store_check(store: Store) -> Check:
    try:
        store.db.ping()
    except PayheraldError as exc:
        advice = unreachable_advice(store.db.engine.url)
        return Check("store", False, exc.message, advice[0].upper() + advice[1:])
    try:
        store.db.check_schema()
    except PayheraldError as exc:
        return Check("store", False, exc.message, "Run: payherald migrate")
    return Check("store", True, "reachable and migrated")


def _store_file_check(store: Store) -> Check | None:
    """A warning when others than its owner may read the SQLite file (or its -wal and
    -shm): it holds phone numbers, emails, message bodies and raw payloads."""
    database = store.db.engine.url.database
    if store.db.engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    readable = []
    for path in (database, f"{database}-wal", f"{database}-shm"):
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue
        if mode & 0o077:
            readable.append((path, mode))
    if not readable:
        return None
    shown = ", ".join(f"{path} is {mode:04o}" for path, mode in readable)
    return Check(
        "store file",
        True,
        f"others than its owner may read the database ({shown}): it holds phone numbers, "
        "emails, message bodies and raw payloads",
        "chmod 600 " + " ".join(shlex.quote(path) for path, _ in readable),
        warning=True,
    )


def _legacy_opt_out_check(store: Store, settings: Settings) -> Check | None:
    """A warning for opt-outs an older payherald recorded under a number not in E.164
    that are not yet carried over to the E.164 form payherald texts (``payherald
    migrate`` does it when the number reads in the default region)."""
    try:
        legacy = legacy_opt_outs(store, default_region=settings.default_region)
    except PayheraldError:
        return None
    unreadable = [one.address for one in legacy if one.reads_as is None]
    pending = [one.address for one in legacy if one.reads_as is not None and not one.settled]
    if unreadable:
        shown = ", ".join(repr(mask_phone(address)) for address in unreadable)
        return Check(
            "opt-outs",
            True,
            f"{len(unreadable)} opt-out(s) recorded by an older payherald are under a number "
            f"that does not read in PAYHERALD_DEFAULT_REGION={settings.default_region} "
            f"({shown}), so they stop no message",
            "Look the number up in `payherald optout list` and run: payherald optout add "
            "+<number> (with its country code) for each"
            + ("; then run: payherald migrate for the rest" if pending else ""),
            warning=True,
        )
    if pending:
        return Check(
            "opt-outs",
            True,
            f"{len(pending)} opt-out(s) recorded by an older payherald under a number not in "
            "E.164 do not yet hold for its E.164 form",
            "Run: payherald migrate",
            warning=True,
        )
    return None


def _stripe_checks(
    settings: Settings,
    store: Store,
    rules: RuleBook,
    client: stripe.StripeClient | None,
    clock: Clock,
) -> Iterator[Check]:
    endpoints: list[Any] | None = None
    listing_failed: StripeCallFailed | None = None
    if settings.stripe_secret_key is None or client is None:
        yield Check(
            "stripe key",
            False,
            "STRIPE_SECRET_KEY is not set, so customers cannot be looked up, missed events "
            "cannot be backfilled and nothing below can be checked at Stripe",
            "export STRIPE_SECRET_KEY=sk_live_... (a restricted key with read access to "
            "Customers, Charges and Events, and write access to Customers and Webhook "
            "Endpoints is enough)",
        )
    else:
        mode = settings.stripe_key_mode
        works = (
            f"works ({mode} mode)"
            if mode
            else "works (its mode is unknown: it starts with none of sk_live_, sk_test_, "
            "rk_live_, rk_test_)"
        )
        try:
            endpoints = list_endpoints(client)
        except StripeKeyRefused as exc:
            yield Check(
                "stripe key",
                False,
                exc.message,
                "Check STRIPE_SECRET_KEY in the Stripe dashboard, Developers > API keys",
            )
        except StripePermissionMissing as exc:
            # Stripe knew the key: only this call is beyond what it may do.
            yield Check("stripe key", True, f"{works}, but it may not list webhook endpoints")
            yield _clock_check(client, clock)
            listing_failed = exc
        except StripeCallFailed as exc:
            # Stripe did not answer this call, so the key was not checked; it is not blamed.
            yield Check("stripe key", True, f"not checked: {exc.call} failed (below)")
            listing_failed = exc
        else:
            yield Check("stripe key", True, works)
            yield _clock_check(client, clock)
    secrets = settings.webhook_secrets
    if not secrets:
        yield Check(
            "webhook secret",
            False,
            "STRIPE_WEBHOOK_SECRET is not set; payherald uses a development secret that Stripe "
            "does not know, so every real event would be refused",
            "payherald endpoint register https://your-host, then export the secret it prints",
        )
    else:
        yield Check("webhook secret", True, f"{len(secrets)} configured")
    if listing_failed is not None:
        yield _listing_failed_check(listing_failed)
    if endpoints is None:
        return
    public = settings.public_url
    if not public:
        return
    url = public.rstrip("/") + WEBHOOK_PATH
    matching = [endpoint for endpoint in endpoints if same_url(endpoint.url, url)]
    register = f"payherald endpoint register {public}"
    if not matching:
        yield Check(
            "webhook endpoint",
            False,
            f"no Stripe webhook endpoint for {url}, so Stripe sends payherald nothing",
            register,
        )
        return
    endpoint = matching[0]
    if len(matching) > 1:
        yield Check(
            "webhook endpoint",
            False,
            f"{len(matching)} endpoints for {url}: every event would arrive more than once "
            "(payherald ignores the repeats, but Stripe counts each)",
            "Delete all but " + endpoint.id + " in Developers > Webhooks",
        )
    problems = []
    if getattr(endpoint, "status", "enabled") != "enabled":
        problems.append("it is disabled")
    mode = settings.stripe_key_mode
    if mode is not None and bool(endpoint.livemode) != (mode == "live"):
        problems.append(
            f"it is a {'live' if endpoint.livemode else 'test'}-mode endpoint but the key is "
            f"{mode} mode"
        )
    enabled = set(endpoint.enabled_events or ())
    missing = [] if "*" in enabled else sorted(set(rules.event_types) - enabled)
    if missing:
        problems.append("it does not send " + ", ".join(missing))
    if problems:
        yield Check(
            "webhook endpoint", False, f"{endpoint.id} for {url}: " + "; ".join(problems), register
        )
    else:
        yield Check("webhook endpoint", True, f"{endpoint.id} sends every event type the rules use")
    for each in matching:
        yield _api_version_check(each.id, getattr(each, "api_version", None), public)
    fingerprint = known_fingerprint(store, endpoint.id)
    if fingerprint is None:
        yield Check(
            "webhook secret matches",
            True,
            "cannot be checked: Stripe shows an endpoint's secret only when it is created "
            "(endpoint register keeps a fingerprint of it when it creates one)",
        )
    elif fingerprint in {secret_fingerprint(secret) for secret in secrets}:
        yield Check(
            "webhook secret matches",
            True,
            f"STRIPE_WEBHOOK_SECRET is {endpoint.id}'s signing secret",
        )
    else:
        yield Check(
            "webhook secret matches",
            False,
            f"STRIPE_WEBHOOK_SECRET is not the signing secret of {endpoint.id}, so its events "
            "would be refused",
            "Copy the endpoint's signing secret from Developers > Webhooks into "
            "STRIPE_WEBHOOK_SECRET",
        )


def _api_version_check(endpoint_id: str, api_version: str | None, public_url: str) -> Check:
    """The API version endpoint ``endpoint_id`` sends its events in, against the ones
    payherald reads (``api_versions``)."""
    repin = repin_advice(endpoint_id, public_url)
    if api_version is None:
        return Check(
            "webhook api version",
            True,
            f"{endpoint_id} has no API version of its own: Stripe sends it events in the "
            "account's default version, which changes when someone upgrades the account",
            repin,
            warning=True,
        )
    reason = unsupported_reason(api_version)
    if reason is not None:
        return Check(
            "webhook api version",
            False,
            f"{endpoint_id} is on {api_version}, whose events payherald stores but does not "
            f"act on: {reason.rstrip('.')}",
            repin,
        )
    version = parse_api_version(api_version)
    if version is not None and version.date < OLD_SHAPES_BEFORE:
        return Check(
            "webhook api version",
            True,
            f"{endpoint_id} is on {api_version}: payherald reads it, but recent Stripe "
            f"accounts default to newer shapes (basil, {OLD_SHAPES_BEFORE}, and later)",
            repin,
            warning=True,
        )
    return Check("webhook api version", True, f"{endpoint_id} is on {api_version}")


def _listing_failed_check(exc: StripeCallFailed) -> Check:
    """The webhook endpoint cannot be checked: Stripe's list of endpoints failed (``exc``
    says which call, and why)."""
    if isinstance(exc, StripePermissionMissing):
        fix: str | None = (
            "Give the restricted key write access to Webhook Endpoints (Developers > API "
            "keys), or use a secret key"
        )
    elif isinstance(exc, StripeUnavailable):
        fix = "Run payherald doctor again in a few minutes"
    else:
        fix = None  # Stripe's words in the message name what to fix
    return Check("webhook endpoint", False, exc.message, fix)


def _clock_check(client: stripe.StripeClient, clock: Clock) -> Check:
    """This machine's clock against the Date of Stripe's answer."""
    try:
        page = client.v1.webhook_endpoints.list(params={"limit": 1})
    except stripe.StripeError as exc:
        # An answer that refuses the call (a restricted key) still carries Stripe's Date.
        headers = exc.headers
    else:
        headers = getattr(getattr(page, "last_response", None), "headers", None)
    if headers is None:
        return Check("clock", True, "not compared: Stripe did not answer")
    remote = server_time(headers)
    if remote is None:
        return Check("clock", True, "not compared: Stripe's answer had no Date")
    skew = (clock.now() - remote).total_seconds()
    if abs(skew) > _CLOCK_SKEW_LIMIT:
        return Check(
            "clock",
            False,
            f"this machine's clock is {skew:+.0f} s off Stripe's; webhook signatures are "
            "accepted only 300 s either way, and workers' leases use the clock",
            "Keep the clock in sync with NTP (timedatectl set-ntp true)",
        )
    return Check("clock", True, f"within {_CLOCK_SKEW_LIMIT:.0f} s of Stripe's")


def _public_url_check(settings: Settings) -> Check:
    public = settings.public_url
    if not public:
        return Check(
            "public url",
            False,
            "PAYHERALD_PUBLIC_URL is not set: Stripe's endpoint cannot be checked and Twilio's "
            "callbacks (delivery reports, STOP replies) are refused",
            "export PAYHERALD_PUBLIC_URL=https://your-host",
        )
    if urlsplit(public).scheme != "https":
        return Check(
            "public url",
            False,
            f"PAYHERALD_PUBLIC_URL {public} is not HTTPS; Stripe live mode and Twilio "
            "signatures need the https:// address",
            "Serve payherald behind a TLS-terminating proxy and use its https:// address",
        )
    return Check("public url", True, public)


def _twilio_checks(settings: Settings, client: Any | None) -> Iterator[Check]:
    if client is None:
        yield Check(
            "twilio",
            False,
            "TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are not set; SMS, WhatsApp and calls "
            "go to the console",
            "export TWILIO_ACCOUNT_SID=AC... TWILIO_AUTH_TOKEN=... TWILIO_FROM_NUMBER=+1...",
        )
        return
    from twilio.base.exceptions import TwilioException, TwilioRestException

    sid = settings.twilio_account_sid
    try:
        account = client.api.v2010.accounts(sid).fetch()
    except TwilioRestException as exc:
        yield Check(
            "twilio",
            False,
            f"Twilio refused the credentials (HTTP {exc.status}: {exc.msg})",
            "Check TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN in the Twilio console",
        )
        return
    except TwilioException as exc:
        yield Check("twilio", False, f"Twilio could not be reached: {exc}", "Check the network")
        return
    status = getattr(account, "status", "active")
    if status != "active":
        yield Check(
            "twilio",
            False,
            f"the Twilio account is {status}",
            "Reactivate it in the Twilio console",
        )
        return
    yield Check("twilio", True, "credentials work")
    number = settings.twilio_from_number
    if not number:
        yield Check(
            "twilio sender",
            True,
            f"Messaging Service {settings.twilio_messaging_service_sid} (not checked)",
        )
        return
    try:
        owned = client.api.v2010.accounts(sid).incoming_phone_numbers.list(
            phone_number=number, limit=20
        )
    except TwilioRestException as exc:
        yield Check(
            "twilio sender",
            False,
            f"could not list the account's numbers (HTTP {exc.status}: {exc.msg})",
            None,
        )
        return
    match = next((n for n in owned if getattr(n, "phone_number", None) == number), None)
    if match is None:
        yield Check(
            "twilio sender",
            False,
            f"TWILIO_FROM_NUMBER {number} is not a number of this Twilio account, so Twilio "
            "would refuse every SMS",
            "Use one of the account's numbers (Phone Numbers > Active numbers)",
        )
        return
    capabilities = getattr(match, "capabilities", None) or {}
    if capabilities and not capabilities.get("sms", False):
        yield Check(
            "twilio sender", False, f"{number} cannot send SMS", "Use an SMS-capable number"
        )
        return
    yield Check("twilio sender", True, f"{number} is on the account and can send SMS")


def server_time(headers: Mapping[str, str] | None) -> datetime | None:
    if not headers:
        return None
    raw = headers.get("Date") or headers.get("date")
    if not raw:
        return None
    try:
        return parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
