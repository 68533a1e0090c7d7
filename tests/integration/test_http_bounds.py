"""The HTTP server's bounds over real HTTP on loopback, served as `payherald run` serves:
slow or idle connections are closed, connections are limited, a client that leaves
mid-body is one log line, /readyz keeps the database's reason for the admin token."""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from tests.support import LiveServer, TcpProxy, build_for_tests, event_body, sign

BOUNDS = {
    "PAYHERALD_HTTP_HEADER_TIMEOUT_SECONDS": "0.5",
    "PAYHERALD_HTTP_BODY_TIMEOUT_SECONDS": "0.5",
    "PAYHERALD_HTTP_MAX_CONNECTIONS": "2",
    "PAYHERALD_ADMIN_TOKEN": "bounds-admin-token-0123456789",
}
HEAD = (
    b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    b"Content-Type: application/json\r\nStripe-Signature: t=1,v1=00\r\n"
    b"Content-Length: 1000\r\n\r\n"
)


@pytest.fixture
def bounded(sqlite_url: str) -> Iterator[LiveServer]:
    """payherald on SQLite with half-second timeouts and two connections, served."""
    built = build_for_tests(sqlite_url, settings=BOUNDS)
    with LiveServer(built.http_app, built.settings) as live:
        yield live
    built.engine.dispose()


