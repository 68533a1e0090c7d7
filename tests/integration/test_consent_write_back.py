"""Opt-outs written back to the Stripe customer, against localstripe: a STOP by SMS
sets ``payherald_opted_out`` on the customer payherald messaged; a START clears it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import stripe
from sqlalchemy import select

from payherald import FrozenClock, parse_event
from payherald.consent import read_consent_csv
from payherald.jobs import Job, JobRunner
from payherald.simulate import build_event
from payherald.store.consents import WRITE_BACK_JOB
from payherald.store.schema import consents
from payherald.stripe_sync import OPTED_OUT_AT_KEY, OPTED_OUT_KEY, ConsentWriteBack
from payherald.testing import ScriptedChannel
from tests import peers
from tests.integration.test_inbound import reply
from tests.support import TWILIO_SETTINGS, LiveServer, build_for_tests

PHONE = "+14155550123"


@pytest.fixture
def ph(sqlite_url: str, localstripe: peers.LocalStripe, sms: ScriptedChannel) -> Iterator[Any]:
    settings = {
        **TWILIO_SETTINGS,
        "STRIPE_SECRET_KEY": "sk_test_payherald",
        "STRIPE_API_BASE": localstripe.url,
    }
    built = build_for_tests(
        sqlite_url, settings=settings, clock=FrozenClock(), channels={"sms": sms}
    )
    yield built
    built.engine.dispose()


def write_backs(ph: Any) -> list[tuple[str, str | None, str | None]]:
    with ph.engine.connect() as connection:
        return [
            (row.action, row.stripe_status, row.stripe_result)
            for row in connection.execute(select(consents).order_by(consents.c.id))
        ]


def message_customer(ph: Any, customer: str) -> None:
    """Send ``customer`` a text (that their subscription is cancelled)."""
    payload = build_event("customer.subscription.deleted", now=ph.store.clock.now(), livemode=True)
    payload["data"]["object"]["customer"] = customer
    event = parse_event(json.dumps(payload).encode())
    ph.store.record_event(event, ph.rules.plan(event))
    ph.worker.run_until_idle()


def test_stop_and_start_are_written_to_the_customer_messaged_at_that_number(
    ph: Any, localstripe: peers.LocalStripe, sms: ScriptedChannel
) -> None:
    client = localstripe.stripe_client()
    customer = client.v1.customers.create(params={"name": "Ada Lovelace", "phone": PHONE}).id
    other = client.v1.customers.create(params={"name": "Grace", "phone": "+14155550199"}).id
    message_customer(ph, customer)
    assert [message.to for message in sms.delivered] == [PHONE]

    with LiveServer(ph.http_app) as server:
        assert reply(server.url, " Stop ", sid="SM1").status_code == 200
        assert reply(server.url, "STOP", sid="SM1").status_code == 200  # a replay
        ph.worker.run_until_idle()
        metadata = client.v1.customers.retrieve(customer).metadata
        assert metadata[OPTED_OUT_KEY] == "true"
        assert metadata[OPTED_OUT_AT_KEY].endswith("Z")
        assert OPTED_OUT_KEY not in client.v1.customers.retrieve(other).metadata.to_dict()
        assert write_backs(ph) == [("opt_out", "done", f"updated {customer}")]

        assert reply(server.url, "start", sid="SM2").status_code == 200
        ph.worker.run_until_idle()
    metadata = client.v1.customers.retrieve(customer).metadata
    # Stripe deletes a key set to ""; localstripe keeps it empty.
    assert not metadata.to_dict().get(OPTED_OUT_KEY)
    assert write_backs(ph)[-1] == ("opt_in", "done", f"updated {customer}")


def test_a_number_payherald_never_messaged_has_no_customer_to_update(
    ph: Any, localstripe: peers.LocalStripe
) -> None:
    with LiveServer(ph.http_app) as server:
        assert reply(server.url, "STOP", sid="SM9", sender="+14155550177").status_code == 200
    ph.worker.run_until_idle()
    assert write_backs(ph) == [
        ("opt_out", "no_customer", "no Stripe customer has been messaged at this number")
    ]


def test_an_imported_opt_out_is_written_back(
    ph: Any, localstripe: peers.LocalStripe, sms: ScriptedChannel
) -> None:
    client = localstripe.stripe_client()
    customer = client.v1.customers.create(params={"name": "Ada Lovelace", "phone": PHONE}).id
    message_customer(ph, customer)
    rows, problems = read_consent_csv(f"phone\n{PHONE}\n", default_region="US")
    assert problems == []
    assert ph.store.consents.import_rows(rows, source="import:old.csv", write_back=True) == 1
    ph.worker.run_until_idle()
    assert client.v1.customers.retrieve(customer).metadata[OPTED_OUT_KEY] == "true"
    assert write_backs(ph) == [("opt_out", "done", f"updated {customer}")]


class RecordingCustomers:
    """Stands in for ``StripeClient.v1.customers``: records updates, fails as scripted."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.updates: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def update(self, customer: str, params: dict[str, Any], options: dict[str, Any]) -> None:
        self.updates.append((customer, params, options))
        if self.failures:
            raise self.failures.pop(0)


