"""Profile of the ingest path with pyinstrument: ``python bench/profile_ingest.py``.

The work `POST /webhooks/stripe` does for each event, in one thread, as the server's
handler does it: verify the signature (the official SDK), parse, plan the notifications,
and store the event with them in one committed transaction (SQLite, WAL, fsync). 3,000
realistic signed events, one in ten a repeat. Writes ``bench/results/ingest-profile.txt``.

(py-spy, sampling the running server from outside, could not see below the event loop of
this uvicorn build; this profile leaves out the HTTP layer, whose cost the bare ASGI
reference in benchmark 1 measures.)
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


def main() -> None:
    from pyinstrument import Profiler

    from payherald import WebhookVerifier, build, load_settings, parse_event
    from payherald.clock import SystemClock
    from payherald.ingest import ingest

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
        for body, header, _intent in requests:
            verifier.verify(body, header)
            ingest(ph.store, ph.rules, parse_event(body))
        profiler.stop()
        elapsed = time.perf_counter() - started
        ph.engine.dispose()
    out = BENCH / "results"
    out.mkdir(exist_ok=True)
    header = (
        f"# {EVENTS} events through verify, parse, plan and a committed store, one thread, "
        f"SQLite: {elapsed / EVENTS * 1000:.2f} ms an event\n"
    )
    text = profiler.output_text(unicode=False, color=False, show_all=False)
    (out / "ingest-profile.txt").write_text(header + text)
    print(header.strip())


if __name__ == "__main__":
    main()
