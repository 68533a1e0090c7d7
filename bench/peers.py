"""Loopback peers for the benchmarks, each run as its own process on 127.0.0.1.

``twilio``: Twilio's Messages API, answering each message after ``--delay`` seconds (a
provider's latency) with a fresh SID. It records when each message arrived (wall clock) and
the payment intent in its body, and serves them at ``GET /stats``.

``events``: Stripe's ``GET /v1/events``, ``--count`` payment events in pages of ``limit``,
newest first with ``starting_after`` cursors, as Stripe pages them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

_REF = re.compile(r"Ref: (pi_\w+)")


class Http:
    """Just enough HTTP/1.1 (keep-alive, Content-Length bodies) for these peers."""

    async def serve(self, port: int) -> None:
        server = await asyncio.start_server(self._connection, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                method, target = line.decode().split()[:2]
                headers = {}
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, answer = await self.handle(method, target, body)
                data = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n".encode()
                    + data
                )
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        raise NotImplementedError


class TwilioPeer(Http):
    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.arrivals: list[tuple[float, str, str]] = []  # (time, To, payment intent)

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        path = urlsplit(target).path
        if method == "GET" and path == "/stats":
            return 200, {"count": len(self.arrivals), "arrivals": self.arrivals}
        if method == "POST" and path == "/reset":
            self.arrivals.clear()
            return 200, {}
        if method == "POST" and path.endswith("/Messages.json"):
            form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
            ref = _REF.search(form.get("Body", ""))
            self.arrivals.append((time.time(), form.get("To", ""), ref.group(1) if ref else ""))
            sid = f"SM{len(self.arrivals):032x}"
            if self.delay:
                await asyncio.sleep(self.delay)
            return 201, {"sid": sid, "status": "queued", "to": form.get("To")}
        if method == "GET" and path.endswith("/Messages.json"):
            return 200, {"messages": [], "next_page_uri": None, "page": 0, "page_size": 50}
        return 404, {"code": 20404, "message": "not found", "status": 404}


class EventsPeer(Http):
    def __init__(self, count: int) -> None:
        from payherald.clock import SystemClock
        from payherald.simulate import build_event

        now = SystemClock().now()
        self.events = []  # newest first, as Stripe lists them
        for index in range(count):
            event = build_event("payment_intent.succeeded", now=now, livemode=False)
            event["id"] = f"evt_bench{count - index:07d}"
            self.events.append(event)
        self.position = {event["id"]: i for i, event in enumerate(self.events)}

    async def handle(self, method: str, target: str, body: bytes) -> tuple[int, Any]:
        url = urlsplit(target)
        if method != "GET" or url.path != "/v1/events":
            return 404, {"error": {"type": "invalid_request_error", "message": "no such route"}}
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        limit = int(query.get("limit", "10"))
        start = self.position[query["starting_after"]] + 1 if "starting_after" in query else 0
        page = self.events[start : start + limit]
        return 200, {
            "object": "list",
            "url": "/v1/events",
            "has_more": start + limit < len(self.events),
            "data": page,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=("twilio", "events"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=10_000)
    args = parser.parse_args()
    peer: Http = TwilioPeer(args.delay) if args.kind == "twilio" else EventsPeer(args.count)
    asyncio.run(peer.serve(args.port))


if __name__ == "__main__":
    main()
