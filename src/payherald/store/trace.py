"""An event's trace (``Store.history.trace``): everything known of one event, as one
time-ordered story of steps. Its arrival (verified and stored before it was answered), the
payment it was linked to, the rules that matched, each notification's attempts and
outcomes (with what a retried one came to before), Twilio's delivery reports, the replies
from the numbers it texted, the questions it asked, its invoice's dunning sequence and how
it ended, and the payment credited to a message.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, or_, select

from payherald.store.database import Database
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
from payherald.store.shapes import (
    EVENT_COLUMNS,
    NOTIFICATION_FULL,
    brief_keys,
    earlier_outcomes,
    event_json,
    iso,
    jsonable,
    jsonable_value,
    notification_json,
)

__all__ = ["read_trace"]

# How many replies from a notification's number the trace shows.
_REPLIES = 20


def read_trace(db: Database, event_id: str, *, locale: str = "en_US") -> dict[str, Any] | None:
    """Everything known of ``event_id``: the event (with its raw payload), each
    notification with its delivery reports, the questions it asked, the replies from
    the numbers it texted, its invoice's dunning sequence, and ``steps``: all of it as
    one time-ordered story. None if the event is not stored."""
    with db.read() as connection:
        row = (
            connection.execute(
                select(
                    *EVENT_COLUMNS,
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
                select(*NOTIFICATION_FULL)
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
        sequence = _sequence(connection, event, sent)
        linked = _linked(connection, event["subject"])
        credited = (
            connection.execute(select(attributions).where(attributions.c.event_id == event_id))
            .mappings()
            .first()
        )
    payload = json.loads(event.pop("payload"))
    summary = event_json(
        event,
        [{k: n[k] for k in brief_keys()} for n in sent],
        locale,
    )
    deliveries: dict[int, list[dict[str, Any]]] = {}
    for report in reports:
        deliveries.setdefault(report["notification_id"], []).append(
            {
                "status": report["status"],
                "error_code": report["error_code"],
                "received_at": iso(report["received_at"]),
            }
        )
    return {
        **summary,
        "api_version": event["api_version"],
        "stripe_created_at": iso(event["stripe_created_at"]),
        "error": event["error"],
        "linked": linked,
        "notifications": [notification_json(n, deliveries.get(n["id"], [])) for n in sent],
        "questions": [jsonable(q) for q in asked],
        "replies": [
            {
                k: jsonable_value(r[k])
                for k in ("provider_id", "sender", "body", "action", "received_at")
            }
            for r in replies
        ],
        "opted_out": [jsonable(r) for r in opted_out.values()],
        "dunning": jsonable(sequence) if sequence else None,
        "credited": jsonable(dict(credited)) if credited else None,
        "steps": _steps(
            event, sent, reports, asked, replies, sequence, opted_out, linked, credited
        ),
        "payload": payload,
    }


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
    found["steps"] = [jsonable(dict(step)) for step in steps]
    return found


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
        for before in earlier_outcomes(n):
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
