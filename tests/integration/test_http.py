"""POST /webhooks/stripe over real HTTP on loopback."""

from __future__ import annotations

import concurrent.futures
import json
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from payherald import FrozenClock, SystemClock, WebhookVerifier
from payherald.builtin_rules import BUILTIN_RULES
from payherald.metrics import Metrics
from payherald.rules import RuleBook
from payherald.server import create_http_app
from payherald.store import Store
from payherald.store.engine import create_store_engine
from payherald.templates import TemplateRenderer
from tests.support import (
    OTHER_SECRET,
    SECRET,
    LiveServer,
    TcpProxy,
    build_for_tests,
    event_body,
    sign,
)


def post(url: str, body: bytes, header: str | None, **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return httpx.post(f"{url}/webhooks/stripe", content=body, headers=headers, timeout=30, **kwargs)


def test_a_signed_event_is_stored_and_acknowledged(ph: Any, server: LiveServer) -> None:
    body = event_body(event_id="evt_ok")
    response = post(server.url, body, sign(body))
    assert response.status_code == 200
    assert response.json() == {
        "received": True,
        "event_id": "evt_ok",
        "duplicate": False,
        "queued": 1,
    }
    assert [e["id"] for e in ph.store.list_events()] == ["evt_ok"]
    assert ph.store.count_notifications(status="pending") == 1


def test_an_unknown_event_type_is_stored_and_acknowledged(ph: Any, server: LiveServer) -> None:
    body = event_body("issuing_card.created", event_id="evt_unknown")
    response = post(server.url, body, sign(body))
    assert response.status_code == 200
    (event,) = ph.store.list_events()
    assert (event["id"], event["status"]) == ("evt_unknown", "ignored")


BODY = event_body(event_id="evt_rejected")


def _now() -> int:
    return int(SystemClock().now().timestamp())


# Each case makes its (header, body) when the test runs, so that timestamps are fresh.
REJECTIONS: dict[str, Callable[[], tuple[str | None, bytes]]] = {
    "wrong secret": lambda: (sign(BODY, "whsec_not_the_configured_secret"), BODY),
    "body changed by one byte": lambda: (
        sign(BODY),
        BODY.replace(b"evt_rejected", b"evt_rejectes"),
    ),
    "301 s old": lambda: (sign(BODY, timestamp=_now() - 301), BODY),
    # Ahead by a margin: the request may take a few seconds to reach the check on a busy
    # machine, and each of them brings a timestamp that is ahead back within tolerance.
    "310 s ahead": lambda: (sign(BODY, timestamp=_now() + 310), BODY),
    "missing header": lambda: (None, BODY),
    "empty header": lambda: ("", BODY),
    "malformed header": lambda: ("not a signature", BODY),
    "v0 signature only": lambda: (sign(BODY).replace("v1=", "v0="), BODY),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_a_rejected_request_gets_400_and_stores_nothing(
    ph: Any, server: LiveServer, case: str
) -> None:
    header, body = REJECTIONS[case]()
    response = post(server.url, body, header)
    assert response.status_code == 400, case
    assert response.json()["error"]
    assert ph.store.list_events() == []
    assert ph.store.count_notifications() == 0


def test_several_secrets_are_accepted(tmp_path: Path) -> None:
    built = build_for_tests(
        f"sqlite:///{tmp_path / 'x.db'}",
        settings={"STRIPE_WEBHOOK_SECRET": f"{OTHER_SECRET},{SECRET}"},
    )
    with LiveServer(built.http_app) as live:
        for event_id, secret in (("evt_a", SECRET), ("evt_b", OTHER_SECRET)):
            body = event_body(event_id=event_id)
            assert post(live.url, body, sign(body, secret)).status_code == 200
    assert len(built.store.list_events()) == 2
    built.engine.dispose()


def test_a_rejection_is_logged_with_the_client_and_never_the_secret(server: LiveServer) -> None:
    with capture_logs() as logs:
        post(server.url, BODY, sign(BODY, OTHER_SECRET))
    (entry,) = [log for log in logs if log["event"] == "webhook_rejected"]
    assert entry["client"] == "127.0.0.1"
    assert entry["status"] == 400
    assert SECRET not in json.dumps(logs)
    assert OTHER_SECRET not in json.dumps(logs)


def test_a_body_over_1_mib_is_refused_with_413(ph: Any, server: LiveServer) -> None:
    body = b"{" + b" " * (1024 * 1024) + b"}"
    response = post(server.url, body, sign(body))
    assert response.status_code == 413
    assert ph.store.list_events() == []


def _raw_request(port: int, head: bytes, body: bytes) -> bytes:
    """Send ``head`` and ``body`` but never finish the request; return what the server
    answers within 10 s. An answer proves the server did not wait for the whole body."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + body)
        return sock.recv(4096)


def test_a_declared_length_over_1_mib_is_refused_before_the_body_is_sent(
    ph: Any, server: LiveServer
) -> None:
    head = (
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\n"
        b"Content-Length: 104857600\r\n\r\n"
    )
    assert _raw_request(server.port, head, b"").startswith(b"HTTP/1.1 413")
    assert ph.store.list_events() == []


def test_a_chunked_body_over_1_mib_is_refused_without_reading_it_all(
    ph: Any, server: LiveServer
) -> None:
    head = (
        b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b" " * 65536
    body = (b"%x\r\n" % len(chunk) + chunk + b"\r\n") * 20  # 1.25 MiB, never terminated
    assert _raw_request(server.port, head, body).startswith(b"HTTP/1.1 413")
    assert ph.store.list_events() == []


def test_the_same_event_delivered_20_times_at_once_is_stored_and_queued_once(
    ph: Any, server: LiveServer
) -> None:
    body = event_body(event_id="evt_twenty")
    header = sign(body)
    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: post(server.url, body, header), range(20)))
    assert [r.status_code for r in responses] == [200] * 20
    assert sum(not r.json()["duplicate"] for r in responses) == 1
    assert len(ph.store.list_events()) == 1
    assert ph.store.count_notifications() == 1


def test_readyz_says_ready_when_the_store_answers(server: LiveServer) -> None:
    assert httpx.get(f"{server.url}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{server.url}/healthz").status_code == 200


def _server_on(store: Store) -> Any:
    return create_http_app(
        store=store,
        verifier=WebhookVerifier(secrets=[SECRET], clock=SystemClock()),
        rules=RuleBook(BUILTIN_RULES, renderer=TemplateRenderer()),
        metrics=Metrics(store=store),
    )


def test_an_unwritable_sqlite_store_answers_503(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-directory" / "payherald.db"
    store = Store(engine=create_store_engine(f"sqlite:///{missing}"), clock=FrozenClock())
    with LiveServer(_server_on(store)) as live:
        body = event_body()
        response = post(live.url, body, sign(body))
        assert response.status_code == 503
        assert "not stored" in response.json()["error"]
        assert httpx.get(f"{live.url}/readyz").status_code == 503
    assert not missing.exists()


def test_a_stopped_postgresql_answers_503_and_acknowledges_nothing(postgres_url: str) -> None:
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    proxied = postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}")
    built = build_for_tests(proxied)
    direct = Store(
        engine=create_store_engine(postgres_url.replace("postgresql://", "postgresql+psycopg://")),
        clock=FrozenClock(),
    )
    with LiveServer(built.http_app) as live:
        body = event_body(event_id="evt_before")
        assert post(live.url, body, sign(body)).status_code == 200
        proxy.cut()
        body = event_body(event_id="evt_during")
        response = post(live.url, body, sign(body))
        assert response.status_code == 503
        assert httpx.get(f"{live.url}/readyz").status_code == 503
    assert [e["id"] for e in direct.list_events()] == ["evt_before"]
    built.engine.dispose()
    direct.db.engine.dispose()
