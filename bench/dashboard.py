"""The dashboard's reads on a store of 100,000 events: ``python bench/dashboard.py``.

Seeds a store (SQLite file; PostgreSQL in a scratch database, dropped after) with
``--events`` events spread over 30 days, written through payherald's own path: events built
by ``payherald.simulate``, planned by the built-in rules (``plan_event``) and stored with
``Store.record_events`` in batches, on a ``FrozenClock`` advanced between batches. The mix:
payments that succeeded (each reported by 2 or 3 events), declined cards (2 events),
renewals declined (3 events, a dunning sequence each), refunds, disputes and the rest
(customers, subscriptions, reviews). Each customer has a name, an email and a phone of
their own.

The notifications the rules queued are then given their outcomes in bulk (sent, most;
delivered or not; skipped; failed with a provider's code; a few unknown; the last hour's
still pending), one UPDATE a chunk, as the worker's transitions leave the rows. Sending them
through the worker would be the product's path too, but at about 3 ms a message it would
take five minutes a store, and the reads measured here depend on what the rows hold, not on
how they got it.

Then each read is timed, median and p95 of ``--repeats``: ``Store.history`` directly (the
first page, a page 50,000 events deep, each filter, a trace, the failed notifications, the
figures), and ``/api/events`` and ``/api/events/{id}`` over HTTP with the bearer token,
from ``payherald serve`` (its own process, on loopback). ``--explain`` prints the plan of
every list query (SQLite's EXPLAIN QUERY PLAN, PostgreSQL's EXPLAIN ANALYZE), captured as
payherald ran it.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SECRET, base_env, free_port, payherald, running

TOKEN = "bench-dashboard-admin-token"
END = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
DAYS = 30
BATCH = 20  # events a transaction: a busy endpoint's group commit
TARGET_MS = 200.0
FIRST = "Maria Jose Liam Olivia Noah Emma Ava Lucas Mia Amir Chen Yuki Priya Omar Sofia Ivan"
LAST = "Garcia Smith Nguyen Kim Patel Muller Rossi Silva Cohen Haddad Tanaka Novak Berg Diaz"
STORIES = (  # (what, weight)
    ("checkout", 30),
    ("payment", 25),
    ("subscription", 12),
    ("declined", 10),
    ("renewal_declined", 3),
    ("refund", 4),
    ("dispute", 1),
    ("other", 15),
)
OTHERS = (
    "customer.created",
    "customer.subscription.updated",
    "invoice.upcoming",
    "review.opened",
    "radar.early_fraud_warning.created",
)


def story(what: str, rng: random.Random, now: datetime) -> tuple[list[dict[str, Any]], str]:
    """The events Stripe sends for one ``what``, about one customer of their own; and the
    customer's phone."""
    from payherald import simulate

    first, last = rng.choice(FIRST.split()), rng.choice(LAST.split())
    phone = f"+1415{rng.randrange(10**7):07d}"
    options: dict[str, Any] = {
        "now": now,
        "phone": phone,
        "amount": rng.choice((900, 2000, 4900, 12000, 35000)),
        "livemode": rng.random() > 0.03,
    }
    if what == "checkout":
        events = simulate.build_payment_events(**options)[:3]
    elif what == "payment":
        events = simulate.build_payment_events(**options)[:2]
    elif what == "subscription":
        events = simulate.build_subscription_payment_events(**options)[:3]
    elif what == "declined":
        events = simulate.build_failure_events(**options)
    elif what == "renewal_declined":
        events = simulate.build_renewal_failure_events(**options)
    elif what == "refund":
        events = [
            simulate.build_event(rng.choice(("charge.refunded", "refund.created")), **options)
        ]
    elif what == "dispute":
        events = [simulate.build_event("charge.dispute.created", **options)]
    else:
        events = [simulate.build_event(rng.choice(OTHERS), **options)]
    text = json.dumps(events)
    email = f"{first}.{last}{rng.randrange(100)}@example.com".lower()
    text = text.replace("jenny.rosen@example.com", email).replace("Jenny Rosen", f"{first} {last}")
    found: list[dict[str, Any]] = json.loads(text)
    return found, phone


