"""What a hostile Stripe-Signature header costs: ``python bench/hostile_headers.py``.

Starts ``payherald serve`` (SQLite, a configured secret) as its own process on 127.0.0.1,
then sends ``--requests`` webhook requests whose Stripe-Signature header is 8 MiB, of two
shapes: one long item (``t=1,v1=aaaa...``) and millions of short ones (``x=1,x=1,...``,
what made the split on the event loop cost seconds). Meanwhile a thread asks ``/healthz``
every 10 ms. Prints, as JSON, for each shape: the median and the slowest time from the
first byte sent to the answer read, the answer's status, and ``/healthz``'s median and
slowest latency while those requests were served (and idle, before them); then the
server's resident memory before and after. About 15 s; everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import SECRET, base_env, free_port, payherald, running

HEADER_BYTES = 8 * 1024 * 1024
SHAPES = {
    "one_long_item": lambda size: ("t=1,v1=" + "a" * size)[:size],
    "many_items": lambda size: ("t=1," + "x=1," * (size // 4))[:size],
}


def hostile_request(port: int, header: str) -> tuple[float, int]:
    """Seconds from sending a webhook request with ``header`` to reading its answer, and
    the answer's status."""
    body = b'{"id": "evt_hostile"}'
    request = (
        "POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        f"Stripe-Signature: {header}\r\nConnection: close\r\n\r\n"
    ).encode("latin-1") + body
    started = time.perf_counter()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(request)
        answer = b""
        # Until the whole answer is read (its head and Content-Length bytes), not until the
        # server closes: it may linger a little to read what a client still sends.
        while chunk := sock.recv(65536):
            answer += chunk
            head, _, rest = answer.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if _ and length and len(rest) >= int(length.group(1)):
                break
        elapsed = time.perf_counter() - started
    status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0
    return elapsed, status


class HealthPoller(threading.Thread):
    """Asks /healthz every 10 ms until stopped; ``latencies`` holds each answer's time."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.latencies: list[float] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=30) as answer:
                answer.read()
            self.latencies.append(time.perf_counter() - started)
            self.stopped.wait(0.01)


def milliseconds(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


def measure(requests: int, logs: Path) -> dict[str, Any]:
    env = base_env(
        PAYHERALD_DATABASE_URL=f"sqlite:///{logs / 'payherald.db'}",
        STRIPE_WEBHOOK_SECRET=SECRET,
        PAYHERALD_LOG_FORMAT="json",
        PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
    )
    subprocess.run(payherald("migrate"), env=env, cwd=logs, check=True, capture_output=True)
    port = free_port()
    results: dict[str, Any] = {"header_bytes": HEADER_BYTES}
    with running("payherald-serve", payherald("serve", "--port", str(port)), env, logs) as p:
        p.wait_http(f"http://127.0.0.1:{port}/healthz")
        results["rss_before_mib"] = p.rss_mb()
        idle = HealthPoller(f"http://127.0.0.1:{port}/healthz")
        idle.start()
        time.sleep(0.5)
        idle.stopped.set()
        idle.join()
        results["healthz_idle"] = milliseconds(idle.latencies)
        for shape, make in SHAPES.items():
            header = make(HEADER_BYTES)
            poller = HealthPoller(f"http://127.0.0.1:{port}/healthz")
            poller.start()
            timings, statuses = [], set()
            for _ in range(requests):
                elapsed, status = hostile_request(port, header)
                timings.append(elapsed)
                statuses.add(status)
            poller.stopped.set()
            poller.join()
            results[shape] = {
                "answer": milliseconds(timings),
                "statuses": sorted(statuses),
                "healthz_meanwhile": milliseconds(poller.latencies),
                "healthz_answers": len(poller.latencies),
            }
        results["rss_after_mib"] = p.rss_mb()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10, help="Requests of each shape.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="payherald-hostile-") as logs:
        print(json.dumps(measure(args.requests, Path(logs)), indent=2))


if __name__ == "__main__":
    main()
