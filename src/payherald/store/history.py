"""What the dashboard and the JSON API read (``Store.history``): events with their
notifications' statuses, page by page; an event's full trace (told by ``store.trace``);
today's figures and the last 30 days' chart; the notifications.

Every list is a page on an index, newest first, cut by a cursor (``before``) rather than
an offset, so the thousandth page costs what the first does. Events are filtered on the
columns ``payherald.event_facts`` fills in when an event is stored (kind, customer, email).
The shapes returned are ``store.shapes``'s plain JSON-ready dicts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, case, func, literal, or_, select, tuple_

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.schema import (
    events,
    notifications,
    subject_aliases,
)
from payherald.store.shapes import (
    EVENT_COLUMNS,
    NOTIFICATION_BRIEF,
    NOTIFICATION_FULL,
    amount_text,
    event_json,
    notification_json,
)
from payherald.store.trace import read_trace

__all__ = [
    "CHART_DAYS",
    "FEED_WINDOW_LIMIT",
    "History",
    "TextFilter",
    "decode_cursor",
    "text_filter",
]

CHART_DAYS = 30
# The most events the live feed reads of one look back (a burst beyond shows its newest).
FEED_WINDOW_LIMIT = 2000
MAX_TEXT = 100
_PHONE_DIGITS = re.compile(r"\+?\d{2,15}")
# How long the chart keeps a past day's counts (a late event, a new link, shows after it).
_PAST_DAYS_KEPT = 600.0
# A thing's events come within minutes: looking back this far tells one first told the day
# before from one of this day.
_LOOKBACK = timedelta(days=1)
_BAD_CURSOR = "The cursor is not one this API gave; use the `next` it returned."


@dataclass(frozen=True, slots=True)
class TextFilter:
    """What a search text names: an event id (prefix), a customer id, an email, or the
    last digits of a phone number; else a customer's email or name (prefix)."""

    field: str  # event | customer | email | phone | name
    value: str


def text_filter(text: str) -> TextFilter:
    """What ``text`` searches for; raises ValueError, saying why, for text too long."""
    text = text.strip()
    if len(text) > MAX_TEXT:
        raise ValueError(f"The search text is longer than {MAX_TEXT} characters.")
    if text.startswith("evt_"):
        return TextFilter("event", text)
    if text.startswith("cus_"):
        return TextFilter("customer", text)
    if "@" in text:
        return TextFilter("email", text.lower())
    if _PHONE_DIGITS.fullmatch(text):
        return TextFilter("phone", text.lstrip("+"))
    return TextFilter("name", text.lower())


