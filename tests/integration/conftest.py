from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from payherald import FrozenClock
from payherald.testing import ScriptedChannel
from tests import peers
from tests.support import LiveServer, build_for_tests


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
