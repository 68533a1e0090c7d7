"""Backfill and gap reconciliation: events Stripe has that payherald never received.

``GET /v1/events`` is paged through (newest first on Stripe, oldest first on localstripe;
the order does not matter) and each event goes through the same idempotent ``ingest`` as
a webhook, so an event already received is counted as seen and changes nothing. A failed
page is asked for again, with backoff, from the same cursor: a long backfill never starts
over. Stripe keeps events for 30 days.

``Reconciler`` runs a backfill on a schedule (``PAYHERALD_RECONCILE_INTERVAL_SECONDS``,
hourly by default) from a little before the last successful run, so an event Stripe never
delivered is still handled, once. The schedule is a recurring job (``RECONCILE_JOB``) on
the job queue: ``Reconciler.run_job`` is its handler, and whichever worker claims it runs it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import stripe
import structlog

from payherald.backoff import backoff_delay
from payherald.clock import Clock, parse_instant
from payherald.exceptions import PayheraldError
from payherald.ingest import ingest
from payherald.jobs import Job, RunAgain
from payherald.metrics import Metrics
from payherald.rules import RuleBook
from payherald.store import Store
from payherald.webhook import parse_event

__all__ = [
    "RECONCILE_JOB",
    "STRIPE_EVENT_RETENTION",
    "Backfill",
    "BackfillError",
    "BackfillSummary",
    "Reconciler",
    "parse_since",
]

_log = structlog.get_logger("payherald.backfill")

STRIPE_EVENT_RETENTION = timedelta(days=30)
# The kind, and the key, of the recurring reconciliation job: there is one.
RECONCILE_JOB = "stripe.reconcile"
_PAGE = 100
_LAST_RECONCILED = "last_reconciled_at"
# A reconciliation starts this long before the last successful one ended.
_OVERLAP = timedelta(minutes=10)


class BackfillError(PayheraldError):
    """The backfill cannot go on; the message says why and what to do."""


def parse_since(text: str, *, now: datetime) -> datetime:
    """``24h``, ``90m``, ``7d``, or an ISO date or time (UTC unless it says otherwise), as
    an instant within Stripe's 30 days. Raises BackfillError with a sentence."""
    try:
        since = parse_instant(text, now=now, option="--since")
    except ValueError as exc:
        raise BackfillError(str(exc)) from None
    if since < now - STRIPE_EVENT_RETENTION:
        raise BackfillError(
            f"--since {text!r} is more than 30 days ago, and Stripe keeps events for 30 days; "
            "use --since 30d or later."
        )
    return since


@dataclass
class BackfillSummary:
    fetched: int = 0  # events Stripe listed
    new: int = 0  # stored for the first time now
    already_seen: int = 0  # payherald had them already
    not_handled: int = 0  # of a type no rule (or --type) asks for
    notifications: int = 0  # queued by the new ones
    pages: int = 0
    retries: int = 0

    def describe(self, *, dry_run: bool = False) -> str:
        would = "would be " if dry_run else ""
        return (
            f"{self.fetched} events from Stripe: {self.new} {would}new, "
            f"{self.already_seen} already seen, {self.not_handled} of types no rule handles; "
            f"{self.notifications} notifications {would}queued."
        )


