"""Dunning sequences (``Store.dunning``): started and ended with the events that cause it,
in their transaction; ended too before a step, by what Stripe says, or by an operator.

Ending a sequence skips its steps not sent yet and deletes their jobs, in the same
transaction; a step that a worker holds then fails its ``mark_sending``, and a step checks
``is_open`` before it is composed. What ``payherald.dunning`` says of the sequences is the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, delete, func, or_, select, update

from payherald.clock import Clock
from payherald.dunning import REASONS, DunningEnd, DunningStart, invoice_of, sequence_key
from payherald.store.database import Database
from payherald.store.outbox import job_key
from payherald.store.schema import dunning, jobs, notifications
from payherald.store.statuses import DunningStatus, JobStatus
from payherald.store.statuses import NotificationStatus as S

__all__ = ["Dunning"]


class Dunning:
    """The ``dunning`` table."""

    def __init__(self, *, db: Database, clock: Clock) -> None:
        self._db = db
        self._clock = clock

    # -- with the events ------------------------------------------------------------------

    def record_in(
        self,
        connection: Connection,
        changes: Sequence[tuple[DunningStart | None, Sequence[DunningEnd]]],
        now: datetime,
    ) -> set[str]:
        """Make each event's ``(start, ends)`` of ``changes``, in their order, in
        ``connection``'s transaction; returns the sequences started that are not open
        (they ended before they started), whose steps are not to be queued."""
        closed: set[str] = set()
        for start, ends in changes:
            for end in ends:
                self._end_in(connection, end, now)
            if start is not None and not self._start_in(connection, start, now):
                closed.add(sequence_key(start.invoice))
        return closed

    def _start_in(self, connection: Connection, start: DunningStart, now: datetime) -> bool:
        """Start ``start``'s sequence unless its invoice has one; whether its steps are to
        be queued: it is open and this failure started it (a later failure of the same
        invoice, Stripe's retry, queues nothing, even once the steps were pruned), and its
        subscription was not cancelled before (its failure can come after)."""
        if (
            start.subscription is not None
            and connection.execute(
                select(dunning.c.invoice_id).where(
                    dunning.c.invoice_id == _cancelled_key(start.subscription)
                )
            ).first()
        ):
            self._end_in(
                connection,
                DunningEnd(
                    "subscription_cancelled", invoice=start.invoice, livemode=start.livemode
                ),
                now,
            )
            return False
        connection.execute(
            self._db.insert(dunning)
            .values(
                invoice_id=start.invoice,
                status=DunningStatus.OPEN,
                livemode=start.livemode,
                event_id=start.event_id,
                customer_id=start.customer,
                subscription_id=start.subscription,
                amount=start.amount,
                currency=start.currency,
                started_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=[dunning.c.invoice_id])
        )
        row = connection.execute(
            select(dunning.c.status, dunning.c.event_id).where(
                dunning.c.invoice_id == start.invoice
            )
        ).one()
        return bool(row.status == DunningStatus.OPEN and row.event_id == start.event_id)

    def _end_in(
        self,
        connection: Connection,
        end: DunningEnd,
        now: datetime,
        *,
        held: int | None = None,
        mark: bool = True,
    ) -> int:
        """End the open sequences ``end`` is about; with ``mark`` (an event's end), an
        invoice with none gets a row that keeps one from starting (its failure may come
        after). Returns how many ended."""
        if end.invoice is not None:
            which, marker = dunning.c.invoice_id == end.invoice, end.invoice
        else:
            # A failure of the subscription's that comes after starts nothing (_start_in).
            which = dunning.c.subscription_id == end.subscription
            marker = _cancelled_key(str(end.subscription))
        if mark:
            # First, so that on PostgreSQL a failure being recorded at the same time is
            # waited for: then the SELECT below sees its sequence, or it sees this row.
            connection.execute(
                self._db.insert(dunning)
                .values(
                    invoice_id=marker,
                    status=DunningStatus.ENDED,
                    livemode=end.livemode,
                    subscription_id=end.subscription,
                    ended_at=now,
                    end_reason=end.reason,
                    updated_at=now,
                )
                .on_conflict_do_nothing(index_elements=[dunning.c.invoice_id])
            )
        query = select(dunning.c.invoice_id).where(which, dunning.c.status == DunningStatus.OPEN)
        if self._db.postgres:
            query = query.with_for_update()
        invoices = list(connection.execute(query).scalars())
        for invoice in invoices:
            self._close_in(connection, invoice, end, now, held)
        return len(invoices)

    def _close_in(
        self,
        connection: Connection,
        invoice: str,
        end: DunningEnd,
        now: datetime,
        held: int | None,
    ) -> None:
        sequence = sequence_key(invoice)
        values: dict[str, Any] = {
            "status": DunningStatus.RECOVERED if end.recovered else DunningStatus.ENDED,
            "ended_at": now,
            "end_reason": end.reason,
            "updated_at": now,
        }
        if end.recovered:
            # The last step told before the payment is what recovered it.
            last = connection.execute(
                select(notifications.c.rule, notifications.c.channel)
                .where(
                    notifications.c.sequence == sequence,
                    notifications.c.status == S.SENT,
                )
                .order_by(notifications.c.sent_at.desc(), notifications.c.id.desc())
                .limit(1)
            ).first()
            values["recovered_amount"] = end.amount_paid
            if last is not None:
                values["recovered_rule"], values["recovered_channel"] = last
        connection.execute(
            update(dunning)
            .where(dunning.c.invoice_id == invoice, dunning.c.status == DunningStatus.OPEN)
            .values(values)
        )
        # The steps not sent yet; a claimed one is refused by its mark_sending. Their jobs
        # first: the order in which a claim locks them.
        steps = select(notifications.c.id).where(
            notifications.c.sequence == sequence,
            notifications.c.status.in_((S.PENDING, S.CLAIMED)),
        )
        if held is not None:
            steps = steps.where(notifications.c.id != held)
        waiting = list(connection.execute(steps).scalars())
        if not waiting:
            return
        connection.execute(
            delete(jobs).where(
                and_(
                    jobs.c.key.in_([job_key(number) for number in waiting]),
                    jobs.c.status == JobStatus.PENDING,
                )
            )
        )
        connection.execute(
            update(notifications)
            .where(
                notifications.c.id.in_(waiting),
                notifications.c.status.in_((S.PENDING, S.CLAIMED)),
            )
            .values(
                status=S.SKIPPED,
                error=f"The dunning sequence ended: {REASONS.get(end.reason, end.reason)}.",
                updated_at=now,
            )
        )

    # -- before a step, and by hand -------------------------------------------------------

    def end(
        self,
        invoice: str,
        reason: str,
        *,
        amount_paid: int | None = None,
        held: int | None = None,
    ) -> bool:
        """End ``invoice``'s sequence for ``reason`` (a key of ``REASONS``: what Stripe
        said before a step, or ``stopped``), but for the step ``held``, whose worker
        records its own outcome; False when it was not open. An invoice with no sequence
        is left as it is: a mistyped id must not keep a real failure's sequence from
        starting."""
        now = self._clock.now()
        end = DunningEnd(reason, invoice=invoice, amount_paid=amount_paid)
        with self._db.transaction() as connection:
            return bool(self._end_in(connection, end, now, held=held, mark=False))

    def is_open(self, sequence: str) -> bool:
        """Whether the sequence ``sequence`` (``sequence_key``) is open: started, or with
        no row at all (its steps were queued by a caller that did not start it), and not
        ended."""
        with self._db.read() as connection:
            status = connection.execute(
                select(dunning.c.status).where(dunning.c.invoice_id == invoice_of(sequence))
            ).scalar()
        return status is None or status == DunningStatus.OPEN

    def sequences(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The sequences started, newest first (of ``status`` only, when given), each with
        what its steps say: ``to`` (the address of its first step), ``steps`` (how many),
        ``sent`` (how many were told), ``last_step`` (the rule of the last one told) and
        ``next_due`` (when the next one waiting is due, for an open sequence)."""
        query = (
            select(dunning)
            .where(dunning.c.started_at.is_not(None))
            .order_by(dunning.c.started_at.desc(), dunning.c.invoice_id)
            .limit(limit)
        )
        if status is not None:
            query = query.where(dunning.c.status == status)
        with self._db.read() as connection:
            rows = [dict(row) for row in connection.execute(query).mappings()]
            keys = [sequence_key(row["invoice_id"]) for row in rows]
            steps = connection.execute(
                select(
                    notifications.c.sequence,
                    notifications.c.rule,
                    notifications.c.to,
                    notifications.c.status,
                    notifications.c.run_at,
                    notifications.c.sent_at,
                )
                .where(notifications.c.sequence.in_(keys))
                .order_by(notifications.c.run_at, notifications.c.id)
            ).all()
        for row in rows:
            mine = [step for step in steps if step.sequence == sequence_key(row["invoice_id"])]
            told = sorted(
                (step for step in mine if step.status == S.SENT), key=lambda step: step.sent_at
            )
            waiting = [step.run_at for step in mine if step.status in (S.PENDING, S.CLAIMED)]
            row.update(
                to=mine[0].to if mine else None,
                steps=len(mine),
                sent=len(told),
                last_step=told[-1].rule if told else None,
                next_due=min(waiting) if waiting and row["status"] == DunningStatus.OPEN else None,
            )
        return rows

    def recovery(self, since: datetime, *, livemode: bool = True) -> dict[str, Any]:
        """What the sequences of ``livemode`` recovered since ``since``: ``by_step``, the
        invoices paid while their sequence was open, per last step told, channel and
        currency (a rule of None: paid before any step was told), with their count and
        amount; and ``sequences``, how the sequences started since then stand (started,
        open, recovered, ended)."""
        amount = func.coalesce(dunning.c.recovered_amount, dunning.c.amount)
        by_step = (
            select(
                dunning.c.recovered_rule.label("rule"),
                dunning.c.recovered_channel.label("channel"),
                dunning.c.currency,
                func.count().label("invoices"),
                func.coalesce(func.sum(amount), 0).label("amount"),
            )
            .where(
                dunning.c.livemode == livemode,
                dunning.c.status == DunningStatus.RECOVERED,
                dunning.c.ended_at >= since,
            )
            .group_by(dunning.c.recovered_rule, dunning.c.recovered_channel, dunning.c.currency)
            .order_by(dunning.c.currency, func.sum(amount).desc(), dunning.c.recovered_rule)
        )
        standing = (
            select(dunning.c.status, func.count())
            .where(dunning.c.livemode == livemode, dunning.c.started_at >= since)
            .group_by(dunning.c.status)
        )
        with self._db.read() as connection:
            steps = [dict(row) for row in connection.execute(by_step).mappings()]
            counts = {str(status): int(n) for status, n in connection.execute(standing)}
        for row in steps:
            row["amount"] = int(row["amount"])
        sequences = {status.value: counts.get(status.value, 0) for status in DunningStatus}
        return {"by_step": steps, "sequences": {"started": sum(counts.values()), **sequences}}

    def tallies(
        self, since: datetime, until: datetime, *, livemode: bool
    ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]], int]:
        """Of the sequences of ``livemode``: those open at ``until`` and those recovered
        between ``since`` and ``until``, each as (currency, how many, amount: due for the
        open, paid for the recovered) rows; and how many ended unpaid in that time."""
        started = and_(dunning.c.livemode == livemode, dunning.c.started_at.is_not(None))
        in_stretch = and_(dunning.c.ended_at >= since, dunning.c.ended_at < until)
        currency = func.coalesce(dunning.c.currency, "usd")
        open_at_end = (
            select(currency, func.count(), func.coalesce(func.sum(dunning.c.amount), 0))
            .where(
                started,
                dunning.c.started_at < until,
                or_(dunning.c.ended_at.is_(None), dunning.c.ended_at >= until),
            )
            .group_by(currency)
        )
        paid = func.coalesce(dunning.c.recovered_amount, dunning.c.amount, 0)
        recovered = (
            select(currency, func.count(), func.coalesce(func.sum(paid), 0))
            .where(started, dunning.c.status == DunningStatus.RECOVERED, in_stretch)
            .group_by(currency)
        )
        ended = select(func.count()).where(
            started, dunning.c.status == DunningStatus.ENDED, in_stretch
        )
        with self._db.read() as connection:
            rows = [
                [(str(c), int(n), int(total)) for c, n, total in connection.execute(query)]
                for query in (open_at_end, recovered)
            ]
            ended_count = int(connection.execute(ended).scalar_one())
        return rows[0], rows[1], ended_count

    def get(self, invoice: str) -> dict[str, Any] | None:
        """The sequence of ``invoice``, as stored, or None."""
        with self._db.read() as connection:
            row = (
                connection.execute(select(dunning).where(dunning.c.invoice_id == invoice))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None


def _cancelled_key(subscription: str) -> str:
    """The row that says ``subscription`` was cancelled (no invoice has such an id)."""
    return f"cancelled:{subscription}"
