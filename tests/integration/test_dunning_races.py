"""An invoice's failure and its payment recorded at the same instant, on PostgreSQL, by two
threads on two connections (two deliveries handled at once): whichever commits first, no
sequence is left open after the payment, and no step of it is left to be sent."""

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
