"""The Stripe webhook endpoint: one per URL, subscribed to exactly what the rules need.

``register`` creates the endpoint for a URL, or updates the one that already exists for it,
so running it again (after changing the rules, say) never makes a second endpoint that
would deliver every event twice. Stripe shows an endpoint's signing secret only when it is
created; payherald prints it then, and keeps a SHA-256 fingerprint of it (never the secret)
so that ``payherald doctor`` can tell whether STRIPE_WEBHOOK_SECRET is that endpoint's.

An endpoint it creates is pinned to the API version of the installed stripe SDK
(``api_versions.NEWEST_SUPPORTED``), so that its events keep the shape payherald reads
whatever the account's default becomes. Stripe takes an endpoint's ``api_version`` only
when the endpoint is created; one on another version has to be made again
(``repin_advice``).

A failed call to Stripe is an ``EndpointError`` whose message says which call failed, why,
and what to do; its subclass says whose the failure is::

    EndpointError                 the URL cannot be used, or a call to Stripe failed
    └── StripeCallFailed          Stripe refused or failed the call named in ``call``
        ├── StripeKeyRefused      STRIPE_SECRET_KEY itself is refused (HTTP 401)
        ├── StripePermissionMissing  the key works, but may not make this call (HTTP 403)
        └── StripeUnavailable     Stripe was not reached, failed (5xx) or is rate limiting;
                                  retryable
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import stripe

from payherald.api_versions import NEWEST_SUPPORTED
from payherald.exceptions import PayheraldError
from payherald.store import Store

__all__ = [
    "WEBHOOK_PATH",
    "EndpointError",
    "Registration",
    "StripeCallFailed",
    "StripeKeyRefused",
    "StripePermissionMissing",
    "StripeUnavailable",
    "known_fingerprint",
    "list_endpoints",
    "register",
    "repin_advice",
    "same_url",
    "secret_fingerprint",
    "webhook_url",
]

WEBHOOK_PATH = "/webhooks/stripe"
_FINGERPRINT = "webhook_secret_sha256:"


class EndpointError(PayheraldError):
    """Stripe refused, or the URL cannot be used; the message says what to do."""


class StripeCallFailed(EndpointError):
    """A call to Stripe's webhook endpoints API failed."""

    def __init__(self, message: str, *, call: str, http_status: int | None = None) -> None:
        super().__init__(message)
        self.call = call  # "GET /v1/webhook_endpoints"
        self.http_status = http_status  # None when Stripe was not reached


class StripeKeyRefused(StripeCallFailed):
    """Stripe refused STRIPE_SECRET_KEY."""


class StripePermissionMissing(StripeCallFailed):
    """STRIPE_SECRET_KEY works, but may not make this call (a restricted key)."""


class StripeUnavailable(StripeCallFailed):
    """Stripe could not be reached, failed, or is rate limiting; try again later."""

    retryable = True


@dataclass(frozen=True, slots=True)
class Registration:
    endpoint_id: str
    url: str
    created: bool
    secret: str | None  # only when created: Stripe never shows it again
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = field(default=())  # other endpoints with the same URL
    # The endpoint's API version: the pinned one when created here; None is the account's
    # default. Stripe never changes it on an update.
    api_version: str | None = None


def webhook_url(url: str) -> str:
    """``url`` as the endpoint to register: a bare host gets payherald's webhook path.
    Raises EndpointError for a URL Stripe could not deliver to."""
    parts = urlsplit(url.strip())
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise EndpointError(f"{url!r} is not a URL; give one like https://payherald.example.com.")
    if parts.scheme != "https" and not local:
        raise EndpointError(
            f"{url!r} is not HTTPS; Stripe delivers live events to HTTPS endpoints only. "
            "Put payherald behind a TLS-terminating proxy and give its https:// address."
        )
    path = parts.path.rstrip("/")
    if not path:
        path = WEBHOOK_PATH
    return parts._replace(path=path).geturl()


def same_url(a: str, b: str) -> bool:
    """Whether two endpoint URLs name the same place: scheme and host in any case, a
    default port written or not, a trailing slash or not. An endpoint made by hand in the
    dashboard as ``https://Host/webhooks/stripe/`` is the one ``register`` would make."""
    return _comparable(a) == _comparable(b)


def _comparable(url: str) -> tuple[str, str, int | None, str, str]:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:  # not a number: compare as written
        port = None
    if port == {"https": 443, "http": 80}.get(scheme):
        port = None
    return (scheme, (parts.hostname or "").lower(), port, parts.path.rstrip("/"), parts.query)


