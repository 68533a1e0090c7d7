"""Stripe-Signature verification (F1): what is accepted and what is refused, and why."""

from __future__ import annotations

import json

import pytest

from payherald import FrozenClock, MalformedEvent, SignatureInvalid, WebhookVerifier, parse_event
from tests.support import OTHER_SECRET, SECRET, event_body, sign

BODY = event_body()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def verifier(clock: FrozenClock) -> WebhookVerifier:
    return WebhookVerifier(secrets=[SECRET], clock=clock)


def now(clock: FrozenClock) -> int:
    return int(clock.now().timestamp())


def test_valid_signature_is_accepted(verifier: WebhookVerifier, clock: FrozenClock) -> None:
    verifier.verify(BODY, sign(BODY, timestamp=now(clock)))


def test_wrong_secret_is_refused(verifier: WebhookVerifier, clock: FrozenClock) -> None:
    with pytest.raises(SignatureInvalid, match="does not match"):
        verifier.verify(BODY, sign(BODY, OTHER_SECRET, timestamp=now(clock)))


def test_body_changed_by_one_byte_is_refused(verifier: WebhookVerifier, clock: FrozenClock) -> None:
    header = sign(BODY, timestamp=now(clock))
    tampered = BODY.replace(b'"amount": 2000', b'"amount": 2001', 1)
    assert len(tampered) == len(BODY)
    assert tampered != BODY
    with pytest.raises(SignatureInvalid, match="does not match"):
        verifier.verify(tampered, header)


@pytest.mark.parametrize(("offset", "words"), [(-301, "old"), (301, "in the future")])
def test_timestamp_301_seconds_away_is_refused(
    verifier: WebhookVerifier, clock: FrozenClock, offset: int, words: str
) -> None:
    with pytest.raises(SignatureInvalid, match=words):
        verifier.verify(BODY, sign(BODY, timestamp=now(clock) + offset))


@pytest.mark.parametrize("offset", [-300, 300])
def test_timestamp_300_seconds_away_is_accepted(
    verifier: WebhookVerifier, clock: FrozenClock, offset: int
) -> None:
    verifier.verify(BODY, sign(BODY, timestamp=now(clock) + offset))


def test_one_valid_among_several_v1_signatures_is_accepted(
    verifier: WebhookVerifier, clock: FrozenClock
) -> None:
    good = sign(BODY, timestamp=now(clock)).split(",")[1]
    bad = sign(BODY, OTHER_SECRET, timestamp=now(clock)).split(",")[1]
    verifier.verify(BODY, f"t={now(clock)},{bad},{good},{bad}")


def test_a_second_configured_secret_is_accepted(clock: FrozenClock) -> None:
    verifier = WebhookVerifier(secrets=[OTHER_SECRET, SECRET], clock=clock)
    verifier.verify(BODY, sign(BODY, SECRET, timestamp=now(clock)))
    verifier.verify(BODY, sign(BODY, OTHER_SECRET, timestamp=now(clock)))


@pytest.mark.parametrize(
    ("header", "words"),
    [
        (None, "missing"),
        ("", "missing"),
        ("   ", "missing"),
        ("garbage", "malformed"),
        ("t=notanumber,v1=abc", "malformed"),
        ("v1=abcdef", "malformed"),
    ],
)
def test_missing_empty_and_malformed_headers_are_refused(
    verifier: WebhookVerifier, header: str | None, words: str
) -> None:
    with pytest.raises(SignatureInvalid, match=words):
        verifier.verify(BODY, header)


def test_v0_only_header_is_refused(verifier: WebhookVerifier, clock: FrozenClock) -> None:
    signature = sign(BODY, timestamp=now(clock)).split("v1=")[1]
    with pytest.raises(SignatureInvalid, match="no v1 signature"):
        verifier.verify(BODY, f"t={now(clock)},v0={signature}")


def test_non_utf8_body_is_refused(verifier: WebhookVerifier, clock: FrozenClock) -> None:
    with pytest.raises(SignatureInvalid, match="UTF-8"):
        verifier.verify(b"\xff\xfe", f"t={now(clock)},v1=00")


def test_error_messages_never_contain_the_secret(
    verifier: WebhookVerifier, clock: FrozenClock
) -> None:
    with pytest.raises(SignatureInvalid) as caught:
        verifier.verify(BODY, sign(BODY, OTHER_SECRET, timestamp=now(clock)))
    assert SECRET not in caught.value.message
    assert OTHER_SECRET not in caught.value.message


def test_parse_event_reads_the_fields_payherald_needs() -> None:
    event = parse_event(event_body("payment_intent.succeeded", event_id="evt_1", livemode=True))
    assert (event.id, event.type, event.livemode) == ("evt_1", "payment_intent.succeeded", True)
    assert event.object["object"] == "payment_intent"
    assert event.created is not None


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"type": "x", "livemode": False, "data": {"object": {}}}).encode(), "'id'"),
        (json.dumps({"id": "evt_1", "livemode": False, "data": {"object": {}}}).encode(), "type"),
        (json.dumps({"id": "evt_1", "type": "x", "livemode": False}).encode(), "data.object"),
        (json.dumps({"id": "evt_1", "type": "x", "data": {"object": {}}}).encode(), "livemode"),
    ],
)
def test_parse_event_says_what_is_missing(body: bytes, words: str) -> None:
    with pytest.raises(MalformedEvent, match=words):
        parse_event(body)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (
            json.dumps(
                {
                    "id": "evt_1",
                    "type": "x",
                    "livemode": False,
                    "created": 10**20,
                    "data": {"object": {}},
                }
            ).encode(),
            "created",
        ),
        (b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_parse_event_refuses_absurd_values_with_a_sentence(body: bytes, words: str) -> None:
    with pytest.raises(MalformedEvent, match=words):
        parse_event(body)


def _envelope(**fields: object) -> bytes:
    event = {"id": "evt_1", "type": "x", "livemode": False, "data": {"object": {}}}
    event.update(fields)
    return json.dumps(event).encode()


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (_envelope(id="evt_a\u0000b"), "not a Stripe event id"),
        (_envelope(id="evt_a\nb"), "not a Stripe event id"),
        (_envelope(id="pi_1"), "not a Stripe event id"),
        (_envelope(id="evt_"), "not a Stripe event id"),
        (_envelope(type="charge.succeeded\u0000"), "not a Stripe event type"),
        (_envelope(type="charge succeeded"), "not a Stripe event type"),
        (_envelope(api_version="2024-06-20\u0000"), "not a Stripe API version"),
        (_envelope(api_version="2024-06-20." + "x" * 60), "not a Stripe API version"),
    ],
)
def test_parse_event_refuses_envelope_values_no_database_would_store(
    body: bytes, words: str
) -> None:
    with pytest.raises(MalformedEvent, match=words):
        parse_event(body)


def test_parse_event_takes_the_ids_types_and_versions_stripe_sends() -> None:
    event = parse_event(
        _envelope(
            id="evt_1NG8Du2eZvKYlo2CUI79vXWy",
            type="v1.billing.meter.error_report_triggered",
            api_version="2025-03-31.basil",
        )
    )
    assert (event.id, event.type, event.api_version) == (
        "evt_1NG8Du2eZvKYlo2CUI79vXWy",
        "v1.billing.meter.error_report_triggered",
        "2025-03-31.basil",
    )
