"""The cache of Stripe answers: bounded in size and in age, for customers as for charges."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from payherald.cache import TtlCache
from payherald.recipients import StripeCustomerDirectory


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_an_answer_is_kept_for_ttl_seconds_then_asked_again() -> None:
    clock, asked = Clock(), list[int]()
    cache: TtlCache[int] = TtlCache(ttl=300, size=10, monotonic=clock)

    def ask(answer: int) -> int:
        asked.append(answer)
        return answer

    assert cache.get_or_fetch("cus_1", lambda: ask(1)) == 1
    clock.now = 299
    assert cache.get_or_fetch("cus_1", lambda: ask(2)) == 1
    clock.now = 300
    assert cache.get_or_fetch("cus_1", lambda: ask(3)) == 3
    assert asked == [1, 3]


def test_it_never_holds_more_than_its_size_and_the_oldest_goes_first() -> None:
    cache: TtlCache[str] = TtlCache(ttl=300, size=3, monotonic=Clock())
    for index in range(10):
        cache.get_or_fetch(f"cus_{index}", lambda index=index: f"customer {index}")  # type: ignore[misc]
    assert len(cache) == 3
    assert cache.get_or_fetch("cus_9", lambda: "asked again") == "customer 9"
    assert cache.get_or_fetch("cus_0", lambda: "asked again") == "asked again"


def test_a_failed_fetch_stores_nothing() -> None:
    cache: TtlCache[str] = TtlCache(ttl=300, size=3, monotonic=Clock())

    def refuse() -> str:
        raise RuntimeError("Stripe is down")

    with pytest.raises(RuntimeError):
        cache.get_or_fetch("cus_1", refuse)
    assert len(cache) == 0


def test_the_customer_directory_is_bounded() -> None:
    asked: list[str] = []

    def retrieve(customer_id: str) -> Any:
        asked.append(customer_id)
        return SimpleNamespace(to_dict=lambda: {"id": customer_id, "phone": "+14155550123"})

    # The Stripe client is the process edge: only customers.retrieve is called.
    client = SimpleNamespace(v1=SimpleNamespace(customers=SimpleNamespace(retrieve=retrieve)))
    directory = StripeCustomerDirectory(client=client, cache_size=2)  # type: ignore[arg-type]
    for customer_id in ("cus_1", "cus_2", "cus_3", "cus_3", "cus_1"):
        assert directory.get(customer_id) == {"id": customer_id, "phone": "+14155550123"}
    assert asked == ["cus_1", "cus_2", "cus_3", "cus_1"]
