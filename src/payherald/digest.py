"""The daily digest: the previous local day's figures, sent to a team every day at a set
local time (``[digest]`` in the rules file; ``digest_config`` reads it).

It is a recurring job (``digest.send``) on the job queue. Each run works out the latest
time the digest fell due (today's, or yesterday's if today's is still to come), the day
before that one is the day it covers, and it records that day's digest as an event of its
own (``payherald.digest``, id ``evt_digest_<day>_<team>``) with the team's notifications,
through the store's one path (``Store.record_event``): consent, channels, retries and
reconciliation are those of every message, and a day's digest is stored once, so it is
sent once, however often the job runs (a crash, a second worker, a restart). A digest that
fell due while payherald was stopped is due, and goes out soon after start. The day's
bounds are local midnights, so a daylight-saving day has its 23 or 25 hours.

The figures (``Store.digest``) are frozen in the event when it is recorded; each
notification renders them with the ``daily_digest`` rule's template, short for a text
(SMS, WhatsApp, a call), fuller for email and Slack. Only live-mode figures are counted.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from babel.dates import format_date

from payherald.clock import Clock
from payherald.jobs import Job, JobRunner, RunAgain
from payherald.money import format_money
from payherald.rules import RuleBook
from payherald.store import Store
from payherald.store.digest import DigestFigures, Tally
from payherald.webhook import StripeEvent, own_event

__all__ = [
    "DIGEST_EVENT",
    "DIGEST_JOB",
    "DIGEST_LEASE",
    "DIGEST_RULE",
    "DIGEST_VARIABLES",
    "FULL_TEMPLATE",
    "SHORT_TEMPLATE",
    "DailyDigest",
    "DigestSchedule",
    "day_bounds",
    "digest_event",
    "digest_variables",
    "due_before",
    "next_due",
    "rule_template",
    "sample_digest",
]

_log = structlog.get_logger("payherald.digest")

DIGEST_JOB = "digest.send"
DIGEST_RULE = "daily_digest"
# The type of the event a digest is recorded as: not a Stripe type, so no rule, endpoint
# or figure mistakes it for one.
DIGEST_EVENT = "payherald.digest"
_TEXT_CHANNELS = frozenset({"sms", "whatsapp", "voice"})
# A digest job's run holds its lease this long: the figures read two days of events, and
# a busy account's take a while (a run that outlasts it is harmless: the day is stored once).
DIGEST_LEASE = 900.0

# The figures that carry amounts, and what the templates call them.
_TALLIES = {
    "payments": "payments",
    "failed": "failed_payments",
    "refunds": "refunds",
    "disputes": "disputes",
    "dunning_open": "dunning_open",
    "recovered": "recovered",
}
DIGEST_VARIABLES = frozenset(
    {
        *_TALLIES.values(),
        *(f"{name}_amount" for name in _TALLIES.values()),
        *(f"{name}_by_currency" for name in _TALLIES.values()),
        "new_subscriptions",
        "cancelled_subscriptions",
        "dunning_ended",
        "day",
        "day_short",
        "team",
        "short",
    }
)
"""What a digest's template can use beside a message's variables: each figure's count
(``payments``), its amounts per currency as text (``payments_amount``: ``$50.00, €20.00``)
and as a list (``payments_by_currency``: ``currency``, ``count``, ``amount``), and ``short``:
true on a text channel."""

SHORT_TEMPLATE = (
    "{% if business %}{{ business }} {% endif %}{{ day_short }}: "
    "{{ payments }} paid{% if payments %} {{ payments_amount }}{% endif %}, "
    "{{ failed_payments }} failed, {{ refunds }} refunded"
    "{% if refunds %} {{ refunds_amount }}{% endif %}, {{ disputes }} disputed; "
    "subs +{{ new_subscriptions }} -{{ cancelled_subscriptions }}; "
    "dunning {{ dunning_open }} open{% if dunning_open %} {{ dunning_open_amount }}{% endif %}"
    "{% if recovered %}, {{ recovered_amount }} recovered{% endif %}"
)
FULL_TEMPLATE = (
    "{% if business %}{{ business }}: {% endif %}Daily digest for {{ day }} ({{ timezone }}, "
    "live mode). Payments: {{ payments }}{% if payments %} ({{ payments_amount }}){% endif %}. "
    "Failed payments: {{ failed_payments }}"
    "{% if failed_payments %} ({{ failed_payments_amount }}){% endif %}. "
    "Refunds: {{ refunds }}{% if refunds %} ({{ refunds_amount }}){% endif %}. "
    "Disputes: {{ disputes }}{% if disputes %} ({{ disputes_amount }}){% endif %}. "
    "Subscriptions: {{ new_subscriptions }} new, {{ cancelled_subscriptions }} cancelled. "
    "Dunning: {{ dunning_open }} open at the end of the day"
    "{% if dunning_open %} ({{ dunning_open_amount }} due){% endif %}; "
    "{{ recovered }} recovered{% if recovered %} ({{ recovered_amount }}){% endif %}; "
    "{{ dunning_ended }} ended unpaid."
)


# -- when -----------------------------------------------------------------------------------


def day_bounds(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    """The local day ``day`` in ``zone``, from its midnight to the next, in UTC (23 or 25
    hours on a daylight-saving day)."""
    start = datetime.combine(day, time(0), tzinfo=zone)
    end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def _due_on(day: date, at: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def due_before(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The latest time the digest fell due at or before ``now``: ``at`` today, local time,
    or yesterday when today's is still to come."""
    today = now.astimezone(zone).date()
    due = _due_on(today, at, zone)
    return due if due <= now else _due_on(today - timedelta(days=1), at, zone)


