"""The fraud check: when Stripe suspects a payment, ask its customer, and act on the answer.

On ``radar.early_fraud_warning.created`` or ``review.opened`` the ``fraud_check`` rule texts
the customer the amount and the merchant, "Reply YES if you made this payment, NO if
not". The text opens a question (``Store.questions``) as it is sent; the customer's reply
answers their number's latest open question (``payherald.consent``), in the transaction
that records the reply, with a job that acts on it:

- YES approves the review (``POST /v1/reviews/ID/approve``); an early fraud warning has no
  review, so YES only closes the question. A YES that could not be acted on is told to the
  team (rule ``fraud_unapproved``).
- NO refunds the payment, or cancels its payment intent (``[fraud] on_no``), and alerts
  the team (rule ``fraud_reported``). A payment intent that can no longer be cancelled
  (it was captured) is refunded instead.
- No answer within ``[fraud] reply_within_hours`` alerts the team (``fraud_unanswered``),
  and so do, at once, an opt-out in the meantime and a text that could not be delivered.

Every Stripe call carries an idempotency key derived from the Stripe event that caused the
question, so a job run twice (a retry, a lease that ran out) refunds once. Only the
network, Stripe's rate limit and Stripe's own failures are retried; any other refusal is
final, and told to the team at once. Nothing is done with a key of the other mode than the
payment's. The team's alerts are recorded as
events of payherald's own (``payherald.question``, one id per question and outcome), so
each is sent once, through the same path as every message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import stripe
import structlog

from payherald.clock import Clock
from payherald.jobs import Job, JobRunner
from payherald.money import format_money
from payherald.rules import RuleBook
from payherald.store import Store
from payherald.store.questions import ANSWER_JOB, TIMEOUT_JOB, Question, ReplyToQuestion
from payherald.store.statuses import QuestionStatus
from payherald.stripe_objects import object_id, read_object
from payherald.webhook import StripeEvent, own_event

__all__ = [
    "FRAUD_EVENTS",
    "FRAUD_RULE",
    "QUESTION_EVENT",
    "REPORTED_RULE",
    "UNANSWERED_RULE",
    "UNAPPROVED_RULE",
    "FraudChecks",
    "FraudSettings",
    "question_for",
    "question_reply",
    "read_fraud",
    "sample_question_event",
]

_log = structlog.get_logger("payherald.fraud")

FRAUD_RULE = "fraud_check"
FRAUD_EVENTS = frozenset({"radar.early_fraud_warning.created", "review.opened"})
# The team's alerts: the customer said NO; no answer came in time.
REPORTED_RULE = "fraud_reported"
UNANSWERED_RULE = "fraud_unanswered"
# A YES that could not be acted on (Stripe refused to approve the review, say).
UNAPPROVED_RULE = "fraud_unapproved"
# The type of the events the alerts are recorded as: not a Stripe type.
QUESTION_EVENT = "payherald.question"

_KEYS = {"on_no", "reply_within_hours"}
_MOST_HOURS = 72.0
_LEASE = 60.0
_MAX_ATTEMPTS = 20


@dataclass(frozen=True)
class FraudSettings:
    """``[fraud]`` in the rules file."""

    on_no: Literal["refund", "cancel"] = "refund"
    reply_within_hours: float = 4.0

    @property
    def wait(self) -> float:
        """How long a customer has to answer, in seconds."""
        return self.reply_within_hours * 3600


def read_fraud(
    value: Any, problem: Callable[[tuple[str, ...], str | None, str], None]
) -> FraudSettings:
    """``[fraud]`` as read; each mistake is told to ``problem(where, key, sentence)``, and
    its setting left at the default."""
    if not isinstance(value, dict):
        problem((), "fraud", "must be a table.")
        return FraudSettings()
    where = ("fraud",)
    for key in sorted(value.keys() - _KEYS):
        problem(where, key, "unknown setting; fraud can have " + ", ".join(sorted(_KEYS)) + ".")
    default = FraudSettings()
    on_no = value.get("on_no", default.on_no)
    if on_no not in ("refund", "cancel"):
        problem(
            where,
            "on_no",
            'must be "refund" (refund the payment) or "cancel" (cancel its payment intent '
            "while it is not captured, else refund it).",
        )
        on_no = default.on_no
    hours = value.get("reply_within_hours", default.reply_within_hours)
    if (
        isinstance(hours, bool)
        or not isinstance(hours, int | float)
        or not 0 < hours <= _MOST_HOURS
    ):
        problem(
            where,
            "reply_within_hours",
            f"must be a number of hours, more than 0 and at most {_MOST_HOURS:g} "
            "(0.5 is half an hour).",
        )
        hours = default.reply_within_hours
    return FraudSettings(on_no=on_no, reply_within_hours=float(hours))


def question_for(
    *,
    notification_id: int,
    event: StripeEvent,
    phone: str,
    variables: Mapping[str, Any],
    charge: Mapping[str, Any] | None,
    wait: float,
) -> Question:
    """The question a ``fraud_check`` message to ``phone`` asks about ``event``'s payment;
    ``variables`` are the message's (its amount, read from ``charge``, the charge the event
    is about, when it was read)."""
    obj = read_object(event.object)
    intent = obj.payment_intent or object_id((charge or {}).get("payment_intent"))
    amount = variables.get("amount")
    return Question(
        notification_id=notification_id,
        event_id=event.id,
        phone=phone,
        livemode=event.livemode,
        review_id=obj.id if obj.kind == "review" else None,
        charge_id=obj.charge,
        payment_intent_id=intent,
        amount=amount if isinstance(amount, int) else None,
        currency=str(variables.get("currency") or "") or None,
        wait=wait,
    )


def _payment(question: Mapping[str, Any], locale: str) -> str:
    if isinstance(question.get("amount"), int) and question.get("currency"):
        amount = format_money(question["amount"], str(question["currency"]), locale)
        return f"the payment of {amount}"
    return "your recent payment"


def question_reply(
    reply: ReplyToQuestion, *, business: str | None, locale: str, on_no: str | None
) -> str | None:
    """What payherald answers a reply that concerned a question, if it did; ``on_no`` is
    what a NO does at Stripe (None: nothing, for want of a key)."""
    question = reply.question
    if question is None:
        return None
    name = f"{business}: " if business else ""
    payment = _payment(question, locale)
    if reply.kind == "unclear":
        return f"{name}Please reply YES if you made {payment}, or NO if you did not."
    if reply.kind == "closed":
        return (
            f"{name}Thank you. The question about {payment} is closed, so your reply changed "
            "nothing. Please contact us if something is wrong with a payment."
        )
    if reply.kind != "answered":
        return None
    if question["status"] == QuestionStatus.CONFIRMED:
        return f"{name}Thank you for confirming {payment}."
    if on_no is None:  # nothing is done at Stripe without a key: the team does it
        return f"{name}Thank you for telling us. Our team will look into {payment}."
    # A payment intent captured already is refunded rather than cancelled: "stopping".
    stopped = "stopping" if on_no == "cancel" else "refunding"
    return (
        f"{name}Thank you for telling us. We are {stopped} {payment}, and our team will "
        "look into it."
    )


def question_event(
    question: Mapping[str, Any], rule: str, outcome: str, *, now: datetime
) -> StripeEvent:
    """The team alert ``rule`` about ``question``, as the event it is recorded as: one id a
    question and rule, so that it is recorded, and sent, once."""
    event_id = f"evt_question_{question['id']}_{rule}"
    obj: dict[str, Any] = {
        "id": f"question_{question['id']}",
        "object": QUESTION_EVENT,
        "status": question["status"],
        "amount": question["amount"],
        "currency": question["currency"],
        "charge": question["charge_id"],
        "payment_intent": question["payment_intent_id"],
        "review": question["review_id"],
        "event": question["event_id"],
        "livemode": question["livemode"],
        "outcome": outcome,
    }
    return own_event(event_id, QUESTION_EVENT, obj, livemode=bool(question["livemode"]), now=now)


def sample_question_event(rule: str, now: datetime) -> StripeEvent:
    """A team alert ``rule`` about a made-up question, for ``payherald config check``."""
    question = {
        "id": 1,
        "status": QuestionStatus.REJECTED.value,
        "amount": 2000,
        "currency": "usd",
        "charge_id": "ch_sample",
        "payment_intent_id": "pi_sample",
        "review_id": "prv_sample",
        "event_id": "evt_sample",
        "livemode": True,
    }
    outcome = "Refunded pi_sample (re_sample)."
    if rule == UNAPPROVED_RULE:
        question["status"] = QuestionStatus.CONFIRMED.value
        outcome = (
            "Stripe did not approve review prv_sample (InvalidRequestError: This review is "
            "already closed); approve review prv_sample in the Stripe dashboard."
        )
    if rule == UNANSWERED_RULE:
        question["status"] = QuestionStatus.EXPIRED.value
        outcome = "No answer within 4 hours; nothing was done at Stripe."
    return question_event(question, rule, outcome, now=now)


# What asking again can mend: the network, Stripe's rate limit, a failure on Stripe's side.
# Anything else Stripe answers (a refused key, a missing permission, a request it will not
# do) is final: told to the team at once, not retried for hours.
_TRANSIENT = (stripe.APIConnectionError, stripe.RateLimitError, stripe.APIError)


class FraudChecks:
    """The question jobs: acting on an answer (``question.answer``) and giving up on a
    question nobody answered (``question.timeout``)."""

    def __init__(
        self,
        *,
        store: Store,
        rules: RuleBook,
        client: stripe.StripeClient | None,
        settings: FraudSettings,
        clock: Clock,
        key_mode: Literal["live", "test"] | None = None,
    ) -> None:
        self._store = store
        self._rules = rules
        self._client = client
        self._settings = settings
        self._clock = clock
        # The mode of STRIPE_SECRET_KEY: a question about a payment of the other mode is
        # not acted on with it.
        self._key_mode = key_mode

    def register(self, runner: JobRunner) -> None:
        for kind, handler in ((ANSWER_JOB, self.answer), (TIMEOUT_JOB, self.timeout)):
            runner.register(
                kind,
                handler,
                lease=_LEASE,
                max_attempts=_MAX_ATTEMPTS,
                retry_base=30.0,
                retry_cap=1800.0,
            )

    def answer(self, job: Job) -> None:
        """Act on the answer to the job's question, once: whatever ran before under the
        same idempotency keys (a retry, a lease that ran out) is Stripe's answer again.
        A NO is told to the team, and so is a YES that could not be acted on."""
        question = self._store.questions.get(int(job.payload["question"]))
        if question is None or question["status"] not in (
            QuestionStatus.CONFIRMED,
            QuestionStatus.REJECTED,
        ):
            return
        yes = question["status"] == QuestionStatus.CONFIRMED
        by_hand = (
            f"approve review {question['review_id']} in the Stripe dashboard"
            if yes
            else f"refund {_payment_of(question)} in the Stripe dashboard"
        )
        try:
            outcome, done = self._act(question, yes=yes, by_hand=by_hand)
        except _TRANSIENT as exc:
            if job.attempts + 1 < _MAX_ATTEMPTS:
                raise  # tried again later, under the same idempotency keys
            outcome, done = (
                f"Gave up asking Stripe after {_MAX_ATTEMPTS} attempts ({_reason(exc)}); "
                f"{by_hand}.",
                False,
            )
        except stripe.StripeError as exc:
            outcome, done = f"Stripe refused ({_reason(exc)}); {by_hand}.", False
        self._store.questions.settle(question["id"], outcome)
        log = _log.bind(question_id=question["id"], event_id=question["event_id"])
        tell = log.info if yes and done else log.warning
        tell("question_answered", answer="yes" if yes else "no", outcome=outcome)
        if not yes:
            self._alert(question, REPORTED_RULE, outcome)
        elif not done:
            self._alert(question, UNAPPROVED_RULE, outcome)

    def timeout(self, job: Job) -> None:
        """Close the job's question if it is still open, and tell the team that no answer
        came (nor will: an opt-out closed it, or its text could not be delivered)."""
        question = self._store.questions.expire(int(job.payload["question"]))
        if question is None:
            return
        status = question["status"]
        if status == QuestionStatus.EXPIRED:
            outcome = (
                f"No answer within {self._settings.reply_within_hours:g} hours; nothing was "
                "done at Stripe."
            )
        elif status == QuestionStatus.OPTED_OUT:
            outcome = "The customer opted out instead of answering; nothing was done at Stripe."
        elif status == QuestionStatus.UNDELIVERED:
            outcome = (
                "The question could not be delivered to the customer; nothing was done at Stripe."
            )
        else:
            return
        self._store.questions.settle(question["id"], outcome)
        _log.warning("question_unanswered", question_id=question["id"], status=status)
        self._alert(question, UNANSWERED_RULE, outcome)

    # -- at Stripe ----------------------------------------------------------------------

    def _act(self, question: Mapping[str, Any], *, yes: bool, by_hand: str) -> tuple[str, bool]:
        """Do at Stripe what the answer asks; what was done, and whether it was."""
        mode = "live" if question["livemode"] else "test"
        if self._client is None:
            return f"Nothing was done at Stripe (STRIPE_SECRET_KEY is not set): {by_hand}.", False
        if self._key_mode is not None and self._key_mode != mode:
            return (
                f"Nothing was done at Stripe: the payment is in {mode} mode and "
                f"STRIPE_SECRET_KEY is a {self._key_mode} key; {by_hand}.",
                False,
            )
        if yes:
            return self._approve(question, by_hand)
        return self._stop(question, by_hand)

    def _key(self, question: Mapping[str, Any], action: str) -> Any:
        """The idempotency key of ``action`` on ``question``: made from the Stripe event it
        is about, the same in any database that takes that event."""
        return {"idempotency_key": f"payherald-fraud-{question['event_id']}-{action}"}

    def _approve(self, question: Mapping[str, Any], by_hand: str) -> tuple[str, bool]:
        review = question["review_id"]
        if not review:
            return "Confirmed; an early fraud warning has no review to approve.", True
        assert self._client is not None
        try:
            self._client.v1.reviews.approve(review, options=self._key(question, "approve"))
        except stripe.InvalidRequestError as exc:
            return f"Stripe did not approve review {review} ({_reason(exc)}); {by_hand}.", False
        return f"Approved review {review}.", True

    def _stop(self, question: Mapping[str, Any], by_hand: str) -> tuple[str, bool]:
        """Refund the payment, or cancel its payment intent (``on_no``)."""
        assert self._client is not None
        intent = question["payment_intent_id"]
        if self._settings.on_no == "cancel" and intent:
            try:
                self._client.v1.payment_intents.cancel(
                    intent,
                    params={"cancellation_reason": "fraudulent"},
                    options=self._key(question, "cancel"),
                )
                return f"Cancelled payment intent {intent}.", True
            except stripe.InvalidRequestError as exc:
                if exc.code != "payment_intent_unexpected_state":
                    return f"Stripe did not cancel {intent} ({_reason(exc)}); {by_hand}.", False
                # Captured already: only a refund gives the money back.
        params: dict[str, Any] = {
            "reason": "fraudulent",
            "metadata": {"payherald_question": str(question["id"])},
        }
        if intent:
            params["payment_intent"] = intent
        elif question["charge_id"]:
            params["charge"] = question["charge_id"]
        else:
            return "Nothing was done at Stripe: the event named no payment to refund.", False
        what = _payment_of(question)
        try:
            refund = self._client.v1.refunds.create(
                params=params,  # type: ignore[arg-type]
                options=self._key(question, "refund"),
            )
        except stripe.InvalidRequestError as exc:
            if exc.code == "charge_already_refunded":
                return f"{what} was refunded already.", True
            return f"Stripe did not refund {what} ({_reason(exc)}); {by_hand}.", False
        return f"Refunded {what} ({refund.id}).", True

    def _alert(self, question: Mapping[str, Any], rule: str, outcome: str) -> None:
        event = question_event(question, rule, outcome, now=self._clock.now())
        planned = self._rules.plan_rule(rule, event)
        result = self._store.record_event(event, planned)
        log = _log.bind(question_id=question["id"], rule=rule, event_id=event.id)
        if result.duplicate:
            log.info("question_alert_recorded_already")
        elif not planned:
            log.warning("question_alert_unaddressed", reason="the team has no address")
        else:
            log.info("question_alert_queued", queued=result.queued)


def _payment_of(question: Mapping[str, Any]) -> str:
    return str(question["payment_intent_id"] or question["charge_id"] or "the payment")


def _reason(exc: stripe.StripeError) -> str:
    """Stripe's error, on one line: its kind and its own words."""
    words = " ".join(str(exc.user_message or exc or "").split()).rstrip(".")
    return f"{type(exc).__name__}: {words}" if words else type(exc).__name__