def build_store(url: str, clock: Any) -> Any:
    from payherald import ConsoleChannel, build, load_settings
    from payherald.quiet_hours import QuietHours

    settings = load_settings(
        PAYHERALD_DATABASE_URL=url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
        PAYHERALD_RETENTION_DAYS="0",
        PAYHERALD_ADMIN_TOKEN=TOKEN,
        TWILIO_ACCOUNT_SID="AC" + "0" * 32,
        TWILIO_AUTH_TOKEN="f" * 32,
        TWILIO_FROM_NUMBER="+15005550006",
    )
    return build(
        settings,
        migrate_schema=True,
        clock=clock,
        console=ConsoleChannel(stream=io.StringIO()),
        quiet_hours=QuietHours(enabled=False),
    )


def seed(ph: Any, clock: Any, count: int, rng: random.Random) -> dict[str, Any]:
    """Record ``count`` events over ``DAYS`` days ending at ``END``; what the searches
    look for (taken from the middle of the range)."""
    from payherald.ingest import plan_event
    from payherald.webhook import parse_event

    whats = [what for what, _ in STORIES]
    weights = [weight for _, weight in STORIES]
    start = clock.now()
    recorded, batches = 0, 0
    phones: dict[str, str] = {}  # event id -> the phone its customer has
    started = time.perf_counter()
    while recorded < count:
        pending: list[dict[str, Any]] = []
        while len(pending) < BATCH:
            told, phone = story(rng.choices(whats, weights)[0], rng, clock.now())
            pending += told
            phones.update((e["id"], phone) for e in told)
        pending = pending[: count - recorded]
        planned = [plan_event(ph.rules, parse_event(json.dumps(e).encode())) for e in pending]
        ph.store.record_events(planned)
        recorded += len(pending)
        batches += 1
        # Time moves with the events: the last batch is stored at END.
        due = start + timedelta(days=DAYS) * (recorded / count)
        clock.advance(max(0.0, (due - clock.now()).total_seconds()))
        if batches % (count // BATCH // 10 or 1) == 0:
            analyze(ph)
    clock.advance(max(0.0, (END - clock.now()).total_seconds()))
    recorded_seconds = time.perf_counter() - started
    began = time.perf_counter()
    outcomes = settle_notifications(ph, rng, phones)
    analyze(ph)
    return {
        "events": recorded,
        "batches": batches,
        "record_seconds": round(recorded_seconds, 1),
        "events_per_second": round(recorded / recorded_seconds, 1),
        "settle_seconds": round(time.perf_counter() - began, 1),
        "notifications": outcomes,
    }


def analyze(ph: Any) -> None:
    """On PostgreSQL, what autovacuum does as tables grow (this machine's server runs with
    ``autovacuum = off``; without it every plan would take the tables for empty). SQLite
    is left alone: it never analyzes by itself, and payherald does not ask it to."""
    engine = ph.store.db.engine
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql("VACUUM ANALYZE")


def settle_notifications(ph: Any, rng: random.Random, phones: dict[str, str]) -> dict[str, int]:
    """Give every queued notification an outcome, as the worker's transitions leave it
    (sent to its event's customer's phone, ``phones``); returns how many of each status."""
    from sqlalchemy import bindparam, delete, select, update

    from payherald.store.schema import jobs, notifications

    n = notifications.c
    change = (
        update(notifications)
        .where(n.id == bindparam("nid"))
        .values(
            status=bindparam("s"),
            to=bindparam("to"),
            updated_at=bindparam("u"),
            attempt_started_at=bindparam("a"),
            sent_at=bindparam("t"),
            attempts=bindparam("k"),
            body=bindparam("b"),
            provider_id=bindparam("p"),
            error=bindparam("e"),
            error_code=bindparam("c"),
            delivery_status=bindparam("d"),
        )
    )
    counts: dict[str, int] = {}
    after = 0
    engine = ph.store.db.engine
    while True:
        with engine.begin() as connection:
            rows = connection.execute(
                select(n.id, n.created_at, n.rule, n.event_id)
                .where(n.id > after)
                .order_by(n.id)
                .limit(5000)
            ).all()
            if not rows:
                return counts
            values, finished = [], []
            for nid, created, rule, event_id in rows:
                row = _outcome(nid, created, rule, rng)
                attempted = row["k"] and row["c"] != "no_recipient"
                row["to"] = phones.get(event_id) if attempted else None
                counts[row["s"]] = counts.get(row["s"], 0) + 1
                values.append(row)
                if row["s"] != "pending":
                    finished.append(f"notification:{nid}")
            connection.execute(change, values)
            connection.execute(delete(jobs).where(jobs.c.key.in_(finished)))
            after = rows[-1][0]


def _outcome(nid: int, created: datetime, rule: str, rng: random.Random) -> dict[str, Any]:
    at = created + timedelta(seconds=rng.uniform(0.2, 3))
    row: dict[str, Any] = {
        "nid": nid,
        "s": "sent",
        "u": at,
        "a": at,
        "t": None,
        "k": 1,
        "b": f"{rule}: your payment of $20.00 ...",
        "p": None,
        "e": None,
        "c": None,
        "d": None,
    }
    roll = rng.random()
    if created > END - timedelta(hours=1) and roll < 0.5:
        return {**row, "s": "pending", "u": created, "a": None, "k": 0, "b": None}
    if rule == "welcome" or roll < 0.08:
        return {**row, "s": "skipped", "a": None, "k": 0, "b": None, "e": "Not a first payment."}
    if roll < 0.14:
        code = rng.choice(("21610", "21211", "30003", "no_recipient", "outcome_unknown"))
        return {**row, "s": "failed", "e": f"Twilio refused it ({code}).", "c": code}
    if roll < 0.145:
        return {**row, "s": "unknown", "e": "The provider did not answer."}
    delivery = "delivered" if roll < 0.95 else rng.choice(("undelivered", None))
    return {**row, "t": at, "p": f"SM{nid:032x}", "d": delivery}


def timed(call: Callable[[], Any], repeats: int) -> dict[str, float]:
    call()  # warm: the first call builds statements and fills caches
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        call()
        times.append((time.perf_counter() - began) * 1000)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 2),
        "p95_ms": round(times[min(len(times) - 1, int(len(times) * 0.95))], 2),
    }


