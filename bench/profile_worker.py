"""Profile of the send path with pyinstrument: ``python bench/profile_worker.py``.

What the worker does for each message, in one thread, with a channel that answers at once
(so that only payherald's own work is measured): claim, compose, commit ``sending``, send,
commit ``sent``. 3,000 live payments are recorded first (not profiled), then drained by
``Worker.run_until_idle`` on SQLite (WAL, fsync). Writes ``bench/results/worker-profile.txt``.

In ``payherald worker`` the same work runs on several threads that share one interpreter
lock, and the burst benchmark (4) was bound by that lock: the CPU time a message costs here
is what bounds the burst's drain rate. ``--no-profile`` times the drain alone, for
before-and-after comparisons (the profiler's own overhead left out); ``--runs N`` repeats
it and prints each run and the median.
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


def drain(profile: bool) -> float:
    """Record EVENTS payments, then drain them; returns ms a message for the drain."""
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
        profiler = None
        if profile:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
        started = time.perf_counter()
        sent = ph.worker.run_until_idle()
        elapsed = time.perf_counter() - started
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
    return elapsed / sent * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-profile", action="store_true", help="time the drain only")
    parser.add_argument("--runs", type=int, default=1, help="how many drains (default 1)")
    args = parser.parse_args()
    figures = []
    for run in range(args.runs):
        figures.append(drain(profile=not args.no_profile))
        print(f"run {run + 1}: {figures[-1]:.3f} ms a message")
    if args.runs > 1:
        print(f"median: {statistics.median(figures):.3f} ms a message")


if __name__ == "__main__":
    main()
