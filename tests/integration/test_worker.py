"""The worker on SQLite and PostgreSQL: one send per thing, whatever fails when."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from payherald import FrozenClock, PermanentDeliveryError, TransientDeliveryError, parse_event
from payherald.channels import ConsoleChannel, ReconcileOutcome, Reconciliation
from payherald.recipients import InMemoryCustomerDirectory
from payherald.rules import Rule
from payherald.testing import ScriptedChannel
from tests.support import build_for_tests, event_body


@pytest.fixture
def console() -> ConsoleChannel:
    import io

    return ConsoleChannel(stream=io.StringIO())


@pytest.fixture
def ph(
    database_url: str, clock: FrozenClock, sms: ScriptedChannel, console: ConsoleChannel
) -> Iterator[Any]:
    customers = InMemoryCustomerDirectory(
        {"cus_1": {"id": "cus_1", "phone": "+14155550100", "address": {"country": "US"}}}
    )
    built = build_for_tests(
        database_url, clock=clock, channels={"sms": sms}, console=console, customers=customers
    )
    yield built
    built.engine.dispose()


def receive(ph: Any, body: bytes) -> None:
    event = parse_event(body)
    ph.store.record_event(event, ph.rules.plan(event))


def live(**changes: Any) -> bytes:
    event = json.loads(event_body(livemode=True))
    event["data"]["object"].update(changes)
    return json.dumps(event).encode()


def only(ph: Any, rule: str = "payment_confirmation") -> dict[str, Any]:
    """The one notification of ``rule`` (payments with a customer also get a welcome)."""
    (row,) = [row for row in ph.store.list_notifications() if row["rule"] == rule]
    return dict(row)


def test_a_live_payment_sends_one_sms(ph: Any, sms: ScriptedChannel) -> None:
    receive(ph, live())
    assert ph.worker.run_until_idle() == 1
    row = only(ph)
    assert (row["status"], row["channel"], row["to"]) == ("sent", "sms", "+14155550123")
    assert row["provider_id"] == "sms-1-1"
    assert row["attempts"] == 1
    assert [m.body for m in sms.delivered] == [row["body"]]
    assert "$20.00" in row["body"]


def test_a_test_mode_payment_goes_to_the_console(
    ph: Any, sms: ScriptedChannel, console: ConsoleChannel
) -> None:
    receive(ph, event_body(livemode=False))
    ph.worker.run_until_idle()
    assert only(ph)["channel"] == "console"
    assert only(ph)["status"] == "sent"
    assert sms.attempts == []
    assert len(console.sent) == 1


def test_the_customers_own_phone_is_used(ph: Any, sms: ScriptedChannel) -> None:
    receive(ph, live(customer="cus_1"))
    ph.worker.run_until_idle()
    assert {m.to for m in sms.delivered} == {"+14155550100"}


def test_a_repeated_event_is_sent_once(ph: Any, sms: ScriptedChannel) -> None:
    body = live()
    for _ in range(3):
        receive(ph, body)
        ph.worker.run_until_idle()
    assert len(sms.attempts) == 1


def test_two_events_for_one_payment_intent_send_once(ph: Any, sms: ScriptedChannel) -> None:
    receive(ph, live(id="pi_same"))
    receive(ph, live(id="pi_same"))
    ph.worker.run_until_idle()
    assert len(sms.attempts) == 1
    assert len(ph.store.list_events()) == 2


def test_a_transient_failure_is_retried_later(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(TransientDeliveryError("Twilio answered 503", code="http_503"))
    receive(ph, live())
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["error_code"], row["attempts"]) == ("pending", "http_503", 1)
    assert ph.worker.run_until_idle() == 0  # not due yet
    clock.advance(3600)
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["attempts"], row["error"]) == ("sent", 2, None)
    assert len(sms.delivered) == 1


def test_retries_stop_at_the_limit(ph: Any, sms: ScriptedChannel, clock: FrozenClock) -> None:
    sms.script(*(TransientDeliveryError("busy", code="http_429") for _ in range(30)))
    receive(ph, live())
    for _ in range(30):
        ph.worker.run_until_idle()
        clock.advance(3600)
    row = only(ph)
    assert row["status"] == "failed"
    assert row["attempts"] == 12
    assert row["error"].startswith("Gave up after 12 attempts")


def test_a_permanent_failure_is_not_retried(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(PermanentDeliveryError("not a mobile number", code="twilio_21614"))
    receive(ph, live())
    ph.worker.run_until_idle()
    clock.advance(3600)
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["error_code"]) == ("failed", "twilio_21614")
    assert len(sms.attempts) == 1


def test_no_phone_is_a_recorded_failure(ph: Any, sms: ScriptedChannel) -> None:
    receive(ph, live(shipping=None, metadata={}))
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["error_code"]) == ("failed", "no_recipient")
    assert "No usable phone number" in row["error"]
    assert sms.attempts == []


def test_an_unknown_outcome_found_at_the_provider_is_not_resent(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(ConnectionResetError("connection reset after the request was sent"))
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.DELIVERED, provider_id="SM123")
    receive(ph, live())
    ph.worker.run_until_idle()
    assert only(ph)["status"] == "unknown"
    clock.advance(600)
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["provider_id"]) == ("sent", "SM123")
    assert len(sms.attempts) == 1


def test_an_unknown_outcome_the_provider_never_saw_is_sent_once_more(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(ConnectionResetError("reset"))
    receive(ph, live())
    ph.worker.run_until_idle()
    clock.advance(600)
    ph.worker.run_until_idle()
    assert only(ph)["status"] == "sent"
    assert len(sms.attempts) == 2
    assert len(sms.delivered) == 1


def test_an_undetermined_outcome_stays_unknown(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(ConnectionResetError("reset"))
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.UNDETERMINED)
    receive(ph, live())
    for _ in range(3):
        ph.worker.run_until_idle()
        clock.advance(600)
    assert only(ph)["status"] == "unknown"
    assert len(sms.attempts) == 1


def test_a_worker_that_died_mid_send_is_reconciled_not_resent(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    receive(ph, live())
    # A worker claims, commits "sending", and dies before recording the provider's answer.
    (claimed,) = ph.store.queue.claim(worker_id="dead", limit=1, lease=60)
    ph.store.queue.mark_sending(claimed, to="+14155550123", body="hi", channel="sms", lease=60)
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.DELIVERED, provider_id="SMdead")
    clock.advance(61)
    ph.worker.run_until_idle()
    assert only(ph)["status"] == "sent"
    assert only(ph)["provider_id"] == "SMdead"
    assert sms.attempts == []


def test_a_template_that_cannot_render_is_a_recorded_failure(ph: Any) -> None:
    receive(ph, live())
    ph.rules._rules["payment_confirmation"] = Rule(
        name="payment_confirmation",
        events=frozenset({"payment_intent.succeeded"}),
        template="{{ amount | money('no such currency') }} {{ 1 / 0 }}",
    )
    ph.worker.run_until_idle()
    row = only(ph)
    # The operator's arithmetic, not payherald, is at fault: a render error, in words.
    assert (row["status"], row["error_code"]) == ("failed", "render_error")
    assert row["error"] == "The message could not be rendered: division by zero"


def test_a_template_that_lacks_a_field_uses_the_fallback_text(
    ph: Any, sms: ScriptedChannel
) -> None:
    receive(ph, live(amount="twenty dollars", amount_received=None, id="pi_odd"))
    ph.worker.run_until_idle()
    row = only(ph)
    assert row["status"] == "sent"
    assert row["body"] == "Your payment was received, thank you! Ref: pi_odd"
    assert "fallback text used" in row["notes"]
    assert "$0.00" not in sms.delivered[0].body


def test_a_running_worker_is_woken_not_polling(ph: Any, sms: ScriptedChannel) -> None:
    ph.worker._poll_interval = 30.0
    ph.start_worker()
    try:
        time.sleep(0.2)  # let it go to sleep on its 30 s poll
        receive(ph, live())
        ph.worker.wake()
        deadline = time.monotonic() + 5
        while not sms.delivered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sms.delivered) == 1
    finally:
        ph.stop()


def test_several_workers_share_the_queue_without_double_sends(
    database_url: str, clock: FrozenClock
) -> None:
    sms = ScriptedChannel("sms")
    workers = [build_for_tests(database_url, clock=clock, channels={"sms": sms}) for _ in range(4)]
    for index in range(80):
        receive(workers[0], live(id=f"pi_{index}"))
    for worker in workers:
        worker.start_worker()
    deadline = time.monotonic() + 30
    while len(sms.attempts) < 80 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    for worker in workers:
        worker.stop()
        worker.engine.dispose()
    assert len(sms.attempts) == 80
    assert len({m.notification_id for m in sms.attempts}) == 80


def test_a_worker_elsewhere_is_woken_by_postgres_notify(postgres_url: str) -> None:
    """A worker that shares nothing with the server but the database hears about new
    work through LISTEN/NOTIFY instead of waiting for its next poll."""
    sms = ScriptedChannel("sms")
    server_side = build_for_tests(postgres_url)
    worker_side = build_for_tests(postgres_url, channels={"sms": sms})
    worker_side.worker._poll_interval = 30.0
    worker_side.start_worker()
    try:
        time.sleep(1.0)  # the worker is now asleep on its 30 s poll, and listening
        receive(server_side, live())
        deadline = time.monotonic() + 10
        while not sms.delivered and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(sms.delivered) == 1
    finally:
        worker_side.stop()
        worker_side.engine.dispose()
        server_side.engine.dispose()


def test_an_amount_that_is_not_stripes_integer_is_never_sent_as_zero(
    ph: Any, sms: ScriptedChannel
) -> None:
    ph.rules._rules["payment_confirmation"] = Rule(
        name="payment_confirmation",
        events=frozenset({"payment_intent.succeeded"}),
        template="Paid {{ amount | money(currency) }}",
    )
    receive(ph, live(amount="twenty dollars", amount_received=None))
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["error_code"]) == ("failed", "render_error")
    assert "'twenty dollars'" in row["error"]
    assert sms.attempts == []


class BrokenDirectory:
    def get(self, customer_id: str) -> None:
        raise KeyError("a bug nobody foresaw")

    def has_earlier_payment(self, customer_id: str, **_: Any) -> bool:
        raise KeyError("a bug nobody foresaw")


def test_an_unforeseen_error_is_a_recorded_failure_not_a_crash_loop(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    ph.worker._sender._composer._customers = BrokenDirectory()
    receive(ph, live(customer="cus_1"))
    ph.worker.run_until_idle()
    clock.advance(3600)
    assert ph.worker.run_until_idle() == 0
    row = only(ph)
    assert (row["status"], row["error_code"]) == ("failed", "internal_error")
    assert row["error"].startswith("Could not prepare the message: KeyError")
    assert sms.attempts == []


def test_a_failing_customer_lookup_backs_off_and_gives_up(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    class DownDirectory:
        lookups = 0

        def get(self, customer_id: str) -> None:
            DownDirectory.lookups += 1
            raise TransientDeliveryError("Stripe answered 503", code="stripe_unavailable")

        def has_earlier_payment(self, customer_id: str, **_: Any) -> bool:
            raise TransientDeliveryError("Stripe answered 503", code="stripe_unavailable")

    ph.worker._sender._composer._customers = DownDirectory()
    receive(ph, live(customer="cus_1"))
    for _ in range(50):
        ph.worker.run_until_idle()
        clock.advance(3600)
    row = only(ph)
    assert (row["status"], row["attempts"]) == ("failed", 12)
    assert only(ph, "welcome")["status"] == "failed"
    assert DownDirectory.lookups == 24  # 12 tries for each of the two messages
    assert sms.attempts == []


def test_a_reconcile_that_raises_leaves_the_notification_unknown(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    class Unreachable(ScriptedChannel):
        def reconcile(self, message: Any, attempt_started_at: Any) -> Any:
            raise OSError("network unreachable")

    broken = Unreachable("sms")
    ph.worker._sender._router._channels["sms"] = broken
    broken.script(ConnectionResetError("reset"))
    receive(ph, live(id="pi_first"))
    ph.worker.run_until_idle()  # -> unknown
    clock.advance(600)
    ph.worker.run_until_idle()  # the reconcile raises: still unknown, nothing resent
    assert {n["status"] for n in ph.store.list_notifications()} == {"unknown"}
    assert len(broken.attempts) == 1


def test_retries_stop_at_the_age_limit(ph: Any, sms: ScriptedChannel, clock: FrozenClock) -> None:
    sms.script(*(TransientDeliveryError("busy", code="http_429") for _ in range(5)))
    receive(ph, live())
    ph.worker.run_until_idle()
    clock.advance(86400 + 1)
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["attempts"]) == ("failed", 2)
    assert "over more than 24 hours" in row["error"]


def test_an_outcome_that_stays_unknown_fails_for_a_person_to_look_at(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(ConnectionResetError("reset"))
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.UNDETERMINED)
    receive(ph, live())
    ph.worker.run_until_idle()
    clock.advance(86400 + 600)
    ph.worker.run_until_idle()
    row = only(ph)
    assert (row["status"], row["error_code"]) == ("failed", "outcome_unknown")
    assert len(sms.attempts) == 1
