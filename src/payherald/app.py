"""The composition root: everything payherald is made of, built from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import stripe
from fastapi import FastAPI

from payherald.admin import AdminAuth
from payherald.backfill import RECONCILE_JOB, Backfill, Reconciler
from payherald.channels import (
    Channel,
    ChannelRouter,
    ConsoleChannel,
    TwilioSmsChannel,
    TwilioVoiceChannel,
    TwilioWhatsAppChannel,
    twilio_client,
)
from payherald.channels.email import EmailChannel, SmtpServer
from payherald.channels.slack import SlackChannel
from payherald.clock import Clock, SystemClock
from payherald.compose import Composer
from payherald.config import Config, load_config
from payherald.consent import upgrade_legacy_opt_outs
from payherald.digest import DailyDigest, DigestSchedule
from payherald.feed import LiveFeed
from payherald.fraud import FraudChecks
from payherald.jobs import JobRunner
from payherald.lookups import StripeApiLookups, StripeLookups
from payherald.metrics import Metrics
from payherald.paylinks import PaylinkSender
from payherald.payments import PaymentChecks
from payherald.quiet_hours import QuietHours
from payherald.ratelimit import RateLimiter
from payherald.recipients import CustomerDirectory, StripeCustomerDirectory
from payherald.renewals import RENEWAL_SCAN_JOB, RenewalScanner
from payherald.retention import Pruner
from payherald.rules import RuleBook
from payherald.sender import Sender
from payherald.server import create_http_app
from payherald.settings import Settings
from payherald.store import Engine, Store, open_store
from payherald.store.engine import migrate
from payherald.stripe_sync import ConsentWriteBack
from payherald.templates import TemplateRenderer
from payherald.variables import MessageContext
from payherald.wakeup import listen_for_work
from payherald.webhook import SigningSecret, WebhookVerifier
from payherald.worker import Worker, worker_name

__all__ = [
    "Operations",
    "Payherald",
    "build",
    "build_operations",
    "paylink_sender",
    "rule_book",
    "settings_config",
]

# How long a reconciliation may take before another worker may start it again: a backfill
# of an hour's events, each page retried with backoff, fits in it many times over.
_RECONCILE_LEASE = 900.0
# How long stopping waits for the job in hand: a reconciliation that waits out Stripe's
# backoff must not hold a shutdown (systemd would kill it).
_JOB_GRACE = 5.0


@dataclass
class Payherald:
    """A built payherald: the parts the commands start."""

    settings: Settings
    engine: Engine
    store: Store
    rules: RuleBook
    worker: Worker
    http_app: FastAPI
    webhook_secrets: list[str]
    development_secret: str | None
    channels: list[str]  # the channels whose providers are configured
    metrics: Metrics
    # Runs the deferred work of every kind from the job queue (store.jobs).
    jobs: JobRunner
    # Backfills recent events on a schedule (None without STRIPE_SECRET_KEY, or turned off).
    reconciler: Reconciler | None = None
    # Deletes what is older than PAYHERALD_RETENTION_DAYS on a schedule (None with 0).
    pruner: Pruner | None = None
    # Records the renewal reminders due, hourly (None without STRIPE_SECRET_KEY, or off).
    renewals: RenewalScanner | None = None
    # Sends the daily digest to a team (None without a [digest] section, or its team).
    digest: DailyDigest | None = None
    _joined: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start_worker(self) -> None:
        """Run the worker, the job runner (and, on PostgreSQL, their LISTEN wake-ups) in
        background threads until ``stop`` is called. The recurring jobs are ensured first."""
        stop = self._stop
        if self.reconciler is not None:
            self.store.jobs.ensure_recurring(RECONCILE_JOB, RECONCILE_JOB, {})
        if self.renewals is not None:
            self.store.jobs.ensure_recurring(RENEWAL_SCAN_JOB, RENEWAL_SCAN_JOB, {})
        if self.digest is not None:
            self.digest.ensure()
        worker = threading.Thread(target=self.worker.run, args=(stop,), name="payherald-worker")
        # A daemon, so that a handler still running when the join below times out does not
        # hold the process: its job runs again once its lease runs out.
        jobs = [
            threading.Thread(
                target=self.jobs.run,
                args=(stop,),
                kwargs={"kinds": {kind}},
                name=f"payherald-jobs-{kind}",
                daemon=True,
            )
            for kind in sorted(self.jobs.kinds)
        ]
        threads = [worker, *jobs]
        if self.pruner is not None:
            threads.append(
                threading.Thread(
                    target=self.pruner.run, args=(stop,), name="payherald-prune", daemon=True
                )
            )
        if self.settings.is_postgres:
            conninfo = _conninfo(self.engine)
            threads.append(
                threading.Thread(
                    target=listen_for_work,
                    args=(conninfo, self._wake, stop),
                    name="payherald-listen",
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        self._joined.extend([worker, *jobs])  # the worker is joined in full, the jobs briefly

    def _wake(self) -> None:
        self.worker.wake()
        self.jobs.wake()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the worker (it finishes the sends in flight, then its thread ends) and the
        job runner (given ``_JOB_GRACE`` seconds to finish the job in hand; a longer one is
        left, and runs again once its lease runs out)."""
        self._stop.set()
        self._wake()
        for thread in self._joined:
            thread.join(min(timeout, _JOB_GRACE) if thread.daemon else timeout)


