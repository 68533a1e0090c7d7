"""The store's event log, notification queue and suppression list in memory
(``payherald.store.Store``)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any

from payherald.clock import Clock
from payherald.exceptions import StoreUnavailable
from payherald.rules import LINKED_SUBJECTS, PlannedNotification
from payherald.store.questions import Question
from payherald.store.records import (
    ClaimedNotification,
    PlannedEvent,
    RecordResult,
    claim_token,
    claimed_from_row,
)
from payherald.store.statuses import TOLD, EventStatus, NotificationStatus
from payherald.store.transitions import Outcome
from payherald.testing.dunning import InMemoryDunning
from payherald.webhook import StripeEvent

__all__ = ["InMemoryConsents", "InMemoryQueue", "InMemoryStore"]


class _InMemoryDatabase:
    """What callers ask of ``Store.db``: whether it answers."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    def ping(self) -> None:
        self._store.check()


class InMemoryStore:
    """The store's event log, notification queue and suppression list in memory, with the
    semantics of ``payherald.store.Store`` that the worker, the sender and the group
    committer rely on: an event id recorded once, a notification key queued once, a
    payment's identifiers linked as one subject, claims with a lease and a token, and
    every change after the claim made by the same transitions table. ``down`` makes every
    call raise StoreUnavailable; ``refuse_batches`` makes ``record_events`` raise it while
    one-by-one recording still works."""

    def __init__(self, *, clock: Clock) -> None:
        self.clock = clock
        self.db = _InMemoryDatabase(self)
        self.queue = InMemoryQueue(self)
        self.consents = InMemoryConsents(self)
        # The questions the messages sent asked (the fraud check), in order.
        self.questions_asked: list[Question] = []
        self.events: dict[str, dict[str, Any]] = {}
        self.notifications: dict[int, dict[str, Any]] = {}
        self.aliases: dict[str, str] = {}
        self.batches: list[int] = []  # the size of each batch recorded in one go
        self.down = False
        self.refuse_batches = False
        self.lock = threading.RLock()
        self.dunning = InMemoryDunning(
            notifications=self.notifications, lock=self.lock, check=self.check
        )

    def check(self) -> None:
        if self.down:
            raise StoreUnavailable("The event store is unavailable: switched off by the test")

    # -- ingest -----------------------------------------------------------------------

    def record_event(
        self,
        event: StripeEvent,
        planned: Sequence[PlannedNotification],
        *,
        status: str = EventStatus.RECEIVED,
        error: str | None = None,
        links: Sequence[str] = (),
    ) -> RecordResult:
        return self.record(PlannedEvent(event, tuple(planned), status, error, tuple(links)))

    def record(self, item: PlannedEvent) -> RecordResult:
        (result,) = self._record([item])
        return result

    def record_events(self, items: Sequence[PlannedEvent]) -> list[RecordResult]:
        if self.refuse_batches:
            raise StoreUnavailable("The event store refused the batch: switched by the test")
        results = self._record(items)
        self.batches.append(len(items))
        return results

    def _record(self, items: Sequence[PlannedEvent]) -> list[RecordResult]:
        with self.lock:
            self.check()
            results = []
            for item in items:
                event = item.event
                if event.id in self.events:
                    results.append(RecordResult(duplicate=True, queued=0))
                    continue
                ignored = not item.planned and item.status == EventStatus.RECEIVED
                self.events[event.id] = {
                    "id": event.id,
                    "type": event.type,
                    "payload": json.dumps(event.payload),
                    "status": EventStatus.IGNORED if ignored else item.status,
                    "error": item.error,
                }
                if item.links:
                    self._link("payment", item.links)
                closed = self.dunning.record(item)
                queued = sum(
                    self._queue(event.id, planned)
                    for planned in item.planned
                    if planned.sequence is None or planned.sequence not in closed
                )
                results.append(
                    RecordResult(
                        duplicate=False,
                        queued=queued,
                        failed=item.status == EventStatus.FAILED,
                        unsupported=item.status == EventStatus.UNSUPPORTED,
                    )
                )
            return results

    def _link(self, kind: str, subject: Sequence[str]) -> str:
        """The identifier ``subject``'s aliases are linked under, linking them (and
        merging the identifiers they were known under into the first)."""
        if kind not in LINKED_SUBJECTS:
            return subject[0]
        aliases = [f"{kind}:{alias}" for alias in subject]
        found = list(dict.fromkeys(self.aliases[a] for a in aliases if a in self.aliases))
        canonical = found[0] if found else subject[0]
        for alias, identifier in list(self.aliases.items()):
            if identifier in found[1:] and alias.startswith(f"{kind}:"):
                self.aliases[alias] = canonical
        for alias in aliases:
            self.aliases.setdefault(alias, canonical)
        return canonical

    def _queue(self, event_id: str, planned: PlannedNotification) -> bool:
        canonical = self._link(planned.subject_kind, planned.subject)
        key = planned.key(canonical)
        if any(row["key"] == key for row in self.notifications.values()):
            return False
        now = self.clock.now()
        number = len(self.notifications) + 1
        linked = planned.subject_kind in LINKED_SUBJECTS
        self.notifications[number] = {
            "id": number,
            "key": key,
            "event_id": event_id,
            "rule": planned.rule,
            "recipient": planned.recipient,
            "channel": planned.channel,
            "livemode": planned.livemode,
            "to": planned.to,
            "body": None,
            "subject": f"{planned.subject_kind}:{canonical}" if linked else None,
            "sequence": planned.sequence,
            "status": NotificationStatus.PENDING,
            "attempts": 0,
            "created_at": now,
            "run_at": now + timedelta(seconds=planned.after),
            "lease_until": None,
            "claimed_by": None,
            "attempt_started_at": None,
            "provider_id": None,
            "error": None,
            "error_code": None,
            "notes": None,
            "refusals": None,
            "sent_at": None,
        }
        return True

    # -- what the sender asks -----------------------------------------------------------

    def told_sibling(self, held: ClaimedNotification) -> dict[str, Any] | None:
        with self.lock:
            siblings = self._told_siblings(self.notifications[held.id])
        # A twin that was told outweighs one still being sent.
        siblings.sort(key=lambda row: row["status"] == NotificationStatus.SENDING)
        return (
            {name: siblings[0][name] for name in ("id", "event_id", "status")} if siblings else None
        )

    def _told_siblings(self, row: dict[str, Any]) -> list[dict[str, Any]]:
        if row["subject"] is None:
            return []
        canonical = self._canonical(row["subject"])
        return [
            other
            for other in self.notifications.values()
            if other["id"] != row["id"]
            and other["subject"] is not None
            and self._canonical(other["subject"]) == canonical
            and other["rule"] == row["rule"]
            and other["recipient"] == row["recipient"]
            and other["status"] in TOLD
            and (
                row["recipient"] == "customer"
                or (other["channel"], other["to"]) == (row["channel"], row["to"])
            )
        ]

    def _canonical(self, subject: str) -> str:
        kind, _, alias = subject.partition(":")
        return f"{kind}:{self.aliases.get(subject, alias)}"

    # -- for the test's own eyes -----------------------------------------------------------

    def notification(self, number: int) -> dict[str, Any]:
        with self.lock:
            return dict(self.notifications[number])