def queries(ph: Any, sample: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each read measured: ``events`` keyword arguments, or another call, by name."""
    from payherald.store.history import encode_cursor, text_filter

    with ph.store.db.read() as connection:
        from sqlalchemy import select

        from payherald.store.schema import events

        deep = connection.execute(
            select(events.c.received_at, events.c.id)
            .where(events.c.livemode.is_(True))
            .order_by(events.c.received_at.desc(), events.c.id.desc())
            .offset(50_000 if sample["events"] > 60_000 else sample["events"] // 2)
            .limit(1)
        ).one()
    name = sample["name"].lower()
    return {
        "first page": {"livemode": True},
        "page 50,000 deep (cursor)": {"livemode": True, "before": (deep[0], deep[1])},
        "kind=refund": {"livemode": True, "kind": "refund"},
        "status=failed": {"livemode": True, "status": "failed"},
        "q event id": {"livemode": True, "text": text_filter(sample["event"][:16])},
        "q customer id": {"livemode": True, "text": text_filter(sample["customer"])},
        "q email": {"livemode": True, "text": text_filter(sample["email"])},
        "q phone last 4": {"livemode": True, "text": text_filter(sample["phone"][-4:])},
        "q name prefix": {"livemode": True, "text": text_filter(name[: name.index(" ") + 2])},
        # A prefix nobody's name has: every event of the mode is read.
        "q name prefix, no match": {"livemode": True, "text": text_filter("zq")},
        "_cursor": {"value": encode_cursor(deep[0], deep[1])},
    }


@contextmanager
def captured(engine: Any) -> Iterator[list[tuple[str, Any]]]:
    """The statements ``engine`` runs meanwhile, with their parameters."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def keep(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", keep)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", keep)


def explain(ph: Any, call: Callable[[], Any]) -> list[str]:
    """The plans of the statements ``call`` runs, as the database would run them."""
    engine = ph.store.db.engine
    with captured(engine) as seen:
        call()
    plans = []
    for statement, parameters in seen:
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            if engine.dialect.name == "sqlite":
                cursor.execute("EXPLAIN QUERY PLAN " + statement, parameters)
                lines = [str(row[-1]) for row in cursor.fetchall()]
            else:
                cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + statement, parameters)
                lines = [str(row[0]) for row in cursor.fetchall()]
            raw.rollback()
        finally:
            raw.close()
        plans.append(statement.strip().splitlines()[0][:60] + " ...\n    " + "\n    ".join(lines))
    return plans


