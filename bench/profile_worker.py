"""Profile of the send path with pyinstrument: ``python bench/profile_worker.py``.

What the worker does for each message, in one thread, with a channel that answers at once
(so that only payherald's own work is measured): claim, compose, commit ``sending``, send,
commit ``sent``. 3,000 live payments are recorded first (not profiled), then drained by
``Worker.run_until_idle`` on SQLite (WAL, fsync). Writes ``bench/results/worker-profile.txt``.

In ``payherald worker`` the same work runs on several threads that share one interpreter
lock, and the burst benchmark (4) was bound by that lock: the CPU time a message costs here
is what bounds the burst's drain rate. ``--no-profile`` times the drain alone, for
before-and-after comparisons (the profiler's own overhead left out); ``--runs N`` repeats
it and prints each run and the medians. Each run gives the wall time and the CPU time a
message took (the CPU time varies less: the wall time has the disk's fsyncs in it) and how
many SQL statements it took (which does not vary at all).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH, SECRET
from loadgen import build_bodies

EVENTS = 3000
BATCH = 64


def drain(profile: bool) -> tuple[float, float, float]:
    """Record EVENTS payments, then drain them; returns the drain's wall time and CPU time
    a message (ms), and its SQL statements a message."""
    from sqlalchemy import event

    from payherald import WebhookVerifier, build, load_settings
    from payherald.clock import SystemClock
    from payherald.ingest import plan_event
    from payherald.quiet_hours import QuietHours
    from payherald.testing import ScriptedChannel

    requests = build_bodies(EVENTS, SECRET, livemode=True, phone="+14155550123", duplicates=0)
    with tempfile.TemporaryDirectory(prefix="payherald-profile-") as scratch:
        settings = load_settings(
            PAYHERALD_DATABASE_URL=f"sqlite:///{Path(scratch) / 'payherald.db'}",
            STRIPE_WEBHOOK_SECRET=SECRET,
            PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
            PAYHERALD_RETENTION_DAYS="0",
        )
        sms = ScriptedChannel("sms")
        ph = build(
            settings,
            migrate_schema=True,
            channels={"sms": sms},
            quiet_hours=QuietHours(enabled=False),
        )
        verifier = WebhookVerifier(secrets=[SECRET], clock=SystemClock())
        for start in range(0, len(requests), BATCH):
            batch = [verifier.receive(b, h) for b, h, _ in requests[start : start + BATCH]]
            ph.store.record_events([plan_event(ph.rules, event) for event in batch])
        statements = 0

        def count(*_: object) -> None:
            nonlocal statements
            statements += 1

        event.listen(ph.engine, "before_cursor_execute", count)
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
        started, cpu = time.perf_counter(), time.process_time()
        sent = ph.worker.run_until_idle()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler is not None:
            profiler.stop()
            text = profiler.output_text(unicode=False, color=False, show_all=False)
            text = text.replace(f"{BENCH.parent}/", "")  # no machine paths in the repository
            header = (
                f"# {sent} messages claimed, composed, committed sending, sent to a channel "
                f"answering at once, committed sent; one thread, SQLite: "
                f"{elapsed / sent * 1000:.3f} ms a message\n"
            )
            out = BENCH / "results"
            out.mkdir(exist_ok=True)
            (out / "worker-profile.txt").write_text(header + text)
        ph.engine.dispose()
    if sent != EVENTS or len(sms.delivered) != EVENTS:
        raise SystemExit(f"Drained {sent} of {EVENTS} (delivered {len(sms.delivered)}).")
    return elapsed / sent * 1000, cpu / sent * 1000, statements / sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-profile", action="store_true", help="time the drain only")
    parser.add_argument("--runs", type=int, default=1, help="how many drains (default 1)")
    args = parser.parse_args()
    runs = []
    for run in range(args.runs):
        runs.append(drain(profile=not args.no_profile))
        print(f"run {run + 1}: {_figures(*runs[-1])}")
    if args.runs > 1:
        medians = (statistics.median(column) for column in zip(*runs, strict=True))
        print(f"median: {_figures(*medians)}")


def _figures(wall: float, cpu: float, statements: float) -> str:
    return f"{wall:.3f} ms a message, {cpu:.3f} ms CPU, {statements:.2f} SQL statements"


if __name__ == "__main__":
    main()
