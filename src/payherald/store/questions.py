"""Questions texted to customers (``Store.questions``): the fraud check's "reply YES if you
made this payment, NO if not".

A question opens in the transaction that marks its text ``sending`` (``WorkQueue.
mark_sending``), with its timeout job; a reply answers its number's latest open question
in the transaction that records the reply, with the job that acts on the answer. So a
replayed reply answers nothing twice, and an answer is never lost between the two. What an
answer does at Stripe is ``payherald.fraud``'s part.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from sqlalchemy import Connection, select, update

from payherald.clock import Clock
from payherald.store.database import Database
from payherald.store.jobs import Jobs
from payherald.store.schema import questions
from payherald.store.statuses import QuestionStatus

__all__ = [
    "ANSWER_JOB",
    "TIMEOUT_JOB",
    "Answer",
    "Question",
    "Questions",
    "ReplyToQuestion",
]

# The jobs a question queues: acting on its answer, and giving up on it.
ANSWER_JOB = "question.answer"
TIMEOUT_JOB = "question.timeout"
# A YES or NO this soon after its number's last question closed is taken as an answer to
# that question (told it is closed), not as an opt-in or a stray word.
_CLOSED_RECENTLY = timedelta(days=7)

Answer = Literal["yes", "no"]


@dataclass(frozen=True, slots=True)
class Question:
    """A question about to be asked, as the notification that asks it is sent."""

    notification_id: int
    event_id: str
    phone: str
    livemode: bool
    review_id: str | None
    charge_id: str | None
    payment_intent_id: str | None
    amount: int | None
    currency: str | None
    # How long the customer has to answer, in seconds.
    wait: float


@dataclass(frozen=True, slots=True)
class ReplyToQuestion:
    """What a reply did to its number's questions: ``answered`` one (now ``question``'s
    status says how), was ``unclear`` about the open one (ask again), came after the
    latest one ``closed``, or there is ``none``."""

    kind: Literal["answered", "unclear", "closed", "none"]
    question: Mapping[str, Any] | None = None


class Questions:
    """The ``questions`` table."""

    def __init__(self, *, db: Database, clock: Clock, jobs: Jobs) -> None:
        self._db = db
        self._clock = clock
        self._jobs = jobs

    def open_in(self, connection: Connection, question: Question) -> None:
        """Open ``question`` and queue its timeout, in ``connection``'s transaction; a
        question its notification opened before (an earlier attempt) is left as it is."""
        now = self._clock.now()
        expires = now + timedelta(seconds=question.wait)
        opened = connection.execute(
            self._db.insert(questions)
            .values(
                notification_id=question.notification_id,
                event_id=question.event_id,
                phone=question.phone,
                livemode=question.livemode,
                review_id=question.review_id,
                charge_id=question.charge_id,
                payment_intent_id=question.payment_intent_id,
                amount=question.amount,
                currency=question.currency,
                status=QuestionStatus.OPEN.value,
                asked_at=now,
                expires_at=expires,
            )
            .on_conflict_do_nothing(index_elements=["notification_id"])
            .returning(questions.c.id)
        ).scalar()
        if opened is not None:
            self._jobs.enqueue_in(
                connection,
                TIMEOUT_JOB,
                f"{TIMEOUT_JOB}:{opened}",
                {"question": opened},
                due_at=expires,
            )

    def reply_in(
        self, connection: Connection, *, sender: str, answer: Answer | None, provider_id: str
    ) -> ReplyToQuestion:
        """Apply a reply from ``sender`` (its YES or NO, or None for other words) to the
        latest question open for that number, in ``connection``'s transaction: an answer
        closes it and queues the job that acts on it. A question whose time ran out is
        closed, whether or not its timeout has run yet."""
        now = self._clock.now()
        latest = (
            select(questions)
            .where(questions.c.phone == sender)
            .order_by(questions.c.asked_at.desc(), questions.c.id.desc())
            .limit(1)
        )
        statement = latest.where(
            questions.c.status == QuestionStatus.OPEN.value, questions.c.expires_at > now
        )
        if self._db.postgres:
            statement = statement.with_for_update()  # two replies at once: one answers
        found = connection.execute(statement).mappings().first()
        if found is None:
            # Answered, expired or undelivered lately; not one the number opted out of (a
            # YES after a STOP is the person's opt-in).
            closed = (
                connection.execute(
                    latest.where(
                        questions.c.status != QuestionStatus.OPTED_OUT.value,
                        questions.c.asked_at >= now - _CLOSED_RECENTLY,
                    )
                )
                .mappings()
                .first()
            )
            if closed is not None and answer is not None:
                return ReplyToQuestion("closed", dict(closed))
            return ReplyToQuestion("none")
        if answer is None:
            return ReplyToQuestion("unclear", dict(found))
        status = QuestionStatus.CONFIRMED if answer == "yes" else QuestionStatus.REJECTED
        connection.execute(
            update(questions)
            .where(questions.c.id == found["id"])
            .values(status=status.value, answered_at=now, answer_id=provider_id)
        )
        self._jobs.enqueue_in(
            connection, ANSWER_JOB, f"{ANSWER_JOB}:{found['id']}", {"question": found["id"]}
        )
        return ReplyToQuestion(
            "answered",
            {**found, "status": status.value, "answered_at": now, "answer_id": provider_id},
        )

    def close_in(self, connection: Connection, *, sender: str) -> None:
        """Close every question open for ``sender``, who opted out; their timeouts run at
        once, and tell the team no answer will come."""
        self._close_in(connection, questions.c.phone == sender, QuestionStatus.OPTED_OUT)

    def undelivered_in(self, connection: Connection, notification_id: int) -> None:
        """Close the question that notification ``notification_id`` asked, whose text could
        not be delivered; its timeout runs at once, and tells the team."""
        self._close_in(
            connection,
            questions.c.notification_id == notification_id,
            QuestionStatus.UNDELIVERED,
        )

    def _close_in(self, connection: Connection, which: Any, status: QuestionStatus) -> None:
        closed = connection.execute(
            update(questions)
            .where(which, questions.c.status == QuestionStatus.OPEN.value)
            .values(status=status.value, answered_at=self._clock.now())
            .returning(questions.c.id)
        ).scalars()
        self._jobs.bring_forward_in(connection, [f"{TIMEOUT_JOB}:{found}" for found in closed])

    def expire(self, question_id: int) -> dict[str, Any] | None:
        """Close ``question_id`` for want of an answer, if it is open still; the question as
        it is now (its status says whether it expired here), None when there is none."""
        with self._db.transaction() as connection:
            connection.execute(
                update(questions)
                .where(
                    questions.c.id == question_id,
                    questions.c.status == QuestionStatus.OPEN.value,
                )
                .values(status=QuestionStatus.EXPIRED.value)
            )
            row = (
                connection.execute(select(questions).where(questions.c.id == question_id))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    def get(self, question_id: int) -> dict[str, Any] | None:
        with self._db.read() as connection:
            row = (
                connection.execute(select(questions).where(questions.c.id == question_id))
                .mappings()
                .first()
            )
        return dict(row) if row is not None else None

    def settle(self, question_id: int, outcome: str) -> None:
        """Record what acting on ``question_id``'s answer came to."""
        with self._db.transaction() as connection:
            connection.execute(
                update(questions).where(questions.c.id == question_id).values(outcome=outcome)
            )

    def list(self, *, limit: int = 100) -> list[dict[str, Any]]:
        """The latest questions, newest first."""
        with self._db.read() as connection:
            rows = connection.execute(
                select(questions).order_by(questions.c.id.desc()).limit(limit)
            ).mappings()
            return [dict(row) for row in rows]