def next_due(now: datetime, at: time, zone: ZoneInfo) -> datetime:
    """The first time after ``now`` that the digest falls due."""
    today = now.astimezone(zone).date()
    due = _due_on(today, at, zone)
    return due if due > now else _due_on(today + timedelta(days=1), at, zone)


# -- what it says ---------------------------------------------------------------------------


def digest_variables(event: StripeEvent, channel: str, *, locale: str) -> dict[str, Any]:
    """What a digest's template sees (``DIGEST_VARIABLES``, and ``timezone``) for the digest
    recorded as ``event``, sent on ``channel``; empty for any other event."""
    if event.type != DIGEST_EVENT:
        return {}
    obj = event.object
    figures = DigestFigures.from_json(obj.get("figures") or {})
    day = date.fromisoformat(str(obj["day"]))
    variables: dict[str, Any] = {
        "new_subscriptions": figures.new_subscriptions,
        "cancelled_subscriptions": figures.cancelled_subscriptions,
        "dunning_ended": figures.dunning_ended,
        "day": str(format_date(day, format="medium", locale=locale)),
        "day_short": str(format_date(day, format="MMM d", locale=locale)),
        "team": str(obj.get("team") or ""),
        "timezone": str(obj.get("timezone") or "UTC"),
        "short": channel in _TEXT_CHANNELS,
    }
    for field, name in _TALLIES.items():
        tally: Tally = getattr(figures, field)
        currencies = sorted(tally.counts)
        variables[name] = tally.count
        variables[f"{name}_amount"] = ", ".join(
            format_money(tally.amounts.get(c, 0), c, locale) for c in currencies
        )
        variables[f"{name}_by_currency"] = [
            {"currency": c, "count": tally.counts[c], "amount": tally.amounts.get(c, 0)}
            for c in currencies
        ]
    return variables


def rule_template(full: str, short: str) -> str:
    """One template of the two texts: ``short`` on a text channel, else ``full``."""
    return "{% if short %}" + short + "{% else %}" + full + "{% endif %}"


def _event_id(team: str, day: date) -> str:
    name = team if re.fullmatch(r"[A-Za-z0-9_]{1,64}", team) else None
    name = name or "t" + hashlib.sha256(team.encode()).hexdigest()[:16]
    return f"evt_digest_{day:%Y%m%d}_{name}"