@dataclass
class Operations:
    """What the commands that work on the store and ask Stripe need (backfill, replay,
    endpoint): no worker, no HTTP app, no development secret made."""

    settings: Settings
    store: Store
    rules: RuleBook
    stripe: stripe.StripeClient | None

    def close(self) -> None:
        self.store.db.dispose()


def build_operations(settings: Settings, *, clock: Clock | None = None) -> Operations:
    """The store (which must be migrated: SchemaOutOfDate says what to run), the rules and
    the Stripe client, from ``settings``."""
    store = open_store(settings.sqlalchemy_url, clock=clock or SystemClock())
    store.db.check_schema()
    return Operations(
        settings=settings,
        store=store,
        rules=rule_book(settings, settings_config(settings)),
        stripe=stripe_client(settings),
    )


def settings_config(settings: Settings) -> Config:
    """The rules file that ``settings`` name, read (ConfigurationError says what is wrong)."""
    path, required = settings.rules_file
    return load_config(path, required=required)


def rule_book(settings: Settings, config: Config) -> RuleBook:
    """The rules of ``config``, rendered in the locale of ``settings``."""
    return config.rule_book(TemplateRenderer(locale=settings.locale))


def stripe_client(settings: Settings) -> stripe.StripeClient | None:
    if settings.stripe_secret_key is None:
        return None
    base = {"api": settings.stripe_api_base.rstrip("/")} if settings.stripe_api_base else None
    return stripe.StripeClient(
        settings.stripe_secret_key.get_secret_value(),
        base_addresses=base,  # type: ignore[arg-type]
        max_network_retries=2,
        http_client=stripe.RequestsClient(timeout=10),
    )


def paylink_sender(
    settings: Settings,
    store: Store,
    rules: RuleBook,
    client: stripe.StripeClient | None,
    clock: Clock,
) -> PaylinkSender | None:
    """What makes payment links and texts them; None without STRIPE_SECRET_KEY."""
    if client is None:
        return None
    return PaylinkSender(
        store=store, rules=rules, client=client, clock=clock, key_mode=settings.stripe_key_mode
    )


