"""Run every benchmark and write the figures: ``python bench/run.py`` (about 15 minutes).

Writes ``bench/results/latest.json`` and the figures table in ``bench/README.md``. Each
figure is the median of ``--runs`` runs (3 by default); every comparison is a ratio of
figures measured in this same run. Everything listens on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (
    BENCH,
    SECRET,
    base_env,
    free_port,
    get_json,
    load,
    median,
    payherald,
    peer,
    post,
    reference,
    running,
)

WEBHOOK = "/webhooks/stripe"
SENDER = "+15005550006"


def payherald_env(database: str, **extra: str) -> dict[str, str]:
    return base_env(
        PAYHERALD_DATABASE_URL=database,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PAYHERALD_LOG_FORMAT="json",
        PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
        **extra,
    )


def twilio_env(port: int) -> dict[str, str]:
    return {
        "TWILIO_ACCOUNT_SID": "AC" + "0" * 32,
        "TWILIO_AUTH_TOKEN": "f" * 32,
        "TWILIO_FROM_NUMBER": SENDER,
        "TWILIO_API_BASE": f"http://127.0.0.1:{port}",
    }


def migrate(env: dict[str, str], logs: Path) -> None:
    subprocess.run(payherald("migrate"), env=env, cwd=logs, check=True, capture_output=True)


class Bench:
    def __init__(self, runs: int, postgres: str | None, logs: Path) -> None:
        self.runs, self.postgres, self.logs = runs, postgres, logs
        self.results: dict[str, Any] = {}
        self._databases = 0

    def sqlite(self) -> str:
        self._databases += 1
        return f"sqlite:///{self.logs / f'payherald-{self._databases}.db'}"

    def closed(self, url: str, seconds: float = 5.0) -> dict[str, Any]:
        return load(url, "--mode", "closed", "--duration", str(seconds), "--max-requests", "40000")

    def repeat(self, measure: Callable[[], dict[str, Any]]) -> list[dict[str, Any]]:
        return [measure() for _ in range(self.runs)]

    # 1 -----------------------------------------------------------------------------------

    def ingest(self) -> None:
        out: dict[str, Any] = {}
        port = free_port()
        with running(
            "bare", reference("bare", port), base_env(BENCH_SECRET=SECRET), self.logs
        ) as p:
            p.wait_http(f"http://127.0.0.1:{port}/")
            url = f"http://127.0.0.1:{port}{WEBHOOK}"
            self.closed(url, 1)
            out["bare"] = self.repeat(lambda: self.closed(url))
        twilio = free_port()
        with running("twilio-fast", peer("twilio", twilio), base_env(), self.logs):
            port = free_port()
            env = base_env(BENCH_SECRET=SECRET)
            with running(
                "flask",
                reference("flask", port, "--twilio", f"http://127.0.0.1:{twilio}"),
                env,
                self.logs,
            ) as p:
                p.wait_http(f"http://127.0.0.1:{port}/")
                url = f"http://127.0.0.1:{port}/webhook"
                out["flask"] = self.repeat(lambda: self.closed(url))
        env = payherald_env(self.sqlite())
        migrate(env, self.logs)
        port = free_port()
        with running(
            "payherald-serve", payherald("serve", "--port", str(port)), env, self.logs
        ) as p:
            p.wait_http(f"http://127.0.0.1:{port}/healthz")
            url = f"http://127.0.0.1:{port}{WEBHOOK}"
            self.closed(url, 1)
            out["payherald_sqlite"] = self.repeat(lambda: self.closed(url))
            out["payherald_sqlite_500"] = self.repeat(
                lambda: load(url, "--mode", "open", "--rate", "500", "--duration", "6")
            )
        if self.postgres:
            with _postgres_database(self.postgres) as database:
                env = payherald_env(database)
                migrate(env, self.logs)
                port = free_port()
                with running(
                    "payherald-serve-pg", payherald("serve", "--port", str(port)), env, self.logs
                ) as p:
                    p.wait_http(f"http://127.0.0.1:{port}/healthz")
                    url = f"http://127.0.0.1:{port}{WEBHOOK}"
                    self.closed(url, 1)
                    out["payherald_postgres"] = self.repeat(lambda: self.closed(url))
        rates = {name: median([r["rate"] for r in runs]) for name, runs in out.items()}
        self.results["ingest"] = {
            "runs": out,
            "bare_rate": rates["bare"],
            "flask_rate": rates["flask"],
            "payherald_sqlite_rate": rates["payherald_sqlite"],
            "payherald_vs_bare": round(rates["payherald_sqlite"] / rates["bare"], 3),
            "payherald_vs_flask": round(rates["payherald_sqlite"] / rates["flask"], 2),
            "payherald_sqlite_500_p99_ms": median(
                [r["p99_ms"] for r in out["payherald_sqlite_500"]]
            ),
            "payherald_sqlite_500_ok_rate": median(
                [r["rate"] for r in out["payherald_sqlite_500"]]
            ),
            "payherald_postgres_rate": rates.get("payherald_postgres"),
        }

    # 2 -----------------------------------------------------------------------------------

    def slow_provider(self) -> None:
        twilio = free_port()
        out: dict[str, Any] = {}
        with running("twilio-slow", peer("twilio", twilio, "--delay", "2"), base_env(), self.logs):
            env = payherald_env(
                self.sqlite(), **twilio_env(twilio), PAYHERALD_WORKER_CONCURRENCY="64"
            )
            port = free_port()
            with running(
                "payherald-run-slow", payherald("run", "--port", str(port)), env, self.logs
            ) as p:
                p.wait_http(f"http://127.0.0.1:{port}/healthz")
                url = f"http://127.0.0.1:{port}{WEBHOOK}"
                out["payherald"] = self.repeat(
                    lambda: load(
                        url, "--mode", "open", "--rate", "200", "--duration", "5", "--livemode"
                    )
                )
            port = free_port()
            env = base_env(BENCH_SECRET=SECRET)
            with running(
                "flask-slow",
                reference("flask", port, "--twilio", f"http://127.0.0.1:{twilio}"),
                env,
                self.logs,
            ) as p:
                p.wait_http(f"http://127.0.0.1:{port}/")
                url = f"http://127.0.0.1:{port}/webhook"
                out["flask"] = self.repeat(
                    lambda: load(url, "--mode", "open", "--rate", "200", "--duration", "5")
                )
        self.results["slow_provider"] = {
            "runs": out,
            "payherald_p99_ms": median([r["p99_ms"] for r in out["payherald"]]),
            "flask_p99_ms": median([r["p99_ms"] for r in out["flask"]]),
            "flask_p50_ms": median([r["p50_ms"] for r in out["flask"]]),
        }

    # 3 -----------------------------------------------------------------------------------

    def end_to_end(self) -> None:
        twilio = free_port()
        runs = []
        with running("twilio-e2e", peer("twilio", twilio), base_env(), self.logs):
            env = payherald_env(self.sqlite(), **twilio_env(twilio))
            port = free_port()
            with running(
                "payherald-run-e2e", payherald("run", "--port", str(port)), env, self.logs
            ) as p:
                p.wait_http(f"http://127.0.0.1:{port}/healthz")
                url = f"http://127.0.0.1:{port}{WEBHOOK}"
                for index in range(self.runs):
                    post(f"http://127.0.0.1:{twilio}/reset")
                    record = self.logs / f"e2e-{index}.json"
                    answer = load(
                        url,
                        "--mode",
                        "open",
                        "--rate",
                        "100",
                        "--duration",
                        "5",
                        "--livemode",
                        "--record",
                        str(record),
                    )
                    answered = json.loads(record.read_text())
                    deadline = time.monotonic() + 20
                    while get_json(f"http://127.0.0.1:{twilio}/stats")["count"] < len(answered):
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.2)
                    arrivals = get_json(f"http://127.0.0.1:{twilio}/stats")["arrivals"]
                    delays = sorted(
                        (at - answered[ref]) * 1000 for at, _to, ref in arrivals if ref in answered
                    )
                    runs.append(
                        {
                            "events": len(answered),
                            "messages": len(delays),
                            "p50_ms": round(delays[len(delays) // 2], 2),
                            "p99_ms": round(
                                delays[min(len(delays) - 1, int(0.99 * len(delays)))], 2
                            ),
                            "ingest_p99_ms": answer["p99_ms"],
                        }
                    )
        self.results["end_to_end"] = {
            "runs": runs,
            "p50_ms": median([r["p50_ms"] for r in runs]),
            "p99_ms": median([r["p99_ms"] for r in runs]),
        }

    # 4 -----------------------------------------------------------------------------------

    def burst(self) -> None:
        def drain(count: int, extra: dict[str, str], rules: str = "") -> dict[str, Any]:
            twilio = free_port()
            config = self.logs / f"burst-{twilio}.toml"
            config.write_text(rules)
            with running(
                f"twilio-burst-{twilio}",
                peer("twilio", twilio, "--delay", "0.1"),
                base_env(),
                self.logs,
            ):
                env = payherald_env(
                    self.sqlite(), **twilio_env(twilio), PAYHERALD_CONFIG=str(config), **extra
                )
                migrate(env, self.logs)
                port = free_port()
                with running(
                    f"payherald-queue-{twilio}",
                    payherald("serve", "--port", str(port)),
                    env,
                    self.logs,
                ) as p:
                    p.wait_http(f"http://127.0.0.1:{port}/healthz")
                    queued = load(
                        f"http://127.0.0.1:{port}{WEBHOOK}",
                        "--mode",
                        "closed",
                        "--duration",
                        "120",
                        "--max-requests",
                        str(count),
                        "--duplicates",
                        "0",
                        "--livemode",
                    )
                with running(f"payherald-worker-{twilio}", payherald("worker"), env, self.logs):
                    started = time.time()
                    deadline = time.monotonic() + 240
                    while (n := get_json(f"http://127.0.0.1:{twilio}/stats")["count"]) < count:
                        if time.monotonic() > deadline:
                            break
                        time.sleep(0.25)
                    arrivals = get_json(f"http://127.0.0.1:{twilio}/stats")["arrivals"]
                times = sorted(at for at, _to, _ref in arrivals)
                return {
                    "queued": queued["ok"],
                    "sent": len(times),
                    "drain_seconds": round(times[-1] - started, 2) if times else None,
                    "sustained_rate": round((len(times) - 1) / (times[-1] - times[0]), 1)
                    if len(times) > 1
                    else None,
                    "last_count": n,
                }

        unlimited = drain(
            10_000, {"PAYHERALD_WORKER_CONCURRENCY": "64", "PAYHERALD_POLL_INTERVAL": "0.2"}
        )
        limit = 100
        limited = drain(
            1_500,
            {"PAYHERALD_WORKER_CONCURRENCY": "64", "PAYHERALD_POLL_INTERVAL": "0.2"},
            f'[rate_limits]\n"{SENDER}" = {limit}\n',
        )
        self.results["burst"] = {
            "unlimited": unlimited,
            "limited": limited,
            "limit": limit,
            "limited_ratio": round(limited["sustained_rate"] / limit, 3)
            if limited["sustained_rate"]
            else None,
        }

    # 5 -----------------------------------------------------------------------------------

    def backfill(self) -> None:
        count = 10_000
        events = free_port()
        with running(
            "events-peer", peer("events", events, "--count", str(count)), base_env(), self.logs
        ) as p:
            p.wait_http(f"http://127.0.0.1:{events}/v1/events?limit=1")
            env = payherald_env(
                self.sqlite(),
                STRIPE_SECRET_KEY="sk_test_bench",
                STRIPE_API_BASE=f"http://127.0.0.1:{events}",
            )
            migrate(env, self.logs)
            started = time.perf_counter()
            result = subprocess.run(
                payherald("backfill", "--since", "24h"),
                env=env,
                cwd=self.logs,
                capture_output=True,
                text=True,
                check=False,
            )
            elapsed = time.perf_counter() - started
        summary = result.stdout.strip().splitlines()[0] if result.stdout.strip() else result.stderr
        self.results["backfill"] = {
            "events": count,
            "seconds": round(elapsed, 2),
            "rate": round(count / elapsed, 1),
            "summary": summary,
            "exit": result.returncode,
        }

    # 6 -----------------------------------------------------------------------------------

    def footprint(self) -> None:
        helps = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(payherald("--help"), env=base_env(), capture_output=True, check=True)
            helps.append(time.perf_counter() - started)
        ready, idle, loaded = [], [], []
        for _ in range(self.runs):
            env = payherald_env(self.sqlite())
            port = free_port()
            with running(
                "payherald-run-mem", payherald("run", "--port", str(port)), env, self.logs
            ) as p:
                ready.append(p.wait_http(f"http://127.0.0.1:{port}/healthz"))
                time.sleep(2)
                idle.append(p.rss_mb())
                self.closed(f"http://127.0.0.1:{port}{WEBHOOK}", 10)
                loaded.append(p.rss_mb())
        self.results["footprint"] = {
            "help_seconds": round(statistics.median(helps), 3),
            "ready_seconds": round(statistics.median(ready), 3),
            "idle_rss_mb": median(idle),
            "after_ingest_rss_mb": median(loaded),
        }

    # 7 -----------------------------------------------------------------------------------

    def dashboard(self) -> None:
        from dashboard import run as dashboard_reads

        self.results["dashboard"] = dashboard_reads(logs=self.logs, postgres=self.postgres)


class _postgres_database:
    """A fresh PostgreSQL database for one benchmark, dropped after."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"payherald_bench_{int(time.time())}"

    def __enter__(self) -> str:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{self.name}"')
        base, _, _ = self.admin_url.rpartition("/")
        return f"{base}/{self.name}"

    def __exit__(self, *exc: object) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


