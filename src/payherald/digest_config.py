"""The rules file's ``[digest]`` section: the daily digest to a team (see ``digest``)::

    [digest]
    at = "08:00"              # local time; the digest covers the day before
    to = "team:finance"       # a team of [teams.NAME]
    timezone = "Europe/Paris" # else the file's timezone, else PAYHERALD_TIMEZONE
    channels = ["slack", "email", "sms"]
    template = "..."          # email and Slack
    sms_template = "..."      # SMS, WhatsApp and calls
    enabled = true

Without the section there is no digest; with it, and without its team (the default one,
``finance``, not defined), there is none either, quietly. A team named in ``to`` that is
not defined, and any value that is wrong, is a problem on its line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from payherald.digest import (
    DIGEST_RULE,
    DIGEST_VARIABLES,
    FULL_TEMPLATE,
    SHORT_TEMPLATE,
    rule_template,
)
from payherald.exceptions import RenderError
from payherald.quiet_hours import parse_clock_time
from payherald.rules import CHANNELS, Rule, Team
from payherald.store.digest import FIGURE_EVENTS
from payherald.templates import TemplateRenderer

__all__ = ["DigestConfig", "read_digest"]

_KEYS = {"at", "to", "timezone", "channels", "template", "sms_template", "enabled"}
_WHERE = ("digest",)
# The reader's way to report a problem: (where, key, sentence).
Problem = Callable[[tuple[str, ...], str | None, str], None]


@dataclass(frozen=True)
class DigestConfig:
    team: str = "finance"
    at: time = time(8, 0)
    timezone: str | None = None  # the section's own; the file's and the settings' come after
    channels: tuple[str, ...] = ("slack", "email", "sms")
    template: str = FULL_TEMPLATE
    sms_template: str = SHORT_TEMPLATE

    def rule(self) -> Rule:
        """The rule its messages are sent by: of no Stripe event (the job plans it)."""
        return Rule(
            name=DIGEST_RULE,
            description="Team: the previous day's figures, every day.",
            events=frozenset(),
            template=rule_template(self.template, self.sms_template),
            to=f"team:{self.team}",
            channels=self.channels,
            variables=DIGEST_VARIABLES,
            reads=FIGURE_EVENTS,
        )


def read_digest(value: Any, *, teams: Mapping[str, Team], problem: Problem) -> DigestConfig | None:
    """The ``[digest]`` table ``value`` (None: absent), or None when no digest is to be
    sent; each mistake is told to ``problem``."""
    if value is None:
        return None
    if not isinstance(value, dict):
        problem((), "digest", "must be a table.")
        return None
    for key in sorted(value.keys() - _KEYS):
        problem(
            _WHERE, key, "unknown digest setting; it can have " + ", ".join(sorted(_KEYS)) + "."
        )
    values: dict[str, Any] = {}
    enabled = value.get("enabled", True)
    if not isinstance(enabled, bool):
        problem(_WHERE, "enabled", "must be true or false.")
    if "at" in value:
        try:
            values["at"] = parse_clock_time(value["at"])
        except ValueError as exc:
            problem(_WHERE, "at", str(exc))
    team = "finance"
    if "to" in value:
        to = value["to"]
        if not isinstance(to, str) or not to.startswith("team:") or not to[5:]:
            problem(_WHERE, "to", 'must be a team, "team:NAME", like "team:finance".')
        elif to[5:] not in teams:
            problem(
                _WHERE,
                "to",
                f"no team {to[5:]!r} is defined; add [teams.{to[5:]}] with its sms, email "
                "or slack_webhook.",
            )
        else:
            team = to[5:]
    if "timezone" in value:
        try:
            ZoneInfo(str(value["timezone"]))
            values["timezone"] = str(value["timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            problem(
                _WHERE,
                "timezone",
                f'{value["timezone"]!r} is not a time zone; use a name like "Europe/Paris".',
            )
    if "channels" in value:
        channels = value["channels"]
        if (
            not isinstance(channels, list)
            or not channels
            or not all(isinstance(c, str) and c in CHANNELS for c in channels)
        ):
            problem(_WHERE, "channels", "must list channels among " + ", ".join(CHANNELS) + ".")
        else:
            values["channels"] = tuple(channels)
    renderer = TemplateRenderer()
    for key in ("template", "sms_template"):
        if key not in value:
            continue
        if not isinstance(value[key], str):
            problem(_WHERE, key, "must be a string.")
            continue
        try:
            renderer.check(value[key], extra=DIGEST_VARIABLES)
        except RenderError as exc:
            problem(_WHERE, key, exc.message)
            continue
        values[key] = value[key]
    if enabled is not True or team not in teams:
        return None
    return DigestConfig(team=team, **values)
