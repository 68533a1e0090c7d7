"""The in-memory dunning sequences of ``payherald.testing.InMemoryStore``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from payherald.dunning import REASONS, invoice_of, sequence_key
from payherald.store.records import PlannedEvent
from payherald.store.statuses import DunningStatus, NotificationStatus

__all__ = ["InMemoryDunning"]


class InMemoryDunning:
    """``Store.dunning`` on an ``InMemoryStore``'s notifications: a sequence an invoice,
    started by its failure and ended by what ends it, its steps still waiting skipped."""

    def __init__(
        self,
        *,
        notifications: dict[int, dict[str, Any]],
        lock: threading.RLock,
        check: Callable[[], None],
    ) -> None:
        self._notifications = notifications
        self._lock = lock
        self._check = check
        self.sequences: dict[str, dict[str, Any]] = {}

    def record(self, item: PlannedEvent) -> set[str]:
        """Start and end ``item``'s sequences; the sequences whose steps it must not queue
        (ended, or started by another failure)."""
        for end in item.dunning_ends:
            ended = [
                row
                for row in self.sequences.values()
                if row["status"] == DunningStatus.OPEN
                and (
                    row["invoice_id"] == end.invoice
                    if end.invoice is not None
                    else row["subscription_id"] == end.subscription
                )
            ]
            for row in ended:
                self._close(row, end.reason, end.amount_paid)
            if not ended and end.invoice is not None:
                self.sequences.setdefault(
                    end.invoice,
                    {
                        "invoice_id": end.invoice,
                        "subscription_id": None,
                        "status": DunningStatus.ENDED,
                        "end_reason": end.reason,
                    },
                )
        start = item.dunning_start
        if start is None:
            return set()
        row = self.sequences.setdefault(
            start.invoice,
            {
                "invoice_id": start.invoice,
                "subscription_id": start.subscription,
                "event_id": start.event_id,
                "status": DunningStatus.OPEN,
                "end_reason": None,
            },
        )
        queued = row["status"] == DunningStatus.OPEN and row.get("event_id") == start.event_id
        return set() if queued else {sequence_key(start.invoice)}

    def _close(
        self, row: dict[str, Any], reason: str, amount_paid: int | None, held: int | None = None
    ) -> None:
        paid = reason == "paid"
        row.update(
            status=DunningStatus.RECOVERED if paid else DunningStatus.ENDED,
            end_reason=reason,
            recovered_amount=amount_paid if paid else None,
        )
        sequence = sequence_key(row["invoice_id"])
        for notification in self._notifications.values():
            if notification["sequence"] == sequence and notification["status"] in (
                NotificationStatus.PENDING,
                NotificationStatus.CLAIMED,
            ):
                notification.update(
                    status=NotificationStatus.SKIPPED,
                    error=f"The dunning sequence ended: {REASONS.get(reason, reason)}.",
                )

    def end(
        self,
        invoice: str,
        reason: str,
        *,
        amount_paid: int | None = None,
        held: int | None = None,
    ) -> bool:
        with self._lock:
            self._check()
            row = self.sequences.get(invoice)
            if row is None or row["status"] != DunningStatus.OPEN:
                return False
            self._close(row, reason, amount_paid, held)
            return True

    def is_open(self, sequence: str) -> bool:
        with self._lock:
            self._check()
            row = self.sequences.get(invoice_of(sequence))
            return row is None or row["status"] == DunningStatus.OPEN

    def get(self, invoice: str) -> dict[str, Any] | None:
        row = self.sequences.get(invoice)
        return dict(row) if row is not None else None
