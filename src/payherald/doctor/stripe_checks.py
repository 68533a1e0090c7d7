"""The Stripe checks of ``payherald doctor``: the key, the webhook endpoint (its URL,
events, API version and secret), and this machine's clock against Stripe's."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any

import stripe

from payherald.api_versions import FAMILIES, parse_api_version, unsupported_reason
from payherald.clock import Clock
from payherald.doctor.check import Check
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
from payherald.rules import RuleBook
from payherald.settings import Settings
from payherald.store import Store

__all__ = ["server_time", "stripe_checks"]


# Endpoints on a version before this one (basil) get the shapes Stripe accounts had before;
# payherald reads them, but new accounts and Stripe's documentation have moved on.
OLD_SHAPES_BEFORE = FAMILIES["basil"]
# Stripe signatures are accepted 300 s either way; a clock this far off eats into that.
_CLOCK_SKEW_LIMIT = 60.0


def stripe_checks(
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
