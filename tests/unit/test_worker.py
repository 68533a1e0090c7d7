"""The worker and the sender on fakes (an in-memory store, scripted channels): each
outcome of an attempt moves the notification, is counted and is acted on as the
transitions table says, with no database and no provider."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from typing import Any

import pytest

from payherald import PermanentDeliveryError, TransientDeliveryError, parse_event
from payherald.channels.base import ReconcileOutcome, Reconciliation
from payherald.ingest import plan_event
from payherald.jobs import JobRunner
from payherald.metrics import Metrics
from payherald.ratelimit import RateLimiter
from payherald.sender import Sender
from payherald.simulate import build_event
from payherald.testing import InMemoryJobs, InMemoryStore
from payherald.webhook import StripeEvent
from payherald.worker import Worker
from tests.unit.composing import AFTERNOON, CUSTOMER, EMAIL, PHONE, Parts


class Rig:
    """A worker, its sender and the fakes they run on."""

    def __init__(self, *, max_attempts: int = 3) -> None:
        self.parts = Parts(AFTERNOON, customer=CUSTOMER)
        self.clock = self.parts.clock
        self.store = InMemoryStore(clock=self.clock)
        self.metrics = Metrics()
        sender = Sender(
            store=self.store,  # type: ignore[arg-type]
            composer=self.parts.composer,
            router=self.parts.router,
            clock=self.clock,
            limiter=RateLimiter({}),
            metrics=self.metrics,
            lease=60.0,
            max_attempts=max_attempts,
            retry_base=5.0,
            max_age=86400.0,
            write_back=False,
        )
        self.jobs = JobRunner(jobs=InMemoryJobs(clock=self.clock), clock=self.clock, worker_id="w")
        self.worker = Worker(
            store=self.store,  # type: ignore[arg-type]
            sender=sender,
            clock=self.clock,
            lease=60.0,
            jobs=self.jobs,
        )

    def event(
        self, event_type: str = "payment_intent.payment_failed", **changes: Any
    ) -> StripeEvent:
        payload = build_event(event_type, now=self.clock.now(), livemode=True)
        payload["data"]["object"].update(customer="cus_1", **changes)
        return parse_event(json.dumps(payload).encode())

    def record(self, event: StripeEvent) -> None:
        self.store.record_event(event, self.parts.rules.plan(event))

    def counted(self, channel: str, status: str) -> float:
        value = self.metrics.registry.get_sample_value(
            "payherald_notifications_total", {"channel": channel, "status": status}
        )
        return value or 0.0


@pytest.fixture
def rig() -> Rig:
    return Rig()


def test_a_failed_payment_is_texted_once_and_counted_once(rig: Rig) -> None:
    event = rig.event()
    rig.record(event)
    assert rig.worker.run_until_idle() == 1
    assert [message.to for message in rig.parts.sms.delivered] == [PHONE]
    row = rig.store.notification(1)
    assert (row["status"], row["channel"], row["to"]) == ("sent", "sms", PHONE)
    assert row["provider_id"] == "sms-1-1"
    assert rig.counted("sms", "sent") == 1

    rig.record(event)  # Stripe's retry of it
    assert rig.worker.run_until_idle() == 0
    assert len(rig.parts.sms.attempts) == 1
    assert rig.counted("sms", "sent") == 1


def test_a_provider_error_is_retried_with_backoff_then_given_up(rig: Rig) -> None:
    rig.parts.sms.script(*(TransientDeliveryError("Twilio answered 503", code="http_503"),) * 3)
    rig.record(rig.event())
    rig.worker.run_until_idle()
    row = rig.store.notification(1)
    assert (row["status"], row["attempts"], row["error_code"]) == ("pending", 1, "http_503")
    wait = row["run_at"] - rig.clock.now()
    assert timedelta(seconds=2.5) <= wait <= timedelta(seconds=5)
    assert rig.worker.run_until_idle() == 0  # not due yet
    for _ in range(2):
        rig.clock.advance(3600)
        assert rig.worker.run_until_idle() == 1
    row = rig.store.notification(1)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["error"] == "Gave up after 3 attempts: Twilio answered 503"
    assert (rig.counted("sms", "retry"), rig.counted("sms", "failed")) == (2, 1)
    assert rig.parts.sms.delivered == []


def test_a_channel_that_refuses_for_good_hands_the_message_to_the_next(rig: Rig) -> None:
    rig.parts.sms.script(PermanentDeliveryError("not a mobile number", code="twilio_21614"))
    rig.record(rig.event())
    assert rig.worker.run_until_idle() == 2
    assert [message.to for message in rig.parts.email.delivered] == [EMAIL]
    row = rig.store.notification(1)
    assert (row["status"], row["channel"]) == ("sent", "email")
    assert row["refusals"] == "sms\tnot a mobile number"
    assert (rig.counted("sms", "refused"), rig.counted("email", "sent")) == (1, 1)


def test_a_send_that_ended_in_doubt_is_reconciled_never_resent(rig: Rig) -> None:
    rig.parts.sms.script(ConnectionResetError("reset after the request was sent"))
    rig.record(rig.event())
    rig.worker.run_until_idle()
    assert rig.store.notification(1)["status"] == "unknown"
    assert rig.counted("sms", "unknown") == 1

    rig.parts.sms.reconcile_answer = Reconciliation(ReconcileOutcome.UNDETERMINED)
    rig.clock.advance(121)
    rig.worker.run_until_idle()
    assert rig.store.notification(1)["status"] == "unknown"  # asked again, still not known

    rig.parts.sms.reconcile_answer = Reconciliation(ReconcileOutcome.DELIVERED, provider_id="SM9")
    rig.clock.advance(121)
    rig.worker.run_until_idle()
    row = rig.store.notification(1)
    assert (row["status"], row["provider_id"]) == ("sent", "SM9")
    assert len(rig.parts.sms.attempts) == 1
    assert (rig.counted("sms", "unknown"), rig.counted("sms", "sent")) == (1, 1)


def test_an_opt_out_stops_the_send_on_every_channel(rig: Rig) -> None:
    rig.store.consents.suppress(EMAIL, "opted out (reply: STOP)")
    rig.record(rig.event())
    rig.worker.run_until_idle()
    row = rig.store.notification(1)
    assert (row["status"], row["error_code"]) == ("failed", "suppressed")
    assert row["error"].endswith("opted out (reply: STOP); no channel of the rule may carry it")
    assert rig.parts.sms.attempts == []
    assert rig.parts.email.attempts == []
    assert rig.counted("sms", "failed") == 1


def test_a_crash_while_preparing_fails_the_notification_and_the_worker_goes_on(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(notification: Any) -> Any:
        raise KeyError("amount")

    monkeypatch.setattr(rig.parts.composer, "compose", broken)
    rig.record(rig.event())
    rig.record(rig.event())
    assert rig.worker.run_until_idle() == 2
    for number in (1, 2):
        row = rig.store.notification(number)
        assert (row["status"], row["error_code"]) == ("failed", "internal_error")
        assert row["error"] == "Could not prepare the message: KeyError: 'amount'"


def test_a_lease_that_ran_out_during_the_call_is_reconciled(rig: Rig) -> None:
    rig.record(rig.event())
    (held,) = rig.store.queue.claim(worker_id="gone", limit=10, lease=60)
    assert rig.store.queue.mark_sending(held, to=PHONE, body="hi", channel="sms", lease=60)
    rig.clock.advance(61)  # the worker that held it died during the provider call
    rig.parts.sms.reconcile_answer = Reconciliation(ReconcileOutcome.NOT_DELIVERED)
    rig.worker.run_until_idle()
    # The provider had no record of it: sent again, once.
    assert [message.to for message in rig.parts.sms.delivered] == [PHONE]
    assert rig.store.notification(1)["status"] == "sent"


def test_a_busy_worker_claims_a_few_at_a_time_not_slot_by_slot(rig: Rig) -> None:
    """With sends in flight, a freed slot alone does not make a claim (a transaction per
    message); a quarter of the slots free does."""
    for number in range(12):
        rig.record(rig.event(id=f"pi_{number}"))
    worker = Worker(
        store=rig.store,  # type: ignore[arg-type]
        sender=rig.worker._sender,
        clock=rig.clock,
        lease=60.0,
        jobs=rig.jobs,
        concurrency=8,
        poll_interval=30.0,
    )
    limits: list[int] = []
    claim = rig.store.queue.claim

    def recorded(**kwargs: Any) -> Any:
        claimed = claim(**kwargs)
        if claimed:
            limits.append(kwargs["limit"])
        return claimed

    rig.store.queue.claim = recorded  # type: ignore[method-assign]
    go, calling = threading.Semaphore(0), threading.Semaphore(0)
    send = rig.parts.sms.send

    def held_send(message: Any) -> str:
        calling.release()
        go.acquire()
        return send(message)

    rig.parts.sms.send = held_send  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        for _ in range(8):
            assert calling.acquire(timeout=10)
        go.release()  # one send ends: one slot free of eight
        assert not calling.acquire(timeout=0.5)
        assert limits == [8]
        go.release()  # two free: a quarter
        for _ in range(2):
            assert calling.acquire(timeout=10)
        assert limits == [8, 2]
    finally:
        stop.set()
        for _ in range(12):
            go.release()
        thread.join(timeout=10)
    worker.run_until_idle()  # what was left when it stopped
    assert sorted(message.notification_id for message in rig.parts.sms.delivered) == list(
        range(1, 13)
    )


def test_dunning_steps_fall_due_days_apart_and_stop_once_the_invoice_is_paid(rig: Rig) -> None:
    """On the fakes, the steps of an invoice's dunning are due at their delays, and an
    ``invoice.paid`` for it skips the ones still waiting."""
    failed = rig.event("invoice.payment_failed")
    rig.store.record(plan_event(rig.parts.rules, failed))
    assert rig.worker.run_until_idle() == 1  # the first step; the others are days away
    rig.clock.advance(3 * 86400)
    assert rig.worker.run_until_idle() == 1  # the reminder
    paid = rig.event("invoice.paid", id=failed.object["id"], status="paid")
    rig.store.record(plan_event(rig.parts.rules, paid))
    rig.clock.advance(4 * 86400)
    rig.worker.run_until_idle()
    steps = {
        row["rule"]: row["status"]
        for row in rig.store.notifications.values()
        if row["sequence"] is not None
    }
    assert steps == {
        "invoice_payment_failed": "sent",
        "dunning_reminder": "sent",
        "dunning_final": "skipped",
    }
    sequence = rig.store.dunning.get(failed.object["id"])
    assert sequence is not None
    assert (sequence["status"], sequence["end_reason"]) == ("recovered", "paid")


def test_paying_one_invoice_ends_its_sequence_alone(rig: Rig) -> None:
    first = rig.event("invoice.payment_failed", subscription=None, parent=None)
    second = rig.event("invoice.payment_failed", subscription=None, parent=None)
    for event in (first, second):
        rig.store.record(plan_event(rig.parts.rules, event))
    paid = rig.event("invoice.paid", id=first.object["id"], status="paid")
    rig.store.record(plan_event(rig.parts.rules, paid))
    ended, still = (rig.store.dunning.get(event.object["id"]) for event in (first, second))
    assert ended is not None
    assert still is not None
    assert (ended["status"], still["status"]) == ("recovered", "open")