TARGETS = [
    ("1. Ingest, SQLite, 64 senders: payherald / bare ASGI", "ingest.payherald_vs_bare", ">= 0.35"),
    (
        "1. Ingest, SQLite: payherald events/s (bare, Flask beside it)",
        "ingest.payherald_sqlite_rate",
        "",
    ),
    (
        "1. Ingest at 500 events/s offered: p99 time-to-2xx (ms)",
        "ingest.payherald_sqlite_500_p99_ms",
        "< 25",
    ),
    (
        "1. Ingest, PostgreSQL, one serve process: events/s",
        "ingest.payherald_postgres_rate",
        ">= 4000",
    ),
    (
        "2. Provider answering in 2 s, 200 events/s: payherald p99 time-to-2xx (ms)",
        "slow_provider.payherald_p99_ms",
        "< 25",
    ),
    (
        "2. Same, the Flask baseline: p99 time-to-2xx (ms)",
        "slow_provider.flask_p99_ms",
        "(grows with the provider)",
    ),
    ("3. End to end at 100 events/s: p50 (ms)", "end_to_end.p50_ms", "< 20"),
    ("3. End to end at 100 events/s: p99 (ms)", "end_to_end.p99_ms", "< 100"),
    (
        "4. Burst: 10,000 SMS, provider 100 ms, no limit: drain (s)",
        "burst.unlimited.drain_seconds",
        "< 30",
    ),
    (
        "4. Burst with a 100/s sender limit: achieved / limit",
        "burst.limited_ratio",
        "within 5% of 1",
    ),
    ("5. Backfill of 10,000 events: events/s", "backfill.rate", ""),
    ("6. payherald run idle: RSS (MiB)", "footprint.idle_rss_mb", "< 150"),
    ("6. payherald run after ingest: RSS (MiB)", "footprint.after_ingest_rss_mb", "< 250"),
    ("6. payherald --help (s)", "footprint.help_seconds", "< 0.5"),
    ("6. payherald run until /healthz answers (s)", "footprint.ready_seconds", "< 3"),
    *(
        (
            f"7. Dashboard, 100,000 events, {store}: {read} median (ms)",
            f"dashboard.{store}.{path}.median_ms",
            "< 200",
        )
        for store in ("sqlite", "postgres")
        for read, path in (
            ("history.events first page", "store.events: first page"),
            ("history.events slowest filter", "slowest_list"),
            ("history.trace", "store.trace"),
            ("GET /api/events first page", "http.GET /api/events first page"),
            ("GET /api/events/{id}", "http.GET /api/events/{id}"),
        )
    ),
]


