"""Stripe-Signature verification: what is accepted and what is refused, and why."""

from __future__ import annotations

import functools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from payherald import (
    FrozenClock,
    MalformedEvent,
    SignatureInvalid,
    SigningSecret,
    WebhookVerifier,
    parse_event,
)
from payherald.webhook import MAX_SIGNATURE_HEADER_BYTES, MAX_SIGNATURE_ITEMS
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
        verifier.verify(b"\xff\xfe", f"t={now(clock)},v1={'0' * 64}")


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


# -- the one reading of the header ---------------------------------------------------------

DAY = 86400


def test_a_stale_signature_behind_a_fresh_decoy_timestamp_is_refused(
    verifier: WebhookVerifier, clock: FrozenClock
) -> None:
    # A request signed 30 days ago, replayed with a fresh t= put in front, once read as
    # fresh (the stripped name) while the signature was checked over the old t.
    old = sign(BODY, timestamp=now(clock) - 30 * DAY)
    with pytest.raises(SignatureInvalid, match="malformed"):
        verifier.verify(BODY, f"x=1, t={now(clock)},{old}")
    with pytest.raises(SignatureInvalid, match="more than one timestamp"):
        verifier.verify(BODY, f"t={now(clock)},{old}")


@pytest.mark.parametrize(
    "decorate",
    [
        lambda h: " " + h,
        lambda h: h + " ",
        lambda h: h.replace(",", ", "),
        lambda h: h.replace("t=", "t =", 1),
        lambda h: h.replace("v1=", "v1= ", 1),
        lambda h: h + ",",
        lambda h: h + ",junk",
    ],
)
def test_whitespace_or_empty_items_in_a_valid_header_are_refused(
    verifier: WebhookVerifier, clock: FrozenClock, decorate: Any
) -> None:
    with pytest.raises(SignatureInvalid, match="malformed"):
        verifier.verify(BODY, decorate(sign(BODY, timestamp=now(clock))))


@pytest.mark.parametrize("written", ["+{t}", "{t}.0", "0x{t:x}", "{t}_0", "-{t}", "١٢٣"])
def test_a_timestamp_that_is_not_plain_digits_is_refused(
    verifier: WebhookVerifier, clock: FrozenClock, written: str
) -> None:
    signature = sign(BODY, timestamp=now(clock)).split(",")[1]
    with pytest.raises(SignatureInvalid, match="not a Unix time"):
        verifier.verify(BODY, f"t={written.format(t=now(clock))},{signature}")


@pytest.mark.parametrize(
    "v1",
    ["é" * 64, "A" * 64, "0" * 63, "0" * 65, "0" * 32 + "g" * 32, "\u0661" * 64],
)
def test_a_v1_that_is_not_64_lowercase_hex_digits_is_refused(
    verifier: WebhookVerifier, clock: FrozenClock, v1: str
) -> None:
    with pytest.raises(SignatureInvalid, match="64 lowercase hex"):
        verifier.verify(BODY, f"t={now(clock)},v1={v1}")


def test_a_header_over_the_limit_is_refused_by_its_length(verifier: WebhookVerifier) -> None:
    header = "t=1," + "x=1," * (8 * 1024 * 1024 // 4)
    with pytest.raises(SignatureInvalid, match=f"at most {MAX_SIGNATURE_HEADER_BYTES}"):
        verifier.verify(BODY, header)


def test_a_header_at_the_limit_is_read(verifier: WebhookVerifier, clock: FrozenClock) -> None:
    header = sign(BODY, timestamp=now(clock))
    padded = header + ",v0=" + "0" * (MAX_SIGNATURE_HEADER_BYTES - len(header) - 4)
    assert len(padded) == MAX_SIGNATURE_HEADER_BYTES
    verifier.verify(BODY, padded)


def test_more_items_than_the_limit_are_refused(
    verifier: WebhookVerifier, clock: FrozenClock
) -> None:
    header = sign(BODY, timestamp=now(clock))
    extra = ",".join(["v0=0"] * (MAX_SIGNATURE_ITEMS - 2))
    verifier.verify(BODY, f"{header},{extra}")  # exactly the limit
    with pytest.raises(SignatureInvalid, match=f"more than {MAX_SIGNATURE_ITEMS} items"):
        verifier.verify(BODY, f"{header},{extra},v0=0")


# -- live and test secrets -----------------------------------------------------------------

LIVE = event_body(livemode=True)
TEST = event_body(livemode=False)


def test_an_event_is_accepted_only_by_a_secret_marked_for_its_mode(clock: FrozenClock) -> None:
    verifier = WebhookVerifier(
        secrets=[SigningSecret(SECRET, "live"), SigningSecret(OTHER_SECRET, "test")], clock=clock
    )
    assert verifier.receive(LIVE, sign(LIVE, SECRET, timestamp=now(clock))).livemode is True
    assert verifier.receive(TEST, sign(TEST, OTHER_SECRET, timestamp=now(clock))).livemode is False
    with pytest.raises(SignatureInvalid, match="live-mode event is signed with a secret marked"):
        verifier.receive(LIVE, sign(LIVE, OTHER_SECRET, timestamp=now(clock)))
    with pytest.raises(SignatureInvalid, match="test-mode event is signed with a secret marked"):
        verifier.receive(TEST, sign(TEST, SECRET, timestamp=now(clock)))


def test_an_unmarked_secret_signs_either_mode(
    verifier: WebhookVerifier, clock: FrozenClock
) -> None:
    assert verifier.receive(LIVE, sign(LIVE, timestamp=now(clock))).livemode is True
    assert verifier.receive(TEST, sign(TEST, timestamp=now(clock))).livemode is False


def test_the_development_secret_signs_test_mode_events_only(clock: FrozenClock) -> None:
    development = SigningSecret("whsec_dev_" + "0" * 32, "test", development=True)
    verifier = WebhookVerifier(secrets=[development], clock=clock)
    verifier.receive(TEST, sign(TEST, development.secret, timestamp=now(clock)))
    with pytest.raises(SignatureInvalid, match="development secret"):
        verifier.receive(LIVE, sign(LIVE, development.secret, timestamp=now(clock)))


def test_a_signing_secret_does_not_show_its_value() -> None:
    assert SECRET not in repr(SigningSecret(SECRET, "live"))


# -- no header but one valid, fresh, signed one is accepted ---------------------------------

STILL = FrozenClock()  # never advanced: freshness is decided on FRESH alone
FRESH = int(STILL.now().timestamp())
TIMES = st.sampled_from([FRESH, FRESH - 30 * DAY, FRESH + 301, FRESH - 301, FRESH + 42])


@functools.cache
def _signature(timestamp: int, secret: str = SECRET) -> str:
    return sign(BODY, secret, timestamp=timestamp).split("v1=")[1]


ITEM = st.one_of(
    TIMES.map(lambda t: f"t={t}"),
    TIMES.map(lambda t: f"v1={_signature(t)}"),
    TIMES.map(lambda t: f"v1={_signature(t, OTHER_SECRET)}"),
    TIMES.map(lambda t: f"v0={_signature(t)}"),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"v1={h}"),
    st.sampled_from(["v1=" + "é" * 64, "v1=" + "A" * 64, "v1=", "t=", "t=+1"]),
    st.text(max_size=12),
)
SPACE = st.sampled_from(["", "", "", "", "", " ", "\t", "\n"])


