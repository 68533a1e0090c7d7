"""Retention: what payherald forgets, and when (``PAYHERALD_RETENTION_DAYS``, 90 by default).

An event received before the cutoff is deleted with everything that hangs on it: its
notifications (their bodies and addresses, refusals and notes) and the delivery reports
about them. Delivery reports received before the cutoff about no notification kept go too.
An inbound message received before the cutoff is forgotten but for its tombstone: its
sender and body are blanked, its MessageSid, time and keyword kept, for Twilio's signature
carries no time and that row is all that stops a captured reply (a START) from being
replayed and acted on again. What is never deleted:

- an event with a notification still in flight (pending, claimed, sending, unknown) or
  touched since the cutoff (a replay, a late send): it and its notifications wait;
- consents and the suppression list (who must not be messaged is kept for good), the
  subject aliases (Stripe identifiers only), the inbound messages' tombstones and ``meta``.

The dedup promise holds because the cutoff is at least 30 days back: Stripe retries a
webhook for 3 days and backfill fetches 30, so a pruned event can never arrive again.
Deleting goes in batches, each its own short transaction, so that a large prune never holds
SQLite's write lock for long (the queries are ``Store.pruning``'s,
``payherald.store.pruning``). ``Pruner`` runs it on a schedule beside the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import TypeVar

import structlog

from payherald.clock import Clock
from payherald.exceptions import PayheraldError
from payherald.settings import MIN_RETENTION_DAYS
from payherald.store import Store

__all__ = ["PruneSummary", "Pruner", "RetentionError", "check_cutoff", "prune"]

_log = structlog.get_logger("payherald.retention")

# Events (or delivery reports) deleted, or inbound messages blanked, per transaction.
BATCH_SIZE = 500
# How often the scheduled prune runs; it starts with the worker.
PRUNE_INTERVAL = 6 * 3600.0


class RetentionError(PayheraldError):
    """Nothing was pruned; the message says why."""


@dataclass
class PruneSummary:
    before: datetime
    events: int = 0
    notifications: int = 0
    delivery_reports: int = 0
    inbound_messages: int = 0
    kept: int = 0  # events older than the cutoff kept: a notification is in flight or recent
    batches: int = 0

    def describe(self, *, dry_run: bool = False) -> str:
        would = "would be " if dry_run else ""
        kept = (
            f"; {self.kept} older event(s) kept: a notification of theirs is still in flight "
            "or changed since"
            if self.kept
            else ""
        )
        return (
            f"before {self.before:%Y-%m-%d %H:%M:%S} UTC, {self.events} event(s) "
            f"{would}deleted with {self.notifications} notification(s) and "
            f"{self.delivery_reports} delivery report(s); {self.inbound_messages} inbound "
            f"message(s) {would}forgotten (sender and text blanked, the message id kept so "
            f"that a replayed reply is not acted on again){kept}. Consents and the opt-out "
            "list are always kept."
        )


def check_cutoff(before: datetime, *, now: datetime) -> None:
    """Raise RetentionError unless ``before`` is at least ``MIN_RETENTION_DAYS`` ago."""
    if before > now - timedelta(days=MIN_RETENTION_DAYS):
        raise RetentionError(
            f"Cannot prune what is newer than {MIN_RETENTION_DAYS} days: backfill fetches "
            f"events that old, and a pruned one would be taken as new and notified again; "
            f"use --before {MIN_RETENTION_DAYS}d or earlier."
        )


_Batch = TypeVar("_Batch")


def _until_short(
    step: Callable[[], _Batch], batch_size: int, found: Callable[[_Batch], int]
) -> Iterator[_Batch]:
    """Run ``step`` (one batch) until it finds (``found``) fewer than ``batch_size`` rows,
    and yield each batch that found any."""
    while True:
        batch = step()
        count = found(batch)
        if count:
            yield batch
        if count != batch_size:
            return


def prune(
    store: Store, before: datetime, *, dry_run: bool = False, batch_size: int = BATCH_SIZE
) -> PruneSummary:
    """Delete what was received before ``before`` and is finished, and blank old inbound
    messages to their tombstones (see the module's docstring), ``batch_size`` rows at a
    time; with ``dry_run``, count it instead.
    Raises StoreUnavailable; what earlier batches deleted stays deleted."""
    summary = PruneSummary(before=before)
    pruning = store.pruning
    if dry_run:
        counts = pruning.count(before)
        summary.events = counts.events
        summary.kept = counts.kept
        summary.notifications = counts.notifications
        summary.delivery_reports = counts.delivery_reports
        summary.inbound_messages = counts.inbound_messages
        return summary
    events = partial(pruning.delete_events, before, batch_size)
    for batch in _until_short(events, batch_size, lambda batch: batch.found):
        summary.events += batch.events
        summary.notifications += batch.notifications
        summary.delivery_reports += batch.delivery_reports
        summary.batches += 1
    inbound = partial(pruning.forget_inbound, before, batch_size)
    for blanked in _until_short(inbound, batch_size, int):
        summary.inbound_messages += blanked
        summary.batches += 1
    reports = partial(pruning.sweep_reports, before, batch_size)
    for swept in _until_short(reports, batch_size, int):
        summary.delivery_reports += swept
        summary.batches += 1
    summary.kept = pruning.count_older_events(before)
    _log.info(
        "pruned",
        before=before.isoformat(),
        events=summary.events,
        notifications=summary.notifications,
        delivery_reports=summary.delivery_reports,
        inbound_messages=summary.inbound_messages,
        kept=summary.kept,
        batches=summary.batches,
    )
    return summary


class Pruner:
    """Prune what is older than ``retention_days`` now and then every ``interval``
    seconds, in the process that runs the worker."""

    def __init__(
        self,
        *,
        store: Store,
        clock: Clock,
        retention_days: int,
        interval: float = PRUNE_INTERVAL,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        if retention_days < MIN_RETENTION_DAYS:
            raise ValueError(f"retention_days must be at least {MIN_RETENTION_DAYS}")
        self._store = store
        self._clock = clock
        self._retention = timedelta(days=retention_days)
        self._interval = interval
        self._batch_size = batch_size

    def run_once(self) -> PruneSummary:
        return prune(self._store, self._clock.now() - self._retention, batch_size=self._batch_size)

    def run(self, stop: threading.Event) -> None:
        """Prune now and then every ``interval`` seconds until ``stop`` is set."""
        while not stop.is_set():
            try:
                self.run_once()
            except PayheraldError as exc:
                _log.error("prune_failed", error=exc.message)
            except Exception:
                _log.exception("prune_failed")
            stop.wait(self._interval)
