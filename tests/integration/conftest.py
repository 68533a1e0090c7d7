from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import peers


@pytest.fixture(scope="module")
def twilio() -> Iterator[peers.TwilioMock]:
    """Twilio's OpenAPI spec under Prism (random answers), behind a recording proxy."""
    if reason := peers.prism_available():
        pytest.skip(reason)
    with peers.TwilioMock() as mock:
        yield mock
