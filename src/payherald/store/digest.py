"""The daily digest's figures (``Store.digest``): what payherald recorded of one stretch of
time (a local day), read from the events and the dunning sequences.

A payment reported by several events (``payment_intent.succeeded``, ``charge.succeeded``,
``checkout.session.completed``, ``invoice.paid``...) counts once: its events are joined by
the identifiers they name and by the links the store made between them
(``subject_aliases``), and it counts on the day of its first event. Failed attempts,
refunds, disputes and subscriptions count once each the same way, by what the rules key
their messages on (``subjects``). An event counts by when Stripe created it, so a backfill
after downtime puts it on the right day. Events of an API version payherald does not read
are left out, as they are everywhere else.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from payherald.event_facts import FAILURE_EVENTS
from payherald.store.database import Database
from payherald.store.dunning import Dunning
from payherald.store.schema import events, subject_aliases
from payherald.stripe_objects import read_object
from payherald.subjects import failed_attempt, payment_aliases, refund, tells_refund, the_object
from payherald.variables import condition_context
from payherald.webhook import StripeEvent, parse_event

__all__ = ["FIGURE_EVENTS", "DigestFigures", "Digests", "Tally"]

PAYMENT_EVENTS = (
    "payment_intent.succeeded",
    "charge.succeeded",
    "checkout.session.completed",
    "invoice.paid",
    "invoice.payment_succeeded",
)
REFUND_EVENTS = ("refund.created", "charge.refunded")
DISPUTE_EVENT = "charge.dispute.created"
SUBSCRIPTION_CREATED = "customer.subscription.created"
SUBSCRIPTION_DELETED = "customer.subscription.deleted"
_TYPES = (
    *PAYMENT_EVENTS,
    *FAILURE_EVENTS,
    *REFUND_EVENTS,
    DISPUTE_EVENT,
    SUBSCRIPTION_CREATED,
    SUBSCRIPTION_DELETED,
)
# What the figures are counted from: the endpoint must send them (with the link between an
# invoice and its payment, so that the two count as one).
FIGURE_EVENTS = frozenset({*_TYPES, "invoice_payment.paid"})
# A payment's events come within minutes of each other: looking back this far tells a
# payment first reported the day before (counted then) from one of this day.
_CLOCK_SKEW = timedelta(hours=1)
_LOOKBACK = timedelta(days=1)
# Aliases asked for in one statement (SQLite's default limit of bound values is far above).
_ALIAS_BATCH = 500


@dataclass(frozen=True)
class Tally:
    """How many, and their amounts in each currency's smallest unit, by currency."""

    counts: Mapping[str, int] = field(default_factory=dict)
    amounts: Mapping[str, int] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, list[int]]:
        return {c: [self.counts[c], self.amounts.get(c, 0)] for c in sorted(self.counts)}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Tally:
        return cls(
            counts={c: int(pair[0]) for c, pair in value.items()},
            amounts={c: int(pair[1]) for c, pair in value.items()},
        )

    @classmethod
    def of(cls, items: Iterable[tuple[str, int]]) -> Tally:
        """The tally of ``(currency, amount)`` items."""
        counts: dict[str, int] = {}
        amounts: dict[str, int] = {}
        for currency, amount in items:
            counts[currency] = counts.get(currency, 0) + 1
            amounts[currency] = amounts.get(currency, 0) + amount
        return cls(counts, amounts)


