"""The identifiers of one thing, linked: a payment's intent, charge, invoice and Checkout
session are one subject, and every notification about it is keyed on one of them (its
canonical), so that it is told once whichever events report it (``Store.links``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, select, text, update

from payherald.clock import Clock
from payherald.exceptions import StoreUnavailable
from payherald.rules import LINKED_SUBJECTS
from payherald.store.database import Database
from payherald.store.schema import subject_aliases
from payherald.store.told import lock_canonicals

__all__ = ["ALIAS_RACE_RETRIES", "AliasRace", "Links"]

# A subject's identifier and every alias linked to it, in one read.
_SUBJECT_GROUP = text(
    "SELECT linked.alias, linked.canonical FROM subject_aliases AS held "
    "JOIN subject_aliases AS linked ON linked.canonical = held.canonical "
    "WHERE held.alias = :subject"
)
# How often recording an event is tried again when a concurrent one linked the same payment.
ALIAS_RACE_RETRIES = 5


class AliasRace(Exception):
    """Another transaction linked one of these aliases first; record it all again."""


class Links:
    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    def link(
        self, connection: Connection, subjects: Sequence[tuple[str, tuple[str, ...]]]
    ) -> list[str]:
        """The one identifier that everything known about each subject is keyed on, in
        order, each subject seeing the links of those before it.

        Links every alias of a subject to its identifier: the identifier of its most
        telling alias already known, else its first alias. When its aliases were known
        under several identifiers (a payment intent and an invoice seen apart, then an
        invoice payment naming both), those merge into the first: every alias of the
        others is pointed at it. If a concurrent transaction linked one of them to another
        identifier first, raises AliasRace so that the whole transaction is recorded
        again, seeing that link. (On SQLite a transaction holds the write lock from its
        start, so nobody can link anything meanwhile.)
        """
        wanted = {
            f"{kind}:{alias}"
            for kind, subject in subjects
            if kind in LINKED_SUBJECTS
            for alias in subject
        }
        known = self._known(connection, wanted)
        if self._db.postgres and wanted:
            # Lock every identifier these aliases are linked to, and re-read until no merge
            # moved them meanwhile: a concurrent merge, or a worker committing a send about
            # one of them, then goes first (a merge locks both identifiers it joins).
            locked: set[str] = set()
            while new_locks := set(known.values()) - locked:
                lock_canonicals(connection, new_locks)
                locked |= new_locks
                known = self._known(connection, wanted)
        links: dict[str, str] = {}  # new aliases -> their identifier
        merged: dict[tuple[str, str], str] = {}  # (kind, identifier) -> the one it joined
        canonicals = []
        for kind, subject in subjects:
            if kind not in LINKED_SUBJECTS:
                canonicals.append(subject[0])
                continue
            aliases = [f"{kind}:{alias}" for alias in subject]
            found = list(dict.fromkeys(known[a] for a in aliases if a in known))
            canonical = found[0] if found else subject[0]
            for other in found[1:]:
                merged[(kind, other)] = canonical
                for alias, identifier in known.items():
                    if identifier == other and alias.startswith(f"{kind}:"):
                        known[alias] = canonical
            for alias in aliases:
                if alias not in known:
                    known[alias] = links[alias] = canonical
            canonicals.append(canonical)
        for (kind, other), canonical in merged.items():
            # Both identifiers are locked (above): no send about either commits meanwhile.
            connection.execute(
                update(subject_aliases)
                .where(
                    and_(
                        subject_aliases.c.canonical == other,
                        subject_aliases.c.alias.startswith(f"{kind}:", autoescape=True),
                    )
                )
                .values(canonical=canonical)
            )
        if links:
            connection.execute(
                self._db.insert(subject_aliases).on_conflict_do_nothing(index_elements=["alias"]),
                [{"alias": alias, "canonical": c} for alias, c in links.items()],
            )
            if self._db.postgres:
                linked = connection.execute(
                    select(subject_aliases.c.alias, subject_aliases.c.canonical).where(
                        subject_aliases.c.alias.in_(sorted(links))
                    )
                )
                if any(links[alias] != canonical for alias, canonical in linked):
                    raise AliasRace()
        return canonicals

    @staticmethod
    def _known(connection: Connection, wanted: set[str]) -> dict[str, str]:
        if not wanted:
            return {}
        query = select(subject_aliases.c.alias, subject_aliases.c.canonical).where(
            subject_aliases.c.alias.in_(sorted(wanted))
        )
        return {alias: canonical for alias, canonical in connection.execute(query)}

    def link_payment(self, aliases: Sequence[str]) -> str:
        """Link the identifiers of one payment (learnt from Stripe) as one subject, in a
        transaction of its own; returns its identifier. Raises StoreUnavailable."""
        for _ in range(ALIAS_RACE_RETRIES):
            try:
                with self._db.transaction() as connection:
                    (canonical,) = self.link(connection, [("payment", tuple(aliases))])
                    return canonical
            except AliasRace:
                continue
        raise StoreUnavailable(
            "The event store is too busy linking this payment; it will be tried again."
        )

    def subject_group(self, subject: str) -> tuple[str, frozenset[str]]:
        """The identifier that ``subject`` (``kind:alias``) is linked to now, and every
        alias linked to it (without the ``kind:``)."""
        kind, _, alias = subject.partition(":")
        with self._db.read() as connection:
            rows = connection.execute(_SUBJECT_GROUP, {"subject": subject}).all()
        if not rows:
            return alias, frozenset({alias})
        prefix = f"{kind}:"
        return rows[0].canonical, frozenset(
            row.alias.removeprefix(prefix) for row in rows if row.alias.startswith(prefix)
        )
