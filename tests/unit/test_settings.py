"""Settings fail fast with a sentence that says what to set (STYLE 7)."""

from __future__ import annotations

import pytest

from payherald import ConfigurationError, load_settings

ENV_NAMES = (
    "STRIPE_SECRET_KEY",
    "STRIPE_WEBHOOK_SECRET",
    "TWILIO_ACCOUNT_SID",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_FROM_NUMBER",
    "TWILIO_MESSAGING_SERVICE_SID",
    "PAYHERALD_DATABASE_URL",
    "PAYHERALD_TEST_ALLOWLIST",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)


def test_defaults_run_on_sqlite_with_no_provider() -> None:
    settings = load_settings()
    assert settings.database_url == "sqlite:///payherald.db"
    assert settings.webhook_secrets == []
    assert not settings.twilio_configured


def test_several_webhook_secrets_are_comma_separated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_one, whsec_two,")
    assert load_settings().webhook_secrets == ["whsec_one", "whsec_two"]


@pytest.mark.parametrize("value", ["sk_test_abc", "whsec_...", "whsec_<your secret>"])
def test_a_webhook_secret_that_is_not_one_says_where_to_find_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", value)
    with pytest.raises(ConfigurationError, match="should start with whsec_"):
        load_settings()


def test_webhook_secrets_marked_live_or_test_keep_their_mark(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "live:whsec_one, TEST: whsec_two,whsec_three")
    settings = load_settings()
    assert settings.marked_webhook_secrets == [
        ("live", "whsec_one"),
        ("test", "whsec_two"),
        (None, "whsec_three"),
    ]
    # Those that only need the secrets (doctor's fingerprints, endpoint) get them bare.
    assert settings.webhook_secrets == ["whsec_one", "whsec_two", "whsec_three"]
    assert set(settings.secret_values()) >= {"whsec_one", "whsec_two", "whsec_three"}


def test_a_webhook_secret_with_an_unknown_mark_is_one_sentence(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "live:whsec_one,prod:whsec_two")
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    (line,) = caught.value.message.splitlines()
    assert (
        "STRIPE_WEBHOOK_SECRET (entry 2) is marked 'prod', which is neither live nor test" in line
    )
    assert "live:whsec_..." in line
    assert "whsec_two" not in line


@pytest.mark.parametrize(
    ("key", "mode"),
    [
        ("sk_live_abc123", "live"),
        ("rk_live_abc123", "live"),
        ("sk_test_abc123", "test"),
        (None, None),
    ],
)
def test_the_stripe_key_mode_is_read_from_its_prefix(
    monkeypatch: pytest.MonkeyPatch, key: str | None, mode: str | None
) -> None:
    if key:
        monkeypatch.setenv("STRIPE_SECRET_KEY", key)
    assert load_settings().stripe_key_mode == mode


def test_a_bad_stripe_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "pk_test_123")
    with pytest.raises(ConfigurationError, match="STRIPE_SECRET_KEY"):
        load_settings()


def test_twilio_needs_a_token_and_a_sender(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    with pytest.raises(ConfigurationError) as caught:
        load_settings()
    assert "TWILIO_AUTH_TOKEN" in caught.value.message
    assert "TWILIO_FROM_NUMBER" in caught.value.message


def test_twilio_with_a_messaging_service_is_complete(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", "AC" + "0" * 32)
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "f" * 32)
    monkeypatch.setenv("TWILIO_MESSAGING_SERVICE_SID", "MG" + "0" * 32)
    assert load_settings().twilio_configured


def test_postgres_urls_use_psycopg_3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYHERALD_DATABASE_URL", "postgresql://u@db/payherald")
    assert load_settings().sqlalchemy_url == "postgresql+psycopg://u@db/payherald"


def test_test_allowlist_is_normalised(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYHERALD_TEST_ALLOWLIST", "+1 415 555 0123, +442071838750")
    assert load_settings().test_allowlist == {"+14155550123", "+442071838750"}


def test_a_bad_allowlist_entry_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYHERALD_TEST_ALLOWLIST", "+14155550123,call me")
    with pytest.raises(ConfigurationError, match="'call me'"):
        load_settings()


@pytest.mark.parametrize("url", ["payherald.db", "mysql://root@localhost/x"])
def test_an_unsupported_database_url_says_what_is_supported(
    monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("PAYHERALD_DATABASE_URL", url)
    with pytest.raises(ConfigurationError, match=r"sqlite:///path/to/payherald\.db"):
        load_settings()


def test_an_unknown_locale_is_refused_with_examples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAYHERALD_LOCALE", "xx_YY")
    with pytest.raises(ConfigurationError, match=r"PAYHERALD_LOCALE 'xx_YY' is not a locale"):
        load_settings()


def test_retention_keeps_90_days_by_default_and_0_keeps_everything() -> None:
    assert load_settings().retention_days == 90
    assert load_settings(PAYHERALD_RETENTION_DAYS="0").retention_days == 0
    assert load_settings(PAYHERALD_RETENTION_DAYS="30").retention_days == 30


def test_a_retention_shorter_than_backfill_reaches_is_refused_with_why() -> None:
    with pytest.raises(ConfigurationError) as raised:
        load_settings(PAYHERALD_RETENTION_DAYS="7")
    assert raised.value.message == (
        "PAYHERALD_RETENTION_DAYS: must be 0 (keep everything) or at least 30: backfill "
        "fetches events up to 30 days old, and an event pruned sooner would be taken as new "
        "and notified again."
    )


@pytest.mark.parametrize(
    "token", ["short", "choose-a-long-secret", "changeme-changeme-changeme", " " + "a" * 30]
)
def test_an_admin_token_that_could_be_guessed_is_refused(token: str) -> None:
    with pytest.raises(ConfigurationError, match="PAYHERALD_ADMIN_TOKEN must be a random secret"):
        load_settings(PAYHERALD_ADMIN_TOKEN=token)


def test_a_random_admin_token_is_taken() -> None:
    settings = load_settings(PAYHERALD_ADMIN_TOKEN="Zq3_f8kL0pXv2mN7rT5wY1bC")
    assert settings.admin_token is not None
