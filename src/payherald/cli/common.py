"""What several commands build from the environment: the settings, the store, payherald
itself, the development secret's handling, and the Stripe client."""

from __future__ import annotations

from typing import TYPE_CHECKING

from payherald.cli.output import _fail, _guard

if TYPE_CHECKING:
    import stripe

    from payherald.app import Operations, Payherald
    from payherald.settings import Settings
    from payherald.store import Store

__all__ = [
    "_build",
    "_development_fingerprint",
    "_refuse_development_secret",
    "_scrub_development_secret",
    "_settings",
    "_store",
    "_stripe",
]


def _settings() -> Settings:
    from payherald.logs import configure_logging
    from payherald.settings import load_settings

    settings = _guard(load_settings)
    configure_logging(secrets=settings.secret_values(), log_format=settings.log_format)
    return settings


def _build(settings: Settings, *, migrate_schema: bool = False) -> Payherald:
    """payherald built from ``settings``; its development secret, when it made one, is
    scrubbed from the logs like the configured secrets."""
    from payherald.app import build

    ph = _guard(lambda: build(settings, migrate_schema=migrate_schema))
    if ph.development_secret:
        _scrub_development_secret(settings, ph.development_secret)
    return ph


def _operations(settings: Settings) -> Operations:
    """The store, the rules and the Stripe client, for a command that needs no more."""
    from payherald.app import build_operations

    return _guard(lambda: build_operations(settings))


def _scrub_development_secret(settings: Settings, secret: str) -> None:
    """Scrub the development secret from the logs, like the configured secrets."""
    from payherald.logs import configure_logging

    configure_logging(secrets=[*settings.secret_values(), secret], log_format=settings.log_format)


def _refuse_development_secret(ph: Payherald, *, dev: bool) -> None:
    """Exit with a sentence if ``ph`` would take events signed with the development
    secret while something real is configured (a provider channel or a live key),
    unless the operator passed --dev."""
    if ph.development_secret is None or dev:
        return
    real = list(ph.channels)
    if ph.settings.stripe_key_mode == "live":
        real.append("a live Stripe key")
    if real:
        raise _fail(
            f"STRIPE_WEBHOOK_SECRET is not set and real sending is configured "
            f"({', '.join(real)}): set STRIPE_WEBHOOK_SECRET to your endpoint's signing "
            "secret (`payherald endpoint register https://your-host` prints it), or pass "
            "--dev to try payherald out with its development secret."
        )


def _development_fingerprint(secret: str) -> str:
    """How the development secret is shown: enough to tell two apart, never enough to
    sign with (`simulate` reads the secret itself from the store)."""
    from payherald.endpoints import secret_fingerprint

    return f"whsec_dev_…{secret_fingerprint(secret)[:8]}"


def _store(settings: Settings) -> Store:
    from payherald.clock import SystemClock
    from payherald.store import open_store

    store = open_store(settings.sqlalchemy_url, clock=SystemClock())
    _guard(store.db.check_schema)
    return store


def _stripe(settings: Settings, needed_for: str) -> stripe.StripeClient:
    from payherald.app import stripe_client

    client = stripe_client(settings)
    if client is None:
        raise _fail(f"{needed_for} needs STRIPE_SECRET_KEY; export it and run this again.")
    return client
