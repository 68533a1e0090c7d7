"""Dunning's races. An invoice's failure and its payment recorded at the same instant, on
PostgreSQL, by two threads on two connections (two deliveries handled at once): whichever
commits first, no sequence is left open after the payment, and no step of it is left to
be sent. A step a worker holds when its invoice is paid: its job goes with the worker's
next claim, not a lease later."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from payherald import StripeEvent, parse_event
from payherald.ingest import plan_event
from payherald.simulate import build_renewal_failure_events
from payherald.store.outbox import job_key
from payherald.store.transitions import Outcome
from tests.support import build_for_tests

ROUNDS = 25


@pytest.fixture
def ph(postgres_url: str) -> Iterator[Any]:
    built = build_for_tests(postgres_url)
    yield built
    built.engine.dispose()


def failure_and_payment(ph: Any, index: int) -> tuple[StripeEvent, StripeEvent]:
    """An invoice.payment_failed and the invoice.paid of the same invoice."""
    raw = build_renewal_failure_events(
        now=datetime.now(UTC), phone=f"+1415555{100 + index:04d}", livemode=True
    )[0]
    paid = copy.deepcopy(raw)
    paid.update(id=raw["id"] + "_paid", type="invoice.paid")
    invoice = paid["data"]["object"]
    invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0)
    return parse_event(json.dumps(raw).encode()), parse_event(json.dumps(paid).encode())


def record_at_once(ph: Any, *events: StripeEvent) -> None:
    """Record ``events``, each in its own thread, released together."""
    barrier = threading.Barrier(len(events))
    errors: list[BaseException] = []

    def record(event: StripeEvent) -> None:
        planned = plan_event(ph.rules, event)
        barrier.wait(10)
        try:
            ph.store.record(planned)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(event,)) for event in events]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors, errors


def test_a_failure_and_its_payment_recorded_at_once_leave_no_sequence_open(ph: Any) -> None:
    invoices = []
    for index in range(ROUNDS):
        failed, paid = failure_and_payment(ph, index)
        # Both orders of starting the threads, in case one tends to win.
        record_at_once(ph, *((failed, paid) if index % 2 else (paid, failed)))
        invoices.append(str(failed.object["id"]))
    for invoice in invoices:
        sequence = ph.store.dunning.get(invoice)
        assert sequence is not None
        # recovered when the failure committed first; ended (never started) otherwise
        assert sequence["status"] in ("recovered", "ended"), sequence
        assert sequence["end_reason"] == "paid"
    steps = [row for row in ph.store.list_notifications(limit=1000) if row["sequence"]]
    assert all(row["status"] == "skipped" for row in steps), [
        (row["sequence"], row["rule"], row["status"]) for row in steps
    ]
    ph.worker.run_until_idle()
    texts = [row for row in ph.store.list_notifications(limit=1000) if row["sequence"]]
    assert all(row["status"] == "skipped" for row in texts)


@pytest.mark.parametrize("refused", ["mark_sending", "settle"])
def test_the_job_of_a_held_step_whose_invoice_was_paid_goes_with_the_next_claim(
    database_url: str, refused: str
) -> None:
    """The payment skips the step a worker holds; the worker's next transition of it (the
    send, or the skip it composed) is refused, and its job is deleted like those of the
    notifications it finished, not left running until the lease runs out."""
    ph = build_for_tests(database_url)
    failed, paid = failure_and_payment(ph, 0)
    ph.store.record(plan_event(ph.rules, failed))
    queue = ph.store.queue
    (step,) = [held for held in queue.claim(worker_id="w", limit=5, lease=600) if held.sequence]
    ph.store.record(plan_event(ph.rules, paid))
    if refused == "mark_sending":
        moved = queue.mark_sending(step, to="+14155550100", body="Hi", channel="sms", lease=600)
    else:
        moved = queue.settle(step, Outcome.SKIPPED, error="The dunning sequence has ended.")
    assert not moved
    queue.discard_finished()  # what a worker that stops does; its next claim does it too
    assert ph.store.jobs.get(job_key(step.id)) is None
    (row,) = [row for row in ph.store.list_notifications() if row["id"] == step.id]
    assert row["status"] == "skipped"
    ph.engine.dispose()
