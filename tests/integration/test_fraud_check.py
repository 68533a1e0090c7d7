"""The fraud check over real HTTP, on SQLite and PostgreSQL: Stripe (a stand-in of today's
API on loopback) opens a review or sends an early fraud warning; the customer is texted a
question; their signed reply, posted as Twilio posts it, approves the review, or refunds
or cancels the payment and alerts the team; no answer alerts the team. Every action
reaches Stripe once, whatever is replayed or retried, under an idempotency key derived
from the question."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from payherald import FrozenClock
from payherald.exceptions import PermanentDeliveryError
from payherald.simulate import build_event
from payherald.testing import ScriptedChannel
from tests.stripe_standin import StripeStandIn, stripe_standin
from tests.support import (
    TWILIO_SETTINGS,
    LiveServer,
    StripeOnLoopback,
    build_for_tests,
    move_clock,
    post_as_twilio,
)

PHONE = "+14155550123"
TEAM = "+14155550100"
HOUR = 3600
RULES = """
[teams.finance]
sms = ["+14155550100"]

[fraud]
on_no = "{on_no}"
reply_within_hours = 4
"""


class Checked(StripeOnLoopback):
    """payherald with a live key, a stand-in of Stripe, and a team to alert."""

    standin: StripeStandIn

    def suspect(
        self,
        kind: str = "review.opened",
        *,
        intent_status: str = "succeeded",
        livemode: bool = True,
    ) -> Any:
        """Stripe suspects a new live payment of $20.00: it knows the payment (its charge
        and payment intent) and sends ``kind`` about it, naming the charge by id as
        today's API does. Returns the event's object."""
        event = build_event(kind, now=self.clock.now(), phone=PHONE, livemode=livemode)
        obj = event["data"]["object"]
        charge = obj["charge"]
        obj["charge"] = charge["id"]
        intent = {
            "id": charge["payment_intent"],
            "object": "payment_intent",
            "amount": charge["amount"],
            "currency": charge["currency"],
            "latest_charge": charge["id"],
            "status": intent_status,
        }
        self.standin.add(charge, intent, obj)
        self.send(event)
        return obj

    def reply(self, body: str, sid: str, sender: str = PHONE) -> str:
        """The customer's reply, signed as Twilio signs it; what payherald answered."""
        params = {"MessageSid": sid, "From": sender, "To": "+15005550006", "Body": body}
        answer = post_as_twilio(self.server.url, "/webhooks/twilio/inbound", params)
        assert answer.status_code == 200, answer.text
        self.ph.worker.run_until_idle()
        return str(answer.text)

    def texts(self, to: str) -> list[str]:
        return [message.body for message in self.sms.delivered if message.to == to]

    def questions(self) -> list[dict[str, Any]]:
        return list(reversed(self.ph.store.questions.list()))

    def later(self, seconds: float) -> None:
        move_clock(self.ph, self.clock, seconds)


def _checked(
    database_url: str, tmp_path: Path, on_no: str = "refund", allowlist: str = ""
) -> Iterator[Checked]:
    rules = tmp_path / "payherald.toml"
    rules.write_text(RULES.format(on_no=on_no))
    with stripe_standin() as standin:
        settings = {
            **TWILIO_SETTINGS,
            "STRIPE_SECRET_KEY": "sk_live_standin",  # the events are live, and so is the key
            "STRIPE_API_BASE": standin.url,
            "PAYHERALD_CONFIG": str(rules),
            "PAYHERALD_TEST_ALLOWLIST": allowlist,
        }
        clock, sms = FrozenClock(), ScriptedChannel("sms")
        ph = build_for_tests(database_url, clock=clock, channels={"sms": sms}, settings=settings)
        with LiveServer(ph.http_app) as server, Checked(ph, server, clock, sms) as checked:
            checked.standin = standin
            yield checked
        ph.engine.dispose()


@pytest.fixture
def checked(database_url: str, tmp_path: Path) -> Iterator[Checked]:
    yield from _checked(database_url, tmp_path)


@pytest.fixture
def cancelling(database_url: str, tmp_path: Path) -> Iterator[Checked]:
    yield from _checked(database_url, tmp_path, on_no="cancel")


