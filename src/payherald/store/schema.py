"""The database schema: events, the notifications they cause, and a small key-value table.

The ``notifications`` table is the work queue (a transactional outbox): the notifications an
event causes are inserted in the same transaction as the event, so an acknowledged event
never loses its work, and a worker claims rows from it. Alembic migrations in
``payherald/migrations`` create exactly this schema; a test checks that they agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

__all__ = [
    "UTCDateTime",
    "attributions",
    "consents",
    "delivery_reports",
    "dunning",
    "events",
    "inbound_messages",
    "jobs",
    "meta",
    "metadata",
    "notifications",
    "paylinks",
    "questions",
    "subject_aliases",
    "suppressions",
]


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored as naive UTC and read back as timezone-aware UTC.

    SQLite has no time zones and compares timestamps as text, so every value is
    normalised to UTC before it is written.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass a timezone-aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


metadata = MetaData()

# A 64-bit key on PostgreSQL; SQLite's rowid alias must be spelt INTEGER.
_BigId = BigInteger().with_variant(Integer(), "sqlite")

events = Table(
    "events",
    metadata,
    Column("id", String(255), primary_key=True),
    Column("type", String(128), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("api_version", String(64)),
    Column("stripe_created_at", UTCDateTime),
    Column("payload", Text, nullable=False),
    # received: stored, notifications queued; ignored: no rule for it; failed: planning
    # failed; unsupported: of an API version payherald does not read
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("received_at", UTCDateTime, nullable=False),
    # What the event is at a glance (``payherald.event_facts``), for the dashboard's lists,
    # filters and chart: read from the payload when it is stored.
    Column("kind", String(16)),  # succeeded, failed, dispute, refund, other
    Column("amount", BigInteger),  # in the currency's smallest unit
    Column("currency", String(16)),
    Column("customer", String(255)),  # the Stripe customer's id
    Column("email", String(255)),  # lower case
    Column("customer_name", String(255)),
    Column("subject", String(255)),  # the payment or failed attempt: "payment:pi_..."
    Index("ix_events_type", "type"),
    Index("ix_events_received_at", "received_at"),
    # The dashboard's lists, newest first: each filter's index ends in (received_at, id), the
    # order of a page and its cursor, so that a page is read from the index alone and in
    # order. SQLite, which has no statistics unless asked, takes an index that gives the
    # order over one that narrows more; these give both (bench/dashboard.py).
    Index("ix_events_livemode_received_at", "livemode", "received_at", "id"),
    Index("ix_events_livemode_kind_received_at", "livemode", "kind", "received_at", "id"),
    Index("ix_events_livemode_customer_received_at", "livemode", "customer", "received_at", "id"),
    Index("ix_events_livemode_email_received_at", "livemode", "email", "received_at", "id"),
)

notifications = Table(
    "notifications",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    # What makes two notifications "the same message": a duplicate key is never inserted.
    Column("key", String(255), nullable=False, unique=True),
    Column("event_id", String(255), ForeignKey("events.id"), nullable=False),
    Column("rule", String(128), nullable=False),
    Column("recipient", String(128), nullable=False),
    Column("channel", String(32), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("to", String(255)),
    Column("body", Text),
    # pending -> claimed -> sending -> sent | failed | pending (retry) | unknown
    Column("status", String(16), nullable=False),
    Column("provider_id", String(255)),
    Column("error", Text),
    Column("error_code", String(64)),
    Column("attempts", Integer, nullable=False, default=0),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("run_at", UTCDateTime, nullable=False),
    Column("lease_until", UTCDateTime),
    Column("claimed_by", String(128)),
    Column("attempt_started_at", UTCDateTime),
    Column("sent_at", UTCDateTime),
    # Why the message went where it went: channels skipped in the fallback chain, and why.
    Column("notes", Text),
    # Channels that refused this message for good, one "channel<TAB>reason" a line: the
    # next send tries the rule's next channel.
    Column("refusals", Text),
    # What the provider later reported (Twilio status callbacks); never moves backwards.
    Column("delivery_status", String(16)),
    Column("delivery_error_code", String(16)),
    # The subject alias the key was made from ("payment:in_..."): its canonical, which
    # later events may change by linking, names every notification about the same thing.
    Column("subject", String(255)),
    # The sequence it is a step of ("dunning:in_..."), for a dunning step.
    Column("sequence", String(255)),
    # The outcomes it had before it was queued again (a retry, a replay): a JSON list, for
    # its trace.
    Column("earlier", Text),
    Index("ix_notifications_status_run_at", "status", "run_at"),
    Index("ix_notifications_event_id", "event_id"),
    Index("ix_notifications_subject", "subject"),
    Index("ix_notifications_sequence", "sequence"),
    Index("ix_notifications_updated_at", "updated_at"),
)

# One dunning sequence an invoice: started by its first failed payment, ended by its payment
# (recovered), or by its voiding, deletion, being marked uncollectible, its subscription's
# cancellation, or an operator. An invoice that ended before its failure was seen (the
# events came out of order) has a row with no started_at, so that no sequence starts; so
# has a cancelled subscription, under invoice_id "cancelled:<subscription id>".
dunning = Table(
    "dunning",
    metadata,
    Column("invoice_id", String(255), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("event_id", String(255)),  # the failure that started it
    Column("customer_id", String(255)),
    Column("subscription_id", String(255)),
    Column("amount", BigInteger),  # the amount due, in the currency's smallest unit
    Column("currency", String(16)),
    Column("started_at", UTCDateTime),
    Column("ended_at", UTCDateTime),
    Column("end_reason", Text),
    # An invoice paid while its sequence was open: how much, and the last step told before.
    Column("recovered_amount", BigInteger),
    Column("recovered_rule", String(128)),
    Column("recovered_channel", String(32)),
    Column("updated_at", UTCDateTime, nullable=False),
    Index("ix_dunning_subscription_id", "subscription_id"),
    Index("ix_dunning_status_started_at", "status", "started_at"),
)

# A question texted to a customer whose answer acts on Stripe (the fraud check): open from
# the moment its text is handed to the provider until it is answered, its time runs out,
# or the number opts out. One a notification; a reply answers its number's latest open one.
questions = Table(
    "questions",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("notification_id", _BigId, nullable=False, unique=True),
    Column("event_id", String(255), nullable=False),
    Column("phone", String(64), nullable=False),
    Column("livemode", Boolean, nullable=False),
    # What the answer acts on: the review to approve, the payment to refund or cancel.
    Column("review_id", String(255)),
    Column("charge_id", String(255)),
    Column("payment_intent_id", String(255)),
    Column("amount", BigInteger),  # in the currency's smallest unit
    Column("currency", String(16)),
    Column("status", String(16), nullable=False),
    Column("asked_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    Column("answer_id", String(64)),  # the reply's MessageSid
    Column("outcome", Text),  # what was done at Stripe, or why nothing was
    Index("ix_questions_phone_status", "phone", "status"),
    Index("ix_questions_event_id", "event_id"),
)

# A payment link payherald made and texted (``payherald paylink send``, ``POST
# /api/paylinks``): our id (in the link's metadata, ``payherald_paylink``), Stripe's, the URL
# as texted, and the event and notification that text it. The notification's id is known only
# once the event is recorded, after Stripe made the link: the link names the paylink, and the
# paylink names the notification.
paylinks = Table(
    "paylinks",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("stripe_id", String(255), nullable=False),
    Column("url", Text, nullable=False),
    Column("campaign", String(255)),
    Column("livemode", Boolean, nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("notification_id", _BigId),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_paylinks_stripe_id", "stripe_id"),
)

# A payment credited to the message that brought it, once per payment (its payment intent,
# else its Checkout session), written with the event that told it first: a payment made
# through a paylink, or the success of a payment whose failure was told. (A dunning
# sequence's recovery is the dunning table's.)
attributions = Table(
    "attributions",
    metadata,
    Column("payment", String(255), primary_key=True),
    Column("event_id", String(255), nullable=False),
    Column("livemode", Boolean, nullable=False),
    Column("notification_id", _BigId),
    Column("rule", String(128), nullable=False),
    Column("channel", String(32)),
    Column("campaign", String(255)),
    Column("paylink_id", String(64)),
    Column("amount", BigInteger),
    Column("currency", String(16)),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_attributions_livemode_created_at", "livemode", "created_at"),
)

# Every status callback, once per (message, status), whatever Twilio repeats.
delivery_reports = Table(
    "delivery_reports",
    metadata,
    Column("provider_id", String(64), primary_key=True),
    Column("status", String(16), primary_key=True),
    Column("notification_id", _BigId),
    Column("error_code", String(16)),
    Column("received_at", UTCDateTime, nullable=False),
)

# People who must not be messaged at an address (a phone number, an email): checked
# before every customer send.
suppressions = Table(
    "suppressions",
    metadata,
    Column("address", String(255), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("source", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# When and how each person opted in or out: the audit trail behind `suppressions`.
consents = Table(
    "consents",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("address", String(255), nullable=False),
    Column("action", String(16), nullable=False),  # opt_out | opt_in
    Column("channel", String(32), nullable=False),  # sms, whatsapp, csv, cli...
    Column("words", Text),
    Column("source", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    # Writing it to the Stripe customer's metadata (see stripe_sync): None when not
    # wanted, else pending -> done | no_customer | superseded | failed.
    Column("stripe_status", String(16)),
    Column("stripe_attempts", Integer, nullable=False, server_default="0"),
    Column("stripe_due_at", UTCDateTime),
    Column("stripe_result", Text),
    Index("ix_consents_address", "address"),
    Index("ix_consents_stripe_due", "stripe_status", "stripe_due_at"),
)

# Every inbound message, once per MessageSid: a replayed request acts once. Retention
# blanks sender and body ("") and raw_sender (None) but keeps the row, the replay guard.
inbound_messages = Table(
    "inbound_messages",
    metadata,
    Column("provider_id", String(64), primary_key=True),
    # In E.164: the address consent is recorded under, whatever form Twilio sent.
    Column("sender", String(255), nullable=False),
    Column("body", Text, nullable=False),
    Column("action", String(16)),
    Column("received_at", UTCDateTime, nullable=False),
    # The From field as Twilio sent it ("whatsapp:+1 415 555 0123"); None before 0009.
    Column("raw_sender", String(255)),
)

# Every identifier seen for one thing (a payment: its intent, charge, invoice, Checkout
# session), mapped to the one identifier notifications about it are keyed on.
subject_aliases = Table(
    "subject_aliases",
    metadata,
    Column("alias", String(255), primary_key=True),
    Column("canonical", String(255), nullable=False),
    Index("ix_subject_aliases_canonical", "canonical"),
)

# Deferred work of every kind (see ``payherald.store.jobs``): claimed with a lease, like the
# notifications, and never done twice for one key.
jobs = Table(
    "jobs",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    Column("kind", String(64), nullable=False),
    # What makes two jobs "the same work": a duplicate key is never inserted.
    Column("key", String(255), nullable=False, unique=True),
    Column("payload", Text, nullable=False),  # a JSON object
    # pending -> running -> done | failed | pending (retry, recurring, lease ran out)
    Column("status", String(16), nullable=False),
    Column("due_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("lease_until", UTCDateTime),
    Column("claimed_by", String(128)),
    Column("last_error", Text),  # the traceback of the last failure
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime),
    Index("ix_jobs_kind_status_due_at", "kind", "status", "due_at"),
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)
