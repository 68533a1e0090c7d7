"""What the dashboard and the JSON API read (``Store.history``): events with their
notifications' statuses, page by page; an event's full trace; today's figures and the last
30 days' chart; the notifications, failed ones first in mind.

Every list is a page on an index, newest first, cut by a cursor (``before``) rather than
an offset, so the thousandth page costs what the first does. Events are filtered on the
columns ``payherald.event_facts`` fills in when an event is stored (kind, customer, email).
The shapes returned are plain JSON-ready dicts (times as ISO 8601 strings): the API returns
them as they are, and the pages render them.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, case, func, literal, or_, select, tuple_

from payherald.clock import Clock
from payherald.event_facts import KINDS
from payherald.money import format_money
from payherald.store.database import Database
from payherald.store.digest import Digests, Tally
from payherald.store.schema import (
    attributions,
    delivery_reports,
    dunning,
    events,
    inbound_messages,
    notifications,
    questions,
    subject_aliases,
    suppressions,
)
from payherald.store.statuses import NotificationStatus

__all__ = ["CHART_DAYS", "History", "TextFilter", "decode_cursor", "text_filter"]

CHART_DAYS = 30
MAX_TEXT = 100
_PHONE_DIGITS = re.compile(r"\+?\d{2,15}")
# How many replies from a notification's number the trace shows.
_REPLIES = 20
_EVENT_COLUMNS = (
    events.c.id,
    events.c.type,
    events.c.kind,
    events.c.livemode,
    events.c.status,
    events.c.error,
    events.c.received_at,
    events.c.amount,
    events.c.currency,
    events.c.customer,
    events.c.email,
    events.c.customer_name,
)
_NOTIFICATION_BRIEF = (
    notifications.c.id,
    notifications.c.event_id,
    notifications.c.rule,
    notifications.c.channel,
    notifications.c.to,
    notifications.c.status,
    notifications.c.delivery_status,
    notifications.c.error_code,
)
_NOTIFICATION_FULL = (
    *_NOTIFICATION_BRIEF,
    notifications.c.recipient,
    notifications.c.livemode,
    notifications.c.body,
    notifications.c.provider_id,
    notifications.c.error,
    notifications.c.attempts,
    notifications.c.created_at,
    notifications.c.updated_at,
    notifications.c.attempt_started_at,
    notifications.c.sent_at,
    notifications.c.run_at,
    notifications.c.notes,
    notifications.c.refusals,
    notifications.c.sequence,
    notifications.c.subject,
    notifications.c.earlier,
)
_BAD_CURSOR = "The cursor is not one this API gave; use the `next` it returned."
# A failed notification that may have reached its recipient is never sent again.
_MAY_HAVE_BEEN_SENT = "outcome_unknown"


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

    def __init__(self, *, db: Database, clock: Clock, digest: Digests) -> None:
        self._db = db
        self._clock = clock
        self._digest = digest

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
        query = select(*_EVENT_COLUMNS)
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

    def events_received(
        self,
        *,
        since: datetime,
        livemode: bool | None = None,
        limit: int = 200,
        locale: str = "en_US",
    ) -> list[dict[str, Any]]:
        """The events received from ``since`` on, oldest first (the live feed's news)."""
        query = select(*_EVENT_COLUMNS).where(events.c.received_at >= since)
        if livemode is not None:
            query = query.where(events.c.livemode == livemode)
        query = query.order_by(events.c.received_at, events.c.id).limit(limit)
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
            return self._summaries(connection, rows, locale)

    def events_changed(
        self,
        *,
        since: datetime,
        livemode: bool | None = None,
        limit: int = 200,
        locale: str = "en_US",
    ) -> list[dict[str, Any]]:
        """The events whose notifications changed from ``since`` on (a send, a failure, a
        delivery report), as ``events`` gives them."""
        changed = (
            select(notifications.c.event_id)
            .where(notifications.c.updated_at >= since)
            .order_by(notifications.c.updated_at)
            .limit(limit)
        )
        query = select(*_EVENT_COLUMNS).where(events.c.id.in_(changed))
        if livemode is not None:
            query = query.where(events.c.livemode == livemode)
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
            return self._summaries(connection, rows, locale)

    def event(self, event_id: str, *, locale: str = "en_US") -> dict[str, Any] | None:
        """One event as ``events`` gives it, or None."""
        with self._db.read() as connection:
            row = (
                connection.execute(select(*_EVENT_COLUMNS).where(events.c.id == event_id))
                .mappings()
                .first()
            )
            if row is None:
                return None
            return self._summaries(connection, [dict(row)], locale)[0]

    def _summaries(
        self, connection: Connection, rows: Sequence[dict[str, Any]], locale: str
    ) -> list[dict[str, Any]]:
        by_event: dict[str, list[dict[str, Any]]] = {row["id"]: [] for row in rows}
        if by_event:
            found = connection.execute(
                select(*_NOTIFICATION_BRIEF)
                .where(notifications.c.event_id.in_(list(by_event)))
                .order_by(notifications.c.id)
            ).mappings()
            for notification in found:
                by_event[notification["event_id"]].append(
                    {k: v for k, v in notification.items() if k != "event_id"}
                )
        return [_event_json(row, by_event[row["id"]], locale) for row in rows]

    # -- one event's trace ----------------------------------------------------------------

    def trace(self, event_id: str, *, locale: str = "en_US") -> dict[str, Any] | None:
        """Everything known of ``event_id``: the event (with its raw payload), each
        notification with its delivery reports, the questions it asked, the replies from
        the numbers it texted, its invoice's dunning sequence, and ``steps``: all of it as
        one time-ordered story. None if the event is not stored."""
        with self._db.read() as connection:
            row = (
                connection.execute(
                    select(
                        *_EVENT_COLUMNS,
                        events.c.api_version,
                        events.c.stripe_created_at,
                        events.c.payload,
                        events.c.subject,
                    ).where(events.c.id == event_id)
                )
                .mappings()
                .first()
            )
            if row is None:
                return None
            event = dict(row)
            sent = [
                dict(n)
                for n in connection.execute(
                    select(*_NOTIFICATION_FULL)
                    .where(notifications.c.event_id == event_id)
                    .order_by(notifications.c.id)
                ).mappings()
            ]
            ids = [n["id"] for n in sent]
            reports = (
                connection.execute(
                    select(delivery_reports)
                    .where(delivery_reports.c.notification_id.in_(ids))
                    .order_by(delivery_reports.c.received_at)
                )
                .mappings()
                .all()
                if ids
                else []
            )
            asked = [
                dict(q)
                for q in connection.execute(
                    select(questions).where(questions.c.event_id == event_id)
                ).mappings()
            ]
            numbers = sorted({n["to"] for n in sent if n["to"] and n["channel"] != "email"})
            replies = (
                [
                    dict(r)
                    for r in connection.execute(
                        select(inbound_messages)
                        .where(
                            inbound_messages.c.sender.in_(numbers),
                            inbound_messages.c.received_at >= event["received_at"],
                        )
                        .order_by(inbound_messages.c.received_at)
                        .limit(_REPLIES)
                    ).mappings()
                ]
                if numbers
                else []
            )
            opted_out = (
                {
                    address: dict(r)
                    for address, r in (
                        (r["address"], r)
                        for r in connection.execute(
                            select(suppressions).where(suppressions.c.address.in_(numbers))
                        ).mappings()
                    )
                }
                if numbers
                else {}
            )
            sequence = self._sequence(connection, event, sent)
            linked = self._linked(connection, event["subject"])
            credited = (
                connection.execute(select(attributions).where(attributions.c.event_id == event_id))
                .mappings()
                .first()
            )
        payload = json.loads(event.pop("payload"))
        summary = _event_json(
            event,
            [{k: n[k] for k in _brief_keys()} for n in sent],
            locale,
        )
        deliveries: dict[int, list[dict[str, Any]]] = {}
        for report in reports:
            deliveries.setdefault(report["notification_id"], []).append(
                {
                    "status": report["status"],
                    "error_code": report["error_code"],
                    "received_at": _iso(report["received_at"]),
                }
            )
        return {
            **summary,
            "api_version": event["api_version"],
            "stripe_created_at": _iso(event["stripe_created_at"]),
            "error": event["error"],
            "linked": linked,
            "notifications": [_notification_json(n, deliveries.get(n["id"], [])) for n in sent],
            "questions": [_jsonable(q) for q in asked],
            "replies": [
                {
                    k: _jsonable_value(r[k])
                    for k in ("provider_id", "sender", "body", "action", "received_at")
                }
                for r in replies
            ],
            "opted_out": [_jsonable(r) for r in opted_out.values()],
            "dunning": _jsonable(sequence) if sequence else None,
            "credited": _jsonable(dict(credited)) if credited else None,
            "steps": _steps(
                event, sent, reports, asked, replies, sequence, opted_out, linked, credited
            ),
            "payload": payload,
        }

    @staticmethod
    def _sequence(
        connection: Connection, event: Mapping[str, Any], sent: Sequence[Mapping[str, Any]]
    ) -> dict[str, Any] | None:
        """The dunning sequence the event's invoice has, or its notifications are steps of."""
        keys = {n["sequence"].removeprefix("dunning:") for n in sent if n["sequence"]}
        query = select(dunning).where(
            or_(dunning.c.event_id == event["id"], dunning.c.invoice_id.in_(keys))
        )
        row = connection.execute(query.limit(1)).mappings().first()
        if row is None:
            return None
        found = dict(row)
        steps = connection.execute(
            select(
                notifications.c.id,
                notifications.c.rule,
                notifications.c.status,
                notifications.c.run_at,
                notifications.c.sent_at,
                notifications.c.error,
            )
            .where(notifications.c.sequence == f"dunning:{found['invoice_id']}")
            .order_by(notifications.c.run_at, notifications.c.id)
        ).mappings()
        found["steps"] = [_jsonable(dict(step)) for step in steps]
        return found

    @staticmethod
    def _linked(connection: Connection, subject: str | None) -> list[str]:
        """The identifiers linked with the payment ``subject`` names."""
        if not subject or not subject.startswith("payment:"):
            return []
        canonical = (
            select(subject_aliases.c.canonical)
            .where(subject_aliases.c.alias == subject)
            .scalar_subquery()
        )
        aliases = connection.execute(
            select(subject_aliases.c.alias)
            .where(subject_aliases.c.canonical == canonical)
            .order_by(subject_aliases.c.alias)
        ).scalars()
        return [alias.removeprefix("payment:") for alias in aliases]

    # -- notifications ------------------------------------------------------------------

    def notifications(
        self, *, status: str | None = None, before: int | None = None, limit: int = 50
    ) -> tuple[list[dict[str, Any]], int | None]:
        """A page of notifications, newest first; and the id to ask ``before`` for the
        next page (None on the last)."""
        query = select(*_NOTIFICATION_FULL)
        if status is not None:
            query = query.where(notifications.c.status == status)
        if before is not None:
            query = query.where(notifications.c.id < before)
        query = query.order_by(notifications.c.id.desc()).limit(limit + 1)
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
        more = len(rows) > limit
        rows = rows[:limit]
        return [_notification_json(row) for row in rows], (rows[-1]["id"] if more else None)

    def notification(self, notification_id: int) -> dict[str, Any] | None:
        with self._db.read() as connection:
            row = (
                connection.execute(
                    select(*_NOTIFICATION_FULL).where(notifications.c.id == notification_id)
                )
                .mappings()
                .first()
            )
        return _notification_json(dict(row)) if row is not None else None

    # -- figures --------------------------------------------------------------------------

    def stats(self, *, livemode: bool, timezone: str, locale: str = "en_US") -> dict[str, Any]:
        """Today's figures (the operator's day, in ``timezone``) and the chart of the last
        ``CHART_DAYS`` days: payments that succeeded and failed, each payment once."""
        zone = ZoneInfo(timezone)
        now = self._clock.now()
        today = now.astimezone(zone).date()
        midnight = _midnight(today, zone)
        figures = self._digest.figures(since=midnight, until=now, livemode=livemode)
        mode = notifications.c.livemode == livemode
        with self._db.read() as connection:
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
            "succeeded": _tally_json(figures.payments, locale),
            "failed": figures.failed.count,
            "disputes": figures.disputes.count,
            "refunds": _tally_json(figures.refunds, locale),
            "messages_sent": int(sent),
            "messages_failed": int(failed[0]),
            "misses": int(failed[1] or 0),
            "chart": chart,
        }

    def _chart(
        self, connection: Connection, today: date, zone: ZoneInfo, livemode: bool
    ) -> list[dict[str, Any]]:
        days = [today - timedelta(days=n) for n in range(CHART_DAYS - 1, -1, -1)]
        starts = [_midnight(day, zone) for day in days]
        # The day an event falls on, by the operator's midnights (exact across a change of
        # summer time, which a fixed offset is not).
        bucket = case(
            *(
                (events.c.received_at < start, index - 1)
                for index, start in enumerate(starts[1:], 1)
            ),
            else_=len(starts) - 1,
        )
        # A payment reported by several events counts once: by what it is linked to.
        thing = func.coalesce(literal("payment:") + subject_aliases.c.canonical, events.c.subject)
        query = (
            select(bucket.label("day"), events.c.kind, func.count(thing.distinct()))
            .select_from(
                events.outerjoin(subject_aliases, subject_aliases.c.alias == events.c.subject)
            )
            .where(
                events.c.livemode == livemode,
                events.c.kind.in_(("succeeded", "failed")),
                events.c.received_at >= starts[0],
            )
            .group_by(bucket, events.c.kind)
        )
        counts = {(int(day), kind): int(n) for day, kind, n in connection.execute(query)}
        return [
            {
                "day": day.isoformat(),
                "succeeded": counts.get((index, "succeeded"), 0),
                "failed": counts.get((index, "failed"), 0),
            }
            for index, day in enumerate(days)
        ]


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


