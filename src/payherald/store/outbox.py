"""What is queued: each planned notification's row with its job, written in the
transaction that records its event (a transactional outbox), and the failed ones a replay
queues again. What happens to them after is ``payherald.store.queue``."""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from payherald.rules import LINKED_SUBJECTS, PlannedNotification
from payherald.store.database import Database
from payherald.store.jobs import Jobs
from payherald.store.links import Links
from payherald.store.schema import notifications
from payherald.store.statuses import MAY_HAVE_BEEN_SENT
from payherald.store.statuses import NotificationStatus as S

__all__ = ["RECONCILE_JOB", "SEND_JOB", "Outbox", "job_key"]

# The two kinds of job a waiting notification has: to be sent, or reconciled.
SEND_JOB = "notification.send"
RECONCILE_JOB = "notification.reconcile"


def job_key(notification_id: int) -> str:
    """The key of notification ``notification_id``'s job, whichever its kind."""
    return f"notification:{notification_id}"


class Outbox:
    """Notifications and their jobs, queued inside the caller's transaction."""

    def __init__(self, *, db: Database, jobs: Jobs, links: Links) -> None:
        self._db = db
        self._jobs = jobs
        self._links = links

    def add_in(
        self,
        connection: Connection,
        planned: Sequence[tuple[str, Sequence[PlannedNotification]]],
        now: datetime,
        *,
        closed_sequences: Collection[str] = (),
    ) -> list[int]:
        """Queue each event's planned notifications, with their jobs, in ``connection``'s
        transaction; returns how many were new for each event. A notification whose key is
        already queued (by an earlier event, or one before it here) is not queued again,
        nor a step of a sequence of ``closed_sequences``; a step is due ``after`` seconds
        from now. Waking the workers (``pg_notify``) is the caller's, once per
        transaction."""
        flat = [
            (index, item)
            for index, (_, items) in enumerate(planned)
            for item in items
            if item.sequence is None or item.sequence not in closed_sequences
        ]
        canonicals = self._links.link(
            connection, [(item.subject_kind, item.subject) for _, item in flat]
        )
        rows: dict[str, dict[str, Any]] = {}
        owner: dict[str, int] = {}
        for (index, item), canonical in zip(flat, canonicals, strict=True):
            key = item.key(canonical)
            if key in rows:
                continue
            owner[key] = index
            rows[key] = {
                "key": key,
                "event_id": planned[index][0],
                "rule": item.rule,
                "recipient": item.recipient,
                "channel": item.channel,
                "livemode": item.livemode,
                "to": item.to,
                "subject": (
                    f"{item.subject_kind}:{canonical}"
                    if item.subject_kind in LINKED_SUBJECTS
                    else None
                ),
                "sequence": item.sequence,
                "status": S.PENDING.value,
                "attempts": 0,
                "created_at": now,
                "updated_at": now,
                "run_at": now + timedelta(seconds=item.after) if item.after else now,
            }
        queued = [0] * len(planned)
        if rows:
            inserted = connection.execute(
                self._db.insert(notifications)
                .on_conflict_do_nothing(index_elements=["key"])
                .returning(notifications.c.id, notifications.c.key),
                list(rows.values()),
            ).all()
            for _, key in inserted:
                queued[owner[key]] += 1
            self._jobs.enqueue_many_in(
                connection,
                SEND_JOB,
                [_send_job(number, rows[key]["run_at"]) for number, key in inserted],
            )
        return queued

    def requeue_failed_in(
        self,
        connection: Connection,
        event_id: str | None,
        now: datetime,
        *,
        notification_id: int | None = None,
        by: str = "replay",
    ) -> int:
        """Queue the failed notifications of ``event_id`` (or the one ``notification_id``)
        again from the first channel (not those whose outcome could not be found out: they
        may have been sent), in ``connection``'s transaction; returns how many. The outcome
        each had is kept in its ``earlier`` attempts, with when and ``by`` what it was
        queued again (``replay``, ``retry``), for its trace."""
        which = (
            notifications.c.event_id == event_id
            if notification_id is None
            else notifications.c.id == notification_id
        )
        failed = connection.execute(
            select(
                notifications.c.id,
                notifications.c.channel,
                notifications.c.attempts,
                notifications.c.error,
                notifications.c.error_code,
                notifications.c.updated_at,
                notifications.c.earlier,
            )
            .where(
                which,
                notifications.c.status == S.FAILED,
                notifications.c.error_code.is_distinct_from(MAY_HAVE_BEEN_SENT),
            )
            # Two retries at once (an operator's double click, a replay beside it): the
            # second waits here, then finds the row no longer failed.
            .with_for_update()
        ).all()
        if not failed:
            return 0
        connection.execute(
            update(notifications)
            .where(notifications.c.id == bindparam("failed_id"))
            .values(
                status=S.PENDING.value,
                attempts=0,
                run_at=now,
                updated_at=now,
                error=None,
                error_code=None,
                refusals=None,
                lease_until=None,
                claimed_by=None,
                earlier=bindparam("earlier_attempts"),
            ),
            [
                {
                    "failed_id": row.id,
                    "earlier_attempts": json.dumps(
                        [
                            *json.loads(row.earlier or "[]"),
                            {
                                "failed_at": row.updated_at.isoformat(),
                                "channel": row.channel,
                                "attempts": row.attempts,
                                "error_code": row.error_code,
                                "error": row.error,
                                "queued_again_at": now.isoformat(),
                                "by": by,
                            },
                        ]
                    ),
                }
                for row in failed
            ],
        )
        failed_ids = [row.id for row in failed]
        # A failed notification's job may be there still, held by the claim that
        # finished it until that worker's next claim deletes it: it is made fresh.
        self._jobs.enqueue_many_in(
            connection, SEND_JOB, [_send_job(n, now) for n in failed_ids], replace=True
        )
        return len(failed_ids)


def _send_job(notification_id: int, due_at: datetime) -> tuple[str, dict[str, Any], datetime]:
    return job_key(notification_id), {"notification": notification_id}, due_at
