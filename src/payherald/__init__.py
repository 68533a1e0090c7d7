"""payherald: turn Stripe events into the right message, to the right person, exactly once.

Where things live, and the path of one event through them:

    POST /webhooks/stripe
      serving      uvicorn, every connection bounded (head size and time, body time, count)
      server       the HTTP routes; webhook verifies the signature and parses the event
      group_commit many requests' events written in one transaction, through
      ingest       rules (which messages an event causes; builtin_rules, the catalogue),
                   subjects (what each is about) and dunning (the sequence an invoice's
                   failure starts, and what ends it: store.dunning)
      store        events, notifications and links (store.events), all SQL in one package;
                   each notification queued with its job (store.outbox)
      -> 200, once committed
    worker         claims due send jobs with their notifications (store.queue), with a
                   lease, for
      sender       one attempt: compose, send, and record the outcome by one table
                   (store.transitions): state, metric, log line, and the job moved with it
      compose      recipient (recipients, lookups, stripe_objects), words (variables, what a
                   message is rendered with; templates, rendered in sandbox; money), and the
                   channel and what carries it (channels.router), decided once; quiet
                   hours; payments settles a payment's events so that it is told once,
                   and skips a dunning step (dunning) whose invoice's sequence has ended
      channels     console, Twilio SMS, WhatsApp and voice, email, Slack
    jobs           the runner of the other kinds of job, from the same queue (store.jobs):
                   consent write-backs to Stripe (stripe_sync), the scheduled
                   reconciliation (backfill), the renewal reminders' scan (renewals),
                   the daily digest (digest, its section digest_config, its figures
                   store.digest), the fraud check's answers and timeouts (fraud, its
                   questions in store.questions); each kind registered once, retried by
                   one policy (backoff)
    paylinks       payment links made at Stripe (`paylink send`, POST /api/paylinks; each
                   request checked first by paylink_requests) and texted by the payment_link
                   rule, recorded as an event of payherald's own;
                   attribution, which message brought a payment, credited with the event
                   that tells it (store.attribution), and `report attribution`
    GET /          dashboard, the operator's pages (their templates and static files in
                   web/, dashboard_format their filters), signed in by admin (the admin
                   token: a session cookie, CSRF tokens, the limit on guesses); api, the
                   JSON API under /api/; feed, the live feed (server-sent events, woken by
                   NOTIFY on PostgreSQL); all read store.history, on the columns that
                   event_facts fills in when an event is stored
    Around them: app builds everything from settings and config (payherald.toml, its rules
    read by config_rules, each mistake placed on its line by toml_lines); consent (what a
    reply means, CSV lists, legacy opt-outs) over store.consents, a YES or NO answering the
    number's open question first (store.questions); delivery's reports from
    Twilio, stored by store.deliveries; backfill and replay; simulate, signed example events
    (their objects from simulated_payments and simulated_billing); retention (what goes, and
    when) over store.pruning; endpoints and doctor (its Stripe and Twilio checks in
    stripe_checks and twilio_checks); metrics and logs; terminal for what commands print;
    cli, the `payherald` command, one module per command group; testing, the fakes (a
    scripted channel, an in-memory store and job queue).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from payherald.app import Payherald, build
    from payherald.channels import Channel, ConsoleChannel, Message, TwilioSmsChannel
    from payherald.clock import Clock, FrozenClock, SystemClock
    from payherald.exceptions import (
        ConfigurationError,
        DeliveryError,
        DeliveryOutcomeUnknown,
        MalformedEvent,
        PayheraldError,
        PayloadTooLarge,
        PermanentDeliveryError,
        RecipientNotFound,
        RenderError,
        SchemaOutOfDate,
        SignatureInvalid,
        StoreUnavailable,
        TransientDeliveryError,
        WebhookRejected,
    )
    from payherald.settings import Settings, load_settings
    from payherald.webhook import SigningSecret, StripeEvent, WebhookVerifier, parse_event

# Where each public name lives. Imported on first use (PEP 562), so that `payherald --help`
# does not pay for FastAPI, Stripe and Twilio.
_HOMES = {
    "Payherald": "app",
    "build": "app",
    "Channel": "channels",
    "ConsoleChannel": "channels",
    "Message": "channels",
    "TwilioSmsChannel": "channels",
    "Clock": "clock",
    "FrozenClock": "clock",
    "SystemClock": "clock",
    "ConfigurationError": "exceptions",
    "DeliveryError": "exceptions",
    "DeliveryOutcomeUnknown": "exceptions",
    "MalformedEvent": "exceptions",
    "PayheraldError": "exceptions",
    "PayloadTooLarge": "exceptions",
    "PermanentDeliveryError": "exceptions",
    "RecipientNotFound": "exceptions",
    "RenderError": "exceptions",
    "SchemaOutOfDate": "exceptions",
    "SignatureInvalid": "exceptions",
    "StoreUnavailable": "exceptions",
    "TransientDeliveryError": "exceptions",
    "WebhookRejected": "exceptions",
    "Settings": "settings",
    "load_settings": "settings",
    "SigningSecret": "webhook",
    "StripeEvent": "webhook",
    "WebhookVerifier": "webhook",
    "parse_event": "webhook",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'payherald' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"payherald.{home}"), name)
    globals()[name] = value
    return value


__version__ = "0.1.0"

__all__ = [
    "Channel",
    "Clock",
    "ConfigurationError",
    "ConsoleChannel",
    "DeliveryError",
    "DeliveryOutcomeUnknown",
    "FrozenClock",
    "MalformedEvent",
    "Message",
    "Payherald",
    "PayheraldError",
    "PayloadTooLarge",
    "PermanentDeliveryError",
    "RecipientNotFound",
    "RenderError",
    "SchemaOutOfDate",
    "Settings",
    "SignatureInvalid",
    "SigningSecret",
    "StoreUnavailable",
    "StripeEvent",
    "SystemClock",
    "TransientDeliveryError",
    "TwilioSmsChannel",
    "WebhookRejected",
    "WebhookVerifier",
    "__version__",
    "build",
    "load_settings",
    "parse_event",
]