def _earlier(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The outcomes a notification had before it was queued again, oldest first."""
    found = json.loads(row["earlier"]) if row.get("earlier") else []
    return [entry for entry in found if isinstance(entry, dict)]


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), tzinfo=zone).astimezone(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _jsonable_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {key: _jsonable_value(value) for key, value in row.items()}


def _brief_keys() -> list[str]:
    return [column.key for column in _NOTIFICATION_BRIEF if column.key != "event_id"]


def _amount_text(amount: int | None, currency: str | None, locale: str) -> str | None:
    if amount is None or not currency:
        return None
    try:
        return format_money(amount, currency, locale)
    except ValueError:  # a currency babel does not know
        return f"{amount} {currency.upper()}"


def _event_json(row: Mapping[str, Any], told: list[dict[str, Any]], locale: str) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "kind": row["kind"] if row["kind"] in KINDS else "other",
        "livemode": bool(row["livemode"]),
        "status": row["status"],
        "received_at": _iso(row["received_at"]),
        "amount": row["amount"],
        "currency": row["currency"],
        "amount_text": _amount_text(row["amount"], row["currency"], locale),
        "customer": row["customer"],
        "email": row["email"],
        "customer_name": row["customer_name"],
        "notifications": told,
    }


def _notification_json(
    row: Mapping[str, Any], deliveries: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    found = {
        key: _jsonable_value(row[key])
        for key in (
            "id",
            "event_id",
            "rule",
            "recipient",
            "channel",
            "livemode",
            "to",
            "body",
            "status",
            "provider_id",
            "error",
            "error_code",
            "attempts",
            "created_at",
            "updated_at",
            "sent_at",
            "run_at",
            "delivery_status",
            "notes",
            "sequence",
        )
    }
    found["earlier"] = _earlier(row)
    found["retryable"] = (
        row["status"] == NotificationStatus.FAILED and row["error_code"] != _MAY_HAVE_BEEN_SENT
    )
    if deliveries is not None:
        found["deliveries"] = deliveries
    return found


def _tally_json(tally: Tally, locale: str) -> list[dict[str, Any]]:
    return [
        {
            "currency": currency,
            "count": tally.counts[currency],
            "amount": tally.amounts.get(currency, 0),
            "amount_text": _amount_text(tally.amounts.get(currency, 0), currency, locale),
        }
        for currency in sorted(tally.counts)
    ]


def _steps(
    event: Mapping[str, Any],
    sent: Sequence[Mapping[str, Any]],
    reports: Iterable[Mapping[Any, Any]],
    asked: Sequence[Mapping[str, Any]],
    replies: Sequence[Mapping[str, Any]],
    sequence: Mapping[str, Any] | None,
    opted_out: Mapping[str, Mapping[str, Any]],
    linked: Sequence[str],
    credited: Mapping[Any, Any] | None,
) -> list[dict[str, Any]]:
    """The trace as one story, oldest first: each step is ``at``, ``what`` and ``detail``."""
    steps: list[tuple[datetime, int, str, str]] = []

    def add(at: datetime | None, what: str, detail: str = "") -> None:
        if at is not None:
            steps.append((at, len(steps), what, detail))

    received = event["received_at"]
    add(
        received,
        "received",
        "Stripe's signature verified and the event stored before it was answered; a "
        "repeat of this event id is acknowledged and changes nothing.",
    )
    if linked:
        add(received, "linked", "The same payment as " + ", ".join(linked) + ".")
    status = event["status"]
    if status == "ignored":
        add(received, "no rule", "No rule sends anything for this event.")
    elif status == "failed":
        add(received, "planning failed", str(event["error"] or ""))
    elif status == "unsupported":
        add(received, "not read", str(event["error"] or "An API version payherald does not read."))
    for n in sent:
        add(
            n["created_at"],
            "rule matched",
            f"{n['rule']}: notification {n['id']} queued for the {n['recipient']}.",
        )
        for before in _earlier(n):
            code = f" [{before['error_code']}]" if before.get("error_code") else ""
            add(
                datetime.fromisoformat(before["failed_at"]),
                "failed",
                f"Notification {n['id']}{code} by {before.get('channel')}: "
                f"{before.get('error') or ''}",
            )
            how = "retried by an operator" if before.get("by") == "retry" else "replayed"
            add(
                datetime.fromisoformat(before["queued_again_at"]),
                "queued again",
                f"Notification {n['id']} {how}: sent again from the rule's first channel.",
            )
        if n["notes"]:
            add(n["attempt_started_at"] or n["updated_at"], "channel", str(n["notes"]))
        if n["attempt_started_at"] is not None:
            add(
                n["attempt_started_at"],
                "sending",
                f"Notification {n['id']}, attempt {n['attempts']}.",
            )
        if n["status"] == "sent":
            add(
                n["sent_at"] or n["updated_at"],
                "sent",
                f"Notification {n['id']} handed to {n['channel']}"
                + (f" for {n['to']}" if n["to"] else "")
                + (f" ({n['provider_id']})." if n["provider_id"] else "."),
            )
        elif n["status"] in ("failed", "skipped"):
            code = f" [{n['error_code']}]" if n["error_code"] else ""
            add(
                n["updated_at"],
                str(n["status"]),
                f"Notification {n['id']}{code}: {n['error'] or ''}",
            )
        elif n["status"] == "unknown":
            add(n["updated_at"], "outcome unknown", f"Notification {n['id']}: being reconciled.")
        elif n["status"] == "pending" and n["run_at"] > received:
            add(
                n["updated_at"],
                "waiting",
                f"Notification {n['id']} is due {n['run_at'].isoformat()}.",
            )
    for report in reports:
        code = f" (error {report['error_code']})" if report["error_code"] else ""
        add(
            report["received_at"],
            "delivery",
            f"Notification {report['notification_id']}: {report['status']}{code}.",
        )
    for question in asked:
        add(question["asked_at"], "question", f"Asked {question['phone']}; {question['status']}.")
        if question["answered_at"] is not None:
            add(question["answered_at"], "answer", str(question["outcome"] or question["status"]))
    for reply in replies:
        action = f" ({reply['action']})" if reply["action"] else ""
        add(reply["received_at"], "reply", f"From {reply['sender']}: {reply['body']!r}{action}.")
    for address, row in opted_out.items():
        add(row["created_at"], "opted out", f"{address}: {row['reason']}.")
    if sequence is not None:
        add(sequence["started_at"], "dunning", f"Sequence for {sequence['invoice_id']} started.")
        if sequence["ended_at"] is not None:
            add(
                sequence["ended_at"],
                "invoice outcome",
                f"{sequence['status']}: {sequence['end_reason'] or ''}".strip(),
            )
    if credited is not None:
        add(
            credited["created_at"],
            "credited",
            f"Payment {credited['payment']} credited to {credited['rule']}"
            + (f" by {credited['channel']}." if credited["channel"] else "."),
        )
    steps.sort(key=lambda step: (step[0], step[1]))
    return [{"at": at.isoformat(), "what": what, "detail": detail} for at, _, what, detail in steps]