def test_a_review_texts_the_customer_the_amount_and_the_merchant(checked: Checked) -> None:
    review = checked.suspect()
    assert checked.texts(PHONE) == [
        "Did you make a payment of $20.00 to JENNYS SHOP? Reply YES if you made this payment, "
        "NO if not."
    ]
    (question,) = checked.questions()
    assert question["status"] == "open"
    assert (question["review_id"], question["charge_id"], question["amount"]) == (
        review["id"],
        review["charge"],
        2000,
    )
    # The charge was read from Stripe: the review names it by id only.
    assert checked.standin.requested(f"GET /v1/charges/{review['charge']}") == 1


def test_yes_approves_the_review_once_and_is_not_an_opt_in(checked: Checked) -> None:
    review = checked.suspect()
    answer = checked.reply("Yes!", "SM1")
    assert "Thank you for confirming the payment of $20.00." in answer
    key = f"payherald-fraud-{checked.questions()[0]['event_id']}-approve"
    assert checked.standin.actions == [(f"/v1/reviews/{review['id']}/approve", {}, key)]
    assert checked.standin.objects[review["id"]]["open"] is False
    assert checked.questions()[0]["status"] == "confirmed"
    assert checked.questions()[0]["outcome"] == f"Approved review {review['id']}."
    assert "<Message>" not in checked.reply("Yes!", "SM1")  # Twilio replayed it
    assert len(checked.standin.actions) == 1
    assert checked.ph.store.consents.records() == []  # an answer, not an opt-in
    assert checked.texts(TEAM) == []


def test_no_refunds_once_and_alerts_the_team(checked: Checked) -> None:
    review = checked.suspect()
    answer = checked.reply("no", "SM1")
    assert "We are refunding the payment of $20.00" in answer
    intent = checked.standin.objects[review["charge"]]["payment_intent"]
    assert checked.standin.actions == [
        (
            "/v1/refunds",
            {
                "reason": "fraudulent",
                "metadata[payherald_question]": "1",
                "payment_intent": intent,
            },
            f"payherald-fraud-{checked.questions()[0]['event_id']}-refund",
        )
    ]
    assert [refund["payment_intent"] for refund in checked.standin.refunds()] == [intent]
    assert checked.texts(TEAM) == [
        f"Fraud reported: the customer says they did not make the payment of $20.00 "
        f"({intent}). Refunded {intent} (re_1)."
    ]
    # The same request again (Twilio retried it), and a second NO: nothing more is done.
    assert "<Message>" not in checked.reply("no", "SM1")
    assert "question about the payment of $20.00 is closed" in checked.reply("NO", "SM2")
    assert len(checked.standin.refunds()) == 1
    assert len(checked.standin.actions) == 1
    assert len(checked.texts(TEAM)) == 1


def test_a_refund_whose_answer_was_lost_is_retried_under_its_key_and_made_once(
    checked: Checked,
) -> None:
    checked.suspect()
    # Stripe refunds, but its answers are lost: to the first request and to both of the
    # SDK's own retries. The job is tried again later, under the same idempotency key.
    checked.standin.lose_answers = 3
    checked.reply("NO", "SM1")
    assert len(checked.standin.actions) == 3
    assert checked.texts(TEAM) == []
    checked.later(HOUR)
    assert len(checked.standin.actions) == 4
    event_id = checked.questions()[0]["event_id"]
    assert {key for _, _, key in checked.standin.actions} == {f"payherald-fraud-{event_id}-refund"}
    assert len(checked.standin.refunds()) == 1
    assert len(checked.texts(TEAM)) == 1
    assert "(re_1)" in checked.texts(TEAM)[0]


def test_cancel_cancels_a_payment_intent_not_captured_yet(cancelling: Checked) -> None:
    review = cancelling.suspect(intent_status="requires_capture")
    assert "We are stopping the payment of $20.00" in cancelling.reply("NO", "SM1")
    intent = cancelling.standin.objects[review["charge"]]["payment_intent"]
    assert cancelling.standin.actions == [
        (
            f"/v1/payment_intents/{intent}/cancel",
            {"cancellation_reason": "fraudulent"},
            f"payherald-fraud-{cancelling.questions()[0]['event_id']}-cancel",
        )
    ]
    assert cancelling.standin.objects[intent]["status"] == "canceled"
    assert cancelling.standin.refunds() == []
    assert cancelling.texts(TEAM)[0].endswith(f"Cancelled payment intent {intent}.")


def test_cancel_refunds_a_payment_intent_captured_already(cancelling: Checked) -> None:
    cancelling.suspect(intent_status="succeeded")
    cancelling.reply("NO", "SM1")
    assert [path for path, _, _ in cancelling.standin.actions] == [
        f"/v1/payment_intents/{cancelling.questions()[0]['payment_intent_id']}/cancel",
        "/v1/refunds",
    ]
    assert len(cancelling.standin.refunds()) == 1