class InMemoryConsents:
    """``Store.consents``' suppression list, in memory."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store
        self.suppressions: dict[str, str] = {}

    def suppress(self, address: str, reason: str = "opted out (test)") -> None:
        with self._store.lock:
            self.suppressions[address] = reason

    def first_suppressed(self, addresses: Sequence[str]) -> tuple[str, str] | None:
        with self._store.lock:
            self._store.check()
            found = (a for a in addresses if a in self.suppressions)
            return next(((a, self.suppressions[a]) for a in found), None)


class InMemoryQueue:
    """``WorkQueue``'s claims and state changes on an ``InMemoryStore``'s notifications."""

    def __init__(self, store: InMemoryStore) -> None:
        self._store = store

    def claim(self, *, worker_id: str, limit: int, lease: float) -> list[ClaimedNotification]:
        now = self._store.clock.now()
        return self._claim(
            NotificationStatus.PENDING,
            limit,
            worker_id,
            status=NotificationStatus.CLAIMED,
            lease_until=now + timedelta(seconds=lease),
        )

    def claim_unknown(
        self, *, worker_id: str, limit: int, lease: float
    ) -> list[ClaimedNotification]:
        recheck = self._store.clock.now() + timedelta(seconds=lease)
        return self._claim(NotificationStatus.UNKNOWN, limit, worker_id, run_at=recheck)

    def _claim(
        self, from_status: str, limit: int, worker_id: str, **changes: Any
    ) -> list[ClaimedNotification]:
        store = self._store
        with store.lock:
            store.check()
            now = store.clock.now()
            due = sorted(
                (
                    row
                    for row in store.notifications.values()
                    if row["status"] == from_status and row["run_at"] <= now
                ),
                key=lambda row: (row["run_at"], row["id"]),
            )[: max(limit, 0)]
            claimed = []
            for row in due:
                row.update(changes, claimed_by=claim_token(worker_id))
                claimed.append(self._held(row))
            return claimed

    def _held(self, row: dict[str, Any]) -> ClaimedNotification:
        payload = self._store.events[row["event_id"]]["payload"]
        return claimed_from_row({**row, "event_payload": payload})

    def expire_leases(self) -> tuple[int, int]:
        store = self._store
        with store.lock:
            store.check()
            now = store.clock.now()
            released = orphaned = 0
            for row in store.notifications.values():
                if row["lease_until"] is None or row["lease_until"] >= now:
                    continue
                if row["status"] == NotificationStatus.CLAIMED:
                    row.update(status=NotificationStatus.PENDING, claimed_by=None, lease_until=None)
                    released += 1
                elif row["status"] == NotificationStatus.SENDING:
                    row.update(
                        status=NotificationStatus.UNKNOWN,
                        claimed_by=None,
                        lease_until=None,
                        run_at=now,
                        error="The worker stopped during the provider call; reconciling.",
                    )
                    orphaned += 1
            return released, orphaned

    def discard_finished(self) -> None:
        """Nothing to do: the fake keeps no jobs for its notifications."""

    def mark_sending(
        self,
        held: ClaimedNotification,
        *,
        to: str,
        body: str,
        channel: str,
        lease: float,
        notes: str | None = None,
        unless_suppressed: Sequence[str] = (),
        question: Question | None = None,
    ) -> bool:
        store = self._store
        with store.lock:
            store.check()
            row = self._current(held, (NotificationStatus.CLAIMED,))
            if row is None or any(a in store.consents.suppressions for a in unless_suppressed):
                return False
            if store._told_siblings(row):
                return False
            if question is not None:
                store.questions_asked.append(question)
            now = store.clock.now()
            row.update(
                status=NotificationStatus.SENDING,
                to=to,
                body=body,
                channel=channel,
                notes=notes,
                attempt_started_at=now,
                lease_until=now + timedelta(seconds=lease),
                error=None,
                error_code=None,
                attempts=row["attempts"] + 1,
            )
            return True

    def settle(self, held: ClaimedNotification, outcome: Outcome, **values: Any) -> bool:
        store = self._store
        with store.lock:
            store.check()
            row = self._current(held, outcome.leaves)
            if row is None:
                return False
            changes = outcome.changes(values, store.clock.now())
            if unknown := set(changes) - set(row):
                # The database would refuse a column it does not have; so does the fake.
                raise KeyError(f"notifications has no column {sorted(unknown)}")
            row.update(changes)
            return True

    def _current(self, held: ClaimedNotification, statuses: Iterable[str]) -> dict[str, Any] | None:
        row = self._store.notifications.get(held.id)
        if row is None or row["claimed_by"] != held.claim or row["status"] not in set(statuses):
            return None
        return row