def _until_closed(sock: socket.socket, within: float = 5.0) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and how long that took;
    fails if it is still open after ``within`` seconds."""
    started = time.monotonic()
    sock.settimeout(within)
    received = b""
    try:
        while data := sock.recv(4096):
            received += data
    except TimeoutError:
        pytest.fail(f"the server held the connection for {within} s")
    except ConnectionResetError:
        pass
    return received, time.monotonic() - started


IDLE = {
    "nothing sent": b"",
    "half a request head": b"POST /webhooks/stripe HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-",
    "the head and half the body": HEAD + b'{"id": "evt_slow", ',
    "the sign-in form's head and half its body": (
        b"POST /signin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        b"token=guess"
    ),
}


@pytest.mark.parametrize("case", IDLE)
def test_an_idle_connection_is_closed_after_the_timeout(bounded: LiveServer, case: str) -> None:
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.sendall(IDLE[case])
        received, waited = _until_closed(sock)
    assert 0.3 < waited < 3, case
    if "half the body" in case or "half its body" in case:
        status, _, rest = received.partition(b"\r\n")
        assert status == b"HTTP/1.1 408 Request Timeout"
        assert b"did not all arrive within 0.5 s" in rest
    else:
        assert received == b""


def test_a_kept_alive_connection_sending_half_a_head_is_closed(bounded: LiveServer) -> None:
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHo")
        received, waited = _until_closed(sock)
    assert received == b""
    assert waited < 3


def test_an_answer_sent_before_the_body_was_read_closes_the_connection(
    bounded: LiveServer,
) -> None:
    head = HEAD.replace(b"Content-Length: 1000", b"Content-Length: 104857600")
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.sendall(head + b" " * 65536)
        received, waited = _until_closed(sock)
    assert received.startswith(b"HTTP/1.1 413")
    assert waited < 3


def _head(padding: int) -> bytes:
    """A GET /healthz head of about ``padding`` bytes more than a bare one."""
    pads = b"".join(b"X-Pad-%05d: %s\r\n" % (n, b"p" * 80) for n in range(padding // 96))
    return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + pads + b"\r\n"


@pytest.mark.parametrize("kept_alive", [False, True])
def test_a_head_over_64_kib_is_answered_431_and_one_under_it_is_served(
    bounded: LiveServer, kept_alive: bool
) -> None:
    with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
        sock.settimeout(5)
        if kept_alive:
            sock.sendall(_head(0))
            assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        under = _head(60 * 1024)
        assert len(under) < 64 * 1024
        sock.sendall(under)
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        # Just over the limit, and all in one write: refused before anyone parses it.
        over = _head(65 * 1024)
        assert len(over) > 64 * 1024
        sock.sendall(over)
        received, _ = _until_closed(sock)
    status, _, rest = received.partition(b"\r\n")
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large"
    assert b"larger than 64 KiB" in rest


@contextlib.contextmanager
def _open_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(count)]
    try:
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def test_past_the_connection_limit_a_request_gets_503_and_then_is_served_again(
    sqlite_url: str,
) -> None:
    # Long head timeout: the held connections must outlive the test's requests.
    built = build_for_tests(
        sqlite_url, settings={**BOUNDS, "PAYHERALD_HTTP_HEADER_TIMEOUT_SECONDS": "30"}
    )
    with LiveServer(built.http_app, built.settings) as live:
        with _open_connections(live.port, 1):
            assert httpx.get(f"{live.url}/healthz").status_code == 200  # the second of two
        with _open_connections(live.port, 2):
            assert httpx.get(f"{live.url}/healthz").status_code == 503
        deadline = time.monotonic() + 5
        while (status := httpx.get(f"{live.url}/healthz").status_code) != 200:
            assert time.monotonic() < deadline, f"still {status} after the connections closed"
            time.sleep(0.05)
    built.engine.dispose()


def test_a_client_that_disconnects_mid_body_is_one_log_line(
    bounded: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    with capture_logs() as logs, caplog.at_level(logging.INFO):
        with socket.create_connection(("127.0.0.1", bounded.port)) as sock:
            sock.sendall(HEAD + b'{"id": "evt_gone", ')
            time.sleep(0.1)  # the handler is reading the body
        deadline = time.monotonic() + 5
        while not any(log["event"] == "request_body_incomplete" for log in logs):
            assert time.monotonic() < deadline, "nothing logged for the disconnect"
            time.sleep(0.02)
        time.sleep(0.2)  # anything logged after the line would show here
    (entry,) = [log for log in logs if log["log_level"] != "debug"]
    assert entry["event"] == "request_body_incomplete"
    assert entry["log_level"] == "warning"
    assert entry["client"] == "127.0.0.1"
    assert "disconnected" in entry["reason"]
    assert [record.getMessage() for record in caplog.records] == []


TOKEN = "admin-token-for-the-readyz-tests-0123456789"


@pytest.fixture
def store_down(postgres_url: str) -> Iterator[tuple[LiveServer, TcpProxy]]:
    """payherald on PostgreSQL through a proxy that is then cut, served, with TOKEN."""
    host_port = postgres_url.split("@", 1)[1].split("/", 1)[0]
    host, _, port = host_port.partition(":")
    proxy = TcpProxy(host, int(port or 5432))
    built = build_for_tests(
        postgres_url.replace(host_port, f"127.0.0.1:{proxy.port}"),
        settings={"PAYHERALD_ADMIN_TOKEN": TOKEN},
    )
    with LiveServer(built.http_app, built.settings) as live:
        assert httpx.get(f"{live.url}/readyz").json() == {"status": "ready"}
        proxy.cut()
        yield live, proxy
    built.engine.dispose()


def _readyz(live: LiveServer, authorization: str | None = None) -> httpx.Response:
    headers = {"Authorization": authorization} if authorization else {}
    return httpx.get(f"{live.url}/readyz", headers=headers, timeout=30)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", TOKEN, f"Basic {TOKEN}"])
def test_readyz_tells_anyone_without_the_admin_token_only_that_the_store_is_unavailable(
    store_down: tuple[LiveServer, TcpProxy], authorization: str | None
) -> None:
    live, proxy = store_down
    with capture_logs() as logs:
        response = _readyz(live, authorization)
    assert response.status_code == 503
    answer = response.json()
    assert answer["status"] == "unavailable"
    assert answer["error"].startswith("store unavailable")
    for detail in (str(proxy.port), "127.0.0.1", "postgres", "connection"):
        assert detail not in json.dumps(answer), detail
    (entry,) = [log for log in logs if log["event"] == "not_ready"]
    assert str(proxy.port) in entry["error"]


def test_readyz_tells_the_admin_token_why_the_store_is_unavailable(
    store_down: tuple[LiveServer, TcpProxy],
) -> None:
    live, proxy = store_down
    response = _readyz(live, f"Bearer {TOKEN}")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert str(proxy.port) in response.json()["error"]


def test_readyz_with_the_admin_token_says_ready_when_the_store_answers(
    sqlite_url: str,
) -> None:
    built = build_for_tests(sqlite_url, settings={"PAYHERALD_ADMIN_TOKEN": TOKEN})
    with LiveServer(built.http_app, built.settings) as live:
        assert _readyz(live, f"Bearer {TOKEN}").json() == {"status": "ready"}
        assert _readyz(live).json() == {"status": "ready"}
    built.engine.dispose()


def _event(event_id: str, change: Any = None) -> bytes:
    event = json.loads(event_body(event_id=event_id))
    if change:
        change(event)
    return json.dumps(event).encode()


def _post(live: LiveServer, body: bytes) -> httpx.Response:
    return httpx.post(
        f"{live.url}/webhooks/stripe",
        content=body,
        headers={"Stripe-Signature": sign(body), "Content-Type": "application/json"},
        timeout=30,
    )


REFUSED = {
    "a NUL in the id": _event("evt_a\u0000b"),
    "a control character in the id": _event("evt_a\u0001b"),
    "an id that is not evt_": _event("pi_123"),
    "a NUL in the type": _event("evt_t", lambda e: e.update(type="payment_intent.succeeded\0")),
    "a NUL in the api_version": _event("evt_v", lambda e: e.update(api_version="2024-06-20\0")),
    "an api_version over 64 characters": _event(
        "evt_w", lambda e: e.update(api_version="2024-06-20." + "x" * 60)
    ),
}


@pytest.mark.parametrize("case", REFUSED)
def test_an_event_the_database_cannot_store_is_refused_with_400(ph: Any, case: str) -> None:
    with LiveServer(ph.http_app, ph.settings) as live:
        answers = [_post(live, REFUSED[case]) for _ in range(2)]
    assert [answer.status_code for answer in answers] == [400, 400], case
    assert "is not a Stripe" in answers[0].json()["error"]
    assert ph.store.list_events() == []


def test_an_event_with_a_nul_in_a_string_of_its_payload_is_stored(ph: Any) -> None:
    body = _event("evt_nul", lambda e: e["data"]["object"].update(description="Order\u00001"))
    with LiveServer(ph.http_app, ph.settings) as live:
        assert _post(live, body).status_code == 200
    payload = ph.store.event_payload("evt_nul")
    assert json.loads(payload)["data"]["object"]["description"] == "Order\u00001"


REFUSED_BY_POSTGRESQL = {
    "a NUL in the object's id": lambda e: e["data"]["object"].update(id="pi_a\u0000b"),
    "an object id over 255 characters": lambda e: e["data"]["object"].update(id="pi_" + "a" * 300),
}


@pytest.mark.parametrize("case", REFUSED_BY_POSTGRESQL)
def test_an_event_the_database_refuses_a_value_of_is_422_never_503(
    ph: Any, database_url: str, case: str
) -> None:
    # SQLite stores what PostgreSQL refuses: any string, of any length.
    expected = 422 if database_url.startswith("postgresql") else 200
    body = _event("evt_refused", REFUSED_BY_POSTGRESQL[case])
    with LiveServer(ph.http_app, ph.settings) as live:
        with capture_logs() as logs:
            first = _post(live, body)
        again = _post(live, body)
        assert _post(live, _event("evt_after")).status_code == 200
    assert (first.status_code, again.status_code) == (expected, expected), case
    if expected == 422:
        assert "would refuse it again" in first.json()["error"]
        (entry,) = [log for log in logs if log["event"] == "event_not_storable"]
        assert entry["event_id"] == "evt_refused"
