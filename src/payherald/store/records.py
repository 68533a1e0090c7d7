"""What the store takes in and gives back: planned events, recording results, claimed
notifications, jobs and queue statistics, and the rows they are made of and from."""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from payherald.attribution import Paylink, PaymentMade
from payherald.dunning import DunningEnd, DunningStart
from payherald.event_facts import event_facts
from payherald.rules import PlannedNotification
from payherald.store.statuses import JobStatus
from payherald.webhook import StripeEvent

__all__ = [
    "ClaimedNotification",
    "Job",
    "PlannedEvent",
    "QueueStats",
    "RecordResult",
    "claim_token",
    "claimed_from_row",
    "event_row",
    "job_from_row",
]


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """An event and the notifications planned for it, ready to be recorded. ``status`` is
    ``received`` (``ignored`` once stored if nothing is planned), ``failed`` (planning
    failed; ``error`` holds the traceback) or ``unsupported`` (an API version payherald
    cannot read; ``error`` says why)."""

    event: StripeEvent
    planned: tuple[PlannedNotification, ...] = ()
    status: str = "received"
    error: str | None = None
    # The identifiers of one payment that the event names (a payment intent and its
    # invoice, say), linked whether or not the event queues anything.
    links: tuple[str, ...] = ()
    # The dunning sequence it starts (its steps are among ``planned``), and those it ends.
    dunning_start: DunningStart | None = None
    dunning_ends: tuple[DunningEnd, ...] = ()
    # The paylink it texts (a ``payherald.paylink`` event), and the payment it tells that a
    # message may have brought (see ``payherald.attribution``).
    paylink: Paylink | None = None
    payment: PaymentMade | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    duplicate: bool
    queued: int
    failed: bool = False  # stored as `failed`: its notifications could not be planned
    unsupported: bool = False  # stored as `unsupported`: of an API version not read


@dataclass(frozen=True, slots=True)
class QueueStats:
    """The work queue at one moment: how many notifications are in each waiting state
    (``pending_due``, ``pending_scheduled``, ``claimed``, ``sending``, ``unknown``), and
    how many seconds the oldest due pending one has waited since it became due (0 when
    none is due)."""

    depth: dict[str, int]
    oldest_due_age: float


@dataclass(frozen=True)
class Job:
    """One job as read: claimed (``claim`` is the token of the claim that holds it), or
    looked up by its key."""

    id: int
    kind: str
    key: str
    payload: dict[str, Any]
    status: JobStatus
    attempts: int  # failed attempts since it last succeeded
    due_at: datetime
    claim: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class ClaimedNotification:
    id: int
    key: str
    event_id: str
    rule: str
    recipient: str
    channel: str
    livemode: bool
    to: str | None
    body: str | None
    status: str
    attempts: int
    attempt_started_at: datetime | None
    event_payload: str
    claim: str
    created_at: datetime | None = None
    error_code: str | None = None
    # Channels that refused the message for good, with why: (channel, reason).
    refusals: tuple[tuple[str, str], ...] = ()
    # The subject alias its key was made from ("payment:pi_..."), for linked subjects.
    subject: str | None = None
    # The sequence it is a step of ("dunning:in_..."), if any.
    sequence: str | None = None

    def refused_by(self, channel: str, reason: str) -> str:
        """Its refusals with ``channel``'s added, as the ``refusals`` column holds them."""
        refusal = (channel, " ".join(reason.split()))
        return "\n".join(f"{c}\t{r}" for c, r in (*self.refusals, refusal))


def event_row(item: PlannedEvent, now: datetime) -> dict[str, Any]:
    """The ``events`` row that records ``item``, received at ``now``."""
    event = item.event
    return {
        "id": event.id,
        "type": event.type,
        "livemode": event.livemode,
        "api_version": event.api_version,
        "stripe_created_at": event.created,
        "payload": json.dumps(event.payload, separators=(",", ":")),
        # An event that causes nothing is stored as ignored.
        "status": "ignored" if not item.planned and item.status == "received" else item.status,
        "error": item.error,
        "received_at": now,
        **event_facts(event).as_row(),
    }


def claimed_from_row(row: Mapping[Any, Any]) -> ClaimedNotification:
    """A claimed ``notifications`` row, joined with its event's payload."""
    return ClaimedNotification(
        id=row["id"],
        key=row["key"],
        event_id=row["event_id"],
        rule=row["rule"],
        recipient=row["recipient"],
        channel=row["channel"],
        livemode=row["livemode"],
        to=row["to"],
        body=row["body"],
        status=row["status"],
        attempts=row["attempts"],
        attempt_started_at=row["attempt_started_at"],
        event_payload=row["event_payload"],
        claim=row["claimed_by"],
        created_at=row["created_at"],
        error_code=row["error_code"],
        subject=row["subject"],
        sequence=row["sequence"],
        refusals=tuple(
            (channel, reason)
            for channel, _, reason in (
                line.partition("\t") for line in (row["refusals"] or "").splitlines()
            )
        ),
    )


def job_from_row(row: Mapping[Any, Any]) -> Job:
    """A ``jobs`` row, as read."""
    return Job(
        id=int(row["id"]),
        kind=row["kind"],
        key=row["key"],
        payload=json.loads(row["payload"]),
        status=JobStatus(row["status"]),
        attempts=int(row["attempts"]),
        due_at=row["due_at"],
        claim=row["claimed_by"],
        lease_until=row["lease_until"],
        last_error=row["last_error"],
    )


def claim_token(worker_id: str) -> str:
    """A token for one claim (of notifications or of a job) by ``worker_id``: the worker,
    and a part no other claim has."""
    return f"{worker_id[:100]}/{secrets.token_hex(6)}"
