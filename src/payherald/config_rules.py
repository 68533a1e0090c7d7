"""The rules file's ``[rules.NAME]`` tables and its ``[dunning]`` table: each rule read,
checked and laid over the built-in one of its name (``RuleReading``, a part of the reader in
``config``), every mistake reported with its line."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from payherald.builtin_rules import BUILTIN_RULES
from payherald.clock import parse_duration
from payherald.dunning import DUNNING
from payherald.event_types import STRIPE_EVENT_TYPES
from payherald.exceptions import RenderError
from payherald.rules import CHANNELS, Rule, Team, step_problems
from payherald.subjects import SUBJECTS
from payherald.templates import TemplateRenderer

__all__ = ["RuleReading"]

# A rule's true-or-false settings.
_FLAGS = (
    "first_payment_only",
    "not_for_invoices",
    "unless_paid",
    "quiet_hours_exempt",
    "allow_metadata_links",
    "enabled",
)
_RULE_KEYS = {
    *_FLAGS,
    "events",
    "to",
    "channels",
    "template",
    "when",
    "fallback",
    "subject",
    "description",
    "sequence",
    "after",
}
_BUILTINS = {rule.name: rule for rule in BUILTIN_RULES}


class RuleReading:
    """The reading of rules, for the rules file's reader, which provides ``problem``,
    ``_table``, ``_strings`` and ``renderer``."""

    renderer: TemplateRenderer
    problems: list[str]

    def problem(self, where: tuple[str, ...], key: str | None, sentence: str) -> None:
        raise NotImplementedError

    def _table(self, where: tuple[str, ...], key: str, value: Any) -> dict[str, Any]:
        raise NotImplementedError

    def _strings(self, where: tuple[str, ...], key: str, value: Any) -> list[str]:
        raise NotImplementedError

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
        for key in _FLAGS:
            if key in table:
                if not isinstance(table[key], bool):
                    self.problem(where, key, "must be true or false.")
                values[key] = bool(table[key])
        if "sequence" in table:
            values["sequence"] = table["sequence"]
        if "after" in table:
            after = self._after(where, table["after"])
            if after is not None:
                values["after"] = after
        if len(self.problems) > problems_before:
            return None
        rule = Rule(name=name, **values) if base is None else dataclasses.replace(base, **values)
        for setting, sentence in step_problems(rule) if rule.sequence is not None else ():
            # A built-in step's events are named by sequence when the file changed only it.
            key = "sequence" if setting == "events" and "events" not in table else setting
            self.problem(where, key, sentence)
        return None if len(self.problems) > problems_before else rule