def _spaced(items: list[str]) -> st.SearchStrategy[str]:
    return st.tuples(*(st.tuples(SPACE, st.just(item), SPACE) for item in items)).map(
        lambda parts: ",".join(before + item + after for before, item, after in parts)
    )


# Random items; and the valid pair, shuffled among random items, sometimes spaced.
HEADER = st.one_of(
    st.lists(ITEM, max_size=6).flatmap(_spaced),
    st.lists(ITEM, max_size=4)
    .flatmap(lambda extra: st.permutations([f"t={FRESH}", f"v1={_signature(FRESH)}", *extra]))
    .flatmap(_spaced),
    st.text(max_size=200),
)


def stripe_would_sign(header: str, *, body: bytes, now: int, secret: str = SECRET) -> bool:
    """Whether ``header`` is what Stripe sends for ``body`` at ``now``: items name=value
    without spaces, at most 16 in at most 4096 bytes, one t of plain digits within 300 s
    of ``now``, every v1 64 lowercase hex digits and one of them the SDK's signature over
    that t (other schemes beside are allowed). Written from the SDK's rules, apart from
    the verifier's code."""
    items = [item.partition("=") for item in header.split(",")]
    if len(header) > 4096 or len(items) > 16:
        return False
    if any(
        not eq or not name or name.strip() != name or value.strip() != value
        for name, eq, value in items
    ):
        return False
    times = [value for name, _, value in items if name == "t"]
    if len(times) != 1 or not times[0].isascii() or not times[0].isdigit():
        return False
    timestamp = int(times[0])
    signatures = [value for name, _, value in items if name == "v1"]
    expected = sign(body, secret, timestamp=timestamp).split("v1=")[1]
    return (
        abs(timestamp - now) <= 300
        and all(len(v1) == 64 and set(v1) <= set("0123456789abcdef") for v1 in signatures)
        and expected in signatures
    )


def exactly_one_fresh_signed_timestamp(header: str) -> bool:
    return stripe_would_sign(header, body=BODY, now=FRESH)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(header=HEADER)
def test_only_one_valid_fresh_signed_timestamp_is_accepted(header: str) -> None:
    reason = None
    try:
        WebhookVerifier(secrets=[SECRET], clock=STILL).verify(BODY, header)
    except SignatureInvalid as refused:
        reason = refused.message
    event("accepted" if reason is None else "refused")
    assert (reason is None) == exactly_one_fresh_signed_timestamp(header), (header, reason)
    assert reason is None or SECRET not in reason


WELL_FORMED_OTHER_ITEM = st.one_of(
    TIMES.map(lambda t: f"v1={_signature(t, OTHER_SECRET)}"),
    TIMES.map(lambda t: f"v0={_signature(t)}"),
    st.text(alphabet="0123456789abcdef", min_size=64, max_size=64).map(lambda h: f"v1={h}"),
    st.from_regex(r"[a-z][a-z0-9]{0,3}=[A-Za-z0-9_]{0,8}", fullmatch=True).filter(
        lambda item: not item.startswith(("t=", "v1="))
    ),
)


@settings(max_examples=100, deadline=None)
@given(
    before=st.lists(WELL_FORMED_OTHER_ITEM, max_size=4),
    after=st.lists(WELL_FORMED_OTHER_ITEM, max_size=4),
)
def test_a_valid_header_among_other_well_formed_items_is_accepted(
    before: list[str], after: list[str]
) -> None:
    header = ",".join([*before, f"t={FRESH}", f"v1={_signature(FRESH)}", *after])
    WebhookVerifier(secrets=[SECRET], clock=STILL).verify(BODY, header)