def provider_channels(settings: Settings, config: Config) -> dict[str, Channel]:
    """The channels whose providers are configured; the console stands in for the rest."""
    channels: dict[str, Channel] = {}
    public = settings.public_url
    callback = f"{public.rstrip('/')}/webhooks/twilio/status" if public else None
    if settings.twilio_configured:
        assert settings.twilio_account_sid is not None
        assert settings.twilio_auth_token is not None
        client = twilio_client(
            settings.twilio_account_sid,
            settings.twilio_auth_token.get_secret_value(),
            api_base=settings.twilio_api_base,
            connections=settings.worker_concurrency,
        )
        channels["sms"] = TwilioSmsChannel(
            client=client,
            from_number=settings.twilio_from_number,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            status_callback=callback,
        )
        if settings.twilio_whatsapp_from:
            channels["whatsapp"] = TwilioWhatsAppChannel(
                client=client,
                from_number=settings.twilio_whatsapp_from.removeprefix("whatsapp:"),
                status_callback=callback,
            )
        if settings.twilio_from_number:
            channels["voice"] = TwilioVoiceChannel(
                client=client,
                from_number=settings.twilio_from_number,
                language=settings.locale.replace("_", "-"),
                status_callback=callback,
            )
    if settings.smtp_url is not None and settings.email_from:
        channels["email"] = EmailChannel(
            server=SmtpServer.from_url(settings.smtp_url.get_secret_value()),
            sender=settings.email_from,
            reply_to=settings.email_reply_to,
            subject_prefix=settings.business_name,
        )
    webhooks = {
        name: team.slack_webhook for name, team in config.teams.items() if team.slack_webhook
    }
    if webhooks:
        channels["slack"] = SlackChannel(webhooks=webhooks)
    return channels


