"""``payherald doctor``: is this installation ready to go live? One line a check.

Each check says what it found and, when something is wrong, how to fix it. The checks
that need Stripe or Twilio ask them for real (``stripe_checks``: list webhook endpoints,
fetch the account; ``twilio_checks``: the account and the sender), so a wrong key or a
sender that is not on the account shows up here and not in a customer's missing text.
The store's checks are here.
"""

from __future__ import annotations

import os
import shlex
import stat
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import stripe

from payherald.clock import Clock
from payherald.consent import legacy_opt_outs
from payherald.doctor.check import Check
from payherald.doctor.stripe_checks import stripe_checks
from payherald.doctor.twilio_checks import twilio_checks
from payherald.exceptions import PayheraldError
from payherald.recipients import mask_phone
from payherald.rules import RuleBook
from payherald.settings import Settings
from payherald.store import Store
from payherald.store.engine import unreachable_advice
from payherald.store.statuses import JobStatus

__all__ = ["Check", "run_checks"]


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
    if store_check.ok and (failed := _failed_jobs_check(store)) is not None:
        yield failed
    yield from stripe_checks(settings, store, rules, stripe_client, clock)
    yield _public_url_check(settings)
    yield from twilio_checks(settings, twilio_client)


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


def _failed_jobs_check(store: Store) -> Check | None:
    """A warning when deferred work failed on every attempt (an opt-out never written to
    Stripe, say): each such job keeps the traceback of its last attempt."""
    try:
        failed = store.jobs.counts()[JobStatus.FAILED]
    except PayheraldError:
        return None
    if not failed:
        return None
    return Check(
        "jobs",
        True,
        f"{failed} job(s) failed on every attempt and will not run again",
        "See why: SELECT kind, key, attempts, last_error FROM jobs WHERE status = 'failed'; "
        "fix the cause (a consent record's write-back says failed too)",
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
