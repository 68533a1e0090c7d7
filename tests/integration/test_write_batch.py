"""The worker's state changes on SQLite: many threads' writes in one transaction, each
caller answered with its own result once that transaction committed."""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, insert, select

from payherald.tables import meta
from payherald.write_batch import WriteBatcher
from tests.support import build_for_tests

WRITES = 32


@pytest.fixture
def ph(sqlite_url: str) -> Iterator[Any]:
    built = build_for_tests(sqlite_url)
    yield built
    built.engine.dispose()


def stored_keys(ph: Any) -> set[str]:
    with ph.engine.connect() as connection:
        return set(connection.execute(select(meta.c.key)).scalars())


def write_key(index: int) -> Callable[[Connection], int]:
    def write(connection: Connection) -> int:
        connection.execute(insert(meta).values(key=f"k{index}", value="v"))
        return index

    return write


def run_held(
    batcher: WriteBatcher, writes: list[Callable[[Connection], Any]]
) -> list[concurrent.futures.Future[Any]]:
    """Run ``writes`` from as many threads while the writer is held in a first write, so
    that they all queue and go in the batch after it."""
    entered, release = threading.Event(), threading.Event()

    def held(_connection: Connection) -> str:
        entered.set()
        assert release.wait(30)
        return "held"

    pool = concurrent.futures.ThreadPoolExecutor(len(writes) + 1)
    first = pool.submit(batcher.run, held)
    assert entered.wait(30)
    futures = [pool.submit(batcher.run, write) for write in writes]
    while len(batcher._queue) < len(writes):  # every caller has queued its write
        threading.Event().wait(0.01)
    release.set()
    assert first.result(30) == "held"
    pool.shutdown(wait=True)
    return futures


def test_concurrent_writes_share_one_transaction_and_each_gets_its_result(ph: Any) -> None:
    batcher = WriteBatcher(transaction=ph.store.transaction)
    futures = run_held(batcher, [write_key(index) for index in range(WRITES)])
    assert [future.result() for future in futures] == list(range(WRITES))
    assert batcher.batches == 2  # the held write's, then all the others together
    assert stored_keys(ph) >= {f"k{index}" for index in range(WRITES)}


def test_a_write_that_fails_fails_alone(ph: Any) -> None:
    batcher = WriteBatcher(transaction=ph.store.transaction)

    def broken(_connection: Connection) -> int:
        raise ValueError("a bug in one write")

    writes = [write_key(0), broken, write_key(2)]
    futures = run_held(batcher, writes)
    assert futures[0].result() == 0
    with pytest.raises(ValueError, match="a bug in one write"):
        futures[1].result()
    assert futures[2].result() == 2
    # The batch was rolled back and each write ran again alone.
    assert stored_keys(ph) >= {"k0", "k2"}
    assert batcher.batches == 2


def test_the_worker_state_changes_go_through_the_batcher_on_sqlite(ph: Any) -> None:
    from payherald import parse_event
    from tests.support import event_body

    event = parse_event(event_body(livemode=True))
    ph.store.record_event(event, ph.rules.plan(event))
    (claimed,) = ph.store.claim(worker_id="w", limit=10, lease=60)
    batches = ph.store._batched.batches
    assert ph.store.mark_skipped(claimed, reason="test")
    assert ph.store._batched.batches == batches + 1
    assert not ph.store.mark_skipped(claimed, reason="again")  # no longer claimed
