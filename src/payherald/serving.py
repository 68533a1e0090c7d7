"""How the HTTP app is served: uvicorn, with every connection bounded in time and number.

``uvicorn_config`` is the one configuration, used by ``payherald run`` and ``serve`` and by
the tests. Its bounds:

- A request head (request line and headers) must arrive within
  PAYHERALD_HTTP_HEADER_TIMEOUT_SECONDS of the connection opening, or of the previous
  response on a kept-alive connection; else the connection is closed. uvicorn's own
  ``timeout_keep_alive`` only covers a connection idle after a response, so one that
  opens and sends nothing, or half a head, would be held for ever.
- A request body must arrive within PAYHERALD_HTTP_BODY_TIMEOUT_SECONDS (the handlers'
  ``server._read_body``, answered 408). A response sent before its request's body was all
  read (408, 413, or a route that reads no body) closes the connection, rather than
  reading and dropping the rest for as long as the client sends it.
- A request head may be at most ``MAX_HEAD_BYTES`` (64 KiB, far above any Stripe or Twilio
  request's); a longer one is answered 431 as soon as that much has arrived, so a client
  cannot make payherald hold or parse megabytes of headers (uvicorn's httptools parser
  has no limit of its own). What the client still sends is read and dropped unparsed for
  at most ``LINGER_SECONDS`` before the connection is closed, so that a client that writes
  its whole request before reading still reads the answer (closing on unread data would
  reset the connection and lose it).
- A request on a connection past PAYHERALD_HTTP_MAX_CONNECTIONS open ones (idle
  kept-alive ones count) is answered 503 by uvicorn (``limit_concurrency``); requests are
  served again once connections close.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import structlog
import uvicorn
from starlette.requests import ClientDisconnect, Request
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from payherald.exceptions import PayloadTooLarge, RequestBodyIncomplete
from payherald.settings import Settings
from payherald.webhook import MAX_BODY_BYTES

__all__ = [
    "LINGER_SECONDS",
    "MAX_HEAD_BYTES",
    "BoundedHttpProtocol",
    "read_body",
    "uvicorn_config",
]

MAX_HEAD_BYTES = 64 * 1024
LINGER_SECONDS = 2.0
_HEAD_TOO_LARGE = json.dumps(
    {
        "error": f"The request's headers are larger than {MAX_HEAD_BYTES // 1024} KiB; "
        "payherald takes Stripe's and Twilio's requests, whose headers are far smaller."
    }
).encode()

_log = structlog.get_logger("payherald.serving")


class BoundedConfig(uvicorn.Config):
    """uvicorn's configuration, with the time a request head may take to arrive."""

    def __init__(self, app: Any, *, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(app, http=BoundedHttpProtocol, **kwargs)
        self.header_timeout = header_timeout


class BoundedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose request head does not
    arrive in time and one whose request body was not all read when its response was
    sent (see the module's docstring)."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        if not isinstance(config, BoundedConfig):
            raise TypeError("BoundedHttpProtocol is served with a BoundedConfig")
        self._header_timeout = config.header_timeout
        self._head_deadline: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._refused = False
        # Between requests on a kept-alive connection: what arrives next is a head.
        self._idle = True

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # the rest of a refused request, dropped unparsed
        reading_head = self._idle or self._head_deadline is not None
        if reading_head:
            # Counted before the parser sees it: the head's part of this read (up to the
            # blank line that ends it; a body may follow in the same read).
            end = data.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else end + 4
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_large_head()
                return
        super().data_received(data)
        if not reading_head and self._head_deadline is not None and not self.transport.is_closing():
            # The next request on a kept-alive connection began in this read: count it.
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._refuse_large_head()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._idle = False
        self._cancel_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        # With a pipelined request waiting, self.cycle is that request's, not the one
        # answered; a request is only pipelined after the one before it was all read.
        unread = not self.pipeline and self.cycle.response_complete and self.cycle.more_body
        super().on_response_complete()
        if unread and not self.transport.is_closing():
            self.transport.close()
        self._idle = not self.pipeline

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self._header_timeout, self._head_late)

    def _cancel_head_deadline(self) -> None:
        self._head_bytes = 0
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _refuse_large_head(self) -> None:
        self._cancel_head_deadline()
        _log.warning(
            "request_head_too_large",
            client=self.client[0] if self.client else None,
            limit=MAX_HEAD_BYTES,
        )
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(len(_HEAD_TOO_LARGE)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _HEAD_TOO_LARGE
        )
        self._refused = True
        self.loop.call_later(LINGER_SECONDS, self.transport.close)

    def _head_late(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing():
            _log.info(
                "request_head_timeout",
                client=self.client[0] if self.client else None,
                timeout=self._header_timeout,
            )
            self.transport.close()


def uvicorn_config(
    app: Any, settings: Settings, *, host: str = "127.0.0.1", port: int = 8000
) -> uvicorn.Config:
    """The configuration ``app`` is served with, bounded by ``settings``. ``host`` and
    ``port`` are unused when uvicorn is handed a listening socket."""
    return BoundedConfig(
        app,
        header_timeout=settings.http_header_timeout,
        # uvicorn answers 503 once the open connections, the asking one included, reach
        # its limit: one more, so that PAYHERALD_HTTP_MAX_CONNECTIONS of them are served.
        limit_concurrency=settings.http_max_connections + 1,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        log_level="warning",
        lifespan="off",
    )


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, refusing anything over ``limit`` bytes without reading all of it (raises
    PayloadTooLarge); raises RequestBodyIncomplete when it does not all arrive within the
    app's body timeout (``app.state.body_timeout``) or the client disconnects first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge()
    timeout: float = request.app.state.body_timeout
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLarge()
    except TimeoutError:
        raise RequestBodyIncomplete(
            f"The request body did not all arrive within {timeout:g} s; send it again, at once."
        ) from None
    except ClientDisconnect:
        raise RequestBodyIncomplete(
            "The client disconnected before sending the whole request body."
        ) from None
    return bytes(body)
