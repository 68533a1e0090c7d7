"""Replay: process a stored event again, after a fix, without sending anything twice.

The event is planned again with the rules as they are now. Notifications it already has
are kept as they are (sent stays sent; an outcome that is unknown is never resent on a
guess); new ones are queued, and failed ones are queued again from the rule's first
channel. A running worker then sends them.
"""

from __future__ import annotations

from dataclasses import dataclass

from payherald.api_versions import unsupported_reason
from payherald.dunning import dunning_changes
from payherald.exceptions import MalformedEvent, PayheraldError
from payherald.ingest import payment_links
from payherald.rules import RuleBook
from payherald.store import Store
from payherald.webhook import parse_event

__all__ = ["ReplayError", "ReplayResult", "replay"]


class ReplayError(PayheraldError):
    """The event cannot be replayed; the message says why."""


@dataclass(frozen=True, slots=True)
class ReplayResult:
    event_id: str
    new: int  # notifications the rules now plan that it did not have
    again: int  # failed notifications queued again
    unchanged: int  # sent, skipped, in progress or of unknown outcome: left alone

    def describe(self) -> str:
        if not (self.new or self.again):
            return f"{self.event_id}: nothing to send again ({self.unchanged} left as they are)."
        return (
            f"{self.event_id}: {self.again} failed notification(s) queued again, "
            f"{self.new} new, {self.unchanged} left as they are."
        )


def replay(store: Store, rules: RuleBook, event_id: str) -> ReplayResult:
    payload = store.event_payload(event_id)
    if payload is None:
        raise ReplayError(
            f"{event_id} is not stored here. To bring in events payherald never received, "
            "run: payherald backfill --since 24h"
        )
    try:
        event = parse_event(payload.encode())
    except MalformedEvent as exc:
        raise ReplayError(
            f"{event_id}: its stored payload is not a readable Stripe event ({exc.message}); "
            "it stays failed. Compare it with Stripe's copy in the Dashboard."
        ) from exc
    reason = unsupported_reason(event.api_version)
    if reason is not None:
        raise ReplayError(f"{event_id}: {reason}")
    try:
        planned = rules.plan(event)
        start, ends = dunning_changes(event, starts=any(item.sequence for item in planned))
    except Exception as exc:
        raise ReplayError(
            f"{event_id}: planning its notifications still fails ({type(exc).__name__}: {exc}); "
            "it stays failed. Fix the cause (see the log), then replay it again."
        ) from exc
    new, again, unchanged = store.replay_event(
        event_id, planned, links=payment_links(event), dunning=(start, ends)
    )
    return ReplayResult(event_id=event_id, new=new, again=again, unchanged=unchanged)
