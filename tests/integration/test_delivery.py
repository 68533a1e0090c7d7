"""Twilio status callbacks over real HTTP: signed, deduplicated, never regressing."""

from __future__ import annotations

import concurrent.futures
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from payherald import FrozenClock, parse_event
from payherald.store.schema import delivery_reports
from payherald.testing import ScriptedChannel
from tests.support import (
    PUBLIC_URL,
    TWILIO_SETTINGS,
    TWILIO_TOKEN,
    LiveServer,
    build_for_tests,
    event_body,
    post_as_twilio,
)

TOKEN = TWILIO_TOKEN
PUBLIC = PUBLIC_URL
SETTINGS = TWILIO_SETTINGS


@pytest.fixture
def ph(database_url: str) -> Iterator[Any]:
    built = build_for_tests(
        database_url,
        settings=SETTINGS,
        clock=FrozenClock(),
        channels={"sms": ScriptedChannel("sms")},
    )
    yield built
    built.engine.dispose()


def sent_notifications(ph: Any, count: int) -> list[tuple[int, str]]:
    """``count`` live notifications, sent: (notification id, provider id)."""
    for index in range(count):
        body = event_body(event_id=f"evt_{index}", livemode=True)
        event = parse_event(body.replace(b'"id": "pi_', f'"id": "pi_{index}_'.encode(), 1))
        ph.store.record_event(event, ph.rules.plan(event))
    ph.worker.run_until_idle()
    return [(row["id"], row["provider_id"]) for row in ph.store.list_notifications(limit=count)]


def callback(
    client: httpx.Client | None,
    base: str,
    params: dict[str, str],
    notification: int | None = None,
) -> httpx.Response:
    path = "/webhooks/twilio/status" + (f"?notification={notification}" if notification else "")
    return post_as_twilio(base, path, params, client=client)


def reports(ph: Any) -> int:
    with ph.engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(delivery_reports)).scalar_one()
        )


def test_a_signed_callback_records_the_delivery(ph: Any, server: LiveServer) -> None:
    ((notification, sid),) = sent_notifications(ph, 1)
    response = callback(
        None, server.url, {"MessageSid": sid, "MessageStatus": "delivered"}, notification
    )
    assert response.json() == {"outcome": "updated"}
    (row,) = ph.store.list_notifications()
    assert row["delivery_status"] == "delivered"


def test_a_failure_keeps_twilios_error_code(ph: Any, server: LiveServer) -> None:
    ((notification, sid),) = sent_notifications(ph, 1)
    callback(
        None,
        server.url,
        {"MessageSid": sid, "MessageStatus": "undelivered", "ErrorCode": "30003"},
        notification,
    )
    (row,) = ph.store.list_notifications()
    assert (row["delivery_status"], row["delivery_error_code"]) == ("undelivered", "30003")


@pytest.mark.parametrize("how", ["unsigned", "wrong token", "other url", "tampered"])
def test_a_callback_that_does_not_verify_gets_403_and_changes_nothing(
    ph: Any, server: LiveServer, how: str
) -> None:
    ((notification, sid),) = sent_notifications(ph, 1)
    params = {"MessageSid": sid, "MessageStatus": "delivered"}
    path = f"/webhooks/twilio/status?notification={notification}"
    signature = RequestValidator("0" * 32 if how == "wrong token" else TOKEN).compute_signature(
        ("https://evil.example.com" if how == "other url" else PUBLIC) + path, params
    )
    if how == "tampered":
        params["MessageStatus"] = "failed"
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Forwarded-Host": "evil.example.com",
    }
    if how != "unsigned":
        headers["X-Twilio-Signature"] = signature
    response = httpx.post(f"{server.url}{path}", content=urlencode(params), headers=headers)
    assert response.status_code == 403
    assert "X-Twilio-Signature" in response.json()["error"]
    assert ph.store.list_notifications()[0]["delivery_status"] is None
    assert reports(ph) == 0


def test_without_a_public_url_callbacks_are_refused(sqlite_url: str) -> None:
    built = build_for_tests(sqlite_url, settings={**SETTINGS, "PAYHERALD_PUBLIC_URL": ""})
    with LiveServer(built.http_app) as live:
        response = callback(None, live.url, {"MessageSid": "SM1", "MessageStatus": "sent"})
    assert response.status_code == 403
    assert "PAYHERALD_PUBLIC_URL" in response.json()["error"]
    built.engine.dispose()


def test_a_callback_for_an_unknown_message_is_kept_and_answered_200(
    ph: Any, server: LiveServer
) -> None:
    response = callback(None, server.url, {"MessageSid": "SMnotours", "MessageStatus": "sent"})
    assert (response.status_code, response.json()) == (200, {"outcome": "unknown"})
    assert reports(ph) == 1


@pytest.mark.timeout(600)
def test_callbacks_for_1000_messages_shuffled_and_repeated_never_regress(
    ph: Any, server: LiveServer
) -> None:
    sent = sent_notifications(ph, 1000)
    rng = random.Random(2026)
    final = {}
    calls = []
    for notification, sid in sent:
        last = rng.choice([("delivered", None), ("undelivered", "30003"), ("read", None)])
        path = ["queued", "sent"] + (["delivered"] if last[0] == "read" else []) + [last[0]]
        final[notification] = last
        for status in path:
            params = {"MessageSid": sid, "MessageStatus": status}
            if status == last[0] and last[1]:
                params["ErrorCode"] = last[1]
            calls += [(params, notification)] * rng.choice([1, 2, 3])
    rng.shuffle(calls)
    with httpx.Client(timeout=30) as client, concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda call: callback(client, server.url, *call), calls))
    assert {answer.status_code for answer in answers} == {200}
    rows = {row["id"]: row for row in ph.store.list_notifications(limit=1000)}
    for notification, (status, code) in final.items():
        assert (
            rows[notification]["delivery_status"],
            rows[notification]["delivery_error_code"],
        ) == (status, code)
    distinct = {(params["MessageSid"], params["MessageStatus"]) for params, _ in calls}
    assert reports(ph) == len(distinct)
