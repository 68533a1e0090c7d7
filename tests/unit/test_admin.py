"""Signing in with the admin token: the session cookie and what it refuses (tampering,
expiry, another token), CSRF tokens, the limit on wrong guesses, and the cookie's flags."""

from __future__ import annotations

from datetime import UTC, datetime
from http.cookies import SimpleCookie

from starlette.requests import Request
from starlette.responses import Response

from payherald import FrozenClock
from payherald.admin import COOKIE, AdminAuth, Session

TOKEN = "the-admin-token"


def request(
    *,
    host: str = "127.0.0.1",
    client: str = "10.0.0.7",
    cookie: str | None = None,
    bearer: str | None = None,
) -> Request:
    headers = [(b"host", host.encode())]
    if cookie is not None:
        headers.append((b"cookie", f"{COOKIE}={cookie}".encode()))
    if bearer is not None:
        headers.append((b"authorization", f"Bearer {bearer}".encode()))
    return Request(
        {
            "type": "http",
            "scheme": "http",
            "path": "/",
            "query_string": b"",
            "client": (client, 40000),
            "server": (host, 8000),
            "headers": headers,
        }
    )


def signed_in(auth: AdminAuth, *, host: str = "127.0.0.1") -> tuple[Session, str, str]:
    """A session, its cookie's value and the Set-Cookie header that carried it."""
    asking = request(host=host)
    session = auth.sign_in(asking, TOKEN)
    assert isinstance(session, Session)
    answer = Response()
    auth.set_cookie(answer, asking, session)
    header = answer.headers["set-cookie"]
    return session, SimpleCookie(header)[COOKIE].value, header


def test_a_cookie_from_sign_in_is_a_session_until_it_expires() -> None:
    clock = FrozenClock(datetime(2026, 12, 4, 12, tzinfo=UTC))
    auth = AdminAuth(token=TOKEN, clock=clock, session_seconds=3600)
    session, cookie, _ = signed_in(auth)
    assert auth.session(request(cookie=cookie)) == session
    clock.advance(3599)
    assert auth.session(request(cookie=cookie)) is not None
    clock.advance(1)
    assert auth.session(request(cookie=cookie)) is None


def test_a_tampered_cookie_or_one_made_with_another_token_is_refused() -> None:
    clock = FrozenClock(datetime(2026, 12, 4, 12, tzinfo=UTC))
    auth = AdminAuth(token=TOKEN, clock=clock)
    _, cookie, _ = signed_in(auth)
    session_id, expires, signature = cookie.split(".")
    later = f"{session_id}.{int(expires) + 86400}.{signature}"
    assert auth.session(request(cookie=later)) is None
    assert auth.session(request(cookie=cookie[:-1] + ("0" if cookie[-1] != "0" else "1"))) is None
    assert auth.session(request(cookie="garbage")) is None
    other = AdminAuth(token="another-token", clock=clock)
    assert other.session(request(cookie=cookie)) is None


def test_the_bearer_token_is_a_session_and_needs_no_csrf_token() -> None:
    auth = AdminAuth(token=TOKEN, clock=FrozenClock())
    session = auth.session(request(bearer=TOKEN))
    assert session is not None
    assert session.bearer
    assert auth.csrf_ok(session, None)
    assert auth.session(request(bearer="wrong")) is None


def test_an_action_with_a_cookie_needs_its_sessions_csrf_token() -> None:
    auth = AdminAuth(token=TOKEN, clock=FrozenClock())
    session, _, _ = signed_in(auth)
    other, _, _ = signed_in(auth)
    assert auth.csrf_ok(session, auth.csrf_token(session))
    assert not auth.csrf_ok(session, None)
    assert not auth.csrf_ok(session, "forged")
    assert not auth.csrf_ok(session, auth.csrf_token(other))


def test_wrong_tokens_are_limited_per_client_and_the_right_one_waits_too() -> None:
    clock = FrozenClock(datetime(2026, 12, 4, 12, tzinfo=UTC))
    auth = AdminAuth(token=TOKEN, clock=clock, attempts_per_minute=3)
    guesser = request(client="203.0.113.9")
    assert [auth.sign_in(guesser, f"guess-{n}") for n in range(3)] == [None, None, None]
    wait = auth.sign_in(guesser, TOKEN)
    assert isinstance(wait, float)
    assert 1 <= wait <= 60
    assert isinstance(auth.sign_in(request(client="198.51.100.1"), TOKEN), Session)
    clock.advance(61)
    assert isinstance(auth.sign_in(guesser, TOKEN), Session)


def test_the_cookie_is_httponly_strict_and_secure_except_on_loopback() -> None:
    auth = AdminAuth(token=TOKEN, clock=FrozenClock())
    _, _, local = signed_in(auth, host="127.0.0.1")
    _, _, public = signed_in(auth, host="payherald.example.com")
    for header in (local, public):
        assert "HttpOnly" in header
        assert "SameSite=strict" in header
        assert "Path=/" in header
    assert "Secure" not in local
    assert "Secure" in public


def test_without_a_token_nobody_is_signed_in() -> None:
    auth = AdminAuth(token=None, clock=FrozenClock())
    assert not auth.enabled
    assert auth.sign_in(request(), "") is None
    assert auth.session(request(bearer="")) is None


def test_a_proxys_basic_authentication_is_not_taken_for_a_guess() -> None:
    """Behind a proxy asking for Basic authentication, the browser sends it on every
    request: the cookie decides, and none of it counts against the limit."""
    auth = AdminAuth(token=TOKEN, clock=FrozenClock(), attempts_per_minute=3)
    session, cookie, _ = signed_in(auth)
    behind = request(cookie=cookie)
    basic = Request(
        {
            **behind.scope,
            "headers": [*behind.scope["headers"], (b"authorization", b"Basic b3A6cHc=")],
        }
    )
    for _ in range(10):
        assert auth.session(basic) == session
    assert auth.waiting(basic) is None
