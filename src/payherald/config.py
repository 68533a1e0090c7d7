"""The rules file, ``payherald.toml``: teams, thresholds, and changes to the rules.

Everything in it is optional; without a file the built-in rules run as they are. Every
mistake is reported with the file's line and a sentence that says what to fix, and all of
them at once; payherald refuses to start with any. The file's shape::

    timezone = "America/New_York"      # for dates in team messages and unplaceable numbers
    phone_metadata_keys = ["phone", "mobile"]

    [quiet_hours]                       # customer texts and calls, local time
    send_from = "08:00"
    send_until = "21:00"

    [dunning]                           # the steps after an invoice's failure (rules
    enabled = true                      # with sequence = "dunning"); false: none

    [high_value]                        # alert thresholds, in the smallest unit
    usd = 100000

    [teams.finance]
    sms = ["+14155550100"]
    email = ["finance@example.com"]
    slack_webhook = "https://hooks.slack.com/services/..."

    [rules.payment_confirmation]        # a built-in rule: change any field, or turn it off
    template = "Thanks! {{ amount | money(currency) }} received."
    quiet_hours_exempt = true           # sent at any hour

    [rules.vip_payment]                 # a rule of your own
    events = ["payment_intent.succeeded"]
    when = "'vip' in tags and amount >= 50000"
    to = "team:sales"
    channels = ["sms"]
    template = "VIP {{ customer_name }} paid {{ amount | money(currency) }}"
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from payherald.builtin_rules import BUILTIN_RULES
from payherald.clock import parse_duration
from payherald.digest_config import DigestConfig, read_digest
from payherald.dunning import DUNNING, STARTING_EVENT
from payherald.event_types import STRIPE_EVENT_TYPES
from payherald.exceptions import ConfigurationError, RenderError
from payherald.quiet_hours import QuietHours, parse_clock_time
from payherald.recipients import email_address_problem, normalise_phone
from payherald.renewals import RenewalSettings, read_renewals
from payherald.rules import CHANNELS, Rule, RuleBook, Team
from payherald.subjects import SUBJECTS
from payherald.templates import TemplateRenderer
from payherald.toml_lines import line_of

__all__ = ["Config", "load_config"]

_TOP_KEYS = {
    "timezone",
    "phone_metadata_keys",
    "high_value",
    "teams",
    "rules",
    "rate_limits",
    "quiet_hours",
    "dunning",
    "renewals",
    "digest",
}
_QUIET_HOURS_KEYS = {"send_from", "send_until", "enabled"}
_TEAM_KEYS = {"sms", "email", "slack_webhook", "timezone"}
_RULE_KEYS = {
    "events",
    "to",
    "channels",
    "template",
    "when",
    "fallback",
    "subject",
    "first_payment_only",
    "not_for_invoices",
    "unless_paid",
    "quiet_hours_exempt",
    "allow_metadata_links",
    "enabled",
    "description",
    "sequence",
    "after",
}
_BUILTINS = {rule.name: rule for rule in BUILTIN_RULES}


@dataclass(frozen=True)
class Config:
    rules: tuple[Rule, ...] = BUILTIN_RULES
    teams: dict[str, Team] = field(default_factory=dict)
    high_value: dict[str, int] = field(default_factory=dict)
    timezone: str | None = None
    phone_metadata_keys: tuple[str, ...] = ("phone",)
    rate_limits: dict[str, float] = field(default_factory=dict)
    quiet_hours: QuietHours = field(default_factory=QuietHours)
    renewals: RenewalSettings = field(default_factory=RenewalSettings)
    path: Path | None = None
    digest: DigestConfig | None = None  # None: no daily digest

    def rule_book(self, renderer: TemplateRenderer) -> RuleBook:
        return RuleBook(
            self.rules,
            renderer=renderer,
            teams=self.teams,
            high_value=self.high_value,
            renewal_days=self.renewals.days,
        )


def load_config(path: Path, *, required: bool = False) -> Config:
    """Read ``path``; a missing file is the built-in configuration unless ``required``.
    Raises ConfigurationError listing every problem with its line."""
    if not path.exists():
        if required:
            raise ConfigurationError(
                f"{path}: no such file. Create it, or unset PAYHERALD_CONFIG to run with the "
                "built-in rules."
            )
        return Config()
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{path}: not valid TOML: {exc}.") from exc
    reader = _Reader(path, text)
    config = reader.read(data)
    if reader.problems:
        raise ConfigurationError("\n".join(reader.problems))
    return config


class _Reader:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.problems: list[str] = []
        self.renderer = TemplateRenderer()

    def problem(self, where: tuple[str, ...], key: str | None, sentence: str) -> None:
        line = line_of(self.lines, where, key)
        dotted = ".".join((*where, key) if key else where)
        self.problems.append(f"{self.path}:{line or '?'}: {dotted}: {sentence}")

    def read(self, data: dict[str, Any]) -> Config:
        for key in data.keys() - _TOP_KEYS:
            self.problem(
                (), key, "unknown setting; the file can have " + ", ".join(sorted(_TOP_KEYS)) + "."
            )
        timezone = self._timezone((), "timezone", data.get("timezone"))
        keys = data.get("phone_metadata_keys", ["phone"])
        if not (isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys)):
            self.problem((), "phone_metadata_keys", 'must be a list of names, like ["phone"].')
            keys = ["phone"]
        teams = {
            name: self._team(name, value)
            for name, value in self._table((), "teams", data.get("teams", {})).items()
        }
        high_value = self._high_value(data.get("high_value", {}))
        rate_limits = {}
        for sender, rate in self._table((), "rate_limits", data.get("rate_limits", {})).items():
            if isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0:
                self.problem(
                    ("rate_limits",),
                    sender,
                    "must be a number of messages a second, "
                    "more than 0 (0.5 is one every two seconds).",
                )
            else:
                rate_limits[sender] = float(rate)
        tables = self._table((), "rules", data.get("rules", {}))
        rules = self._dunning(data.get("dunning", {}), self._rules(tables, teams), tables)
        quiet_hours = self._quiet_hours(data.get("quiet_hours", {}))
        digest = read_digest(data.get("digest"), teams=teams, problem=self.problem)
        return Config(
            rules=(*rules, digest.rule()) if digest else rules,
            digest=digest,
            teams=teams,
            high_value=high_value,
            timezone=timezone,
            phone_metadata_keys=tuple(keys),
            rate_limits=rate_limits,
            quiet_hours=quiet_hours,
            renewals=read_renewals(data.get("renewals", {}), self.problem),
            path=self.path,
        )

    def _quiet_hours(self, value: Any) -> QuietHours:
        where = ("quiet_hours",)
        table = self._table((), "quiet_hours", value)
        for key in table.keys() - _QUIET_HOURS_KEYS:
            self.problem(
                where,
                key,
                "unknown setting; quiet_hours can have "
                + ", ".join(sorted(_QUIET_HOURS_KEYS))
                + ".",
            )
        values: dict[str, Any] = {}
        for key in ("send_from", "send_until"):
            if key in table:
                try:
                    values[key] = parse_clock_time(table[key])
                except ValueError as exc:
                    self.problem(where, key, str(exc))
        if "enabled" in table:
            if isinstance(table["enabled"], bool):
                values["enabled"] = table["enabled"]
            else:
                self.problem(where, "enabled", "must be true or false.")
        return QuietHours(**values)

    def _dunning(
        self, value: Any, rules: tuple[Rule, ...], tables: dict[str, Any]
    ) -> tuple[Rule, ...]:
        """``[dunning] enabled = false`` turns every step off; turning them off one by one
        instead, until none is left, is taken for a mistake."""
        table = self._table((), "dunning", value)
        for key in table.keys() - {"enabled"}:
            self.problem(("dunning",), key, "unknown setting; dunning can have enabled.")
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            self.problem(("dunning",), "enabled", "must be true or false.")
        elif not enabled:
            return tuple(
                dataclasses.replace(rule, enabled=False) if rule.sequence else rule
                for rule in rules
            )
        steps = [rule for rule in rules if rule.sequence == DUNNING]
        if steps and not any(rule.enabled for rule in steps):
            self.problem(
                ("rules", next(rule.name for rule in reversed(steps) if rule.name in tables)),
                "enabled",
                "every dunning step is off, so an invoice whose payment fails gets no "
                "message; turn a step back on, or turn dunning off on purpose with "
                "[dunning] enabled = false.",
            )
        return rules

    def _table(self, where: tuple[str, ...], key: str, value: Any) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        self.problem(where, key, "must be a table.")
        return {}

    def _timezone(self, where: tuple[str, ...], key: str, value: Any) -> str | None:
        if value is None:
            return None
        try:
            ZoneInfo(str(value))
        except (ZoneInfoNotFoundError, ValueError):
            self.problem(
                where, key, f'{value!r} is not a time zone; use a name like "Europe/Paris".'
            )
            return None
        return str(value)

    def _team(self, name: str, value: Any) -> Team:
        where = ("teams", name)
        table = self._table(("teams",), name, value)
        for key in table.keys() - _TEAM_KEYS:
            self.problem(
                where,
                key,
                "unknown team setting; a team can have " + ", ".join(sorted(_TEAM_KEYS)) + ".",
            )
        numbers = []
        for raw in self._strings(where, "sms", table.get("sms", [])):
            number = normalise_phone(raw, None)
            if number is None:
                self.problem(
                    where, "sms", f"{raw!r} is not a phone number in E.164 form, like +14155550123."
                )
                continue
            numbers.append(number)
        emails = self._strings(where, "email", table.get("email", []))
        for address in emails:
            if problem := email_address_problem(address):
                self.problem(where, "email", problem + ".")
        slack = table.get("slack_webhook")
        if slack is not None and not (isinstance(slack, str) and slack.startswith("https://")):
            self.problem(
                where,
                "slack_webhook",
                "must be a Slack incoming webhook URL (https://hooks.slack.com/services/...).",
            )
            slack = None
        return Team(
            name=name,
            sms=tuple(numbers),
            email=tuple(emails),
            slack_webhook=slack,
            timezone=self._timezone(where, "timezone", table.get("timezone")),
        )

    def _strings(self, where: tuple[str, ...], key: str, value: Any) -> list[str]:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return list(value)
        self.problem(where, key, "must be a list of strings.")
        return []

    def _high_value(self, value: Any) -> dict[str, int]:
        thresholds = {}
        for currency, amount in self._table((), "high_value", value).items():
            if not re.fullmatch(r"[A-Za-z]{3}", currency):
                self.problem(("high_value",), currency, "is not a three-letter currency code.")
            elif isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
                self.problem(
                    ("high_value",),
                    currency,
                    "must be a whole amount in the "
                    "currency's smallest unit (cents for usd: 100000 is $1,000.00).",
                )
            else:
                thresholds[currency.lower()] = amount
        return thresholds

    def _check_step(
        self,
        where: tuple[str, ...],
        table: dict[str, Any],
        values: dict[str, Any],
        base: Rule | None,
    ) -> None:
        """A dunning step is started by the invoice's failure and goes to its customer."""
        events = values.get("events", base.events if base else frozenset())
        if events != {STARTING_EVENT}:
            self.problem(
                where,
                "events" if "events" in table else "sequence",
                f"a dunning step is started by {STARTING_EVENT} alone; "
                f'set events = ["{STARTING_EVENT}"].',
            )
        if values.get("to", base.to if base else "customer") != "customer":
            self.problem(where, "to", 'a dunning step is for the customer; set to = "customer".')

    def _after(self, where: tuple[str, ...], value: Any) -> int | None:
        """A dunning step's delay: ``"3d"``, ``"12h"``, ``"90m"``, or seconds."""
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        delay = parse_duration(value) if isinstance(value, str) else None
        if delay is None:
            self.problem(
                where,
                "after",
                f'{value!r} is not a delay; use a duration like "3d", "12h" or "90m" '
                "(0 for at once), counted from the invoice's first failure.",
            )
            return None
        return int(delay.total_seconds())

    def _rules(self, tables: dict[str, Any], teams: dict[str, Team]) -> tuple[Rule, ...]:
        rules = dict(_BUILTINS)
        for name, value in tables.items():
            table = self._table(("rules",), name, value)
            rule = self._rule(name, table, _BUILTINS.get(name), teams)
            if rule is not None:
                rules[name] = rule
        return tuple(rules.values())

    def _rule(
        self, name: str, table: dict[str, Any], base: Rule | None, teams: dict[str, Team]
    ) -> Rule | None:
        where = ("rules", name)
        problems_before = len(self.problems)
        for key in table.keys() - _RULE_KEYS:
            close = difflib.get_close_matches(key, _RULE_KEYS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.problem(
                where,
                key,
                f"unknown rule setting{hint}; a rule can have "
                + ", ".join(sorted(_RULE_KEYS))
                + ".",
            )
        if base is None:
            for required in ("events", "template"):
                if required not in table:
                    self.problem(where, None, f"a new rule needs {required!r}.")
        values: dict[str, Any] = {}
        if "events" in table:
            events = self._strings(where, "events", table["events"])
            for event_type in events:
                if event_type not in STRIPE_EVENT_TYPES:
                    close = difflib.get_close_matches(event_type, STRIPE_EVENT_TYPES, n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    self.problem(
                        where, "events", f"{event_type!r} is not a Stripe event type{hint}."
                    )
            values["events"] = frozenset(events)
        if "to" in table:
            to = table["to"]
            if not isinstance(to, str) or not (to == "customer" or to.startswith("team:")):
                self.problem(where, "to", 'must be "customer" or "team:NAME".')
            elif to.startswith("team:") and to[5:] not in teams:
                self.problem(
                    where,
                    "to",
                    f"no team {to[5:]!r} is defined; add "
                    f"[teams.{to[5:]}] with its sms, email or slack_webhook.",
                )
            values["to"] = to
        if "channels" in table:
            channels = self._strings(where, "channels", table["channels"])
            for channel in channels:
                if channel not in CHANNELS:
                    self.problem(
                        where,
                        "channels",
                        f"{channel!r} is not a channel; use " + ", ".join(CHANNELS) + ".",
                    )
            if not channels:
                self.problem(where, "channels", "must list at least one channel.")
            values["channels"] = tuple(channels)
        for key in ("template", "fallback", "when", "description"):
            if key in table:
                if not isinstance(table[key], str):
                    self.problem(where, key, "must be a string.")
                    continue
                values[key] = table[key]
                try:
                    if key in ("template", "fallback"):
                        self.renderer.check(table[key])
                    elif key == "when":
                        self.renderer.compile_condition(table[key])
                except RenderError as exc:
                    self.problem(where, key, exc.message)
        if "subject" in table:
            if not isinstance(table["subject"], str) or table["subject"] not in SUBJECTS:
                self.problem(
                    where, "subject", "must be one of " + ", ".join(sorted(SUBJECTS)) + "."
                )
            values["subject"] = table["subject"]
        for key in (
            "first_payment_only",
            "not_for_invoices",
            "unless_paid",
            "quiet_hours_exempt",
            "allow_metadata_links",
            "enabled",
        ):
            if key in table:
                if not isinstance(table[key], bool):
                    self.problem(where, key, "must be true or false.")
                values[key] = bool(table[key])
        if "sequence" in table:
            if table["sequence"] != DUNNING:
                self.problem(where, "sequence", f'the only sequence is "{DUNNING}".')
            values["sequence"] = DUNNING
        if "after" in table:
            after = self._after(where, table["after"])
            if after is not None:
                values["after"] = after
        if values.get("sequence", base.sequence if base else None) is not None:
            self._check_step(where, table, values, base)
        if len(self.problems) > problems_before:
            return None
        if base is None:
            return Rule(name=name, **values)
        return dataclasses.replace(base, **values)
