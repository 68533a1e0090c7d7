"""The fraud check's words: what counts as YES or NO, what payherald answers a reply about
a question, and ``[fraud]`` in the rules file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from payherald.config import load_config
from payherald.consent import answer_of, classify_reply
from payherald.exceptions import ConfigurationError
from payherald.fraud import FraudSettings, question_reply
from payherald.store.questions import ReplyToQuestion

QUESTION: dict[str, Any] = {"amount": 2000, "currency": "usd", "status": "open"}


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("YES", "yes"),
        (" yes! ", "yes"),
        ("Y", "yes"),
        ("y.", "yes"),
        ("No", "no"),
        ("n", "no"),
        ("NO!!", "no"),
        ("yes no", None),  # both: ask again
        ("yes please refund", None),
        ("nope", None),
        ("STOP", None),
        ("", None),
    ],
)
def test_only_a_yes_or_no_alone_is_an_answer(text: str, answer: str | None) -> None:
    assert answer_of(text) == answer


def test_yes_is_still_the_opt_in_keyword_where_no_question_is_open() -> None:
    assert classify_reply("YES") == "opt_in"
    assert classify_reply("NO") is None  # an answer, never an opt-out


@pytest.mark.parametrize(
    ("kind", "status", "on_no", "says"),
    [
        ("unclear", "open", "refund", "Acme: Please reply YES if you made the payment of $20.00"),
        ("answered", "confirmed", "refund", "Acme: Thank you for confirming the payment of $20.00"),
        ("answered", "rejected", "refund", "We are refunding the payment of $20.00"),
        ("answered", "rejected", "cancel", "We are stopping the payment of $20.00"),
        ("answered", "rejected", None, "Our team will look into the payment of $20.00."),
        ("closed", "expired", "refund", "The question about the payment of $20.00 is closed"),
    ],
)
def test_a_reply_about_a_question_is_answered_in_words(
    kind: Any, status: str, on_no: str | None, says: str
) -> None:
    reply = ReplyToQuestion(kind, {**QUESTION, "status": status})
    text = question_reply(reply, business="Acme", locale="en_US", on_no=on_no)
    assert text is not None
    assert says in text


def test_a_reply_that_concerned_no_question_is_not_answered_here() -> None:
    none = ReplyToQuestion("none")
    assert question_reply(none, business=None, locale="en_US", on_no="refund") is None


def test_an_amount_unknown_is_said_in_words() -> None:
    reply = ReplyToQuestion("unclear", {"amount": None, "currency": None, "status": "open"})
    text = question_reply(reply, business=None, locale="en_US", on_no="refund")
    assert text == "Please reply YES if you made your recent payment, or NO if you did not."


def _load(tmp_path: Path, text: str) -> Any:
    path = tmp_path / "payherald.toml"
    path.write_text(text)
    return load_config(path)


def test_the_fraud_check_refunds_and_waits_4_hours_by_default(tmp_path: Path) -> None:
    assert _load(tmp_path, "").fraud == FraudSettings(on_no="refund", reply_within_hours=4.0)
    settings = _load(tmp_path, '[fraud]\non_no = "cancel"\nreply_within_hours = 0.5\n').fraud
    assert (settings.on_no, settings.wait) == ("cancel", 1800.0)


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ('[fraud]\non_no = "void"\n', 2, 'fraud.on_no: must be "refund"'),
        ("[fraud]\nreply_within_hours = 0\n", 2, "fraud.reply_within_hours: must be a number"),
        ("[fraud]\nreply_within_hours = 100\n", 2, "fraud.reply_within_hours: must be a"),
        ("[fraud]\nreply_within_hours = true\n", 2, "fraud.reply_within_hours"),
        ("[fraud]\nwait = 4\n", 2, "fraud.wait: unknown setting; fraud can have on_no"),
        ("fraud = 4\n", 1, "fraud: must be a table"),
    ],
)
def test_a_bad_fraud_setting_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int, says: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        _load(tmp_path, text)
    assert f"payherald.toml:{line}: {says}" in caught.value.message