def secret_fingerprint(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def list_endpoints(client: stripe.StripeClient) -> list[Any]:
    """Every webhook endpoint of the account, oldest first."""
    found: list[Any] = []
    params: Any = {"limit": 100}  # the SDK's TypedDicts, built up
    while True:
        page = _call(
            lambda: client.v1.webhook_endpoints.list(params=params),
            call="GET /v1/webhook_endpoints",
            doing="list the webhook endpoints",
        )
        found.extend(page.data)
        if not page.has_more or not page.data:
            return sorted(found, key=lambda endpoint: endpoint.created or 0)
        params["starting_after"] = page.data[-1].id


def register(
    client: stripe.StripeClient,
    url: str,
    event_types: Sequence[str],
    *,
    store: Store | None = None,
) -> Registration:
    """Create or update the endpoint for ``url`` with exactly ``event_types``."""
    url = webhook_url(url)
    wanted: Any = sorted(set(event_types))  # the SDK types them as a Literal list
    if not wanted:
        raise EndpointError("No rule is enabled, so there is no event to subscribe to.")
    same = [endpoint for endpoint in list_endpoints(client) if same_url(endpoint.url, url)]
    # One key for this run's change: the SDK's retries of it change Stripe once. Not one
    # derived from the URL: an endpoint deleted and registered again within the day Stripe
    # keeps a key would be answered with the deleted one. A run again lists it first.
    key = {"idempotency_key": f"payherald-endpoint-{uuid.uuid4().hex}"}
    if same:
        endpoint = same[0]
        had = set(endpoint.enabled_events or ())
        changes: Any = {"enabled_events": wanted, "disabled": False}
        _call(
            lambda: client.v1.webhook_endpoints.update(
                endpoint.id,
                params=changes,
                options=key,  # type: ignore[arg-type]
            ),
            call=f"POST /v1/webhook_endpoints/{endpoint.id}",
            doing=f"update webhook endpoint {endpoint.id}",
        )
        return Registration(
            endpoint_id=endpoint.id,
            url=url,
            created=False,
            secret=None,
            added=tuple(sorted(set(wanted) - had)),
            removed=tuple(sorted(had - set(wanted))),
            duplicates=tuple(other.id for other in same[1:]),
            api_version=getattr(endpoint, "api_version", None),
        )
    params: Any = {  # the SDK types api_version as a Literal of every version
        "url": url,
        "enabled_events": wanted,
        "description": "payherald: Stripe events to SMS",
        "api_version": NEWEST_SUPPORTED,
    }
    created = _call(
        lambda: client.v1.webhook_endpoints.create(
            params=params,
            options=key,  # type: ignore[arg-type]
        ),
        call="POST /v1/webhook_endpoints",
        doing="create the webhook endpoint",
    )
    if store is not None and created.secret:
        store.meta.set(_FINGERPRINT + created.id, secret_fingerprint(created.secret))
    return Registration(
        endpoint_id=created.id,
        url=url,
        created=True,
        secret=created.secret,
        added=tuple(wanted),
        api_version=getattr(created, "api_version", None) or NEWEST_SUPPORTED,
    )


def repin_advice(endpoint_id: str, public_url: str) -> str:
    """How to move endpoint ``endpoint_id`` to the pinned API version, as a clause."""
    return (
        "Stripe cannot change an endpoint's API version in place: to pin it to "
        f"{NEWEST_SUPPORTED}, delete {endpoint_id} in Developers > Webhooks, run `payherald "
        f"endpoint register {public_url}` to create a new endpoint pinned to it, and set "
        "STRIPE_WEBHOOK_SECRET to the new secret it prints"
    )


def known_fingerprint(store: Store, endpoint_id: str) -> str | None:
    """The fingerprint of the secret ``register`` printed for ``endpoint_id``, if it did."""
    return store.meta.get(_FINGERPRINT + endpoint_id)


def _call(request: Any, *, call: str, doing: str) -> Any:
    """``request()``, with a failure of Stripe's as a StripeCallFailed that names the call
    (``call``, what it was to ``doing``), says why in Stripe's first words, and what to do."""
    try:
        return request()
    except stripe.AuthenticationError as exc:
        raise StripeKeyRefused(
            f"Stripe refused STRIPE_SECRET_KEY when asked to {doing} ({call}: "
            f"{_reason(exc)}); check the key in the Stripe dashboard, Developers > API keys.",
            call=call,
            http_status=exc.http_status,
        ) from exc
    except stripe.PermissionError as exc:
        raise StripePermissionMissing(
            f"STRIPE_SECRET_KEY may not {doing} ({call}: HTTP {exc.http_status}, "
            f"{_reason(exc)}); use a secret key, or give the restricted key write access to "
            "Webhook Endpoints.",
            call=call,
            http_status=exc.http_status,
        ) from exc
    except stripe.APIConnectionError as exc:
        raise StripeUnavailable(
            f"Could not {doing}: Stripe could not be reached ({call}: {_network_reason(exc)}); "
            "check this machine's network (and STRIPE_API_BASE, if it is set), then run this "
            "again.",
            call=call,
        ) from exc
    except stripe.RateLimitError as exc:
        raise StripeUnavailable(
            f"Could not {doing}: Stripe is limiting this key's requests ({call}: HTTP 429); "
            "run this again in a minute.",
            call=call,
            http_status=exc.http_status,
        ) from exc
    except stripe.InvalidRequestError as exc:
        raise StripeCallFailed(
            f"Stripe refused to {doing} ({call}: HTTP {exc.http_status}, {_reason(exc)}); "
            "fix what it names, then run this again.",
            call=call,
            http_status=exc.http_status,
        ) from exc
    except stripe.StripeError as exc:
        status = f"HTTP {exc.http_status}" if exc.http_status else type(exc).__name__
        raise StripeUnavailable(
            f"Could not {doing}: Stripe failed ({call}: {status}, {_reason(exc)}); this is "
            "on Stripe's side, so run this again in a few minutes (status.stripe.com says "
            "whether Stripe is down).",
            call=call,
            http_status=exc.http_status,
        ) from exc


def _reason(exc: stripe.StripeError) -> str:
    """Stripe's own words for ``exc``, on one line and without a closing period."""
    words = " ".join(str(exc.user_message or exc or type(exc).__name__).split())
    return words.rstrip(".") or type(exc).__name__


def _network_reason(exc: stripe.APIConnectionError) -> str:
    """Why the connection failed, from the SDK's long message: 'Connection refused',
    'Name or service not known', 'timed out'."""
    text = str(exc.user_message or exc)
    found = re.search(r"\[Errno -?\d+\] ([^\"')\]]+)", text)
    if found:
        return found.group(1).strip()
    return "timed out" if "timed out" in text else "a network error"
