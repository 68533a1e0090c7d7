"""Sends on the job queue, on SQLite and PostgreSQL: each waiting notification has one job,
due when it is, moved with it in the transaction that records what became of it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, update

from payherald import FrozenClock, StripeEvent, TransientDeliveryError, parse_event
from payherald.channels import ReconcileOutcome, Reconciliation
from payherald.event_facts import EventFacts
from payherald.rules import PlannedNotification
from payherald.store.jobs import Job
from payherald.store.outbox import RECONCILE_JOB, SEND_JOB, job_key
from payherald.store.records import PlannedEvent, event_row
from payherald.store.schema import events, notifications
from payherald.store.transitions import Outcome
from payherald.testing import ScriptedChannel
from tests.support import build_for_tests, event_body


@pytest.fixture
def ph(database_url: str, clock: FrozenClock, sms: ScriptedChannel) -> Iterator[Any]:
    built = build_for_tests(database_url, clock=clock, channels={"sms": sms})
    yield built
    built.engine.dispose()


def live_event(payment: str) -> StripeEvent:
    body = json.loads(event_body(livemode=True, event_id=f"evt_{payment}"))
    body["data"]["object"]["id"] = payment
    return parse_event(json.dumps(body).encode())


def confirmation(payment: str) -> PlannedNotification:
    return PlannedNotification(
        rule="payment_confirmation",
        recipient="customer",
        channel="sms",
        livemode=True,
        subject_kind="payment",
        subject=(payment,),
    )


def receive(ph: Any, payment: str = "pi_1") -> dict[str, Any]:
    """A live payment's event, recorded; its one notification."""
    event = live_event(payment)
    ph.store.record_event(event, ph.rules.plan(event))
    (row,) = [row for row in ph.store.list_notifications() if row["event_id"] == event.id]
    return dict(row)


def row_of(ph: Any, notification_id: int) -> dict[str, Any]:
    (row,) = [row for row in ph.store.list_notifications() if row["id"] == notification_id]
    return dict(row)


def job_of(ph: Any, notification_id: int) -> Job | None:
    job: Job | None = ph.store.jobs.get(job_key(notification_id))
    return job


