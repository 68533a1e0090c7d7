"""Group commit (POST /webhooks/stripe): many requests' events in one transaction, each
request answered once its transaction committed, on SQLite and on PostgreSQL."""

from __future__ import annotations

import concurrent.futures
import json
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
from sqlalchemy import Engine, event, text
from structlog.testing import capture_logs

from payherald import StripeEvent, SystemClock, WebhookVerifier, parse_event
from payherald.builtin_rules import BUILTIN_RULES
from payherald.group_commit import GroupCommitter
from payherald.metrics import Metrics
from payherald.rules import PlannedNotification, RuleBook
from payherald.server import create_http_app
from payherald.simulate import build_payment_events
from payherald.store import PlannedEvent, Store
from payherald.store.engine import create_store_engine
from payherald.store.schema import subject_aliases
from payherald.subjects import payment_aliases
from payherald.templates import TemplateRenderer
from tests.support import SECRET, LiveServer, TcpProxy, build_for_tests, event_body, sign

NOT_STORED = "The event store is unavailable, so the event was not stored; Stripe will retry it."
WRITER = "payherald-group-commit"


def committer_of(app: Any) -> GroupCommitter:
    committer = app.state.group_committer
    assert isinstance(committer, GroupCommitter)
    return committer


def post(url: str, body: bytes, client: httpx.Client | None = None) -> httpx.Response:
    send = client.post if client is not None else httpx.post
    return send(
        f"{url}/webhooks/stripe",
        content=body,
        headers={"Content-Type": "application/json", "Stripe-Signature": sign(body)},
        timeout=60,
    )


def post_all(urls: list[str], bodies: list[bytes], clients: int) -> list[httpx.Response]:
    """POST each body, body i to urls[i % len(urls)], from ``clients`` concurrent
    keep-alive clients; the answers in the bodies' order."""
    idle: queue.SimpleQueue[httpx.Client] = queue.SimpleQueue()
    made = [httpx.Client() for _ in range(clients)]
    for client in made:
        idle.put(client)

    def one(index: int) -> httpx.Response:
        client = idle.get()
        try:
            return post(urls[index % len(urls)], bodies[index], client)
        finally:
            idle.put(client)

    try:
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            return list(pool.map(one, range(len(bodies))))
    finally:
        for client in made:
            client.close()


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


class HeldWriter:
    """Holds the group committer's next transaction at its start until ``release()``,
    as a slow commit would, so that the events posted meanwhile queue up and are written
    together in the batch after it."""

    def __init__(self, engine: Engine) -> None:
        self.entered = threading.Event()
        self._released = threading.Event()
        event.listen(engine, "begin", self._begin)

    def _begin(self, _connection: Any) -> None:
        if threading.current_thread().name == WRITER and not self.entered.is_set():
            self.entered.set()
            assert self._released.wait(60)

    def release(self) -> None:
        # The listener stays (removing it while it runs would break SQLAlchemy's loop
        # over listeners); it holds nothing from now on.
        self._released.set()


