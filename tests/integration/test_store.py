"""The store on SQLite and PostgreSQL: durable, deduplicated, claimable once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from payherald import FrozenClock, StripeEvent, parse_event
from payherald.rules import PlannedNotification
from payherald.store import Store
from payherald.store.engine import create_store_engine, migrate
from payherald.store.schema import metadata
from payherald.store.transitions import Outcome
from tests.support import event_body


@pytest.fixture
def store(database_url: str, clock: FrozenClock) -> Iterator[Store]:
    engine = create_store_engine(database_url.replace("postgresql://", "postgresql+psycopg://"))
    migrate(engine)
    yield Store(engine=engine, clock=clock)
    engine.dispose()


def event(event_id: str = "evt_1") -> StripeEvent:
    return parse_event(event_body(event_id=event_id))


def planned(*subject: str, kind: str = "payment") -> PlannedNotification:
    return PlannedNotification(
        rule="payment_confirmation",
        recipient="customer",
        channel="sms",
        livemode=False,
        subject_kind=kind,
        subject=subject or ("pi_1",),
    )


def test_migrations_create_exactly_the_declared_schema(store: Store) -> None:
    with store.db.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diff == []


def test_migrate_twice_is_harmless(store: Store) -> None:
    migrate(store.db.engine)
    store.db.check_schema()


def test_an_event_and_its_notifications_are_stored_together(store: Store) -> None:
    result = store.record_event(event(), [planned()])
    assert (result.duplicate, result.queued) == (False, 1)
    assert [e["id"] for e in store.list_events()] == ["evt_1"]
    (row,) = store.list_notifications()
    assert (row["event_id"], row["status"], row["attempts"]) == ("evt_1", "pending", 0)


def test_a_repeated_event_stores_and_queues_nothing(store: Store) -> None:
    store.record_event(event(), [planned()])
    result = store.record_event(event(), [planned()])
    assert (result.duplicate, result.queued) == (True, 0)
    assert store.count_notifications() == 1


def test_another_event_for_the_same_payment_queues_nothing_new(store: Store) -> None:
    store.record_event(event("evt_1"), [planned()])
    result = store.record_event(event("evt_2"), [planned()])
    assert (result.duplicate, result.queued) == (False, 0)
    assert len(store.list_events()) == 2
    assert store.count_notifications() == 1


def test_an_event_no_rule_handles_is_kept_as_ignored(store: Store) -> None:
    store.record_event(parse_event(event_body("customer.created", event_id="evt_c")), [])
    assert store.list_events()[0]["status"] == "ignored"


def test_get_event_gives_one_stored_event_as_listed_and_none_for_another(store: Store) -> None:
    store.record_event(event("evt_1"), [planned()])
    assert store.get_event("evt_1") == store.list_events()[0]
    assert store.get_event("evt_nope") is None


def test_a_claim_is_given_to_one_worker_only(store: Store) -> None:
    store.record_event(event(), [planned()])
    first = store.queue.claim(worker_id="a", limit=10, lease=60)
    second = store.queue.claim(worker_id="b", limit=10, lease=60)
    assert [n.key for n in first] == ["payment_confirmation:pi_1"]
    assert second == []


def test_concurrent_claims_never_overlap(store: Store) -> None:
    for index in range(60):
        store.record_event(event(f"evt_{index}"), [planned(f"pi_{index}")])
    claimed: dict[str, list[int]] = {}

    def claim_all(worker: str) -> None:
        mine = claimed.setdefault(worker, [])
        while batch := store.queue.claim(worker_id=worker, limit=3, lease=60):
            mine.extend(n.id for n in batch)

    threads = [threading.Thread(target=claim_all, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in claimed.values() for i in ids]
    assert len(every) == 60
    assert len(set(every)) == 60


def test_an_expired_claim_returns_to_the_queue(store: Store, clock: FrozenClock) -> None:
    store.record_event(event(), [planned()])
    (claimed,) = store.queue.claim(worker_id="a", limit=1, lease=60)
    clock.advance(61)
    assert store.queue.expire_leases() == (1, 0)
    (again,) = store.queue.claim(worker_id="b", limit=1, lease=60)
    assert again.id == claimed.id


def test_an_expired_send_becomes_unknown_not_pending(store: Store, clock: FrozenClock) -> None:
    store.record_event(event(), [planned()])
    (claimed,) = store.queue.claim(worker_id="a", limit=1, lease=60)
    assert store.queue.mark_sending(claimed, to="+14155550123", body="hi", channel="sms", lease=60)
    clock.advance(61)
    assert store.queue.expire_leases() == (0, 1)
    assert store.queue.claim(worker_id="b", limit=1, lease=60) == []
    assert store.list_notifications()[0]["status"] == "unknown"


def test_a_worker_that_lost_its_claim_cannot_record_an_outcome(
    store: Store, clock: FrozenClock
) -> None:
    store.record_event(event(), [planned()])
    (claimed,) = store.queue.claim(worker_id="a", limit=1, lease=60)
    clock.advance(61)
    store.queue.expire_leases()
    store.queue.claim(worker_id="b", limit=1, lease=60)
    assert not store.queue.mark_sending(
        claimed, to="+14155550123", body="hi", channel="sms", lease=60
    )


def test_the_development_secret_is_made_once(store: Store) -> None:
    secret = store.meta.development_secret()
    assert secret.startswith("whsec_")
    assert store.meta.development_secret() == secret


def test_a_stalled_thread_of_the_same_worker_cannot_act_on_a_reclaimed_row(
    store: Store, clock: FrozenClock
) -> None:
    store.record_event(event(), [planned()])
    (stalled,) = store.queue.claim(worker_id="same", limit=1, lease=60)
    clock.advance(61)
    store.queue.expire_leases()
    (fresh,) = store.queue.claim(worker_id="same", limit=1, lease=60)
    assert store.queue.mark_sending(fresh, to="+14155550123", body="hi", channel="sms", lease=60)
    assert store.queue.settle(fresh, Outcome.SENT, provider_id="SM1")
    # The first thread wakes up: the row is sent and no longer its claim.
    assert not store.queue.mark_sending(
        stalled, to="+14155550123", body="hi", channel="sms", lease=60
    )
    assert not store.queue.settle(stalled, Outcome.SENT, provider_id="SM2")
    (row,) = store.list_notifications()
    assert (row["status"], row["provider_id"], row["attempts"]) == ("sent", "SM1", 1)


def test_a_sent_notification_cannot_be_moved_back(store: Store) -> None:
    store.record_event(event(), [planned()])
    (held,) = store.queue.claim(worker_id="a", limit=1, lease=60)
    store.queue.mark_sending(held, to="+14155550123", body="hi", channel="sms", lease=60)
    store.queue.settle(held, Outcome.SENT, provider_id="SM1")
    assert not store.queue.mark_sending(held, to="+14155550123", body="hi", channel="sms", lease=60)
    assert not store.queue.settle(held, Outcome.RETRY, run_at=datetime.now(UTC), error="late")
    assert not store.queue.settle(held, Outcome.UNKNOWN, error="late", run_at=datetime.now(UTC))
    assert store.list_notifications()[0]["status"] == "sent"


def test_sending_starts_a_fresh_lease(store: Store, clock: FrozenClock) -> None:
    store.record_event(event(), [planned()])
    (held,) = store.queue.claim(worker_id="a", limit=1, lease=60)
    clock.advance(50)  # a slow customer lookup
    store.queue.mark_sending(held, to="+14155550123", body="hi", channel="sms", lease=60)
    clock.advance(50)  # a slow provider: 100 s after the claim, 50 s into the send
    assert store.queue.expire_leases() == (0, 0)


def test_aliases_link_events_that_name_a_payment_differently(store: Store) -> None:
    store.record_event(event("evt_1"), [planned("pi_1", "ch_1")])
    store.record_event(event("evt_2"), [planned("in_1")])  # knows nothing of pi_1 yet
    store.record_event(event("evt_3"), [planned("in_1", "cs_1")])
    assert store.count_notifications() == 2  # pi_1 and in_1 looked like two payments
    store.record_event(event("evt_4"), [planned("pi_2", "in_2")])
    store.record_event(event("evt_5"), [planned("in_2", "ch_2")])
    store.record_event(event("evt_6"), [planned("cs_2", "ch_2")])
    assert store.count_notifications() == 3  # the second payment was linked from the start
    keys = sorted(row["key"] for row in store.list_notifications())
    assert keys == [
        "payment_confirmation:in_1",
        "payment_confirmation:pi_1",
        "payment_confirmation:pi_2",
    ]
