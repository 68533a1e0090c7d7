"""The group committer on an in-memory store: events that arrive while a commit is in
flight go in the next transaction together; a batch that cannot be written is written
one event at a time; a store that does not answer fails every waiter at once."""

from __future__ import annotations

import json
import threading

import pytest

from payherald import FrozenClock, StoreUnavailable, parse_event
from payherald.group_commit import GroupCommitter
from payherald.simulate import build_event
from payherald.store import PlannedEvent, RecordResult
from payherald.testing import InMemoryStore
from payherald.webhook import StripeEvent
from tests.unit.composing import AFTERNOON, Parts


class GatedStore(InMemoryStore):
    """Holds the first one-event write until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__(clock=FrozenClock(AFTERNOON))
        self.gate = threading.Event()
        self.entered = threading.Event()

    def record(self, item: PlannedEvent) -> RecordResult:
        if not self.entered.is_set():
            self.entered.set()
            assert self.gate.wait(5)
        return super().record(item)


def events(count: int, event_type: str = "payment_intent.succeeded") -> list[StripeEvent]:
    return [
        parse_event(json.dumps(build_event(event_type, now=AFTERNOON)).encode())
        for _ in range(count)
    ]


def committer(store: InMemoryStore, woken: list[int] | None = None) -> GroupCommitter:
    wakes = woken if woken is not None else []
    return GroupCommitter(
        store=store,  # type: ignore[arg-type]
        rules=Parts(AFTERNOON).rules,
        on_queued=lambda: wakes.append(1),
    )


def test_events_that_arrive_during_a_commit_are_written_together_in_the_next() -> None:
    store = GatedStore()
    woken: list[int] = []
    writer = committer(store, woken)
    first, *rest = events(6)
    pending = [writer.submit(first)]
    assert store.entered.wait(5)  # the first is being written, alone
    pending += [writer.submit(event) for event in rest]
    store.gate.set()
    results = [future.result(timeout=5) for future in pending]
    assert [result.queued for result in results] == [1] * 6
    assert store.batches == [5]  # one transaction for the five that waited
    assert woken == [1, 1]  # once per batch that queued work
    assert len(store.notifications) == 6


def test_a_batch_that_cannot_be_written_is_written_event_by_event() -> None:
    store = GatedStore()
    store.refuse_batches = True
    writer = committer(store)
    first, second, third = events(3)
    pending = [writer.submit(first)]
    assert store.entered.wait(5)
    pending += [writer.submit(second), writer.submit(first), writer.submit(third)]
    store.gate.set()
    results = [future.result(timeout=5) for future in pending]
    # Each gets its own answer: the repeat of the first is a duplicate, the others stored.
    assert [result.duplicate for result in results] == [False, False, True, False]
    assert store.batches == []
    assert set(store.events) == {first.id, second.id, third.id}


def test_a_store_that_does_not_answer_fails_every_waiter_at_once() -> None:
    store = GatedStore()
    writer = committer(store)
    first, *rest = events(4)
    pending = [writer.submit(first)]
    assert store.entered.wait(5)
    store.down = True
    pending += [writer.submit(event) for event in rest]
    store.gate.set()
    failures = []
    for future in pending:
        with pytest.raises(StoreUnavailable) as failed:
            future.result(timeout=5)
        failures.append(failed.value)
    # One exception each, so that no request's traceback piles onto another's.
    assert len({id(failure) for failure in failures}) == 4
    assert store.events == {}