class Backfill:
    def __init__(
        self,
        *,
        store: Store,
        rules: RuleBook,
        client: stripe.StripeClient,
        clock: Clock,
        max_retries: int = 6,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._store = store
        self._rules = rules
        self._client = client
        self._clock = clock
        self._max_retries = max_retries
        self._sleep = sleep

    def run(
        self,
        since: datetime,
        *,
        types: Collection[str] | None = None,
        dry_run: bool = False,
        progress: Callable[[BackfillSummary], None] = lambda summary: None,
    ) -> BackfillSummary:
        """Bring in every event since ``since`` of ``types`` (default: the types the rules
        handle). Raises BackfillError when Stripe refuses or stays unreachable."""
        wanted = set(types) if types else set(self._rules.event_types)
        summary = BackfillSummary()
        params: dict[str, Any] = {"limit": _PAGE, "created": {"gte": int(since.timestamp())}}
        if types and len(wanted) == 1:
            params["type"] = next(iter(wanted))  # Stripe filters; otherwise filtered here
        cursor: str | None = None
        while True:
            page = self._page({**params, **({"starting_after": cursor} if cursor else {})}, summary)
            summary.pages += 1
            for listed in page.data:
                self._take(listed.to_dict(), wanted, summary, dry_run=dry_run)
                progress(summary)
            if not page.has_more or not page.data:
                return summary
            cursor = page.data[-1].id

    def _page(self, params: dict[str, Any], summary: BackfillSummary) -> Any:
        for attempt in range(self._max_retries + 1):
            try:
                return self._client.v1.events.list(params=params)  # type: ignore[arg-type]
            except (stripe.AuthenticationError, stripe.PermissionError) as exc:
                raise BackfillError(
                    "Stripe refused to list events with STRIPE_SECRET_KEY "
                    f"({exc.user_message or exc}). Use a secret key, or a restricted key with "
                    "read access to Events."
                ) from exc
            except stripe.InvalidRequestError as exc:
                raise BackfillError(
                    f"Stripe refused the request: {exc.user_message or exc}"
                ) from exc
            except stripe.StripeError as exc:
                if attempt == self._max_retries:
                    where = (
                        f" after {params['starting_after']}" if "starting_after" in params else ""
                    )
                    raise BackfillError(
                        f"Stripe did not answer the events list{where} after "
                        f"{attempt + 1} tries ({type(exc).__name__}: {exc.user_message or exc}); "
                        "what was fetched so far is stored. Run the same backfill again: "
                        "events already stored are skipped."
                    ) from exc
                summary.retries += 1
                delay = backoff_delay(attempt + 1, base=0.5, cap=30.0)
                _log.warning("backfill_retry", error=str(exc), delay_seconds=round(delay, 2))
                self._sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    def _take(
        self, payload: dict[str, Any], wanted: set[str], summary: BackfillSummary, *, dry_run: bool
    ) -> None:
        summary.fetched += 1
        if payload.get("type") not in wanted:
            summary.not_handled += 1
            return
        event = parse_event(json.dumps(payload).encode())
        if dry_run:
            if self._store.has_event(event.id):
                summary.already_seen += 1
            else:
                summary.new += 1
                summary.notifications += len(self._rules.plan(event))
            return
        result = ingest(self._store, self._rules, event)
        if result.duplicate:
            summary.already_seen += 1
        else:
            summary.new += 1
            summary.notifications += result.queued
            _log.info(
                "event_backfilled", event_id=event.id, event_type=event.type, queued=result.queued
            )


class Reconciler:
    """Backfill on a schedule, from a little before the last successful run. Each run is
    counted in ``metrics``, with the events it found that no webhook had delivered."""

    def __init__(
        self,
        *,
        backfill: Backfill,
        store: Store,
        clock: Clock,
        interval: float,
        metrics: Metrics | None = None,
    ) -> None:
        self._backfill = backfill
        self._store = store
        self._clock = clock
        self._interval = interval
        self._metrics = metrics

    def run_once(self) -> BackfillSummary:
        now = self._clock.now()
        last = self._store.meta.get(_LAST_RECONCILED)
        start = (
            datetime.fromisoformat(last) - _OVERLAP
            if last
            else now - timedelta(seconds=2 * self._interval)
        )
        since = max(start, now - STRIPE_EVENT_RETENTION + timedelta(minutes=1))
        try:
            summary = self._backfill.run(since)
            self._store.meta.set(_LAST_RECONCILED, now.isoformat())
        except Exception:
            if self._metrics is not None:
                self._metrics.reconcile_failed()
            raise
        if self._metrics is not None:
            self._metrics.reconciled(recovered=summary.new)
        _log.info(
            "reconciled_with_stripe",
            since=since.isoformat(),
            fetched=summary.fetched,
            new=summary.new,
            notifications=summary.notifications,
        )
        return summary

    @property
    def interval(self) -> float:
        return self._interval

    def run_job(self, job: Job) -> RunAgain:
        """The ``RECONCILE_JOB`` handler: reconcile once, and again ``interval`` seconds
        from now. A failure is logged and raised, for the job runner to retry."""
        try:
            self.run_once()
        except BackfillError as exc:
            _log.error("reconcile_with_stripe_failed", error=exc.message)
            raise
        except Exception:
            # A bug of ours: logged with its traceback, which the job keeps too.
            _log.exception("reconcile_with_stripe_failed")
            raise
        return RunAgain(self._clock.now() + timedelta(seconds=self._interval))
