"""Two `payherald serve` processes and a `payherald worker` on one PostgreSQL, as several
machines run them: a dashboard's live feed on one server shows the events Stripe delivers
to the other, and the message the worker sends for each, in turn, seconds apart."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from payherald.simulate import build_event
from tests.acceptance.test_cli import clean_env, cli
from tests.acceptance.test_dunning_processes import post_as_stripe, serving, start_worker, stop
from tests.support import SECRET

TOKEN = "processes-admin-token"


def test_the_feed_of_one_server_shows_what_another_stored_and_the_worker_sent(
    tmp_path: Path, postgres_url: str
) -> None:
    env = clean_env(
        tmp_path,
        PAYHERALD_DATABASE_URL=postgres_url,
        STRIPE_WEBHOOK_SECRET=SECRET,
        PAYHERALD_ADMIN_TOKEN=TOKEN,
        PAYHERALD_POLL_INTERVAL="0.2",
        PAYHERALD_RECONCILE_INTERVAL_SECONDS="0",
        PAYHERALD_RETENTION_DAYS="0",
    )
    assert (
        cli(
            tmp_path, "migrate", **{k: v for k, v in env.items() if k.startswith("PAYHERALD_")}
        ).returncode
        == 0
    )
    seen: list[dict[str, Any]] = []
    lock = threading.Lock()
    worker = start_worker(tmp_path, env, "worker")
    try:
        with serving(tmp_path, env) as watched, serving(tmp_path, env) as delivered:
            opened = threading.Event()

            def watch() -> None:
                with httpx.stream(
                    "GET",
                    f"{watched}/api/feed",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=60,
                ) as response:
                    kind = None
                    for line in response.iter_lines():
                        opened.set()
                        if line.startswith("event: "):
                            kind = line.removeprefix("event: ")
                        elif line.startswith("data: ") and kind == "event":
                            with lock:
                                seen.append(json.loads(line.removeprefix("data: ")))

            threading.Thread(target=watch, daemon=True).start()
            assert opened.wait(10), "the live feed did not open"
            posted = []
            with httpx.Client(timeout=10) as client:
                for event_type in ("payment_intent.succeeded", "charge.failed", "refund.created"):
                    event = build_event(event_type, now=_now())
                    post_as_stripe(client, delivered, event)
                    posted.append(event["id"])
                    assert _wait(lambda i=event["id"]: _sent(seen, lock, i), 10), (
                        f"{event_type} was not shown sent on the other server's feed: {seen}"
                    )
                    time.sleep(1)
    finally:
        stop(worker)
    with lock:
        first_shown = list(dict.fromkeys(item["id"] for item in seen))
    assert first_shown == posted


def _now() -> datetime:
    return datetime.now(UTC)


def _sent(seen: list[dict[str, Any]], lock: threading.Lock, event_id: str) -> bool:
    with lock:
        return any(
            item["id"] == event_id
            and item["notifications"]
            and all(n["status"] == "sent" for n in item["notifications"])
            for item in seen
        )


def _wait(condition: Any, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