def encode_cursor(received_at: datetime, event_id: str) -> str:
    raw = json.dumps([received_at.isoformat(), event_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The (received_at, id) a cursor stands for; raises ValueError for one that
    ``encode_cursor`` did not make."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, event_id = json.loads(raw)
        at = datetime.fromisoformat(when)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise ValueError(_BAD_CURSOR) from None
    if not isinstance(event_id, str) or at.tzinfo is None:
        raise ValueError(_BAD_CURSOR)
    return at, event_id


class History:
    """The dashboard's reads of the store."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock
        # (livemode, time zone, day) -> (when counted, (succeeded, failed)), for the chart
        self._past_days: dict[tuple[bool, str, date], tuple[float, tuple[int, int]]] = {}

    # -- events -------------------------------------------------------------------------

    def events(
        self,
        *,
        livemode: bool | None = None,
        kind: str | None = None,
        type: str | None = None,
        status: str | None = None,
        text: TextFilter | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
        locale: str = "en_US",
    ) -> tuple[list[dict[str, Any]], str | None]:
        """A page of events, newest first, with their notifications; and the cursor of
        the next page (None on the last). ``status`` keeps the events with a notification
        in that status."""
        query = select(*EVENT_COLUMNS)
        if livemode is not None:
            query = query.where(events.c.livemode == livemode)
        if kind is not None:
            query = query.where(events.c.kind == kind)
        if type is not None:
            query = query.where(events.c.type == type)
        if status is not None:
            query = query.where(
                events.c.id.in_(
                    select(notifications.c.event_id).where(notifications.c.status == status)
                )
            )
        if text is not None:
            query = query.where(_matches(text))
        if before is not None:
            query = query.where(
                tuple_(events.c.received_at, events.c.id)
                # Typed as the column: a bare datetime is sent as timestamptz, which
                # PostgreSQL shifts by the session's time zone against this column.
                < tuple_(literal(before[0], events.c.received_at.type), before[1])
            )
        query = query.order_by(events.c.received_at.desc(), events.c.id.desc()).limit(limit + 1)
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
            more = len(rows) > limit
            rows = rows[:limit]
            items = self._summaries(connection, rows, locale)
        last = rows[-1] if rows else None
        cursor = encode_cursor(last["received_at"], last["id"]) if more and last else None
        return items, cursor

    def news(
        self, *, since: datetime, livemode: bool | None = None, limit: int = FEED_WINDOW_LIMIT
    ) -> tuple[list[str], list[str]]:
        """What the live feed looks at: the ids of the events received from ``since`` on
        (oldest first), and of those whose notifications changed from ``since`` on (a
        send, a failure, a delivery report); at most ``limit`` of each, the newest."""
        received = (
            select(events.c.id, events.c.received_at)
            .where(events.c.received_at >= since)
            .order_by(events.c.received_at.desc(), events.c.id.desc())
            .limit(limit)
        )
        changed = (
            select(notifications.c.event_id)
            .where(notifications.c.updated_at >= since)
            .order_by(notifications.c.updated_at.desc())
            .limit(limit)
        )
        if livemode is not None:
            received = received.where(events.c.livemode == livemode)
            changed = changed.where(notifications.c.livemode == livemode)
        with self._db.read() as connection:
            new = [row.id for row in connection.execute(received)]
            moved = list(dict.fromkeys(connection.execute(changed).scalars()))
        return new[::-1], moved

    def events_by_id(self, ids: Sequence[str], *, locale: str = "en_US") -> list[dict[str, Any]]:
        """The events ``ids`` (those stored), as ``events`` gives them, in that order."""
        if not ids:
            return []
        with self._db.read() as connection:
            rows = {
                row["id"]: dict(row)
                for row in connection.execute(
                    select(*EVENT_COLUMNS).where(events.c.id.in_(list(ids)))
                ).mappings()
            }
            found = [rows[event_id] for event_id in ids if event_id in rows]
            return self._summaries(connection, found, locale)

    def event(self, event_id: str, *, locale: str = "en_US") -> dict[str, Any] | None:
        """One event as ``events`` gives it, or None."""
        found = self.events_by_id([event_id], locale=locale)
        return found[0] if found else None

    def _summaries(
        self, connection: Connection, rows: Sequence[dict[str, Any]], locale: str
    ) -> list[dict[str, Any]]:
        by_event: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        if by_event:
            found = connection.execute(
                select(*NOTIFICATION_BRIEF)
                .where(notifications.c.event_id.in_(list(by_event)))
                .order_by(notifications.c.id)
            ).mappings()
            for notification in found:
                by_event[notification["event_id"]].append(
                    {k: v for k, v in notification.items() if k != "event_id"}
                )
        return [event_json(row, by_event[row["id"]], locale) for row in rows]

    # -- one event's trace ----------------------------------------------------------------

    def trace(self, event_id: str, *, locale: str = "en_US") -> dict[str, Any] | None:
        """Everything known of ``event_id``, as ``store.trace`` tells it; None if the
        event is not stored."""
        return read_trace(self._db, event_id, locale=locale)

    # -- notifications ------------------------------------------------------------------

    def notifications(
        self, *, status: str | None = None, before: int | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of notifications, newest first; and the id to ask ``before`` for the
        next page (None on the last)."""
        query = select(*NOTIFICATION_FULL)
        if status is not None:
            query = query.where(notifications.c.status == status)
        if before is not None:
            query = query.where(notifications.c.id < before)
        query = query.order_by(notifications.c.id.desc()).limit(limit + 1)
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        return [notification_json(row) for row in rows], (rows[-1]["id"] if more else None)

    def notification(self, notification_id: int) -> dict[str, Any] | None:
        with self._db.read() as connection:
            row = (
                connection.execute(
                    select(*NOTIFICATION_FULL).where(notifications.c.id == notification_id)
                )
                .mappings()
                .first()
            )
        return notification_json(dict(row)) if row is not None else None

    # -- figures --------------------------------------------------------------------------

    def stats(self, *, livemode: bool, timezone: str, locale: str = "en_US") -> dict[str, Any]:
        """Today's figures (the operator's day, in ``timezone``, by when payherald received
        the events) and the chart of the last ``CHART_DAYS`` days: payments that succeeded
        and failed, refunds and disputes, each once however many events told it."""
        zone = ZoneInfo(timezone)
        now = self._clock.now()
        today = now.astimezone(zone).date()
        midnight = _midnight(today, zone)
        mode = notifications.c.livemode == livemode
        with self._db.read() as connection:
            told = self._told_today(connection, midnight, livemode)
            sent = connection.execute(
                select(func.count()).where(
                    mode, notifications.c.status == "sent", notifications.c.sent_at >= midnight
                )
            ).scalar_one()
            failed = connection.execute(
                select(
                    func.count(),
                    func.sum(
                        case(
                            (
                                or_(
                                    notifications.c.error_code == "no_recipient",
                                    notifications.c.refusals.is_not(None),
                                ),
                                1,
                            ),
                            else_=0,
                        )
                    ),
                ).where(
                    mode,
                    notifications.c.status == "failed",
                    notifications.c.updated_at >= midnight,
                )
            ).one()
            chart = self._chart(connection, today, zone, livemode)
        return {
            "mode": "live" if livemode else "test",
            "timezone": timezone,
            "day": today.isoformat(),
            "succeeded": _amounts_json(told.get("succeeded", {}), locale),
            "failed": sum(count for count, _ in told.get("failed", {}).values()),
            "disputes": sum(count for count, _ in told.get("dispute", {}).values()),
            "refunds": _amounts_json(told.get("refund", {}), locale),
            "messages_sent": int(sent),
            "messages_failed": int(failed[0]),
            "misses": int(failed[1] or 0),
            "chart": chart,
        }

    @staticmethod
    def _told_today(
        connection: Connection, since: datetime, livemode: bool
    ) -> dict[str, dict[str, tuple[int, int]]]:
        """Each kind's payments, failures, refunds and disputes first told from ``since``
        on, each once: their count and amount, by kind and currency."""
        each = _things(since, livemode)
        query = (
            select(each.c.kind, each.c.currency, func.count(), func.sum(each.c.amount))
            .where(each.c.first >= since)
            .group_by(each.c.kind, each.c.currency)
        )
        found: dict[str, dict[str, tuple[int, int]]] = {}
        for kind, currency, count, amount in connection.execute(query):
            found.setdefault(kind, {})[currency] = (int(count), int(amount or 0))
        return found

    def _chart(
        self, connection: Connection, today: date, zone: ZoneInfo, livemode: bool
    ) -> list[dict[str, Any]]:
        days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
        # A past day's counts hardly change: kept for a while, so that a page counts today
        # alone (the first of the process counts them all).
        fresh = monotonic() - _PAST_DAYS_KEPT
        known: dict[date, tuple[int, int]] = {}
        for day in days[:-1]:
            found = self._past_days.get((livemode, zone.key, day))
            if found is not None and found[0] > fresh:
                known[day] = found[1]
        missing = [day for day in days if day not in known]
        since = _midnight(missing[0], zone)
        each = _things(since, livemode)
        # The day a thing was first told, by the operator's midnights (exact across a
        # change of summer time, which a fixed offset is not); a known day's, None.
        bounds = [_midnight(day, zone) for day in days[1:]]
        bucket = case(
            *(
                (each.c.first < bound, index if day in missing else None)
                for index, (day, bound) in enumerate(zip(days, bounds, strict=False))
            ),
            else_=len(days) - 1,
        )
        query = (
            select(bucket.label("day"), each.c.kind, func.count())
            .where(
                each.c.kind.in_(("succeeded", "failed")),
                each.c.first >= since,
                bucket.is_not(None),
            )
            .group_by(bucket, each.c.kind)
        )
        counted = {(int(index), kind): int(n) for index, kind, n in connection.execute(query)}
        now = monotonic()
        chart = []
        for index, day in enumerate(days):
            counts = known.get(day) or (
                counted.get((index, "succeeded"), 0),
                counted.get((index, "failed"), 0),
            )
            if day != today and day not in known:
                self._past_days[(livemode, zone.key, day)] = (now, counts)
            chart.append({"day": day.isoformat(), "succeeded": counts[0], "failed": counts[1]})
        return chart


def _things(since: datetime, livemode: bool) -> Any:
    """Each payment, failed attempt, refund and dispute of ``livemode`` told from a day
    before ``since`` on, once: its kind, when it was first told (``first``), its amount and
    currency. A thing first told the day before is then told to be so, however many of its
    events came later; a payment of nothing (a free trial's checkout) is none."""
    thing = _thing()
    grouped = (
        select(
            events.c.kind,
            thing.label("thing"),
            func.min(events.c.received_at).label("first"),
            func.coalesce(func.max(events.c.amount), 0).label("amount"),
            func.coalesce(func.max(events.c.currency), "usd").label("currency"),
        )
        .select_from(events.outerjoin(subject_aliases, subject_aliases.c.alias == events.c.subject))
        .where(
            events.c.livemode == livemode,
            events.c.received_at >= since - _LOOKBACK,
            events.c.subject.is_not(None),
        )
        .group_by(events.c.kind, thing)
        .subquery()
    )
    return (
        select(grouped).where(or_(grouped.c.kind != "succeeded", grouped.c.amount > 0)).subquery()
    )


def _thing() -> Any:
    """What an event tells, counted once: a payment reported by several events by what its
    identifiers are linked to (``subject_aliases``, outer-joined on ``events.subject``),
    anything else by its subject."""
    return func.coalesce(literal("payment:") + subject_aliases.c.canonical, events.c.subject)


def _matches(text: TextFilter) -> Any:
    if text.field == "event":
        return and_(events.c.id >= text.value, events.c.id < text.value + "\U0010ffff")
    if text.field == "customer":
        return events.c.customer == text.value
    if text.field == "email":
        return events.c.email == text.value
    if text.field == "phone":
        pattern = "%" + text.value
        return events.c.id.in_(
            select(notifications.c.event_id).where(notifications.c.to.like(pattern))
        )
    prefix = text.value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    return or_(
        events.c.email.like(prefix, escape="\\"),
        func.lower(events.c.customer_name).like(prefix, escape="\\"),
    )


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _amounts_json(by_currency: Mapping[str, tuple[int, int]], locale: str) -> list[dict[str, Any]]:
    return [
        {
            "currency": currency,
            "count": count,
            "amount": amount,
            "amount_text": amount_text(amount, currency, locale),
        }
        for currency, (count, amount) in sorted(by_currency.items())
    ]
