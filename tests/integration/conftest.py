from __future__ import annotations

from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from payherald import FrozenClock
from payherald.testing import ScriptedChannel
from tests import peers
from tests.peers import free_port
from tests.support import LiveServer, Mailbox, SlackReceiver, build_for_tests, serving


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def sms() -> ScriptedChannel:
    """An SMS channel that records every send and answers from its script."""
    return ScriptedChannel("sms")


@pytest.fixture(scope="module")
def twilio() -> Iterator[peers.TwilioMock]:
    """Twilio's OpenAPI spec under Prism (random answers), behind a recording proxy."""
    if reason := peers.prism_available():
        pytest.skip(reason)
    with peers.TwilioMock() as mock:
        yield mock


@pytest.fixture(scope="module")
def localstripe() -> Iterator[peers.LocalStripe]:
    """localstripe, a stateful fake of the Stripe API, on 127.0.0.1."""
    if reason := peers.localstripe_available():
        pytest.skip(reason)
    with peers.LocalStripe() as server:
        yield server


@pytest.fixture
def ph(database_url: str) -> Iterator[Any]:
    """payherald on the test database, with the defaults of ``build_for_tests``; a module
    that needs other settings or channels defines its own ``ph``."""
    built = build_for_tests(database_url)
    yield built
    built.engine.dispose()


@pytest.fixture
def server(ph: Any) -> Iterator[LiveServer]:
    """``ph``'s HTTP app served on 127.0.0.1."""
    with LiveServer(ph.http_app, ph.settings) as live:
        yield live


@pytest.fixture
def smtp() -> Iterator[tuple[Mailbox, int]]:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it is sent, and its port."""
    mailbox, port = Mailbox(), free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield mailbox, port
    controller.stop()


@pytest.fixture
def slack() -> Iterator[tuple[type[SlackReceiver], str]]:
    """A Slack incoming-webhook stand-in on 127.0.0.1 that records posts, and its URL."""
    handler = type("Receiver", (SlackReceiver,), {"posts": [], "answer": (200, "ok", {})})
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), handler)) as server:
        yield handler, f"http://127.0.0.1:{server.server_address[1]}"