def test_no_answer_in_time_alerts_the_team_and_a_late_yes_changes_nothing(
    checked: Checked,
) -> None:
    review = checked.suspect()
    checked.later(3 * HOUR)
    assert checked.texts(TEAM) == []
    checked.later(HOUR)
    (alert,) = checked.texts(TEAM)
    assert alert.startswith("Fraud check unanswered: $20.00")
    assert "No answer within 4 hours; nothing was done at Stripe." in alert
    assert checked.questions()[0]["status"] == "expired"
    late = checked.reply("YES", "SM1")
    assert (
        "The question about the payment of $20.00 is closed, so your reply changed nothing." in late
    )
    assert checked.standin.actions == []
    assert checked.standin.objects[review["id"]]["open"] is True


def test_an_unclear_reply_asks_again_and_the_answer_after_it_counts(checked: Checked) -> None:
    checked.suspect()
    again = checked.reply("what is this?", "SM1")
    assert "Please reply YES if you made the payment of $20.00, or NO if you did not." in again
    assert checked.questions()[0]["status"] == "open"
    assert "Thank you for confirming" in checked.reply("y", "SM2")
    assert len(checked.standin.actions) == 1


def test_a_reply_answers_the_latest_open_question_of_its_number(checked: Checked) -> None:
    first = checked.suspect()
    second = checked.suspect()
    checked.reply("YES", "SM1")
    assert [q["status"] for q in checked.questions()] == ["open", "confirmed"]
    assert [path for path, _, _ in checked.standin.actions] == [
        f"/v1/reviews/{second['id']}/approve"
    ]
    checked.reply("YES", "SM2")
    assert [path for path, _, _ in checked.standin.actions][-1] == (
        f"/v1/reviews/{first['id']}/approve"
    )


def test_stop_while_a_question_is_open_opts_out_and_closes_it(checked: Checked) -> None:
    checked.suspect()
    assert "You will get no more messages from us" in checked.reply("STOP", "SM1")
    assert checked.ph.store.consents.suppression(PHONE) is not None
    assert checked.questions()[0]["status"] == "opted_out"
    # The team hears at once that no answer will come.
    (alert,) = checked.texts(TEAM)
    assert "The customer opted out instead of answering" in alert
    # A YES now is the person's opt-in again (no question is open), not an approval.
    assert "You are subscribed again" in checked.reply("YES", "SM2")
    assert checked.ph.store.consents.suppression(PHONE) is None
    assert checked.standin.actions == []
    checked.later(4 * HOUR)
    assert len(checked.texts(TEAM)) == 1


def test_an_opt_out_by_an_operator_closes_the_question_too(checked: Checked) -> None:
    checked.suspect()
    checked.ph.store.consents.record(
        address=PHONE, action="opt_out", channel="sms", words=None, source="cli"
    )
    checked.ph.worker.run_until_idle()
    assert checked.questions()[0]["status"] == "opted_out"
    assert "opted out instead of answering" in checked.texts(TEAM)[0]


def test_yes_or_no_with_no_question_gets_the_help_text_and_acts_on_nothing(
    checked: Checked,
) -> None:
    for sid, words in (("SM1", "NO"), ("SM2", "YES")):
        assert "Payment notifications. Reply STOP to unsubscribe" in checked.reply(words, sid)
    assert checked.standin.actions == []
    assert checked.ph.store.consents.suppression(PHONE) is None


def test_a_forged_reply_acts_on_nothing(checked: Checked) -> None:
    checked.suspect()
    params = {"MessageSid": "SM1", "From": PHONE, "To": "+15005550006", "Body": "NO"}
    forged = post_as_twilio(checked.server.url, "/webhooks/twilio/inbound", params, token="0" * 32)
    assert forged.status_code == 403
    unsigned = httpx.post(
        f"{checked.server.url}/webhooks/twilio/inbound",
        data=params,
    )
    assert unsigned.status_code == 403
    checked.ph.worker.run_until_idle()
    assert checked.questions()[0]["status"] == "open"
    assert checked.standin.actions == []


