"""GET /metrics over real HTTP: counters, queue gauges and latency histograms move
as events come in and the worker drains the queue, on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from payherald import (
    FrozenClock,
    PermanentDeliveryError,
    TransientDeliveryError,
    WebhookVerifier,
    parse_event,
)
from payherald.builtin_rules import BUILTIN_RULES
from payherald.metrics import Metrics
from payherald.rules import RuleBook
from payherald.server import create_http_app
from payherald.store import Store
from payherald.store.engine import create_store_engine
from payherald.templates import TemplateRenderer
from payherald.testing import ScriptedChannel
from payherald.webhook import StripeEvent
from tests.peers import free_port
from tests.support import OTHER_SECRET, SECRET, LiveServer, build_for_tests, event_body, sign

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
QUEUE_STATES = ("pending_due", "pending_scheduled", "claimed", "sending", "unknown")


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return parse(response.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; a labelled series not yet seen counts as 0."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def queue(samples: Samples) -> dict[str, float]:
    """The queue gauges, which must always be there, each state even at 0."""
    depth = {
        state: samples[("payherald_queue_depth", (("status", state),))] for state in QUEUE_STATES
    }
    return {**depth, "oldest_age": samples[("payherald_queue_oldest_age_seconds", ())]}


def post(url: str, body: bytes, header: str) -> httpx.Response:
    return httpx.post(
        f"{url}/webhooks/stripe",
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": header},
        timeout=30,
    )


@pytest.fixture
def sms() -> ScriptedChannel:
    """The first send is throttled (retry in 60 s), the second accepted, the third refused
    for good; later sends are accepted."""
    return ScriptedChannel(
        "sms",
        script=[
            TransientDeliveryError("Twilio answered 429: too many requests", retry_after=60),
            None,
            PermanentDeliveryError("Twilio refused the message", code="twilio_21211"),
        ],
    )


@pytest.fixture
def ph(database_url: str, clock: FrozenClock, sms: ScriptedChannel) -> Iterator[Any]:
    built = build_for_tests(database_url, clock=clock, channels={"sms": sms})
    yield built
    built.engine.dispose()


def test_metrics_follow_events_through_the_worker(
    ph: Any, server: LiveServer, clock: FrozenClock
) -> None:
    start = scrape(server.url)
    assert queue(start) == dict.fromkeys([*QUEUE_STATES, "oldest_age"], 0.0)

    bodies = [event_body(event_id=f"evt_{name}", livemode=True) for name in "abc"]
    for body in bodies:
        assert post(server.url, body, sign(body)).json()["queued"] == 1
    assert post(server.url, bodies[0], sign(bodies[0])).json()["duplicate"] is True
    assert post(server.url, bodies[0], sign(bodies[0], OTHER_SECRET)).status_code == 400
    ignored = event_body("issuing_card.created", event_id="evt_ignored")
    assert post(server.url, ignored, sign(ignored)).json()["queued"] == 0
    clock.advance(30)

    received = scrape(server.url)
    counted = {
        outcome: delta(
            start,
            received,
            "payherald_events_total",
            type="payment_intent.succeeded",
            outcome=outcome,
        )
        for outcome in ("queued", "duplicate", "nothing_to_do", "failed", "not_stored")
    }
    assert counted == {
        "queued": 3,
        "duplicate": 1,
        "nothing_to_do": 0,
        "failed": 0,
        "not_stored": 0,
    }
    events_total = "payherald_events_total"
    kind = {"type": "issuing_card.created", "outcome": "nothing_to_do"}
    assert delta(start, received, events_total, **kind) == 1
    assert delta(start, received, events_total, type="unknown", outcome="rejected") == 1
    # Accepted requests are timed (the rejected one is not).
    assert delta(start, received, "payherald_ingest_seconds_count") == 5
    assert delta(start, received, "payherald_ingest_seconds_sum") > 0
    assert queue(received) == {**queue(start), "pending_due": 3, "oldest_age": 30.0}

    # a is throttled (retry in 60 s), b is sent, c is refused by SMS and, with no email
    # address for the rule's next channel, fails.
    ph.worker.run_until_idle()
    drained = scrape(server.url)
    notifications = "payherald_notifications_total"
    outcomes = ("sent", "retry", "refused", "failed", "skipped", "deferred", "unknown")
    assert {
        s: delta(received, drained, notifications, channel="sms", status=s) for s in outcomes
    } == {
        "sent": 1,
        "retry": 1,
        "refused": 1,
        "failed": 1,
        "skipped": 0,
        "deferred": 0,
        "unknown": 0,
    }
    assert delta(received, drained, "payherald_end_to_end_seconds_count") == 1
    assert delta(received, drained, "payherald_end_to_end_seconds_sum") == 30.0
    assert queue(drained) == {**queue(start), "pending_scheduled": 1}

    clock.advance(75)  # a has been due for 15 s
    assert queue(scrape(server.url)) == {**queue(start), "pending_due": 1, "oldest_age": 15.0}

    ph.worker.run_until_idle()
    done = scrape(server.url)
    assert delta(drained, done, notifications, channel="sms", status="sent") == 1
    assert delta(drained, done, "payherald_end_to_end_seconds_count") == 1
    assert delta(drained, done, "payherald_end_to_end_seconds_sum") == 105.0
    # 105 s is over the 60 s bucket, under the 120 s one.
    buckets = "payherald_end_to_end_seconds_bucket"
    assert delta(drained, done, buckets, le="60.0") == 0
    assert delta(drained, done, buckets, le="120.0") == 1
    assert queue(done) == queue(start)


class BrokenRules(RuleBook):
    """Rules with a bug: planning any event raises."""

    def plan(self, event: StripeEvent) -> Any:
        raise KeyError("a payload nobody foresaw")


def test_a_customer_no_channel_can_reach_is_counted_under_no_channel(
    ph: Any, server: LiveServer
) -> None:
    start = scrape(server.url)
    payload = json.loads(event_body(event_id="evt_nobody", livemode=True))
    payload["data"]["object"].update(shipping=None, receipt_email=None)
    body = json.dumps(payload).encode()
    assert post(server.url, body, sign(body)).json()["queued"] == 1
    ph.worker.run_until_idle()
    done = scrape(server.url)
    failed = "payherald_notifications_total"
    assert delta(start, done, failed, channel="none", status="failed") == 1
    assert delta(start, done, failed, channel="sms", status="failed") == 0


def test_a_planning_failure_and_an_unwritable_store_are_counted(tmp_path: Path) -> None:
    def app_on(database: Path, rules: RuleBook) -> Any:
        store = Store(engine=create_store_engine(f"sqlite:///{database}"), clock=FrozenClock())
        return create_http_app(
            store=store,
            verifier=WebhookVerifier(secrets=[SECRET], clock=FrozenClock()),
            rules=rules,
            metrics=Metrics(store=store),
        )

    built = build_for_tests(f"sqlite:///{tmp_path / 'payherald.db'}")
    broken = app_on(
        tmp_path / "payherald.db", BrokenRules(BUILTIN_RULES, renderer=TemplateRenderer())
    )
    with LiveServer(broken) as live:
        body = event_body(event_id="evt_bug")
        assert post(live.url, body, sign(body)).status_code == 200
        samples = scrape(live.url)
    failed = {"type": "payment_intent.succeeded", "outcome": "failed"}
    assert value(samples, "payherald_events_total", **failed) == 1
    assert value(samples, "payherald_ingest_seconds_count") == 1
    built.engine.dispose()

    missing = tmp_path / "no-such-directory" / "payherald.db"
    unwritable = app_on(missing, RuleBook(BUILTIN_RULES, renderer=TemplateRenderer()))
    with LiveServer(unwritable) as live:
        body = event_body(event_id="evt_lost")
        assert post(live.url, body, sign(body)).status_code == 503
        samples = scrape(live.url)  # the counters are still served
    lost = {"type": "payment_intent.succeeded", "outcome": "not_stored"}
    assert value(samples, "payherald_events_total", **lost) == 1
    assert value(samples, "payherald_ingest_seconds_count") == 0
    # Without the database the queue is not known: its gauges are left out, not made up.
    assert not any(name.startswith("payherald_queue") for name, _ in samples)


def test_two_apps_in_one_process_count_apart(tmp_path: Path) -> None:
    first = build_for_tests(f"sqlite:///{tmp_path / 'first.db'}")
    second = build_for_tests(f"sqlite:///{tmp_path / 'second.db'}")
    with LiveServer(first.http_app) as one, LiveServer(second.http_app) as two:
        body = event_body(event_id="evt_one")
        assert post(one.url, body, sign(body)).status_code == 200
        queued = {"type": "payment_intent.succeeded", "outcome": "queued"}
        assert value(scrape(one.url), "payherald_events_total", **queued) == 1
        assert value(scrape(two.url), "payherald_events_total", **queued) == 0
        assert queue(scrape(two.url))["pending_due"] == 0
    first.engine.dispose()
    second.engine.dispose()


def test_a_process_without_the_http_app_can_serve_its_metrics(tmp_path: Path) -> None:
    ph = build_for_tests(f"sqlite:///{tmp_path / 'payherald.db'}")
    ph.store.record_event(parse_event(body := event_body()), ph.rules.plan(parse_event(body)))
    port = free_port()
    metrics_server = ph.metrics.serve(port=port)
    try:
        samples = scrape(f"http://127.0.0.1:{port}")
    finally:
        metrics_server.shutdown()
        metrics_server.server_close()
    assert queue(samples)["pending_due"] == 1
    ph.engine.dispose()