def write_back_runner(ph: Any, customers: RecordingCustomers, clock: FrozenClock) -> JobRunner:
    """A job runner that runs write-back jobs only, against ``customers``."""
    write_back = ConsentWriteBack(
        store=ph.store, client=SimpleNamespace(v1=SimpleNamespace(customers=customers))
    )
    runner = JobRunner(jobs=ph.store.jobs, clock=clock, worker_id="test")
    write_back.register(runner)
    return runner


def jobs_of(ph: Any) -> list[Job]:
    """The write-back jobs of the consent records, oldest first."""
    with ph.engine.connect() as connection:
        numbers = connection.execute(select(consents.c.id).order_by(consents.c.id)).scalars()
        keys = [f"{WRITE_BACK_JOB}:{number}" for number in numbers]
    return [job for key in keys if (job := ph.store.jobs.get(key)) is not None]


def messaged(database_url: str, sms: ScriptedChannel, clock: FrozenClock) -> Any:
    # A dunning text alone, sent at once: no wait for its payment's failure event.
    settings = {**TWILIO_SETTINGS, "PAYHERALD_LINK_GRACE_SECONDS": "0"}
    ph = build_for_tests(database_url, settings=settings, clock=clock, channels={"sms": sms})
    payload = build_event("invoice.payment_failed", now=clock.now(), livemode=True)
    payload["data"]["object"]["customer"] = "cus_A"
    event = parse_event(json.dumps(payload).encode())
    ph.store.record_event(event, ph.rules.plan(event))
    ph.worker.run_until_idle()
    return ph


def test_a_failed_update_is_retried_later_with_the_same_idempotency_key(
    database_url: str, sms: ScriptedChannel
) -> None:
    clock = FrozenClock()
    ph = messaged(database_url, sms, clock)
    customers = RecordingCustomers(stripe.APIConnectionError("connection reset"))
    runner = write_back_runner(ph, customers, clock)
    ph.store.consents.record(
        address=PHONE,
        action="opt_out",
        channel="sms",
        words="STOP",
        source="reply",
        write_back=True,
    )
    assert runner.run_due() == 1  # failed: due again after the backoff
    (job,) = jobs_of(ph)
    assert (job.status, job.attempts) == ("pending", 1)
    assert "APIConnectionError" in (job.last_error or "")  # its traceback
    assert write_backs(ph) == [("opt_out", "pending", "APIConnectionError: connection reset")]
    assert runner.run_due() == 0  # not yet due
    assert len(customers.updates) == 1
    clock.advance(60)
    assert runner.run_due() == 1
    first, second = customers.updates
    assert first == second
    assert first[0] == "cus_A"
    assert first[1]["metadata"][OPTED_OUT_KEY] == "true"
    assert first[2] == {"idempotency_key": "payherald-consent-1-cus_A"}
    assert write_backs(ph) == [("opt_out", "done", "updated cus_A")]
    clock.advance(3600)
    assert runner.run_due() == 0  # settled: never written again
    assert [job.status for job in jobs_of(ph)] == ["done"]
    ph.engine.dispose()


def test_only_the_last_word_is_written(database_url: str, sms: ScriptedChannel) -> None:
    clock = FrozenClock()
    ph = messaged(database_url, sms, clock)
    customers = RecordingCustomers()
    runner = write_back_runner(ph, customers, clock)
    for action in ("opt_out", "opt_in"):
        ph.store.consents.record(
            address=PHONE,
            action=action,
            channel="sms",
            words=None,
            source="reply",
            write_back=True,
        )
    runner.run_until_idle()
    assert [update[1]["metadata"][OPTED_OUT_KEY] for update in customers.updates] == [""]
    assert [status for _, status, _ in write_backs(ph)] == ["superseded", "done"]
    ph.engine.dispose()


def test_a_write_back_pending_at_the_upgrade_is_queued_as_its_job(
    database_url: str, sms: ScriptedChannel
) -> None:
    """A consent record an older payherald left pending (due by its own stripe_due_at)
    gets its job from the migration that brought the job queue, and is written back."""
    from alembic import command

    from payherald.store.engine import _alembic_config, create_store_engine, migrate

    engine = create_store_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    command.upgrade(_alembic_config(engine), "0009")
    clock = FrozenClock()
    with engine.begin() as connection:
        connection.execute(
            consents.insert().values(
                address=PHONE,
                action="opt_out",
                channel="sms",
                words="STOP",
                source="reply",
                created_at=clock.now(),
                stripe_status="pending",
                stripe_attempts=2,
                stripe_due_at=clock.now(),
            )
        )
    migrate(engine)
    engine.dispose()
    ph = messaged(database_url, sms, clock)
    (job,) = jobs_of(ph)
    assert (job.kind, job.payload, job.status, job.attempts) == (
        WRITE_BACK_JOB,
        {"consent_id": 1},
        "pending",
        2,
    )
    customers = RecordingCustomers()
    write_back_runner(ph, customers, clock).run_until_idle()
    assert [update[0] for update in customers.updates] == ["cus_A"]
    assert write_backs(ph) == [("opt_out", "done", "updated cus_A")]
    ph.engine.dispose()
