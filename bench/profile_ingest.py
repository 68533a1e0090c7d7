"""Profile of the ingest path with pyinstrument: ``python bench/profile_ingest.py``.

The work `POST /webhooks/stripe` does for each event, in one thread: verify the signature
(the official SDK) and parse, as the request handler does; then plan the notifications and
record the events with them in committed transactions of 64 (SQLite, WAL, fsync), as the
group committer's writer does when 64 requests arrive together. 3,000 realistic signed
events, one in ten a repeat. Writes ``bench/results/ingest-profile.txt``.

(The writer is a thread of its own in the server; here its work runs in the profiled
thread, so that one profile shows both halves. The HTTP layer is left out: the bare ASGI
reference in benchmark 1 measures its cost.)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import BENCH, SECRET
from loadgen import build_bodies

EVENTS = 3000
BATCH = 64  # the load generator's concurrent senders


def main() -> None:
    from pyinstrument import Profiler

    from payherald import WebhookVerifier, build, load_settings
    from payherald.clock import SystemClock
    from payherald.ingest import plan_event

    requests = build_bodies(EVENTS, SECRET, livemode=False, phone="+14155550123", duplicates=0.1)
    with tempfile.TemporaryDirectory(prefix="payherald-profile-") as scratch:
        settings = load_settings(
            PAYHERALD_DATABASE_URL=f"sqlite:///{Path(scratch) / 'payherald.db'}",
            STRIPE_WEBHOOK_SECRET=SECRET,
            PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
        )
        ph = build(settings, migrate_schema=True)
        verifier = WebhookVerifier(secrets=[SECRET], clock=SystemClock())
        profiler = Profiler(interval=0.0002)
        started = time.perf_counter()
        profiler.start()
        for start in range(0, len(requests), BATCH):
            batch = []
            for body, header, _intent in requests[start : start + BATCH]:
                batch.append(verifier.receive(body, header))
            ph.store.record_events([plan_event(ph.rules, event) for event in batch])
        profiler.stop()
        elapsed = time.perf_counter() - started
        ph.engine.dispose()
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    header = (
        f"# {EVENTS} events through verify and parse, then plan and a committed store in "
        f"batches of {BATCH}, one thread, SQLite: {elapsed / EVENTS * 1000:.3f} ms an event\n"
    )
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (out / "ingest-profile.txt").write_text(header + text)
    print(header.strip())


if __name__ == "__main__":
    main()