def test_a_queued_notification_has_its_send_job_until_it_is_sent(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    row = receive(ph)
    job = job_of(ph, row["id"])
    assert job is not None
    assert (job.kind, job.status, job.payload, job.due_at) == (
        SEND_JOB,
        "pending",
        {"notification": row["id"]},
        clock.now(),
    )
    assert ph.worker.run_until_idle() == 1
    assert row_of(ph, row["id"])["status"] == "sent"
    # The notification's row is the record of the send; its job is gone with the send.
    assert job_of(ph, row["id"]) is None
    assert len(sms.delivered) == 1


def test_a_retry_makes_the_job_due_when_the_notification_is(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(TransientDeliveryError("Twilio answered 503", code="http_503"))
    row = receive(ph)
    ph.worker.run_until_idle()
    waiting = row_of(ph, row["id"])
    job = job_of(ph, row["id"])
    assert job is not None
    assert (waiting["status"], job.kind, job.status) == ("pending", SEND_JOB, "pending")
    assert job.due_at == waiting["run_at"] > clock.now()
    assert ph.worker.run_until_idle() == 0  # not due yet
    clock.advance(3600)
    assert ph.worker.run_until_idle() == 1
    assert row_of(ph, row["id"])["status"] == "sent"
    assert job_of(ph, row["id"]) is None
    assert len(sms.delivered) == 1


def test_a_send_due_in_a_week_runs_once_a_week_later(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    row = receive(ph)
    (held,) = ph.store.queue.claim(worker_id="test", limit=1, lease=60)
    week = clock.now() + timedelta(days=7)
    assert ph.store.queue.settle(held, Outcome.RETRY, run_at=week, error="later", attempts=0)
    clock.advance(7 * 86400 - 1)
    assert ph.worker.run_until_idle() == 0
    clock.advance(2)
    assert ph.worker.run_until_idle() == 1
    clock.advance(7 * 86400)
    assert ph.worker.run_until_idle() == 0
    assert row_of(ph, row["id"])["status"] == "sent"
    assert len(sms.delivered) == 1


def test_an_unknown_outcome_is_reconciled_by_a_job_of_its_own_kind(
    ph: Any, sms: ScriptedChannel, clock: FrozenClock
) -> None:
    sms.script(ConnectionResetError("reset"))
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.UNDETERMINED)
    row = receive(ph)
    ph.worker.run_until_idle()
    unknown = row_of(ph, row["id"])
    job = job_of(ph, row["id"])
    assert job is not None
    assert (unknown["status"], job.kind, job.due_at) == (
        "unknown",
        RECONCILE_JOB,
        unknown["run_at"],
    )
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.DELIVERED, provider_id="SMfound")
    clock.advance(600)
    ph.worker.run_until_idle()
    sent = row_of(ph, row["id"])
    assert (sent["status"], sent["provider_id"]) == ("sent", "SMfound")
    assert job_of(ph, row["id"]) is None
    assert len(sms.attempts) == 1  # reconciled, never sent again


def test_a_finished_notifications_job_goes_with_the_next_claim(ph: Any) -> None:
    """A finished notification leaves its job held by the claim that finished it (taken by
    nobody else); the worker's next claim deletes it, with the others finished since, and
    so does a worker that stops (discard_finished)."""
    first, second = receive(ph, "pi_1"), receive(ph, "pi_2")
    queue = ph.store.queue
    held = queue.claim(worker_id="a", limit=2, lease=60)
    assert queue.settle(held[0], Outcome.FAILED, error="Refused")
    job = job_of(ph, first["id"])
    assert job is not None
    assert (job.status, job.claim) == ("running", held[0].claim)
    assert queue.claim(worker_id="a", limit=2, lease=60) == []
    assert job_of(ph, first["id"]) is None
    assert queue.settle(held[1], Outcome.FAILED, error="Refused")
    queue.discard_finished()
    assert job_of(ph, second["id"]) is None


def test_a_failed_notification_replayed_before_its_job_went_is_sent_once(
    ph: Any, sms: ScriptedChannel
) -> None:
    """The claim that finished a notification deletes its job later, by key and claim: a
    replay that queues the notification again in between makes the job fresh, so the
    deletion misses it and the notification is sent, once."""
    row = receive(ph)
    queue = ph.store.queue
    (held,) = queue.claim(worker_id="a", limit=1, lease=60)
    assert queue.settle(held, Outcome.FAILED, error="Refused")
    assert ph.store.replay_event(row["event_id"], []) == (0, 1, 0)
    job = job_of(ph, row["id"])
    assert job is not None
    assert (job.kind, job.status, job.claim) == (SEND_JOB, "pending", None)
    assert ph.worker.run_until_idle() == 1
    assert row_of(ph, row["id"])["status"] == "sent"
    assert job_of(ph, row["id"]) is None
    assert len(sms.delivered) == 1


def test_the_jobs_a_stopped_worker_had_not_deleted_go_after_their_lease(
    ph: Any, database_url: str, clock: FrozenClock, sms: ScriptedChannel
) -> None:
    """A worker killed after finishing a notification, before deleting its job: once the
    job's lease has run out, another worker drops it and sends nothing."""
    row = receive(ph)
    (held,) = ph.store.queue.claim(worker_id="killed", limit=1, lease=60)
    assert ph.store.queue.settle(held, Outcome.FAILED, error="Refused")
    other = build_for_tests(database_url, clock=clock, channels={"sms": sms})
    assert other.worker.run_until_idle() == 0
    assert job_of(ph, row["id"]) is not None  # still within its lease
    clock.advance(61)
    assert other.worker.run_until_idle() == 0
    assert job_of(ph, row["id"]) is None
    assert (row_of(ph, row["id"])["status"], sms.attempts) == ("failed", [])
    other.engine.dispose()


def test_a_job_whose_notification_was_finished_elsewhere_is_dropped(
    ph: Any, sms: ScriptedChannel
) -> None:
    row = receive(ph)
    with ph.engine.begin() as connection:
        connection.execute(update(notifications).values(status="skipped"))
    assert ph.worker.run_until_idle() == 0
    assert job_of(ph, row["id"]) is None
    assert sms.attempts == []


def test_notifications_waiting_at_the_upgrade_get_their_jobs(
    database_url: str, clock: FrozenClock, sms: ScriptedChannel
) -> None:
    """Notifications an older payherald left waiting (scheduled by their own columns) get
    their jobs from the migration that put sends on the job queue: those pending or claimed
    are sent, those being sent or of unknown outcome are reconciled, never sent blindly."""
    from alembic import command

    from payherald.store.engine import _alembic_config, create_store_engine

    engine = create_store_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    command.upgrade(_alembic_config(engine), "0010")
    left = {}
    now = clock.now()
    with engine.begin() as connection:  # rows as the version before wrote them
        for status in ("pending", "claimed", "sending", "unknown"):
            event = live_event(f"pi_{status}")
            row = event_row(PlannedEvent(event, ()), now)
            for later in EventFacts(kind="other").as_row():  # columns added since
                del row[later]
            connection.execute(insert(events).values(row))
            called = {"claimed_by": "old:1/x", "to": "+14155550123", "body": "hi"}
            left[status] = connection.execute(
                insert(notifications)
                .values(
                    key=f"payment_confirmation:pi_{status}",
                    event_id=event.id,
                    rule="payment_confirmation",
                    recipient="customer",
                    channel="sms",
                    livemode=True,
                    subject=f"payment:pi_{status}",
                    status=status,
                    attempts=0,
                    created_at=now,
                    updated_at=now,
                    run_at=now,
                    **(called if status != "pending" else {}),
                )
                .returning(notifications.c.id)
            ).scalar_one()
    engine.dispose()
    sms.reconcile_answer = Reconciliation(ReconcileOutcome.DELIVERED, provider_id="SMold")
    ph = build_for_tests(database_url, clock=clock, channels={"sms": sms})
    kinds = {status: job_of(ph, number) for status, number in left.items()}
    assert {status: job.kind for status, job in kinds.items() if job is not None} == {
        "pending": SEND_JOB,
        "claimed": SEND_JOB,
        "sending": RECONCILE_JOB,
        "unknown": RECONCILE_JOB,
    }
    ph.worker.run_until_idle()
    rows = {status: row_of(ph, number) for status, number in left.items()}
    assert {status: row["status"] for status, row in rows.items()} == dict.fromkeys(left, "sent")
    assert rows["sending"]["provider_id"] == rows["unknown"]["provider_id"] == "SMold"
    assert sorted(m.notification_id for m in sms.attempts) == sorted(
        (left["pending"], left["claimed"])
    )
    assert all(job_of(ph, number) is None for number in left.values())
    ph.engine.dispose()


def test_a_send_in_flight_is_not_reconciled_before_its_call_could_have_ended(
    ph: Any, clock: FrozenClock
) -> None:
    """Even with its job set free early (by anything that releases jobs of every kind), a
    notification being sent is not taken, to send or to reconcile, before the lease of its
    provider call runs out."""
    row = receive(ph)
    queue = ph.store.queue
    (held,) = queue.claim(worker_id="a", limit=1, lease=60)
    clock.advance(50)
    assert queue.mark_sending(held, to="+14155550123", body="hi", channel="sms", lease=60)
    clock.advance(20)  # the claim's lease ran out; the call's runs to 110 s
    assert queue.expire_leases() == (0, 0)
    assert ph.store.jobs.expire_leases() == 1  # every kind: the send's job is free
    assert queue.claim(worker_id="b", limit=1, lease=60) == []
    assert queue.claim_unknown(worker_id="b", limit=1, lease=60) == []
    assert row_of(ph, row["id"])["status"] == "sending"
    clock.advance(41)  # now the call's lease has run out too
    (orphan,) = queue.claim_unknown(worker_id="b", limit=1, lease=60)
    assert (orphan.id, orphan.status) == (row["id"], "unknown")
