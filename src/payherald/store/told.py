"""Whether another notification about the same thing was told, and the locks that keep
two of them from being told at once on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Select, Table, and_, or_, select, text

from payherald.store.schema import notifications, subject_aliases
from payherald.store.statuses import TOLD

__all__ = ["TOLD_STATUSES", "lock_canonicals", "lock_subject", "siblings_told"]

# A notification in one of these may have reached its recipient.
TOLD_STATUSES = tuple(sorted(status.value for status in TOLD))

# PostgreSQL advisory locks on a subject's identifier (its canonical), held to the end of the
# transaction; the first key keeps them apart from any other advisory lock.
_LOCK = text("SELECT pg_advisory_xact_lock(7301, hashtext(:canonical))")
_CANONICAL = text("SELECT canonical FROM subject_aliases WHERE alias = :alias")


def lock_canonicals(connection: Connection, canonicals: Iterable[str]) -> None:
    """Lock these identifiers, in one order (so that two transactions cannot deadlock on
    them), until ``connection``'s transaction ends. PostgreSQL only."""
    for canonical in sorted(set(canonicals)):
        connection.execute(_LOCK, {"canonical": canonical})


def lock_subject(connection: Connection, subject: str) -> None:
    """Lock the identifier ``subject`` is linked to now, as linking locks it (``Store._link``
    locks both identifiers it merges): a merge committed while this waited moves the
    subject to another identifier, so the lock follows it until it stays put."""
    held: set[str] = set()
    while True:
        canonical = connection.execute(_CANONICAL, {"alias": subject}).scalar() or subject
        if canonical in held:
            return
        connection.execute(_LOCK, {"canonical": canonical})
        held.add(canonical)


def siblings_told(held: Table) -> Select[Any]:
    """The other notifications of ``held``'s rule, to the same recipient, about what
    ``held`` is about as linked now (the canonical of its subject), that were told or
    are being told: their ``id``, ``event_id`` and ``status``. ``held`` is the ``notifications``
    table, correlated by the statement that uses this."""
    sibling = notifications.alias("sibling")
    sibling_subject = subject_aliases.alias("sibling_subject")
    held_subject = subject_aliases.alias("held_subject")
    return (
        select(sibling.c.id, sibling.c.event_id, sibling.c.status)
        .join(sibling_subject, sibling_subject.c.alias == sibling.c.subject)
        .join(held_subject, held_subject.c.canonical == sibling_subject.c.canonical)
        .where(
            held_subject.c.alias == held.c.subject,
            sibling.c.id != held.c.id,
            sibling.c.rule == held.c.rule,
            sibling.c.recipient == held.c.recipient,
            # "|| ''" keeps SQLite's planner off the status index: led by it, it scans every
            # notification ever sent, for every send (the 10,000-SMS burst took 5x longer).
            sibling.c.status.concat("").in_(TOLD_STATUSES),
            or_(
                held.c.recipient == "customer",
                and_(sibling.c.channel == held.c.channel, sibling.c.to == held.c.to),
            ),
        )
    )