class Commits:
    """Counts the transactions committed on an engine."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "commit", self._commit)

    def _commit(self, _connection: Any) -> None:
        self.count += 1


class Fault:
    """Makes the store fail like a full disk: once ``armed``, the ``after``-th INSERT into
    notifications (one statement for a whole batch) and every later write raise the
    driver's OperationalError; or only the INSERTs of events that include ``only``."""

    def __init__(self, engine: Engine, *, after: int = 0, only: str | None = None) -> None:
        self.armed = False
        self.failed = 0
        self._after, self._only, self._seen, self._full = after, only, 0, False
        event.listen(engine, "before_cursor_execute", self._execute)

    def _execute(self, conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if not self.armed or not statement.startswith("INSERT"):
            return
        values = list(params.values()) if isinstance(params, dict) else list(params or ())
        if self._only is not None:
            fail = statement.startswith("INSERT INTO events") and self._only in values
        else:
            if statement.startswith("INSERT INTO notifications"):
                self._seen += 1
                self._full = self._full or self._seen >= self._after
            fail = self._full
        if fail:
            self.failed += 1
            raise conn.dialect.loaded_dbapi.OperationalError("database or disk is full")


def test_concurrent_requests_are_committed_in_batches_each_event_once(
    ph: Any, server: LiveServer
) -> None:
    commits = Commits(ph.engine)
    committer = committer_of(ph.http_app)
    held = HeldWriter(ph.engine)
    # While the first commit is held, 32 clients post: the same event 8 times among the
    # first 32 requests (so in one batch), then 168 other events.
    bodies = [event_body(event_id="evt_repeated")] * 8 + [
        event_body(event_id=f"evt_{index}") for index in range(192)
    ]
    with concurrent.futures.ThreadPoolExecutor(2) as background:
        first = background.submit(post, server.url, event_body(event_id="evt_first"))
        assert held.entered.wait(20)
        answers = background.submit(post_all, [server.url], bodies, 32)
        wait_for(lambda: committer.waiting == 32, "32 requests to queue")
        held.release()
        responses = answers.result(timeout=120)
        assert first.result(timeout=60).status_code == 200
    committed = commits.count

    assert [response.status_code for response in responses] == [200] * 200
    repeated = [response.json() for response in responses[:8]]
    assert sorted(answer["duplicate"] for answer in repeated) == [False] + [True] * 7
    assert sum(answer["queued"] for answer in repeated) == 1
    assert not any(response.json()["duplicate"] for response in responses[8:])
    stored = Counter(row["id"] for row in ph.store.list_events(limit=1000))
    assert set(stored) == {"evt_first", "evt_repeated"} | {f"evt_{i}" for i in range(192)}
    assert set(stored.values()) == {1}
    assert ph.store.count_notifications(status="pending") == 1 + 1 + 192
    # 201 requests, and the 32 queued behind the held commit went in one transaction.
    assert committed <= 201 - 31
    assert committer.batches == committed


def test_the_four_events_of_a_payment_posted_at_once_confirm_it_once(database_url: str) -> None:
    # Two payheralds on one database, as two processes behind a load balancer.
    built = [build_for_tests(database_url), build_for_tests(database_url)]
    now = SystemClock().now()
    # In the shape before basil, every event names the payment intent, so the store links
    # them on arrival; today's shapes are linked when sent (test_todays_stripe).
    payments = [
        build_payment_events(now=now, livemode=True, api_version="2024-06-20") for _ in range(30)
    ]
    try:
        with LiveServer(built[0].http_app) as one, LiveServer(built[1].http_app) as two:
            for round_ in range(5):  # six payments a round, their 24 events all at once
                payloads = [e for p in payments[round_ * 6 : round_ * 6 + 6] for e in p]
                bodies = [json.dumps(payload).encode() for payload in payloads]
                responses = post_all([one.url, two.url], bodies, len(bodies))
                assert [response.status_code for response in responses] == [200] * 24
        confirmations = Counter(
            row["key"]
            for row in built[0].store.list_notifications(limit=1000)
            if row["rule"] == "payment_confirmation"
        )
        intents = {p[0]["data"]["object"]["id"] for p in payments}
        assert confirmations == {f"payment_confirmation:{intent}": 1 for intent in intents}
    finally:
        for payherald in built:
            payherald.engine.dispose()


class PlanningFailsFor(RuleBook):
    """The built-in rules, whose planning crashes on one event, as a bug would."""

    def __init__(self, event_id: str) -> None:
        super().__init__(BUILTIN_RULES, renderer=TemplateRenderer())
        self._event_id = event_id

    def plan(self, event: StripeEvent) -> list[PlannedNotification]:
        if event.id == self._event_id:
            raise KeyError("data.object.amount_received")
        return super().plan(event)


def test_an_event_whose_planning_fails_is_stored_failed_and_its_batch_is_not(ph: Any) -> None:
    app = create_http_app(
        store=ph.store,
        verifier=WebhookVerifier(secrets=[SECRET], clock=SystemClock()),
        rules=PlanningFailsFor("evt_broken"),
        metrics=Metrics(store=ph.store),
    )
    names = ["evt_good_1", "evt_broken", "evt_good_2", "evt_good_3"]
    with LiveServer(app) as live:
        answers = post_held_batch(ph.engine, committer_of(app), live.url, names)
    assert [answer.status_code for answer in answers] == [200] * 5
    assert answers[2].json() == {
        "received": True,
        "event_id": "evt_broken",
        "duplicate": False,
        "queued": 0,
    }
    statuses = {row["id"]: (row["status"], row["error"]) for row in ph.store.list_events()}
    status, error = statuses.pop("evt_broken")
    assert status == "failed"
    assert "amount_received" in error
    good = ["evt_held", "evt_good_1", "evt_good_2", "evt_good_3"]
    assert statuses == {name: ("received", None) for name in good}
    assert {row["event_id"] for row in ph.store.list_notifications()} == set(good)


def post_held_batch(
    engine: Engine, committer: GroupCommitter, url: str, names: list[str]
) -> list[httpx.Response]:
    """POST evt_held, and while its commit is held, ``names`` (so that they are written in
    one batch); the answers, evt_held's first."""
    held = HeldWriter(engine)
    with concurrent.futures.ThreadPoolExecutor(len(names) + 1) as pool:
        first = pool.submit(post, url, event_body(event_id="evt_held"))
        assert held.entered.wait(20)
        rest = [pool.submit(post, url, event_body(event_id=name)) for name in names]
        wait_for(lambda: committer.waiting == len(names), f"{len(names)} requests to queue")
        held.release()
        return [first.result(60)] + [answer.result(60) for answer in rest]


def test_the_store_failing_mid_batch_answers_503_and_writes_none_of_the_batch(ph: Any) -> None:
    # evt_held's batch inserts its notification; the next INSERT, the batch's, fails.
    fault = Fault(ph.engine, after=2)
    names = ["evt_b", "evt_c", "evt_d", "evt_e", "evt_f"]
    with LiveServer(ph.http_app) as live:
        fault.armed = True
        answers = post_held_batch(ph.engine, committer_of(ph.http_app), live.url, names)
        assert fault.failed >= 1 + len(names)  # the batch, then each event alone
        assert [answer.status_code for answer in answers] == [200] + [503] * 5
        assert {answer.json()["error"] for answer in answers[1:]} == {NOT_STORED}
        assert [row["id"] for row in ph.store.list_events()] == ["evt_held"]
        assert {row["event_id"] for row in ph.store.list_notifications()} == {"evt_held"}

        fault.armed = False  # space freed: Stripe's retry is stored
        assert post(live.url, event_body(event_id="evt_b")).json()["queued"] == 1


def test_an_event_the_store_refuses_does_not_fail_its_neighbours(ph: Any) -> None:
    fault = Fault(ph.engine, only="evt_poison")
    names = ["evt_ok_1", "evt_poison", "evt_ok_2", "evt_ok_3"]
    with LiveServer(ph.http_app) as live, capture_logs() as logs:
        fault.armed = True
        answers = post_held_batch(ph.engine, committer_of(ph.http_app), live.url, names)
    assert [answer.status_code for answer in answers] == [200, 200, 503, 200, 200]
    assert fault.failed == 2  # in the batch, then alone
    (fallback,) = [log for log in logs if log["event"] == "group_commit_fallback"]
    assert sorted(fallback["event_ids"]) == sorted(names)
    assert sorted(row["id"] for row in ph.store.list_events()) == [
        "evt_held",
        "evt_ok_1",
        "evt_ok_2",
        "evt_ok_3",
    ]
    assert ph.store.count_notifications() == 4


def test_a_postgresql_cut_mid_batch_answers_503_and_writes_none_of_the_batch(
    postgres_url: str,
) -> None:
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    built = build_for_tests(postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}"))
    direct = Store(
        engine=create_store_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")),
        clock=SystemClock(),
    )
    inserted = Counter[str]()

    def cut_after_the_batchs_notifications(*args: Any) -> None:
        if args[2].startswith("INSERT INTO notifications"):
            inserted["notifications"] += 1
            # evt_held's batch, then the batch of five: cut before its commit.
            if inserted["notifications"] == 2:
                proxy.cut()

    event.listen(built.engine, "after_cursor_execute", cut_after_the_batchs_notifications)
    names = ["evt_b", "evt_c", "evt_d", "evt_e", "evt_f"]
    try:
        with LiveServer(built.http_app) as live:
            answers = post_held_batch(built.engine, committer_of(built.http_app), live.url, names)
        assert [answer.status_code for answer in answers] == [200] + [503] * 5
        assert {answer.json()["error"] for answer in answers[1:]} == {NOT_STORED}
        assert [row["id"] for row in direct.list_events()] == ["evt_held"]
        assert {row["event_id"] for row in direct.list_notifications()} == {"evt_held"}
    finally:
        built.engine.dispose()
        direct.db.engine.dispose()


def test_an_alias_race_with_another_process_falls_back_to_one_event_at_a_time(
    postgres_url: str,
) -> None:
    ph = build_for_tests(postgres_url)
    other = create_store_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://"))
    committer = committer_of(ph.http_app)
    payment = parse_event(json.dumps(build_payment_events(now=SystemClock().now())[1]).encode())
    neighbour = parse_event(event_body(event_id="evt_neighbour"))
    try:
        held = HeldWriter(ph.engine)
        first = committer.submit(parse_event(event_body(event_id="evt_held")))
        assert held.entered.wait(20)
        futures = [committer.submit(neighbour), committer.submit(payment)]
        with other.connect() as racing, capture_logs() as logs:
            # Another process links this payment's aliases to another canonical id, and
            # has not committed when the batch reaches them.
            racing.execute(
                subject_aliases.insert(),
                [
                    {"alias": f"payment:{alias}", "canonical": "pi_linked_elsewhere"}
                    for alias in payment_aliases(payment)
                ],
            )
            held.release()
            wait_for(lambda: lock_waits(other) > 0, "the batch to wait on the racing links")
            racing.commit()
            results = [future.result(60) for future in [first, *futures]]
        assert [(r.duplicate, r.queued) for r in results] == [(False, 1)] * 3
        assert any(log["event"] == "group_commit_fallback" for log in logs)
        keys = {row["event_id"]: row["key"] for row in ph.store.list_notifications()}
        assert keys[payment.id] == "payment_confirmation:pi_linked_elsewhere"
        assert keys["evt_neighbour"].startswith("payment_confirmation:pi_")
    finally:
        ph.engine.dispose()
        other.dispose()


def lock_waits(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(
            connection.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
        )


def test_one_transaction_records_repeats_and_linked_payments_once(ph: Any) -> None:
    payment = [
        parse_event(json.dumps(payload).encode())
        for payload in build_payment_events(now=SystemClock().now())
    ]
    repeated = parse_event(event_body(event_id="evt_twice"))
    items = [PlannedEvent(e, tuple(ph.rules.plan(e))) for e in [repeated, *payment, repeated]]
    commits = Commits(ph.engine)
    results = ph.store.record_events(items)
    assert commits.count == 1
    assert [(r.duplicate, r.queued) for r in results] == [
        (False, 1),  # evt_twice's confirmation
        (False, 2),  # the payment's confirmation and welcome
        (False, 0),
        (False, 0),
        (False, 0),
        (True, 0),
    ]


def test_the_worker_is_woken_once_per_batch_that_queued_work(ph: Any) -> None:
    wakes = Counter[str]()
    committer = GroupCommitter(
        store=ph.store, rules=ph.rules, on_queued=lambda: wakes.update(["wake"])
    )
    held = HeldWriter(ph.engine)
    first = committer.submit(parse_event(event_body(event_id="evt_held")))
    assert held.entered.wait(20)
    rest = [committer.submit(parse_event(event_body(event_id=f"evt_{i}"))) for i in range(5)]
    rest.append(committer.submit(parse_event(event_body("customer.created", event_id="evt_x"))))
    held.release()
    assert [future.result(60).queued for future in [first, *rest]] == [1] * 6 + [0]
    assert (committer.batches, wakes["wake"]) == (2, 2)
    ignored = committer.submit(parse_event(event_body("customer.created", event_id="evt_y")))
    assert ignored.result(60).queued == 0
    assert (committer.batches, wakes["wake"]) == (3, 2)