def digest_event(
    *, team: str, day: date, zone: str, figures: DigestFigures, now: datetime
) -> StripeEvent:
    """The digest of ``team`` for ``day``, as the event it is recorded as."""
    obj: dict[str, Any] = {
        "id": f"digest:{team}:{day.isoformat()}",
        "object": DIGEST_EVENT,
        "team": team,
        "day": day.isoformat(),
        "timezone": zone,
        "livemode": True,
        "figures": figures.as_json(),
    }
    return own_event(_event_id(team, day), DIGEST_EVENT, obj, livemode=True, now=now)


def sample_digest(now: datetime) -> StripeEvent:
    """A digest of made-up figures, for ``payherald config check`` to render."""
    usd_eur = Tally({"usd": 42, "eur": 3}, {"usd": 1_234_500, "eur": 45_000})
    figures = DigestFigures(
        payments=usd_eur,
        failed=Tally({"usd": 2}, {"usd": 4000}),
        refunds=Tally({"usd": 1}, {"usd": 2000}),
        disputes=Tally({"usd": 1}, {"usd": 9900}),
        new_subscriptions=5,
        cancelled_subscriptions=1,
        dunning_open=Tally({"usd": 3}, {"usd": 6000}),
        recovered=Tally({"usd": 1}, {"usd": 2000}),
    )
    day = now.date() - timedelta(days=1)
    return digest_event(team="finance", day=day, zone="UTC", figures=figures, now=now)


# -- the job --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DigestSchedule:
    """Whom the digest goes to (a team of the rules file), and when, in which zone."""

    team: str
    at: time
    zone: str


class DailyDigest:
    """The digest's recurring job: registered on a runner, ensured on start."""

    def __init__(
        self, *, store: Store, rules: RuleBook, schedule: DigestSchedule, clock: Clock
    ) -> None:
        self._store = store
        self._rules = rules
        self._schedule = schedule
        self._zone = ZoneInfo(schedule.zone)
        self._clock = clock

    @property
    def key(self) -> str:
        return f"digest:{self._schedule.team}"

    def register(self, runner: JobRunner) -> None:
        runner.register(
            DIGEST_JOB,
            self.run_job,
            lease=DIGEST_LEASE,
            max_attempts=None,  # a recurring job never stops for good
            retry_base=60.0,
            retry_cap=3600.0,
        )

    def ensure(self) -> None:
        """Queue the job, due at the next digest time, unless it is queued already (then
        it keeps its time: one that fell due while payherald was stopped runs now)."""
        now = self._clock.now()
        due = next_due(now, self._schedule.at, self._zone)
        self._store.jobs.ensure_recurring(
            DIGEST_JOB, self.key, {"team": self._schedule.team}, due_at=due
        )

    def run_job(self, job: Job) -> RunAgain | None:
        """Record the digest of the day the latest digest time closes, once; due again at
        the next digest time. The job of a team the digest no longer goes to is done."""
        if job.key != self.key:
            _log.info("digest_job_retired", job_key=job.key, action="done")
            return None
        now = self._clock.now()
        due = due_before(now, self._schedule.at, self._zone)
        self.record(due.astimezone(self._zone).date() - timedelta(days=1))
        return RunAgain(next_due(now, self._schedule.at, self._zone))

    def record(self, day: date) -> bool:
        """Record ``day``'s digest and queue its messages, unless it was recorded already;
        whether it was new."""
        log = _log.bind(team=self._schedule.team, day=day.isoformat())
        if self._store.has_event(_event_id(self._schedule.team, day)):
            # Not counted again for nothing; a run racing this one is stopped by the event's
            # id when it records.
            log.info("digest_already_recorded", action="none")
            return False
        since, until = day_bounds(day, self._zone)
        figures = self._store.digest.figures(since=since, until=until, livemode=True)
        event = digest_event(
            team=self._schedule.team,
            day=day,
            zone=self._schedule.zone,
            figures=figures,
            now=self._clock.now(),
        )
        planned = self._rules.plan_rule(DIGEST_RULE, event)
        result = self._store.record_event(event, planned)
        log = log.bind(event_id=event.id)
        if result.duplicate:
            log.info("digest_already_recorded", action="none")
        elif not planned:
            log.warning("digest_unaddressed", reason="the team has no address on its channels")
        else:
            log.info("digest_queued", queued=result.queued)
        return not result.duplicate