def lookup(results: dict[str, Any], path: str) -> Any:
    value: Any = results
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def table(results: dict[str, Any]) -> str:
    rows = ["| Benchmark | Measured | Target |", "|---|---|---|"]
    for name, path, target in TARGETS:
        value = lookup(results, path)
        rows.append(f"| {name} | {'not run' if value is None else value} | {target} |")
    ingest = results.get("ingest", {})
    if ingest:
        rows.append(
            f"| 1. The references, same run: bare ASGI / Flask baseline events/s | "
            f"{ingest['bare_rate']} / {ingest['flask_rate']} | |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--only",
        nargs="*",
        default=None,
        choices=[
            "ingest",
            "slow_provider",
            "end_to_end",
            "burst",
            "backfill",
            "footprint",
            "dashboard",
        ],
    )
    parser.add_argument(
        "--postgres",
        default="postgresql://postgres@127.0.0.1:5432/test",
        help="An admin URL to create a scratch database in; '' to skip.",
    )
    parser.add_argument("--no-readme", action="store_true", help="Do not rewrite bench/README.md.")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="payherald-bench-") as scratch:
        bench = Bench(args.runs, args.postgres or None, Path(scratch))
        for name in args.only or [
            "ingest",
            "slow_provider",
            "end_to_end",
            "burst",
            "backfill",
            "footprint",
            "dashboard",
        ]:
            began = time.perf_counter()
            print(f"{name}…", file=sys.stderr, flush=True)
            getattr(bench, name)()
            print(f"  {name}: {time.perf_counter() - began:.0f} s", file=sys.stderr, flush=True)
        results = bench.results
    results["meta"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()}: {platform.processor() or platform.machine()}, "
        f"{_cpus()} CPUs, Python {platform.python_version()}",
        "runs": args.runs,
        "seconds": round(time.perf_counter() - started, 1),
    }
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    figures = table(results)
    print(figures)
    if not args.no_readme and not args.only:
        readme = BENCH / "README.md"
        text = readme.read_text()
        block = (
            f"<!-- figures:start -->\nLatest run: {results['meta']['date']} on "
            f"{results['meta']['machine']}; median of {args.runs} runs each; "
            f"{results['meta']['seconds']:.0f} s in all.\n\n{figures}\n<!-- figures:end -->"
        )
        readme.write_text(
            re.sub(r"<!-- figures:start -->.*<!-- figures:end -->", block, text, flags=re.S)
        )


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    main()