def test_an_early_fraud_warning_asks_too_and_no_refunds_its_charge(checked: Checked) -> None:
    warning = checked.suspect("radar.early_fraud_warning.created")
    assert checked.texts(PHONE)[0].startswith("Did you make a payment of $20.00")
    assert "Thank you for confirming" not in checked.reply("NO", "SM1")
    assert [path for path, _, _ in checked.standin.actions] == ["/v1/refunds"]
    assert checked.standin.refunds()[0]["charge"] == warning["charge"]


def test_a_warning_and_a_review_of_one_payment_ask_once(checked: Checked) -> None:
    review = checked.suspect()
    event = build_event(
        "radar.early_fraud_warning.created", now=checked.clock.now(), phone=PHONE, livemode=True
    )
    event["data"]["object"]["charge"] = review["charge"]
    checked.send(event)
    assert len(checked.texts(PHONE)) == 1
    assert len(checked.questions()) == 1


def test_a_question_goes_with_its_event_when_retention_prunes_it(checked: Checked) -> None:
    checked.suspect()
    checked.reply("YES", "SM1")
    pruned = checked.ph.store.pruning.delete_events(checked.clock.now() + timedelta(days=1), 100)
    assert pruned.events == 1
    assert checked.questions() == []


def test_a_test_mode_question_printed_by_the_console_is_not_open_to_a_real_reply(
    checked: Checked,
) -> None:
    checked.suspect(livemode=False)
    assert checked.texts(PHONE) == []  # printed, not texted: the number's owner never saw it
    assert checked.questions() == []
    assert "Payment notifications" in checked.reply("NO", "SM1")
    assert checked.standin.actions == []


def test_a_question_that_could_not_be_delivered_is_closed_and_told_at_once(
    checked: Checked,
) -> None:
    checked.sms.script(PermanentDeliveryError("Unreachable number.", code="twilio_21614"))
    checked.suspect()
    (question,) = checked.questions()
    assert question["status"] == "undelivered"
    (alert,) = checked.texts(TEAM)
    assert "The question could not be delivered to the customer" in alert
    assert "is closed" in checked.reply("YES", "SM1")  # a reply to a text that never came
    assert checked.standin.actions == []


def test_a_reply_after_the_time_ran_out_is_not_acted_on_before_the_timeout_runs(
    checked: Checked,
) -> None:
    checked.suspect()
    checked.clock.advance(5 * HOUR)  # the worker has not run the timeout yet
    assert "is closed, so your reply changed nothing" in checked.reply("NO", "SM1")
    assert checked.standin.actions == []
    assert "No answer within 4 hours" in checked.texts(TEAM)[0]


def test_a_question_of_the_other_mode_than_the_key_is_not_acted_on(
    database_url: str, tmp_path: Path
) -> None:
    # A test-mode review of an allowlisted number is texted for real, and answered; the
    # live key must not refund anything for it.
    for checked in _checked(database_url, tmp_path, allowlist=PHONE):
        checked.suspect(livemode=False)
        assert checked.questions()[0]["status"] == "open"
        checked.reply("NO", "SM1")
        assert checked.standin.actions == []
        says = "the payment is in test mode and STRIPE_SECRET_KEY is a live key"
        assert says in checked.questions()[0]["outcome"]
        # The team's alert is a test-mode message too: printed, not texted.
        (alert,) = [
            row
            for row in checked.ph.store.list_notifications(limit=10)
            if row["rule"] == "fraud_reported"
        ]
        assert (alert["channel"], alert["status"]) == ("console", "sent")
        assert says in alert["body"]


def test_a_refused_approval_is_told_to_the_team(checked: Checked) -> None:
    review = checked.suspect()
    checked.standin.objects[review["id"]]["open"] = False  # closed in the dashboard meanwhile
    assert "Thank you for confirming" in checked.reply("YES", "SM1")
    (alert,) = checked.texts(TEAM)
    assert alert.startswith("Fraud check confirmed by the customer but not acted on: $20.00")
    assert "This review is already closed" in alert


def test_a_final_stripe_refusal_is_not_retried_and_is_told_at_once(checked: Checked) -> None:
    checked.suspect()
    checked.standin.refuse_actions = (
        403,
        "invalid_request_error",
        "The provided key does not have the required permissions for this endpoint.",
    )
    checked.reply("NO", "SM1")
    assert len(checked.standin.actions) == 1  # not retried, by the SDK or the job
    (alert,) = checked.texts(TEAM)
    assert "Stripe refused (PermissionError: The provided key does not have" in alert
    assert "refund pi_" in alert
    checked.later(4 * HOUR)
    assert len(checked.standin.actions) == 1
