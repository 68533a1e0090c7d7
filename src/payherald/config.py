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

    [fraud]                             # the fraud check's answers
    on_no = "refund"                    # or "cancel" the payment intent
    reply_within_hours = 4              # then the team is told no answer came

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

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from payherald.builtin_rules import BUILTIN_RULES
from payherald.config_rules import RuleReading
from payherald.digest_config import DigestConfig, read_digest
from payherald.exceptions import ConfigurationError
from payherald.fraud import FraudSettings, read_fraud
from payherald.quiet_hours import QuietHours, parse_clock_time
from payherald.recipients import email_address_problem, normalise_phone
from payherald.renewals import RenewalSettings, read_renewals
from payherald.rules import Rule, RuleBook, Team
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
    "fraud",
}
_QUIET_HOURS_KEYS = {"send_from", "send_until", "enabled"}
_TEAM_KEYS = {"sms", "email", "slack_webhook", "timezone"}


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
    fraud: FraudSettings = field(default_factory=FraudSettings)
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


class _Reader(RuleReading):
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
            fraud=read_fraud(data.get("fraud", {}), self.problem),
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
