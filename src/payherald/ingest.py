"""Taking in one Stripe event: plan its notifications and store both in one transaction.

The webhook, backfill and the scheduled reconciliation all come through here, so an event
is handled the same whichever way it arrived, and only once whichever arrived first.
"""

from __future__ import annotations

import traceback

import structlog

from payherald.rules import RuleBook
from payherald.store import RecordResult, Store
from payherald.webhook import StripeEvent

__all__ = ["ingest"]

_log = structlog.get_logger("payherald.ingest")


def ingest(store: Store, rules: RuleBook, event: StripeEvent) -> RecordResult:
    """Store ``event`` with the notifications the rules plan for it. If planning fails
    (a bug of ours, or a payload nobody foresaw), the event is still stored, as ``failed``
    with the traceback, for ``payherald replay``. Raises StoreUnavailable."""
    try:
        planned = rules.plan(event)
    except Exception as exc:
        _log.exception("planning_failed", event_id=event.id, event_type=event.type)
        return store.record_event(
            event, [], status="failed", error="".join(traceback.format_exception(exc))
        )
    return store.record_event(event, planned)