@dataclass(frozen=True)
class DigestFigures:
    """One stretch of time, in live or test mode. ``dunning_open`` is what was open at its
    end (the amounts due), ``recovered`` what dunning recovered in it (the amounts paid),
    ``dunning_ended`` the sequences that ended in it unpaid (voided, uncollectible...)."""

    payments: Tally = field(default_factory=Tally)
    failed: Tally = field(default_factory=Tally)
    refunds: Tally = field(default_factory=Tally)
    disputes: Tally = field(default_factory=Tally)
    new_subscriptions: int = 0
    cancelled_subscriptions: int = 0
    dunning_open: Tally = field(default_factory=Tally)
    recovered: Tally = field(default_factory=Tally)
    dunning_ended: int = 0

    _TALLIES = ("payments", "failed", "refunds", "disputes", "dunning_open", "recovered")
    _COUNTS = ("new_subscriptions", "cancelled_subscriptions", "dunning_ended")

    def as_json(self) -> dict[str, Any]:
        return {
            **{name: getattr(self, name).as_json() for name in self._TALLIES},
            **{name: getattr(self, name) for name in self._COUNTS},
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> DigestFigures:
        def tally(name: str) -> Tally:
            return Tally.from_json(value.get(name) or {})

        def count(name: str) -> int:
            return int(value.get(name) or 0)

        return cls(
            payments=tally("payments"),
            failed=tally("failed"),
            refunds=tally("refunds"),
            disputes=tally("disputes"),
            new_subscriptions=count("new_subscriptions"),
            cancelled_subscriptions=count("cancelled_subscriptions"),
            dunning_open=tally("dunning_open"),
            recovered=tally("recovered"),
            dunning_ended=count("dunning_ended"),
        )


@dataclass
class _Seen:
    """One thing counted (a payment, a refund...): when first reported, and its amount."""

    first: datetime
    currency: str = "usd"
    amount: int | None = None


class Digests:
    """The digest's reads."""

    def __init__(self, *, db: Database, dunning: Dunning) -> None:
        self._db = db
        self._dunning = dunning

    def figures(self, *, since: datetime, until: datetime, livemode: bool) -> DigestFigures:
        """What happened from ``since`` (included) to ``until`` (not), of ``livemode``."""
        by_type: dict[str, list[tuple[StripeEvent, datetime]]] = {}
        for event, when in self._events(since - _LOOKBACK, until, livemode):
            by_type.setdefault(event.type, []).append((event, when))

        def of(types: Iterable[str]) -> list[tuple[StripeEvent, datetime]]:
            return sorted(
                (item for t in types for item in by_type.get(t, ())), key=lambda item: item[1]
            )

        def in_range(seen: Mapping[str, _Seen]) -> list[_Seen]:
            return [s for s in seen.values() if since <= s.first < until]

        payments = [s for s in in_range(self._payments(of(PAYMENT_EVENTS))) if s.amount]
        failed = in_range(_once(of(FAILURE_EVENTS), lambda e: failed_attempt(e)[0]))
        refunds = in_range(
            _once(
                [item for item in of(REFUND_EVENTS) if tells_refund(item[0])],
                lambda e: refund(e)[0],
                amount=lambda e: condition_context(e)["refund_amount"],
            )
        )
        disputes = in_range(_once(of([DISPUTE_EVENT]), lambda e: the_object(e)[0]))
        created = in_range(_once(of([SUBSCRIPTION_CREATED]), lambda e: the_object(e)[0]))
        deleted = in_range(_once(of([SUBSCRIPTION_DELETED]), lambda e: the_object(e)[0]))
        open_rows, recovered_rows, ended = self._dunning.tallies(since, until, livemode=livemode)
        return DigestFigures(
            payments=_tally(payments),
            failed=_tally(failed),
            refunds=_tally(refunds),
            disputes=_tally(disputes),
            new_subscriptions=len(created),
            cancelled_subscriptions=len(deleted),
            dunning_open=_rows_tally(open_rows),
            recovered=_rows_tally(recovered_rows),
            dunning_ended=ended,
        )

    def _events(
        self, since: datetime, until: datetime, livemode: bool
    ) -> Iterator[tuple[StripeEvent, datetime]]:
        when = func.coalesce(events.c.stripe_created_at, events.c.received_at)
        query = select(events.c.payload, when.label("at")).where(
            events.c.type.in_(_TYPES),
            events.c.livemode == livemode,
            events.c.status != "unsupported",
            when >= since,
            when < until,
            # An event is received after Stripe made it (give or take the clocks): a bound
            # the index on received_at can take, so that a day reads a day's rows.
            events.c.received_at >= since - _CLOCK_SKEW,
        )
        with self._db.read() as connection:
            for payload, at in connection.execute(query.execution_options(yield_per=500)):
                yield parse_event(str(payload).encode()), at

    def _payments(self, items: list[tuple[StripeEvent, datetime]]) -> dict[str, _Seen]:
        """Each payment of ``items`` (in time order) once, by the root of its identifiers."""
        aliases = [payment_aliases(event) for event, _ in items]
        canonical = self._canonicals({alias for names in aliases for alias in names})
        parent: dict[str, str] = {}

        def root(name: str) -> str:
            while parent.get(name, name) != name:
                name = parent[name]
            return name

        def join(a: str, b: str) -> None:
            first, second = root(a), root(b)
            if first != second:
                parent[second] = first

        for names in aliases:
            for name in names:
                join(names[0], name)
                if name in canonical:
                    join(name, canonical[name])
        seen: dict[str, _Seen] = {}
        for (event, when), names in zip(items, aliases, strict=True):
            obj = read_object(event.object)
            if obj.kind == "checkout.session" and event.object.get("payment_status") == "unpaid":
                continue  # paid later, if at all: its payment intent tells it then
            key = root(names[0])
            entry = seen.setdefault(key, _Seen(first=when))
            if not entry.amount and isinstance(obj.amount, int) and obj.amount > 0:
                entry.amount, entry.currency = obj.amount, obj.currency or "usd"
        return seen

    def _canonicals(self, aliases: set[str]) -> dict[str, str]:
        """The identifier each of ``aliases`` (a payment's) is linked to, when linked."""
        wanted = sorted(f"payment:{alias}" for alias in aliases)
        found: dict[str, str] = {}
        with self._db.read() as connection:
            for start in range(0, len(wanted), _ALIAS_BATCH):
                batch = wanted[start : start + _ALIAS_BATCH]
                query = select(subject_aliases.c.alias, subject_aliases.c.canonical).where(
                    subject_aliases.c.alias.in_(batch)
                )
                for alias, canonical in connection.execute(query):
                    found[alias.removeprefix("payment:")] = canonical
        return found


def _once(
    items: list[tuple[StripeEvent, datetime]],
    key: Any,
    *,
    amount: Any = None,
) -> dict[str, _Seen]:
    """Each thing of ``items`` (in time order) once, by ``key(event)``, first seen when its
    first event was created; its amount is ``amount(event)`` (the object's by default)."""
    seen: dict[str, _Seen] = {}
    for event, when in items:
        name = key(event)
        if name in seen:
            continue
        obj = read_object(event.object)
        value = amount(event) if amount is not None else obj.amount
        seen[name] = _Seen(
            first=when,
            currency=obj.currency or "usd",
            amount=value if isinstance(value, int) and not isinstance(value, bool) else 0,
        )
    return seen


def _tally(seen: Iterable[_Seen]) -> Tally:
    return Tally.of((s.currency, s.amount or 0) for s in seen)


def _rows_tally(rows: Iterable[Any]) -> Tally:
    counts = {str(currency): int(count) for currency, count, _ in rows}
    return Tally(counts, {str(c): int(total or 0) for c, _, total in rows})
