"""Signing in to the dashboard and the JSON API with the admin token (PAYHERALD_ADMIN_TOKEN).

A browser signs in once by typing the token; it then holds a session cookie, valid for
``session_seconds``, that is ``<id>.<expiry>.<signature>``: signed with a key derived from
the token, so the server keeps no session table, every ``serve`` process accepts every
other's sessions, and changing the token signs everybody out. The cookie is HttpOnly,
SameSite=Strict and Secure unless the page was asked for over plain HTTP on a loopback
address with no proxy in between (where plain HTTP is what a developer uses). A program
presents the token itself as ``Authorization: Bearer <token>``.

A cookie is sent by the browser on its own, so every action made with one carries a CSRF
token too (a form's hidden ``csrf`` field, or the ``X-CSRF-Token`` header): a signature
of the session's id, which another site can neither read nor make. A bearer request needs
none: nothing sends the header on the operator's behalf.

Tokens and signatures are compared in constant time, and wrong tokens, typed or presented
as a bearer token, are rate-limited per client address, so the token cannot be guessed at
speed.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from starlette.requests import HTTPConnection
from starlette.responses import Response

from payherald.clock import Clock

__all__ = [
    "COOKIE",
    "CSRF_HEADER",
    "AdminAuth",
    "Session",
    "presents_bearer",
    "presents_token",
]

COOKIE = "payherald_session"
CSRF_HEADER = "x-csrf-token"
# A session's id: enough randomness that two never meet.
_ID_BYTES = 16
# How many wrong tokens a client may try in a minute, and how many clients are remembered.
_WINDOW = 60.0
_REMEMBERED_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in operator: by the session cookie, or by a bearer token (``bearer``)."""

    id: str
    expires_at: datetime
    bearer: bool = False


def presents_bearer(connection: HTTPConnection) -> bool:
    """Whether ``connection`` presents a bearer token (any: right or wrong)."""
    scheme, _, _ = connection.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer"


def presents_token(connection: HTTPConnection, token: str | None) -> bool:
    """Whether ``connection`` carries ``token`` as ``Authorization: Bearer <token>``."""
    scheme, _, given = connection.headers.get("authorization", "").partition(" ")
    return (
        token is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode(), token.encode())
    )


