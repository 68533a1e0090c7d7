"""The statements of the work queue (``payherald.store.queue``), built once and run with
new values each time: building an UPDATE costs more than running it, and a worker runs
these several times for every message."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    ColumnElement,
    Update,
    and_,
    bindparam,
    case,
    exists,
    or_,
    select,
    update,
)

from payherald.store.schema import events, notifications, suppressions
from payherald.store.statuses import NotificationStatus as S
from payherald.store.told import siblings_told

__all__ = ["ORPHANED", "TAKEN", "TAKE_TO_RECONCILE", "TAKE_TO_SEND", "transition_statement"]

ORPHANED = "The worker stopped during the provider call; reconciling."


def _take(statuses: tuple[S, ...], *ready: ColumnElement[bool], **changes: Any) -> Update:
    """The claim's UPDATE of the notifications its jobs are about (bound parameters
    ``ids``, ``token``, ``now``): those in ``statuses``, due, and ``ready``."""
    return (
        update(notifications)
        .where(
            notifications.c.id.in_(bindparam("ids", expanding=True)),
            # "|| ''" keeps SQLite's planner on the ids: led by the (status, run_at) index
            # instead, it scans every due notification for every claim.
            notifications.c.status.concat("").in_([status.value for status in statuses]),
            notifications.c.run_at <= bindparam("now", type_=notifications.c.run_at.type),
            *ready,
        )
        .values(
            claimed_by=bindparam("token"),
            updated_at=bindparam("now", type_=notifications.c.updated_at.type),
            **changes,
        )
    )


_SENDING = notifications.c.status == S.SENDING.value
TAKE_TO_SEND = _take((S.PENDING, S.CLAIMED), status=S.CLAIMED.value)
TAKE_TO_RECONCILE = _take(
    (S.UNKNOWN, S.SENDING),
    or_(
        ~_SENDING,
        notifications.c.lease_until.is_(None),
        notifications.c.lease_until < bindparam("now", type_=notifications.c.lease_until.type),
    ),
    status=S.UNKNOWN.value,
    run_at=bindparam("recheck", type_=notifications.c.run_at.type),
    error=case((_SENDING, ORPHANED), else_=notifications.c.error),
)
# What a claim gives back of the notifications it took, with their events' payloads.
TAKEN = (
    select(notifications, events.c.payload.label("event_payload"))
    .join(events, events.c.id == notifications.c.event_id)
    .where(
        notifications.c.id.in_(bindparam("ids", expanding=True)),
        notifications.c.claimed_by == bindparam("token"),
    )
    .order_by(notifications.c.run_at, notifications.c.id)
)


def transition_statement(
    from_statuses: tuple[str, ...],
    names: tuple[str, ...],
    count_attempt: bool,
    guarded: bool,
    unless_told: bool,
) -> Update:
    """The UPDATE behind ``WorkQueue._transition`` for one shape of change; its values are the
    bound parameters ``held_id``, ``held_claim``, ``new_<column>`` and ``suppressed``."""
    conditions = [
        notifications.c.id == bindparam("held_id"),
        notifications.c.claimed_by == bindparam("held_claim"),
        notifications.c.status.in_(from_statuses),
    ]
    if guarded:
        listed = suppressions.c.address.in_(bindparam("suppressed", expanding=True))
        conditions.append(~exists(select(suppressions.c.address).where(listed)))
    if unless_told:
        conditions.append(~exists(siblings_told(notifications)))
    changes: dict[str, Any] = {
        name: bindparam(f"new_{name}", type_=notifications.c[name].type) for name in names
    }
    if count_attempt:
        changes["attempts"] = notifications.c.attempts + 1
    return update(notifications).where(and_(*conditions)).values(changes)
