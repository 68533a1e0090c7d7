"""The daily digest without a database: when it falls due and which day it covers (local
midnights, daylight-saving days included), its section of the rules file, and its texts."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from payherald.config import Config
from payherald.config_check import render_samples
from payherald.digest import (
    DIGEST_RULE,
    day_bounds,
    digest_event,
    digest_variables,
    due_before,
    next_due,
)
from payherald.digest_config import DigestConfig
from payherald.rules import RuleBook, Team
from payherald.store.digest import DigestFigures, Tally
from payherald.templates import TemplateRenderer
from payherald.webhook import parse_event
from tests.unit.test_config import load, problem

NEW_YORK = ZoneInfo("America/New_York")
EIGHT = time(8, 0)
TEAM = '[teams.finance]\nsms = ["+14155550100"]\nemail = ["finance@example.com"]\n'


def hours(bounds: tuple[datetime, datetime]) -> float:
    return (bounds[1] - bounds[0]).total_seconds() / 3600


def test_a_day_runs_from_local_midnight_to_the_next() -> None:
    since, until = day_bounds(date(2026, 12, 2), NEW_YORK)
    assert (since, until) == (
        datetime(2026, 12, 2, 5, tzinfo=UTC),
        datetime(2026, 12, 3, 5, tzinfo=UTC),
    )


def test_daylight_saving_days_have_23_and_25_hours() -> None:
    assert hours(day_bounds(date(2026, 3, 8), NEW_YORK)) == 23
    assert hours(day_bounds(date(2026, 11, 1), NEW_YORK)) == 25
    assert hours(day_bounds(date(2026, 11, 2), NEW_YORK)) == 24


def test_the_digest_falls_due_at_its_local_time_every_day() -> None:
    before = datetime(2026, 12, 3, 12, 59, tzinfo=UTC)  # 07:59 in New York
    assert next_due(before, EIGHT, NEW_YORK) == datetime(2026, 12, 3, 13, tzinfo=UTC)
    assert due_before(before, EIGHT, NEW_YORK) == datetime(2026, 12, 2, 13, tzinfo=UTC)
    at = datetime(2026, 12, 3, 13, tzinfo=UTC)
    assert due_before(at, EIGHT, NEW_YORK) == at
    assert next_due(at, EIGHT, NEW_YORK) == datetime(2026, 12, 4, 13, tzinfo=UTC)


def test_the_local_time_holds_across_a_clock_change() -> None:
    # 08:00 EDT on Saturday, then 08:00 EST on Monday: 24 and 25 hours apart.
    saturday = datetime(2026, 10, 31, 12, tzinfo=UTC)
    sunday = next_due(saturday, EIGHT, NEW_YORK)
    assert sunday == datetime(2026, 11, 1, 13, tzinfo=UTC)
    assert next_due(sunday, EIGHT, NEW_YORK) == datetime(2026, 11, 2, 13, tzinfo=UTC)


def test_without_a_digest_section_there_is_no_digest(tmp_path: Path) -> None:
    config = load(tmp_path, TEAM)
    assert config.digest is None
    assert DIGEST_RULE not in {rule.name for rule in config.rules}


def test_a_digest_without_its_team_is_quietly_none(tmp_path: Path) -> None:
    assert load(tmp_path, '[digest]\nat = "07:30"\n').digest is None


def test_a_digest_turned_off_is_none(tmp_path: Path) -> None:
    assert load(tmp_path, TEAM + "[digest]\nenabled = false\n").digest is None


def test_the_digest_section_read(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        TEAM + '[digest]\nat = "07:30"\ntimezone = "Europe/Paris"\nchannels = ["sms"]\n',
    )
    assert config.digest is not None
    assert (config.digest.team, config.digest.at, config.digest.timezone) == (
        "finance",
        time(7, 30),
        "Europe/Paris",
    )
    rule = {rule.name: rule for rule in config.rules}[DIGEST_RULE]
    assert (rule.to, rule.channels, rule.events) == ("team:finance", ("sms",), frozenset())


def test_the_endpoint_is_asked_for_what_the_digest_counts_and_nothing_else(
    tmp_path: Path,
) -> None:
    without = load(tmp_path, TEAM).rule_book(TemplateRenderer()).event_types
    book = load(tmp_path, TEAM + "[digest]\n").rule_book(TemplateRenderer())
    assert set(book.event_types) - set(without) == {"customer.subscription.created"}
    # The payment events the figures count, even when no rule tells them.
    quiet = "".join(
        f"[rules.{name}]\nenabled = false\n"
        for name in ("payment_confirmation", "welcome", "high_value_alert")
    )
    book = load(tmp_path, TEAM + quiet + "[digest]\n").rule_book(TemplateRenderer())
    assert {"charge.succeeded", "invoice.paid", "invoice_payment.paid"} <= set(book.event_types)


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ('at = "8am"', "digest.at: '8am' is not a time of day"),
        ('to = "team:sales"', "digest.to: no team 'sales' is defined; add [teams.sales]"),
        ('to = "finance"', 'digest.to: must be a team, "team:NAME"'),
        ('timezone = "Mars/Olympus"', "digest.timezone: 'Mars/Olympus' is not a time zone"),
        ('channels = ["pager"]', "digest.channels: must list channels among sms"),
        ("enabled = 1", "digest.enabled: must be true or false"),
        ('tempalte = "x"', "digest.tempalte: unknown digest setting"),
        ('template = "{{ payment }}"', "digest.template: The template uses payment, which"),
    ],
)
def test_a_bad_digest_value_is_refused_with_its_line(
    tmp_path: Path, section: str, says: str
) -> None:
    message = problem(tmp_path, TEAM + "[digest]\n" + section)
    assert f"payherald.toml:5: {says}" in message  # the section's line


FIGURES = DigestFigures(
    payments=Tally({"usd": 3, "eur": 1}, {"usd": 7500, "eur": 1500}),
    refunds=Tally({"usd": 1}, {"usd": 700}),
    dunning_open=Tally({"usd": 2}, {"usd": 4000}),
    recovered=Tally({"usd": 1}, {"usd": 2000}),
    new_subscriptions=2,
)


def test_the_figures_survive_the_event_they_are_recorded_in() -> None:
    event = digest_event(
        team="finance",
        day=date(2026, 12, 2),
        zone="America/New_York",
        figures=FIGURES,
        now=datetime(2026, 12, 3, 13, tzinfo=UTC),
    )
    stored = parse_event(json.dumps(event.payload).encode())
    assert stored.id == "evt_digest_20261202_finance"
    assert DigestFigures.from_json(stored.object["figures"]) == FIGURES


def render(channel: str) -> str:
    config = Config(teams={"finance": Team("finance", sms=("+14155550100",))})
    rule = DigestConfig().rule()
    book = RuleBook((*config.rules, rule), renderer=TemplateRenderer(), teams=config.teams)
    event = digest_event(
        team="finance",
        day=date(2026, 12, 2),
        zone="America/New_York",
        figures=FIGURES,
        now=datetime(2026, 12, 3, 13, tzinfo=UTC),
    )
    variables = {"business": "", **digest_variables(event, channel, locale="en_US")}
    return book.renderer.render(rule.template, variables)


def test_a_text_gets_the_short_digest_and_email_the_full_one() -> None:
    assert render("sms") == (
        "Dec 2: 4 paid €15.00, $75.00, 0 failed, 1 refunded $7.00, 0 disputed; subs +2 -0; "
        "dunning 2 open $40.00, $20.00 recovered"
    )
    assert render("email").startswith(
        "Daily digest for Dec 2, 2026 (America/New_York, live mode). Payments: 4 (€15.00, $75.00)."
    )
    assert "Dunning: 2 open at the end of the day ($40.00 due); 1 recovered ($20.00)" in render(
        "slack"
    )


def test_other_events_get_no_digest_variables() -> None:
    event = parse_event(
        json.dumps(
            {
                "id": "evt_1",
                "type": "payment_intent.succeeded",
                "livemode": True,
                "data": {"object": {"object": "payment_intent"}},
            }
        ).encode()
    )
    assert digest_variables(event, "sms", locale="en_US") == {}


def test_config_check_shows_the_digest_text_and_its_cost(tmp_path: Path) -> None:
    path = tmp_path / "payherald.toml"
    path.write_text(TEAM + "[digest]\n")
    lines, warnings = render_samples(path, required=True)
    (digest,) = [line for line in lines if line.startswith(DIGEST_RULE)]
    head, text, cost = digest.split("\n")
    assert head == "daily_digest (every day -> team:finance, slack > email > sms)"
    assert ": 45 paid €450.00, $12,345.00, 2 failed" in text
    assert cost.strip().endswith("1 segment]")
    assert not [warning for warning in warnings if DIGEST_RULE in warning]