class AdminAuth:
    """Who may see the dashboard and call the API: whoever holds the admin token."""

    def __init__(
        self,
        *,
        token: str | None,
        clock: Clock,
        session_seconds: float = 12 * 3600,
        attempts_per_minute: int = 5,
    ) -> None:
        self._token = token
        self._clock = clock
        self._lifetime = timedelta(seconds=session_seconds)
        self._attempts = attempts_per_minute
        # A key of its own for each use, so that a session's signature is never a CSRF
        # token and neither reveals the admin token.
        secret = (token or "").encode()
        self._session_key = hmac.new(secret, b"payherald session", hashlib.sha256).digest()
        self._csrf_key = hmac.new(secret, b"payherald csrf", hashlib.sha256).digest()
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}  # client -> times of its wrong tokens

    @property
    def enabled(self) -> bool:
        return self._token is not None

    def session(self, connection: HTTPConnection) -> Session | None:
        """The signed-in session of ``connection`` (a request or an SSE stream): a bearer
        token, or a valid, unexpired session cookie; None for anyone else. A wrong bearer
        token counts as a wrong guess (``waiting``), and is not checked while its client
        must wait; another scheme (a proxy's Basic authentication) is not looked at."""
        if self._token is None:
            return None
        if presents_bearer(connection):
            if self.waiting(connection) is not None:
                return None
            if presents_token(connection, self._token):
                return Session(id="bearer", expires_at=self._clock.now(), bearer=True)
            self._guessed_wrong(connection)
            return None
        # Another scheme (a proxy's Basic authentication in front) is not ours: the cookie
        # decides.
        cookie = connection.cookies.get(COOKIE)
        return self._read_cookie(cookie) if cookie else None

    def waiting(self, connection: HTTPConnection) -> float | None:
        """The seconds ``connection``'s client must wait before its next guess, if it got
        the token wrong too often in the last minute; else None."""
        now = self._clock.now().timestamp()
        with self._lock:
            recent = [t for t in self._failures.get(_client(connection), ()) if now - t < _WINDOW]
            if len(recent) < self._attempts:
                return None
            return max(1.0, _WINDOW - (now - recent[0]))

    def _guessed_wrong(self, connection: HTTPConnection) -> None:
        client, now = _client(connection), self._clock.now().timestamp()
        with self._lock:
            recent = [t for t in self._failures.get(client, ()) if now - t < _WINDOW]
            if len(self._failures) >= _REMEMBERED_CLIENTS and client not in self._failures:
                self._failures.pop(next(iter(self._failures)))
            self._failures[client] = [*recent, now]

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._csrf_key, session.id.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, submitted: str | None) -> bool:
        """Whether an action of ``session`` carries its CSRF token (a bearer session needs
        none)."""
        if session.bearer:
            return True
        return submitted is not None and hmac.compare_digest(
            submitted.encode(), self.csrf_token(session).encode()
        )

    def sign_in(self, connection: HTTPConnection, token: str) -> Session | float | None:
        """A new session if ``token`` is the admin token; None if it is not; the seconds
        to wait if this client got it wrong too often in the last minute (nothing is
        checked then, so that guessing gets no answer)."""
        if self._token is None:
            return None
        wait = self.waiting(connection)
        if wait is not None:
            return wait
        if hmac.compare_digest(token.strip().encode(), self._token.encode()):
            with self._lock:
                self._failures.pop(_client(connection), None)
            return Session(id=secrets.token_hex(_ID_BYTES), expires_at=self._expiry())
        self._guessed_wrong(connection)
        return None

    def set_cookie(self, response: Response, connection: HTTPConnection, session: Session) -> None:
        seconds = int((session.expires_at - self._clock.now()).total_seconds())
        response.set_cookie(
            COOKIE,
            self._cookie_value(session),
            max_age=max(0, seconds),
            path="/",
            httponly=True,
            samesite="strict",
            secure=_secure(connection),
        )

    def clear_cookie(self, response: Response, connection: HTTPConnection) -> None:
        response.delete_cookie(
            COOKIE,
            path="/",
            httponly=True,
            samesite="strict",
            secure=_secure(connection),
        )

    # -- the cookie -------------------------------------------------------------------

    def _expiry(self) -> datetime:
        # Whole seconds: the cookie carries the expiry as an integer.
        return (self._clock.now() + self._lifetime).replace(microsecond=0)

    def _signature(self, body: str) -> str:
        return hmac.new(self._session_key, body.encode(), hashlib.sha256).hexdigest()

    def _cookie_value(self, session: Session) -> str:
        body = f"{session.id}.{int(session.expires_at.timestamp())}"
        return f"{body}.{self._signature(body)}"

    def _read_cookie(self, value: str) -> Session | None:
        session_id, _, rest = value.partition(".")
        expires, _, signature = rest.partition(".")
        body = f"{session_id}.{expires}"
        if not (session_id and expires.isdigit() and len(expires) <= 12):
            return None
        if not hmac.compare_digest(signature.encode(), self._signature(body).encode()):
            return None
        expires_at = datetime.fromtimestamp(int(expires), UTC)
        if expires_at <= self._clock.now():
            return None
        return Session(id=session_id, expires_at=expires_at)


def _client(connection: HTTPConnection) -> str:
    return connection.client.host if connection.client else "?"


def _secure(connection: HTTPConnection) -> bool:
    """Whether the session cookie must be ``Secure``: unless the page was asked for over
    plain HTTP on a loopback address with no proxy in between (a proxy in front, even on
    the same machine, says so with X-Forwarded-Proto or Forwarded)."""
    headers = connection.headers
    proxied = "x-forwarded-proto" in headers or "forwarded" in headers
    return connection.url.scheme == "https" or proxied or not _loopback(connection.url.hostname)


def _loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