def measure_store(ph: Any, sample: dict[str, Any], repeats: int, show: bool) -> dict[str, Any]:
    history = ph.store.history
    cases = queries(ph, sample)
    cases.pop("_cursor")
    out: dict[str, Any] = {}
    for name, arguments in cases.items():

        def call(arguments: dict[str, Any] = arguments) -> Any:
            return history.events(**arguments)

        out[f"events: {name}"] = {**timed(call, repeats), "items": len(call()[0])}
        if show:
            print(f"--- {name}", *explain(ph, call), sep="\n", file=sys.stderr)
    trace = lambda: history.trace(sample["event"])  # noqa: E731
    out["trace"] = {**timed(trace, repeats), "steps": len(trace()["steps"])}
    if show:
        print("--- trace", *explain(ph, trace), sep="\n", file=sys.stderr)
    failed = lambda: history.notifications(status="failed")  # noqa: E731
    out["notifications: status=failed"] = timed(failed, repeats)
    if show:
        print("--- notifications failed", *explain(ph, failed), sep="\n", file=sys.stderr)

    def cold_stats() -> Any:
        # A process's first ask counts all 30 days of the chart; later ones, today only.
        from payherald.store.history import History

        fresh = History(db=ph.store.db, clock=ph.store.clock)
        return fresh.stats(livemode=True, timezone="America/New_York")

    out["stats, first of a process"] = timed(cold_stats, max(3, repeats // 4))
    stats = lambda: history.stats(livemode=True, timezone="America/New_York")  # noqa: E731
    out["stats"] = timed(stats, max(3, repeats // 4))
    if show:
        print("--- stats", *explain(ph, stats), sep="\n", file=sys.stderr)
    return out


def measure_http(
    url: str, ph: Any, sample: dict[str, Any], repeats: int, logs: Path
) -> dict[str, Any]:
    import httpx

    cases = queries(ph, sample)
    params = {
        "first page": {},
        "page 50,000 deep (cursor)": {"before": cases["_cursor"]["value"]},
        "kind=refund": {"kind": "refund"},
        "status=failed": {"status": "failed"},
        "q event id": {"q": sample["event"][:16]},
        "q customer id": {"q": sample["customer"]},
        "q email": {"q": sample["email"]},
        "q phone last 4": {"q": sample["phone"][-4:]},
        "q name prefix": {"q": sample["name"][: sample["name"].index(" ") + 2]},
        "q name prefix, no match": {"q": "zq"},
    }
    port = free_port()
    env = base_env(
        PAYHERALD_DATABASE_URL=url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PAYHERALD_ADMIN_TOKEN=TOKEN,
        PAYHERALD_LOG_FORMAT="json",
        PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
        PAYHERALD_RETENTION_DAYS="0",
    )
    out: dict[str, Any] = {}
    name = "payherald-serve-dashboard-" + ("sqlite" if url.startswith("sqlite") else "postgres")
    with running(name, payherald("serve", "--port", str(port)), env, logs) as server:
        server.wait_http(f"http://127.0.0.1:{port}/healthz")
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers) as client:

            def get(path: str, query: dict[str, str]) -> Callable[[], Any]:
                def call() -> Any:
                    answer = client.get(path, params=query)
                    assert answer.status_code == 200, answer.text
                    return answer

                return call

            for case, query in params.items():
                out[f"GET /api/events {case}"] = timed(
                    get("/api/events", {"mode": "live", **query}), repeats
                )
            out["GET /api/events/{id}"] = timed(get(f"/api/events/{sample['event']}", {}), repeats)
    return out


def pick_sample(ph: Any, events: int) -> dict[str, Any]:
    """What the searches look for: a payment from the middle of the range, texted."""
    middle = (END - timedelta(days=DAYS / 2), "evt_~")
    found = ph.store.history.events(
        livemode=True, kind="succeeded", status="sent", before=middle, limit=1
    )[0][0]
    # The charge of a payment carries its customer's name (the payment intent does not).
    charge = ph.store.history.events(livemode=True, type="charge.succeeded", before=middle)[0]
    named = next(e for e in charge if e["customer_name"] and e["email"] and e["customer"])
    return {
        "events": events,
        "event": found["id"],
        "phone": next(n["to"] for n in found["notifications"] if n["to"]),
        "customer": named["customer"],
        "email": named["email"],
        "name": named["customer_name"],
    }


def bench_store(
    url: str, *, events: int, repeats: int, logs: Path, show: bool = False, http: bool = True
) -> dict[str, Any]:
    """Seed the store at ``url`` (an empty database) and time its reads."""
    from payherald import FrozenClock

    clock = FrozenClock(END - timedelta(days=DAYS))
    ph = build_store(url, clock)
    try:
        seeded = seed(ph, clock, events, random.Random(17))
        sample = seeded["sample"] = pick_sample(ph, events)
        result: dict[str, Any] = {"seeded": seeded}
        result["store"] = measure_store(ph, sample, repeats, show)
        if http:
            result["http"] = measure_http(url, ph, sample, repeats, logs)
    finally:
        ph.engine.dispose()
    misses = [
        name
        for part in ("store", "http")
        for name, figures in result.get(part, {}).items()
        if not name.startswith("stats") and figures["median_ms"] > TARGET_MS
    ]
    result["over_target"] = misses
    lists = {k: v for k, v in result["store"].items() if k.startswith("events: ")}
    slowest = max(lists, key=lambda k: lists[k]["median_ms"])
    result["slowest_list"] = {"read": slowest, **lists[slowest]}
    return result


def run(
    *,
    logs: Path,
    postgres: str | None,
    events: int = 100_000,
    repeats: int = 20,
    show: bool = False,
    http: bool = True,
) -> dict[str, Any]:
    """Both stores' figures (PostgreSQL in a scratch database under ``postgres``, an admin
    URL; skipped when None)."""
    from run import _postgres_database

    results: dict[str, Any] = {"events": events, "repeats": repeats, "target_ms": TARGET_MS}
    for name in ("sqlite", "postgres"):
        began = time.perf_counter()
        print(f"  dashboard, {name}…", file=sys.stderr, flush=True)
        if name == "sqlite":
            url = f"sqlite:///{logs / 'dashboard.db'}"
            results[name] = bench_store(
                url, events=events, repeats=repeats, logs=logs, show=show, http=http
            )
        elif postgres:
            with _postgres_database(postgres) as url:
                results[name] = bench_store(
                    url, events=events, repeats=repeats, logs=logs, show=show, http=http
                )
        print(f"  dashboard, {name}: {time.perf_counter() - began:.0f} s", file=sys.stderr)
        if name in results:
            print(json.dumps(results[name], default=str), file=sys.stderr, flush=True)
    return results


def table(results: dict[str, Any]) -> str:
    """The figures, one row a read, a column pair (median, p95) a store."""
    stores = [name for name in ("sqlite", "postgres") if name in results]
    head = " | ".join(f"{s} median | {s} p95" for s in stores)
    rows = [f"| Read (ms) | {head} |", "|---" * (1 + 2 * len(stores)) + "|"]
    first = results[stores[0]]
    for part in ("store", "http"):
        for name in first.get(part, {}):
            cells = []
            for s in stores:
                figures = results[s].get(part, {}).get(name, {})
                cells += [str(figures.get("median_ms", "")), str(figures.get("p95_ms", ""))]
            rows.append(f"| {'history.' if part == 'store' else ''}{name} | {' | '.join(cells)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="An admin URL to create a scratch database in; '' to skip.",
    )
    parser.add_argument("--explain", action="store_true", help="Print each query's plan.")
    parser.add_argument("--no-http", action="store_true", help="Only the store's reads.")
    parser.add_argument("--out", type=Path, help="Write the figures as JSON here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="payherald-bench-dashboard-") as scratch:
        results = run(
            logs=Path(scratch),
            postgres=args.postgres or None,
            events=args.events,
            repeats=args.repeats,
            show=args.explain,
            http=not args.no_http,
        )
    if args.out:
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(table(results))


if __name__ == "__main__":
    main()
