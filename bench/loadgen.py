"""A load generator for Stripe-shaped webhooks, run as its own process on 127.0.0.1.

It pre-builds realistic, correctly signed ``payment_intent.succeeded`` events (about 3 KB,
like Stripe's), repeats one in ten (Stripe's retries and duplicates), and sends them over
keep-alive HTTP/1.1 connections with plain asyncio (no client library in the way):

- ``closed``: CONNECTIONS senders each send as fast as answers come, for DURATION seconds;
  the ceiling of the server.
- ``open``: requests start at RATE per second whatever the server does, for DURATION
  seconds; each latency runs from the moment its request was due (so a server that falls
  behind is charged for the wait: no coordinated omission).

Prints one JSON object: counts, the rate achieved, latency percentiles in milliseconds, and
with ``--record FILE`` the wall-clock time of each 2xx by payment intent, for end-to-end
latency.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from payherald.clock import SystemClock
from payherald.simulate import build_event, sign_payload

BODY_BYTES = 3000


def build_bodies(
    count: int, secret: str, *, livemode: bool, phone: str, duplicates: float, seed: int = 1
) -> list[tuple[bytes, str, str]]:
    """``count`` requests (body, Stripe-Signature, payment intent id); ``duplicates`` of
    them repeat an earlier one."""
    rng = random.Random(seed)
    now = SystemClock().now()
    stamp = int(now.timestamp())
    charge = build_event("charge.succeeded", now=now)["data"]["object"]
    requests: list[tuple[bytes, str, str]] = []
    for _ in range(count):
        if requests and rng.random() < duplicates:
            requests.append(requests[rng.randrange(len(requests))])
            continue
        event = build_event("payment_intent.succeeded", now=now, livemode=livemode, phone=phone)
        intent = event["data"]["object"]
        intent["charges"] = {"object": "list", "data": [charge], "has_more": False}
        intent["payment_method_options"] = {
            "card": {"installments": None, "network": None, "request_three_d_secure": "automatic"}
        }
        size = len(json.dumps(event))
        intent["metadata"]["note"] = "x" * max(0, BODY_BYTES - size - 12)
        body, header = sign_payload(event, secret, timestamp=stamp)
        requests.append((body, header, intent["id"]))
    return requests


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes, signature: str) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            "Content-Type: application/json; charset=utf-8\r\n"
            f"Stripe-Signature: {signature}\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("closed by the server")
        version, status = status_line.split()[:2]
        length, close, chunked = None, version == b"HTTP/1.0", False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if chunked:
            while size := int((await self.reader.readline()).strip(), 16):
                await self.reader.readexactly(size + 2)
            await self.reader.readline()
        elif length is None:
            await self.reader.read()
            close = True
        else:
            await self.reader.readexactly(length)
        if close:
            await self.close()
        return int(status)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def run(args: argparse.Namespace) -> dict[str, Any]:
    url = urlsplit(args.url)
    host, port, path = url.hostname or "127.0.0.1", url.port or 80, url.path
    count = int(args.rate * args.duration) if args.mode == "open" else args.max_requests
    requests = build_bodies(
        count, args.secret, livemode=args.livemode, phone=args.phone, duplicates=args.duplicates
    )
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    answered: dict[str, float] = {}
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(args.connections):
        pool.put_nowait(Connection(host, port))

    async def send(index: int, due: float) -> None:
        nonlocal errors
        body, signature, intent = requests[index]
        connection = await pool.get()
        try:
            status = await connection.post(path, body, signature)
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError):
            errors += 1
            await connection.close()
            return
        finally:
            pool.put_nowait(connection)
        latencies.append(time.perf_counter() - due)
        statuses[status] = statuses.get(status, 0) + 1
        if 200 <= status < 300 and args.record:
            answered.setdefault(intent, time.time())

    start = time.perf_counter()
    if args.mode == "open":
        tasks = []
        for index in range(count):
            due = start + index / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(send(index, due)))
        await asyncio.gather(*tasks)
    else:
        deadline = start + args.duration
        cursor = iter(range(count))

        async def sender() -> None:
            for index in cursor:
                if time.perf_counter() > deadline:
                    return
                await send(index, time.perf_counter())

        await asyncio.gather(*(sender() for _ in range(args.connections)))
    elapsed = time.perf_counter() - start
    while not pool.empty():
        await pool.get_nowait().close()
    ok = sum(n for status, n in statuses.items() if 200 <= status < 300)
    ordered = sorted(latencies)

    def percentile(p: float) -> float | None:
        return (
            round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000, 2)
            if ordered
            else None
        )

    if args.record:
        with open(args.record, "w") as out:
            json.dump(answered, out)
    return {
        "mode": args.mode,
        "requests": len(latencies) + errors,
        "ok": ok,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "errors": errors,
        "seconds": round(elapsed, 3),
        "rate": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50_ms": percentile(0.50),
        "p99_ms": percentile(0.99),
        "max_ms": round(ordered[-1] * 1000, 2) if ordered else None,
        "mean_ms": round(statistics.fmean(ordered) * 1000, 2) if ordered else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--mode", choices=("closed", "open"), default="closed")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--max-requests", type=int, default=60_000)
    parser.add_argument("--duplicates", type=float, default=0.10)
    parser.add_argument("--livemode", action="store_true")
    parser.add_argument("--phone", default="+14155550123")
    parser.add_argument("--record", help="Write {payment intent: time of its 2xx} here.")
    args = parser.parse_args()
    sys.stdout.write(json.dumps(asyncio.run(run(args))) + "\n")


if __name__ == "__main__":
    main()
