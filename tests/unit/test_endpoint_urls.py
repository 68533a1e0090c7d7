"""Which URLs name the same Stripe webhook endpoint: register and doctor must not
take a trailing slash or a capital letter in the host for a different endpoint."""

from __future__ import annotations

import pytest

from payherald.endpoints import EndpointError, same_url, webhook_url


@pytest.mark.parametrize(
    "other",
    [
        "https://payherald.example.com/webhooks/stripe",
        "https://payherald.example.com/webhooks/stripe/",
        "HTTPS://PayHerald.Example.com/webhooks/stripe",
        "https://payherald.example.com:443/webhooks/stripe",
        " https://payherald.example.com/webhooks/stripe ",
    ],
)
def test_the_same_endpoint_written_differently(other: str) -> None:
    assert same_url("https://payherald.example.com/webhooks/stripe", other)


@pytest.mark.parametrize(
    "other",
    [
        "http://payherald.example.com/webhooks/stripe",
        "https://payherald.example.com:8443/webhooks/stripe",
        "https://other.example.com/webhooks/stripe",
        "https://payherald.example.com/Webhooks/Stripe",
        "https://payherald.example.com/webhooks/stripe?account=2",
    ],
)
def test_a_different_endpoint(other: str) -> None:
    assert not same_url("https://payherald.example.com/webhooks/stripe", other)


def test_a_bare_host_gets_the_webhook_path() -> None:
    assert webhook_url("https://payherald.example.com/") == (
        "https://payherald.example.com/webhooks/stripe"
    )


def test_plain_http_to_another_host_is_refused() -> None:
    with pytest.raises(EndpointError, match="is not HTTPS"):
        webhook_url("http://payherald.example.com")
