"""The one settings object, read from the environment once and validated at start.

Every name here is documented in the README's configuration table. A missing or
placeholder secret fails fast with a sentence that says what to set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from babel.core import Locale, UnknownLocaleError
from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from payherald.exceptions import ConfigurationError

__all__ = ["Settings", "load_settings"]

# Backfill fetches events up to 30 days old (Stripe keeps them that long) and Stripe retries
# a webhook for 3 days: an event pruned later than that can never come again.
MIN_RETENTION_DAYS = 30
_MODES: dict[str, Literal["live", "test"]] = {"live": "live", "test": "test"}
# The admin token opens the customers' data: short enough to guess, it is refused.
_ADMIN_TOKEN_LENGTH = 16
_PLACEHOLDER_MARKERS = ("...", "xxxxxx", "changeme", "<", ">", "your_", "replace_me")


def _env(name: str) -> AliasChoices:
    return AliasChoices(name)


def _looks_like_placeholder(value: str) -> bool:
    lowered = value.lower()
    return any(marker in lowered for marker in _PLACEHOLDER_MARKERS)


class Settings(BaseSettings):
    """payherald's configuration, from environment variables (names as documented in the README)."""

    model_config = SettingsConfigDict(extra="ignore", populate_by_name=False, frozen=True)

    stripe_secret_key: SecretStr | None = Field(None, validation_alias=_env("STRIPE_SECRET_KEY"))
    stripe_webhook_secret: SecretStr | None = Field(
        None, validation_alias=_env("STRIPE_WEBHOOK_SECRET")
    )
    stripe_api_base: str | None = Field(None, validation_alias=_env("STRIPE_API_BASE"))

    twilio_account_sid: str | None = Field(None, validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr | None = Field(None, validation_alias=_env("TWILIO_AUTH_TOKEN"))
    twilio_from_number: str | None = Field(None, validation_alias=_env("TWILIO_FROM_NUMBER"))
    twilio_messaging_service_sid: str | None = Field(
        None, validation_alias=_env("TWILIO_MESSAGING_SERVICE_SID")
    )
    twilio_whatsapp_from: str | None = Field(None, validation_alias=_env("TWILIO_WHATSAPP_FROM"))
    twilio_api_base: str | None = Field(None, validation_alias=_env("TWILIO_API_BASE"))

    database_url: str = Field(
        "sqlite:///payherald.db", validation_alias=_env("PAYHERALD_DATABASE_URL")
    )
    config_path: str | None = Field(None, validation_alias=_env("PAYHERALD_CONFIG"))
    public_url: str | None = Field(None, validation_alias=_env("PAYHERALD_PUBLIC_URL"))
    admin_token: SecretStr | None = Field(None, validation_alias=_env("PAYHERALD_ADMIN_TOKEN"))
    smtp_url: SecretStr | None = Field(None, validation_alias=_env("SMTP_URL"))
    email_from: str | None = Field(None, validation_alias=_env("PAYHERALD_EMAIL_FROM"))
    email_reply_to: str | None = Field(None, validation_alias=_env("PAYHERALD_EMAIL_REPLY_TO"))

    business_name: str | None = Field(None, validation_alias=_env("PAYHERALD_BUSINESS_NAME"))
    help_text: str | None = Field(None, validation_alias=_env("PAYHERALD_HELP_TEXT"))
    locale: str = Field("en_US", validation_alias=_env("PAYHERALD_LOCALE"))
    default_region: str = Field("US", validation_alias=_env("PAYHERALD_DEFAULT_REGION"))
    timezone: str = Field("UTC", validation_alias=_env("PAYHERALD_TIMEZONE"))
    update_card_url: str | None = Field(None, validation_alias=_env("PAYHERALD_UPDATE_CARD_URL"))
    portal_return_url: str | None = Field(
        None, validation_alias=_env("PAYHERALD_PORTAL_RETURN_URL")
    )
    test_allowlist_raw: str = Field("", validation_alias=_env("PAYHERALD_TEST_ALLOWLIST"))
    worker_concurrency: int = Field(
        8, ge=1, le=256, validation_alias=_env("PAYHERALD_WORKER_CONCURRENCY")
    )
    poll_interval: float = Field(1.0, gt=0, le=60, validation_alias=_env("PAYHERALD_POLL_INTERVAL"))
    max_attempts: int = Field(12, ge=1, le=100, validation_alias=_env("PAYHERALD_MAX_ATTEMPTS"))
    max_age: float = Field(86400.0, gt=0, validation_alias=_env("PAYHERALD_MAX_RETRY_AGE_SECONDS"))
    lease: float = Field(120.0, ge=1, le=3600, validation_alias=_env("PAYHERALD_LEASE_SECONDS"))
    retry_base: float = Field(
        5.0, gt=0, le=3600, validation_alias=_env("PAYHERALD_RETRY_BASE_SECONDS")
    )
    link_grace: float = Field(
        60.0, ge=0, le=3600, validation_alias=_env("PAYHERALD_LINK_GRACE_SECONDS")
    )
    reconcile_interval: float = Field(
        3600.0, ge=0, validation_alias=_env("PAYHERALD_RECONCILE_INTERVAL_SECONDS")
    )
    # How many days of events, their notifications and inbound messages' senders and
    # bodies are kept (0: all).
    retention_days: int = Field(90, ge=0, validation_alias=_env("PAYHERALD_RETENTION_DAYS"))
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", validation_alias=_env("PAYHERALD_LOG_FORMAT")
    )
    http_header_timeout: float = Field(
        10.0, gt=0, le=600, validation_alias=_env("PAYHERALD_HTTP_HEADER_TIMEOUT_SECONDS")
    )
    http_body_timeout: float = Field(
        30.0, gt=0, le=3600, validation_alias=_env("PAYHERALD_HTTP_BODY_TIMEOUT_SECONDS")
    )
    http_max_connections: int = Field(
        1000, ge=1, le=1_000_000, validation_alias=_env("PAYHERALD_HTTP_MAX_CONNECTIONS")
    )

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems: list[str] = []
        for index, (mark, secret) in enumerate(self._marked_webhook_secrets(), start=1):
            where = "STRIPE_WEBHOOK_SECRET" + (f" (entry {index})" if index > 1 else "")
            if mark is not None and mark not in _MODES:
                problems.append(
                    f"{where} is marked {mark!r}, which is neither live nor test: write "
                    "live:whsec_... for the live endpoint's secret and test:whsec_... for a "
                    "test endpoint's (or the secret alone to accept either mode)."
                )
            elif not secret.startswith("whsec_") or _looks_like_placeholder(secret):
                problems.append(
                    f"{where} does not look like a Stripe signing secret: it should start with "
                    "whsec_. Copy it from the webhook endpoint's page in the Stripe Dashboard or "
                    "from the output of `stripe listen`; separate several with commas."
                )
        key = self.stripe_secret_key.get_secret_value() if self.stripe_secret_key else None
        if key is not None and (
            not key.startswith(("sk_test_", "sk_live_", "rk_test_", "rk_live_"))
            or _looks_like_placeholder(key)
        ):
            problems.append(
                "STRIPE_SECRET_KEY does not look like a Stripe secret or restricted key: it "
                "should start with sk_test_, sk_live_, rk_test_ or rk_live_. Copy it from the "
                "Stripe Dashboard's API keys page, or unset it to run without customer lookups."
            )
        if not self.database_url.startswith(
            ("sqlite:///", "postgresql://", "postgres://", "postgresql+psycopg://")
        ):
            problems.append(
                "PAYHERALD_DATABASE_URL must be sqlite:///path/to/payherald.db or "
                "postgresql://user:password@host:5432/database."
            )
        try:
            Locale.parse(self.locale)
        except (UnknownLocaleError, ValueError):
            problems.append(
                f"PAYHERALD_LOCALE {self.locale!r} is not a locale; use one like en_US, en_GB, "
                "de_DE or fr_FR."
            )
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(
                f"PAYHERALD_TIMEZONE {self.timezone!r} is not a time zone; use a name like "
                "America/New_York or Europe/Paris."
            )
        if self.admin_token is not None:
            token = self.admin_token.get_secret_value()
            if (
                len(token) < _ADMIN_TOKEN_LENGTH
                or token != token.strip()
                or _looks_like_placeholder(token)
                or token.startswith("choose-")
            ):
                problems.append(
                    f"PAYHERALD_ADMIN_TOKEN must be a random secret of at least "
                    f"{_ADMIN_TOKEN_LENGTH} characters with no spaces around it: it opens the "
                    'dashboard and the API. Make one with: python -c "import secrets; '
                    'print(secrets.token_urlsafe(32))"'
                )
        problems.extend(self._twilio_problems())
        problems.extend(self._email_problems())
        try:
            self.test_allowlist  # noqa: B018 - parsing is the check
        except ValueError as exc:
            problems.append(str(exc))
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _twilio_problems(self) -> list[str]:
        sid, token = self.twilio_account_sid, self.twilio_auth_token
        sender = self.twilio_from_number or self.twilio_messaging_service_sid
        if not (sid or token or sender):
            return []
        problems = []
        if not sid or not sid.startswith("AC") or _looks_like_placeholder(sid):
            problems.append(
                "TWILIO_ACCOUNT_SID must be your Twilio Account SID (it starts with AC); find it "
                "on the Twilio Console's home page."
            )
        if not token or _looks_like_placeholder(token.get_secret_value()):
            problems.append(
                "TWILIO_AUTH_TOKEN must be set with TWILIO_ACCOUNT_SID; find it on the Twilio "
                "Console's home page."
            )
        if not sender:
            problems.append(
                "Set TWILIO_FROM_NUMBER (a Twilio number in E.164 form, like +14155550123) or "
                "TWILIO_MESSAGING_SERVICE_SID (it starts with MG) so payherald knows what to "
                "send SMS from."
            )
        if self.twilio_from_number and not self.twilio_from_number.startswith("+"):
            problems.append(
                "TWILIO_FROM_NUMBER must be in E.164 form, with + and the country code, like "
                "+14155550123."
            )
        whatsapp = self.twilio_whatsapp_from
        if whatsapp and not whatsapp.removeprefix("whatsapp:").startswith("+"):
            problems.append(
                "TWILIO_WHATSAPP_FROM must be a WhatsApp-enabled number in E.164 form, like "
                "+14155238886."
            )
        sid_mg = self.twilio_messaging_service_sid
        if sid_mg and not sid_mg.startswith("MG"):
            problems.append("TWILIO_MESSAGING_SERVICE_SID must start with MG.")
        return problems

    def _email_problems(self) -> list[str]:
        if self.smtp_url is None:
            return []
        from payherald.channels.email import SmtpServer

        problems = []
        try:
            SmtpServer.from_url(self.smtp_url.get_secret_value())
        except ConfigurationError as exc:
            problems.append(exc.message)
        if not self.email_from or "@" not in self.email_from:
            problems.append(
                "Set PAYHERALD_EMAIL_FROM to the address emails are sent from (like "
                '"Acme <billing@acme.example>"): SMTP_URL is set.'
            )
        return problems

    @field_validator("retention_days")
    @classmethod
    def _keep_what_may_come_again(cls, days: int) -> int:
        if 0 < days < MIN_RETENTION_DAYS:
            raise ValueError(
                f"must be 0 (keep everything) or at least {MIN_RETENTION_DAYS}: backfill "
                f"fetches events up to {MIN_RETENTION_DAYS} days old, and an event pruned "
                "sooner would be taken as new and notified again."
            )
        return days

    @property
    def webhook_secrets(self) -> list[str]:
        """The configured Stripe signing secrets, in order, without their marks; empty
        when none is set."""
        return [secret for _mark, secret in self._marked_webhook_secrets()]

    @property
    def marked_webhook_secrets(self) -> list[tuple[Literal["live", "test"] | None, str]]:
        """Each configured signing secret with the mode of the events it may sign: "live"
        for an entry written live:whsec_..., "test" for test:whsec_..., None (either) for
        an unmarked one."""
        return [
            (_MODES.get(mark) if mark else None, secret)
            for mark, secret in self._marked_webhook_secrets()
        ]

    def _marked_webhook_secrets(self) -> list[tuple[str | None, str]]:
        if self.stripe_webhook_secret is None:
            return []
        raw = self.stripe_webhook_secret.get_secret_value()
        entries = [part.strip() for part in raw.split(",") if part.strip()]
        # A Stripe secret has no colon, so one is the end of a mark.
        return [
            (mark.strip().lower(), secret.strip()) if colon else (None, entry)
            for entry in entries
            for mark, colon, secret in [entry.partition(":")]
        ]

    @property
    def stripe_key_mode(self) -> Literal["live", "test"] | None:
        """The mode of STRIPE_SECRET_KEY by its prefix; None without a key (or with one
        whose prefix says none)."""
        key = self.stripe_secret_key.get_secret_value() if self.stripe_secret_key else ""
        if key.startswith(("sk_live_", "rk_live_")):
            return "live"
        return "test" if key.startswith(("sk_test_", "rk_test_")) else None

    @property
    def rules_file(self) -> tuple[Path, bool]:
        """The rules file, and whether it must exist (it must when named explicitly)."""
        if self.config_path:
            return Path(self.config_path), True
        return Path("payherald.toml"), False

    @property
    def twilio_configured(self) -> bool:
        return bool(self.twilio_account_sid and self.twilio_auth_token)

    @property
    def test_allowlist(self) -> frozenset[str]:
        """Phone numbers (E.164) that test-mode events may really reach."""
        numbers = set()
        for raw in self.test_allowlist_raw.split(","):
            if not raw.strip():
                continue
            try:
                parsed = phonenumbers.parse(raw.strip(), None)
            except phonenumbers.NumberParseException:
                parsed = None
            if parsed is None or not phonenumbers.is_possible_number(parsed):
                raise ValueError(
                    f"PAYHERALD_TEST_ALLOWLIST entry {raw.strip()!r} is not a phone number in "
                    "E.164 form (like +14155550123); separate several with commas."
                )
            numbers.add(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164))
        return frozenset(numbers)

    @property
    def sqlalchemy_url(self) -> str:
        """The database URL with the driver SQLAlchemy should use (psycopg 3 for PostgreSQL)."""
        url = self.database_url
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @property
    def is_postgres(self) -> bool:
        return self.sqlalchemy_url.startswith("postgresql")

    def secret_values(self) -> list[str]:
        """Every configured secret, so that logs can be scrubbed of them (the passwords in
        the database and SMTP URLs too, as written and as decoded)."""
        values = list(self.webhook_secrets)
        for url in (self.database_url, self.smtp_url and self.smtp_url.get_secret_value()):
            try:
                written = urlsplit(url).password if url else None
            except ValueError:
                written = None
            if written:
                values.extend({written, unquote(written)})
        for secret in (
            self.stripe_secret_key,
            self.twilio_auth_token,
            self.admin_token,
            self.smtp_url,
        ):
            if secret is not None and secret.get_secret_value():
                values.append(secret.get_secret_value())
        return values


def load_settings(**overrides: object) -> Settings:
    """Read and validate the settings; raise ConfigurationError with what to fix."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            message = str(error.get("msg", ""))
            message = message.removeprefix("Value error, ")
            field = ".".join(str(part) for part in error.get("loc", ()))
            lines.append(f"{field}: {message}" if field else message)
        raise ConfigurationError("\n".join(lines)) from exc
