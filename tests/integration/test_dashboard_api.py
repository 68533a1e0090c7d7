"""The JSON API under /api/ as a program calls it, over real HTTP on loopback, on SQLite
and PostgreSQL: events posted seconds apart as Stripe sends them (today's shapes), listed
and filtered on the store's indexes, one event's trace, today's figures, a failed
notification retried, and every refusal a clear status with nothing changed."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response

from payherald.exceptions import PermanentDeliveryError
from payherald.simulate import build_event, build_payment_events, build_renewal_failure_events
from tests.support import StripeOnLoopback, served_with_admin_token

TOKEN = "dashboard-admin-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
CUSTOMER = "+14155550123"


@pytest.fixture
def stripe(database_url: str) -> Iterator[StripeOnLoopback]:
    with served_with_admin_token(
        database_url, TOKEN, PAYHERALD_TIMEZONE="America/New_York"
    ) as stripe:
        yield stripe


def api(stripe: StripeOnLoopback, path: str, **params: Any) -> Any:
    response = stripe.client.get(path, params=params, headers=BEARER)
    assert response.status_code == 200, response.text
    return response.json()


def event(stripe: StripeOnLoopback, event_type: str, **options: Any) -> dict[str, Any]:
    return build_event(event_type, now=stripe.clock.now(), phone=CUSTOMER, **options)


def test_events_list_newest_first_with_amount_customer_and_statuses(
    stripe: StripeOnLoopback,
) -> None:
    paid = event(stripe, "payment_intent.succeeded", amount=4200)
    failed = event(stripe, "payment_intent.payment_failed")
    stripe.send(paid)
    stripe.send(failed)

    page = api(stripe, "/api/events")
    assert [item["id"] for item in page["items"]] == [failed["id"], paid["id"]]
    assert page["next"] is None
    first = page["items"][1]
    assert first["kind"] == "succeeded"
    assert (first["amount"], first["currency"], first["amount_text"]) == (4200, "usd", "$42.00")
    assert first["customer"] == paid["data"]["object"]["customer"]
    assert [n["status"] for n in first["notifications"]] == ["sent"]
    assert first["notifications"][0]["to"] == CUSTOMER
    assert page["items"][0]["kind"] == "failed"


def test_a_payment_reported_by_several_events_counts_once_today(
    stripe: StripeOnLoopback,
) -> None:
    for item in build_payment_events(now=stripe.clock.now(), phone=CUSTOMER, amount=2500):
        stripe.send(item)
    stripe.send(event(stripe, "charge.failed"))
    # One refund, as today's Stripe reports it: refund.created, and charge.refunded (which
    # does not name the refund, so only the first counts, as the digest counts it).
    stripe.send(event(stripe, "refund.created", amount=700))
    stripe.send(event(stripe, "charge.refunded", amount=700))

    stats = api(stripe, "/api/stats")
    assert stats["mode"] == "test"
    assert stats["day"] == "2026-12-04"
    assert stats["succeeded"] == [
        {"currency": "usd", "count": 1, "amount": 2500, "amount_text": "$25.00"}
    ]
    assert stats["failed"] == 1
    assert stats["refunds"] == [
        {"currency": "usd", "count": 1, "amount": 700, "amount_text": "$7.00"}
    ]
    assert stats["messages_sent"] == 3  # the payment, the failure, the refund
    assert len(stats["chart"]) == 30
    assert stats["chart"][-1] == {"day": "2026-12-04", "succeeded": 1, "failed": 1}
    assert api(stripe, "/api/stats", mode="live")["succeeded"] == []


def test_filters_by_kind_status_and_text(stripe: StripeOnLoopback) -> None:
    paid = event(stripe, "payment_intent.succeeded")
    paid["data"]["object"]["customer"] = "cus_dashboard_test"
    refund = event(stripe, "refund.created")
    other = build_event("payment_intent.succeeded", now=stripe.clock.now(), phone="+14155550999")
    for item in (paid, refund, other):
        stripe.send(item)

    def ids(**params: Any) -> list[str]:
        return [item["id"] for item in api(stripe, "/api/events", **params)["items"]]

    assert ids(kind="refund") == [refund["id"]]
    assert set(ids(kind="succeeded")) == {paid["id"], other["id"]}
    assert ids(q="0999") == [other["id"]]
    assert ids(q=paid["id"]) == [paid["id"]]
    assert ids(q="cus_dashboard_test") == [paid["id"]]
    assert set(ids(q="Jenny.Rosen@example.com")) == {paid["id"], other["id"]}  # receipts
    assert ids(status="failed") == []
    assert set(ids(status="sent")) >= {paid["id"], other["id"]}


def test_pages_follow_the_cursor_without_repeats(stripe: StripeOnLoopback) -> None:
    sent = [event(stripe, "payment_intent.succeeded") for _ in range(5)]
    for item in sent:
        stripe.send(item, pause=1.0)
    seen: list[str] = []
    cursor = None
    while True:
        page = api(stripe, "/api/events", limit=2, **({"before": cursor} if cursor else {}))
        seen += [item["id"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [item["id"] for item in reversed(sent)]


def test_trace_tells_the_story_of_an_event(stripe: StripeOnLoopback) -> None:
    paid = event(stripe, "payment_intent.succeeded")
    stripe.send(paid)
    stripe.send(paid)  # Stripe's retry of the same event: acknowledged, nothing more

    trace = api(stripe, f"/api/events/{paid['id']}")
    whats = [step["what"] for step in trace["steps"]]
    assert whats[0] == "received"
    assert "rule matched" in whats
    assert "sent" in whats
    assert whats.index("rule matched") < whats.index("sent")
    (notification,) = trace["notifications"]
    assert notification["status"] == "sent"
    assert notification["retryable"] is False
    assert trace["payload"]["id"] == paid["id"]


def test_a_failed_notification_is_retried_once_and_only_when_failed(
    stripe: StripeOnLoopback,
) -> None:
    stripe.sms.script(PermanentDeliveryError("carrier refused", code="twilio_30007"))
    stripe.send(event(stripe, "payment_intent.succeeded", livemode=True))
    (failed,) = api(stripe, "/api/notifications", status="failed")["items"]
    assert failed["retryable"] is True

    retried = stripe.client.post(f"/api/notifications/{failed['id']}/retry", headers=BEARER)
    assert retried.status_code == 202, retried.text
    assert retried.json()["status"] == "pending"
    stripe.ph.worker.run_until_idle()
    assert api(stripe, "/api/notifications")["items"][0]["status"] == "sent"

    trace = api(stripe, f"/api/events/{failed['event_id']}")
    story = [(step["what"], step["detail"]) for step in trace["steps"]]
    whats = [what for what, _ in story]
    assert whats.index("failed") < whats.index("queued again") < whats.index("sent")
    assert "[twilio_30007]" in dict(story)["failed"]
    assert "retried by an operator" in dict(story)["queued again"]
    (earlier,) = trace["notifications"][0]["earlier"]
    assert (earlier["error_code"], earlier["by"]) == ("twilio_30007", "retry")

    again = stripe.client.post(f"/api/notifications/{failed['id']}/retry", headers=BEARER)
    assert again.status_code == 409
    assert "is sent, not failed" in again.json()["error"]
    missing = stripe.client.post("/api/notifications/999999/retry", headers=BEARER)
    assert missing.status_code == 404


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/api/events", {"kind": "nope"}, 422, "kind"),
        ("/api/events", {"limit": "0"}, 422, "limit"),
        ("/api/events", {"q": "x" * 101}, 422, "q"),
        ("/api/events", {"before": "not-a-cursor"}, 422, "cursor"),
        ("/api/events/evt_missing", {}, 404, "No event evt_missing"),
    ],
)
def test_bad_requests_get_a_clear_error(
    stripe: StripeOnLoopback, path: str, params: dict[str, str], status: int, words: str
) -> None:
    response = stripe.client.get(path, params=params, headers=BEARER)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_wrong_or_missing_token_is_refused_and_changes_nothing(
    stripe: StripeOnLoopback,
) -> None:
    stripe.sms.script(PermanentDeliveryError("carrier refused", code="twilio_30007"))
    stripe.send(event(stripe, "payment_intent.succeeded", livemode=True))
    (failed,) = api(stripe, "/api/notifications", status="failed")["items"]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        listed = stripe.client.get("/api/events", headers=headers)
        assert listed.status_code == 401
        assert "PAYHERALD_ADMIN_TOKEN" in listed.json()["error"]
        retried = stripe.client.post(f"/api/notifications/{failed['id']}/retry", headers=headers)
        assert retried.status_code == 401
    assert api(stripe, "/api/notifications")["items"][0]["status"] == "failed"


def test_a_session_cookie_needs_its_csrf_token_for_an_action(
    stripe: StripeOnLoopback,
) -> None:
    stripe.sms.script(PermanentDeliveryError("carrier refused", code="twilio_30007"))
    stripe.send(event(stripe, "payment_intent.succeeded", livemode=True))
    (failed,) = api(stripe, "/api/notifications", status="failed")["items"]
    auth = stripe.ph.http_app.state.auth
    asking = Request(
        {
            "type": "http",
            "scheme": "http",
            "path": "/signin",
            "query_string": b"",
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", stripe.server.port),
            "headers": [(b"host", b"127.0.0.1")],
        }
    )
    session = auth.sign_in(asking, TOKEN)
    answer = Response()
    auth.set_cookie(answer, asking, session)
    cookie = SimpleCookie(answer.headers["set-cookie"])["payherald_session"].value
    with httpx.Client(base_url=stripe.server.url, cookies={"payherald_session": cookie}) as browser:
        assert browser.get("/api/events").status_code == 200
        forged = browser.post(
            f"/api/notifications/{failed['id']}/retry", headers={"X-CSRF-Token": "forged"}
        )
        assert forged.status_code == 403
        assert "CSRF" in forged.json()["error"]
        assert api(stripe, "/api/notifications")["items"][0]["status"] == "failed"
        good = browser.post(
            f"/api/notifications/{failed['id']}/retry",
            headers={"X-CSRF-Token": auth.csrf_token(session)},
        )
        assert good.status_code == 202
    stripe.clock.advance(timedelta(hours=13).total_seconds())
    with httpx.Client(base_url=stripe.server.url, cookies={"payherald_session": cookie}) as late:
        assert late.get("/api/events").status_code == 401


def test_guessing_the_bearer_token_is_limited_per_client(stripe: StripeOnLoopback) -> None:
    for n in range(5):
        guessed = stripe.client.get("/api/events", headers={"Authorization": f"Bearer g{n}"})
        assert guessed.status_code == 401
    limited = stripe.client.get("/api/events", headers=BEARER)  # even the right token, now
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert "Too many wrong tokens" in limited.json()["error"]
    stripe.clock.advance(61)
    assert stripe.client.get("/api/events", headers=BEARER).status_code == 200


def test_the_chart_counts_each_day_once_and_keeps_counting_as_days_pass(
    stripe: StripeOnLoopback,
) -> None:
    stripe.send(event(stripe, "payment_intent.succeeded"))  # 2026-12-04, 10:00 in New York
    stripe.clock.advance(86400)
    stripe.send(event(stripe, "charge.failed"))

    def chart() -> list[dict[str, Any]]:
        return stripe.ph.store.history.stats(livemode=False, timezone="America/New_York")["chart"]

    first = chart()
    assert first[-2:] == [
        {"day": "2026-12-04", "succeeded": 1, "failed": 0},
        {"day": "2026-12-05", "succeeded": 0, "failed": 1},
    ]
    assert chart() == first  # the past days from memory, today counted again
    stripe.clock.advance(86400)
    stripe.send(event(stripe, "payment_intent.succeeded"))
    later = chart()
    assert later[-3:] == [
        {"day": "2026-12-04", "succeeded": 1, "failed": 0},
        {"day": "2026-12-05", "succeeded": 0, "failed": 1},
        {"day": "2026-12-06", "succeeded": 1, "failed": 0},
    ]
    assert sum(day["succeeded"] + day["failed"] for day in later) == 3


def test_a_payment_counts_on_the_day_it_was_first_told(stripe: StripeOnLoopback) -> None:
    # 23:59:50 in New York: the payment intent's event that evening, the others after
    # midnight.
    stripe.clock.advance(
        (datetime(2026, 12, 5, 4, 59, 50, tzinfo=UTC) - stripe.clock.now()).total_seconds()
    )
    first, *later = build_payment_events(now=stripe.clock.now(), phone=CUSTOMER, amount=2500)
    stripe.send(first, pause=0)
    for item in later:
        stripe.send(item, pause=10)
    stats = api(stripe, "/api/stats")
    assert stats["day"] == "2026-12-05"
    assert stats["succeeded"] == []  # yesterday's
    assert stats["chart"][-2:] == [
        {"day": "2026-12-04", "succeeded": 1, "failed": 0},
        {"day": "2026-12-05", "succeeded": 0, "failed": 0},
    ]


def test_a_free_trial_and_a_declined_renewal_count_as_what_they_are(
    stripe: StripeOnLoopback,
) -> None:
    stripe.send(event(stripe, "payment_intent.succeeded", amount=0))
    for item in build_renewal_failure_events(now=stripe.clock.now(), phone=CUSTOMER):
        stripe.send(item)
    stats = api(stripe, "/api/stats")
    assert stats["succeeded"] == []
    assert stats["failed"] == 1  # its invoice, payment intent and charge: one declined card
    assert stats["chart"][-1] == {"day": "2026-12-04", "succeeded": 0, "failed": 1}