def build(
    settings: Settings,
    *,
    migrate_schema: bool = False,
    clock: Clock | None = None,
    console: Channel | None = None,
    channels: dict[str, Channel] | None = None,
    customers: CustomerDirectory | None = None,
    lookups: StripeLookups | None = None,
    quiet_hours: QuietHours | None = None,
) -> Payherald:
    """Build payherald from ``settings``. With ``migrate_schema`` the database is migrated
    first; otherwise it must already be (SchemaOutOfDate says what to run). ``channels``,
    ``customers``, ``lookups`` and ``quiet_hours`` replace what settings and the rules
    file would give (tests use them)."""
    clock = clock or SystemClock()
    store = open_store(settings.sqlalchemy_url, clock=clock)
    engine = store.db.engine
    metrics = Metrics(store=store)
    if migrate_schema:
        migrate(engine)
    store.db.check_schema()
    if migrate_schema:
        upgrade_legacy_opt_outs(store, default_region=settings.default_region)

    secrets = settings.webhook_secrets
    signing = [SigningSecret(secret, mode) for mode, secret in settings.marked_webhook_secrets]
    development_secret = None
    if not secrets:
        development_secret = store.meta.development_secret()
        secrets = [development_secret]
        signing = [SigningSecret(development_secret, "test", development=True)]

    config = settings_config(settings)
    console = console or ConsoleChannel()
    if channels is None:
        channels = provider_channels(settings, config)
    client = stripe_client(settings)
    if customers is None:
        customers = StripeCustomerDirectory(client=client) if client else None
    if lookups is None:
        lookups = StripeApiLookups(client=client) if client else None
    write_back = ConsentWriteBack(store=store, client=client) if client else None

    rules = rule_book(settings, config)
    router = ChannelRouter(
        channels=channels, console=console, test_allowlist=settings.test_allowlist
    )
    composer = Composer(
        rules=rules,
        router=router,
        customers=customers,
        lookups=lookups,
        payments=PaymentChecks(
            store=store,
            lookups=lookups,
            clock=clock,
            link_grace=settings.link_grace,
            key_mode=settings.stripe_key_mode,
        ),
        context=MessageContext(
            business_name=settings.business_name,
            locale=settings.locale,
            update_card_url=settings.update_card_url,
            timezone=config.timezone or settings.timezone,
            portal_return_url=settings.portal_return_url,
        ),
        default_region=settings.default_region,
        metadata_keys=config.phone_metadata_keys,
        quiet_hours=quiet_hours or config.quiet_hours,
        clock=clock,
        question_wait=config.fraud.wait,
    )
    # One name for this process's claims, on notifications and on jobs alike.
    worker_id = worker_name()
    sender = Sender(
        store=store,
        composer=composer,
        router=router,
        clock=clock,
        limiter=RateLimiter(config.rate_limits),
        metrics=metrics,
        lease=settings.lease,
        max_attempts=settings.max_attempts,
        retry_base=settings.retry_base,
        max_age=settings.max_age,
        write_back=write_back is not None,
    )
    job_runner = JobRunner(
        jobs=store.jobs,
        clock=clock,
        worker_id=worker_id,
        poll_interval=settings.poll_interval,
    )
    if write_back is not None:
        write_back.register(job_runner)
    FraudChecks(
        store=store,
        rules=rules,
        client=client,
        settings=config.fraud,
        clock=clock,
        key_mode=settings.stripe_key_mode,
    ).register(job_runner)
    worker = Worker(
        store=store,
        sender=sender,
        clock=clock,
        concurrency=settings.worker_concurrency,
        poll_interval=settings.poll_interval,
        lease=settings.lease,
        jobs=job_runner,
        worker_id=worker_id,
    )
    http_app = create_http_app(
        store=store,
        verifier=WebhookVerifier(secrets=signing, clock=clock),
        rules=rules,
        on_queued=worker.wake,
        twilio_auth_token=(
            settings.twilio_auth_token.get_secret_value() if settings.twilio_auth_token else None
        ),
        public_url=settings.public_url,
        business_name=settings.business_name,
        help_text=settings.help_text,
        locale=settings.locale,
        on_no=config.fraud.on_no if client is not None else None,
        write_back=write_back is not None,
        default_region=settings.default_region,
        metrics=metrics,
        admin_token=settings.admin_token.get_secret_value() if settings.admin_token else None,
        body_timeout=settings.http_body_timeout,
        development_secret=development_secret,
        paylinks=paylink_sender(settings, store, rules, client, clock),
        auth=AdminAuth(
            token=settings.admin_token.get_secret_value() if settings.admin_token else None,
            clock=clock,
        ),
        feed=LiveFeed(store=store, conninfo=_conninfo(engine) if settings.is_postgres else None),
        # The dashboard shows the mode of the key payherald runs with; test with none.
        default_livemode=settings.stripe_key_mode == "live",
        timezone=config.timezone or settings.timezone,
    )
    reconciler = (
        Reconciler(
            backfill=Backfill(store=store, rules=rules, client=client, clock=clock),
            store=store,
            clock=clock,
            interval=settings.reconcile_interval,
            metrics=metrics,
        )
        if client is not None and settings.reconcile_interval > 0
        else None
    )
    if reconciler is not None:
        job_runner.register(
            RECONCILE_JOB,
            reconciler.run_job,
            lease=_RECONCILE_LEASE,
            max_attempts=None,  # a recurring job never stops for good
            retry_base=min(60.0, reconciler.interval),
            retry_cap=reconciler.interval,
        )
    renewals = None
    if client is not None and config.renewals.enabled:
        renewals = RenewalScanner(client=client, store=store, rules=rules, clock=clock)
        renewals.register(job_runner)
    digest = None
    if config.digest is not None:
        schedule = DigestSchedule(
            team=config.digest.team,
            at=config.digest.at,
            zone=config.digest.timezone or config.timezone or settings.timezone,
        )
        digest = DailyDigest(store=store, rules=rules, schedule=schedule, clock=clock)
        digest.register(job_runner)
    return Payherald(
        settings=settings,
        engine=engine,
        store=store,
        rules=rules,
        worker=worker,
        http_app=http_app,
        webhook_secrets=secrets,
        development_secret=development_secret,
        channels=sorted(channels),
        metrics=metrics,
        jobs=job_runner,
        reconciler=reconciler,
        digest=digest,
        pruner=(
            Pruner(store=store, clock=clock, retention_days=settings.retention_days)
            if settings.retention_days
            else None
        ),
        renewals=renewals,
    )


def _conninfo(engine: Engine) -> str:
    """libpq's form of the PostgreSQL ``engine`` connects to (for LISTEN)."""
    return engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
