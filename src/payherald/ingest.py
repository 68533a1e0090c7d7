"""Taking in Stripe events: plan their notifications and store both in one transaction.

The webhook (through the group committer, many events per transaction), backfill and the
scheduled reconciliation (one event at a time, through ``ingest``) all plan with
``plan_event``, so an event is handled the same whichever way it arrived, and only once
whichever arrived first.
"""

from __future__ import annotations

import traceback

import structlog

from payherald.api_versions import unsupported_reason
from payherald.attribution import payment_made
from payherald.dunning import DunningEnd, dunning_changes
from payherald.rules import RuleBook
from payherald.store import PlannedEvent, RecordResult, Store
from payherald.stripe_objects import read_object
from payherald.webhook import StripeEvent

__all__ = ["ingest", "payment_links", "plan_event", "record_planned"]

_log = structlog.get_logger("payherald.ingest")


def plan_event(rules: RuleBook, event: StripeEvent) -> PlannedEvent:
    """``event`` with the notifications the rules plan for it. An event of an API version
    payherald cannot read is to be stored as ``unsupported``, with why, and plans nothing.
    If planning fails (a bug of ours, or a payload nobody foresaw), the event is to be
    stored all the same, as ``failed`` with the traceback, for ``payherald replay``. Never
    raises."""
    reason = unsupported_reason(event.api_version)
    if reason is not None:
        # Read with the wrong shapes, it could be mis-told: stored, flagged and counted.
        _log.warning("event_unsupported", event_id=event.id, event_type=event.type, reason=reason)
        return PlannedEvent(event, status="unsupported", error=reason)
    links = payment_links(event)
    try:
        planned = rules.plan(event)
        start, ends = dunning_changes(event, starts=any(item.sequence for item in planned))
    except Exception as exc:
        _log.exception("planning_failed", event_id=event.id, event_type=event.type)
        error = "".join(traceback.format_exception(exc))
        # What it ends still ends (an invoice paid is paid), and a payment is still
        # credited, if that much can be read.
        return PlannedEvent(
            event,
            status="failed",
            error=error,
            links=links,
            dunning_ends=_ends(event),
            payment=payment_made(event),
        )
    return PlannedEvent(
        event,
        tuple(planned),
        links=links,
        dunning_start=start,
        dunning_ends=ends,
        payment=payment_made(event),
    )


def _ends(event: StripeEvent) -> tuple[DunningEnd, ...]:
    """The dunning sequences ``event`` ends; none when even that cannot be read."""
    try:
        return dunning_changes(event, starts=False)[1]
    except Exception:  # the planning failure's traceback says what is wrong with it
        return ()


def payment_links(event: StripeEvent) -> tuple[str, ...]:
    """The identifiers of one payment that ``event`` names together, to be linked; empty
    when it names fewer than two. Never raises."""
    try:
        ids = read_object(event.object).payment_ids
    except Exception:  # a payload nobody foresaw: planning says so, with its traceback
        return ()
    return tuple(ids) if len(ids) > 1 else ()


def record_planned(store: Store, item: PlannedEvent) -> RecordResult:
    """Store one planned event in a transaction of its own (``Store.record_event``, which
    retries when a concurrent transaction links the same payment). Raises
    StoreUnavailable."""
    return store.record(item)


def ingest(store: Store, rules: RuleBook, event: StripeEvent) -> RecordResult:
    """Store ``event`` with the notifications the rules plan for it (see ``plan_event``),
    in a transaction of its own. Raises StoreUnavailable."""
    return record_planned(store, plan_event(rules, event))
