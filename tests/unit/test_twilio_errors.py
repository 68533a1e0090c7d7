"""How Twilio's answers are read: retry, never retry, or ask before resending."""

from __future__ import annotations

import pytest
from twilio.base.exceptions import TwilioRestException

from payherald import DeliveryOutcomeUnknown, PermanentDeliveryError, TransientDeliveryError
from payherald.channels.twilio_channels import _classify, _comparable


def error(status: int, code: int | None = None) -> TwilioRestException:
    return TwilioRestException(status, "https://api.twilio.com/x", msg="nope", code=code)


@pytest.mark.parametrize(("status", "code"), [(429, 20429), (401, 20003), (400, 21611)])
def test_retryable_answers_are_transient(status: int, code: int) -> None:
    assert isinstance(_classify(error(status, code)), TransientDeliveryError)


@pytest.mark.parametrize(
    ("code", "words"),
    [(21211, "not a valid phone number"), (21610, "replied STOP"), (21614, "not a mobile")],
)
def test_refusals_that_will_not_change_are_permanent_with_a_reason(code: int, words: str) -> None:
    failure = _classify(error(400, code))
    assert isinstance(failure, PermanentDeliveryError)
    assert words in failure.message
    assert failure.code == f"twilio_{code}"


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_may_have_created_the_message_so_its_outcome_is_unknown(status: int) -> None:
    assert isinstance(_classify(error(status)), DeliveryOutcomeUnknown)


def test_smart_encoding_does_not_hide_a_sent_message() -> None:
    assert _comparable("You\u2019re paid \u2014 thanks") == _comparable("You're paid - thanks")
