"""The rules file: every mistake named with its line and what to fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from payherald import ConfigurationError
from payherald.config import Config, load_config


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "payherald.toml"
    path.write_text(text)
    return load_config(path)


def problem(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load(tmp_path, text)
    return caught.value.message


def test_no_file_means_the_built_in_rules(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.toml")
    assert "payment_confirmation" in {rule.name for rule in config.rules}


def test_a_named_file_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="no such file"):
        load_config(tmp_path / "absent.toml", required=True)


def test_a_built_in_rule_can_be_changed_and_another_turned_off(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[rules.payment_confirmation]
template = "Thanks! {{ amount | money(currency) }}"

[rules.welcome]
enabled = false
""",
    )
    rules = {rule.name: rule for rule in config.rules}
    assert rules["payment_confirmation"].template == "Thanks! {{ amount | money(currency) }}"
    assert "invoice.paid" in rules["payment_confirmation"].events  # the rest is kept
    assert rules["welcome"].enabled is False


def test_a_new_rule_with_a_team(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[teams.sales]
sms = ["+1 415 555 0100"]

[rules.vip]
events = ["payment_intent.succeeded"]
when = "'vip' in tags and amount >= 50000"
to = "team:sales"
channels = ["sms"]
template = "VIP {{ customer_name }} paid {{ amount | money(currency) }}"
""",
    )
    assert config.teams["sales"].sms == ("+14155550100",)


def test_toml_syntax_errors_name_the_line(tmp_path: Path) -> None:
    assert "line 2" in problem(tmp_path, '[rules.x]\ntemplate = "unclosed\n')


def test_an_unknown_setting_names_its_line(tmp_path: Path) -> None:
    message = problem(tmp_path, 'timezone = "UTC"\ncolour = "blue"\n')
    assert message.startswith(f"{tmp_path / 'payherald.toml'}:2: colour: unknown setting")


def test_an_unknown_rule_key_suggests_the_right_one(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.payment_confirmation]\n\ntempalte = "Hi"\n')
    assert (
        ":3: rules.payment_confirmation.tempalte: unknown rule setting (did you mean "
        "'template'?)" in message
    )


def test_a_bad_condition_names_its_line(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.payment_confirmation]\nwhen = "amount >>> 5"\n')
    assert ":2: rules.payment_confirmation.when: The condition does not compile" in message


def test_a_condition_on_an_unknown_variable(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.payment_confirmation]\nwhen = "amont > 5"\n')
    assert "The condition uses amont, which payherald does not provide" in message


def test_an_undefined_template_variable_names_its_line(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.payment_confirmation]\n\n\ntemplate = "{{ amout }}"\n')
    assert (
        ":4: rules.payment_confirmation.template: The template uses amout, which "
        "payherald does not provide" in message
    )


def test_an_unknown_event_type_suggests_the_right_one(tmp_path: Path) -> None:
    message = problem(
        tmp_path, '[rules.x]\nevents = ["payment_intent.succeded"]\ntemplate = "Hi"\n'
    )
    assert (
        ":2: rules.x.events: 'payment_intent.succeded' is not a Stripe event type "
        "(did you mean 'payment_intent.succeeded'?)" in message
    )


def test_a_rule_for_an_undefined_team(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.dispute_alert]\nto = "team:legal"\n')
    assert "no team 'legal' is defined; add [teams.legal]" in message


def test_an_unknown_channel(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.welcome]\nchannels = ["pigeon"]\n')
    assert "'pigeon' is not a channel" in message


def test_a_new_rule_needs_events_and_a_template(tmp_path: Path) -> None:
    message = problem(tmp_path, '[rules.mine]\nto = "customer"\n')
    assert ":1: rules.mine: a new rule needs 'events'" in message
    assert "a new rule needs 'template'" in message


def test_bad_team_entries(tmp_path: Path) -> None:
    message = problem(tmp_path, '[teams.finance]\nsms = ["call me"]\nslack_webhook = "x"\n')
    assert ":2: teams.finance.sms: 'call me' is not a phone number" in message
    assert ":3: teams.finance.slack_webhook: must be a Slack incoming webhook URL" in message


def test_every_mistake_is_reported_at_once(tmp_path: Path) -> None:
    message = problem(tmp_path, 'colour = 1\n[rules.welcome]\nchannels = ["pigeon"]\n')
    assert len(message.splitlines()) == 2


def test_a_bad_threshold(tmp_path: Path) -> None:
    message = problem(tmp_path, '[high_value]\nusd = "lots"\n')
    assert ":2: high_value.usd: must be a whole amount" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("[rules]\nwelcome.chanels = ['sms']\n", 2),  # a dotted key under [rules]
        ("[rules.'my rule']\nevents = ['nope.nope']\ntemplate = 'x'\n", 2),  # quoted name
        (
            '[rules.payment_confirmation]\ntemplate = """\n[not a table]\n"""\n\n'
            'when = "a >>> b"\n',
            6,
        ),  # a multi-line string with a line starting with [
    ],
)
def test_line_numbers_in_other_layouts(tmp_path: Path, text: str, line: int) -> None:
    assert f"payherald.toml:{line}:" in problem(tmp_path, text)


@pytest.mark.parametrize("value", ['["payment"]', "{ kind = 1 }", "5"])
def test_a_subject_that_is_not_a_name_is_an_error_not_a_crash(tmp_path: Path, value: str) -> None:
    assert "subject: must be one of" in problem(tmp_path, f"[rules.welcome]\nsubject = {value}\n")


@pytest.mark.parametrize(
    "text",
    [
        "rules = 5\n",
        "[rules.x]\nevents = 'a'\ntemplate = 'x'\n",
        "[rules.welcome]\nchannels = []\n",
        "[rules.welcome]\nenabled = 'yes'\n",
        "teams = []\n",
    ],
)
def test_odd_values_are_errors_not_crashes(tmp_path: Path, text: str) -> None:
    assert problem(tmp_path, text)


def test_a_rule_may_let_metadata_links_replace_the_configured_one(tmp_path: Path) -> None:
    config = load(tmp_path, "[rules.payment_failed]\nallow_metadata_links = true\n")
    rules = {rule.name: rule for rule in config.rules}
    assert rules["payment_failed"].allow_metadata_links
    assert not rules["invoice_payment_failed"].allow_metadata_links
    message = problem(tmp_path, '[rules.payment_failed]\nallow_metadata_links = "yes"\n')
    assert ":2: rules.payment_failed.allow_metadata_links: must be true or false." in message


def test_a_team_email_must_be_exactly_one_address(tmp_path: Path) -> None:
    message = problem(tmp_path, '[teams.finance]\nemail = ["a@x.example, b@evil.example"]\n')
    assert (
        ":2: teams.finance.email: 'a@x.example, b@evil.example' names more than one email "
        "address." in message
    )


def test_a_dunning_step_is_changed_and_one_added(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
[rules.dunning_reminder]
after = "2d"

[rules.dunning_final]
channels = ["voice", "sms"]

[rules.dunning_second_reminder]
events = ["invoice.payment_failed"]
sequence = "dunning"
after = "5d"
template = "Still due: {{ amount | money(currency) }}"
""",
    )
    rules = {rule.name: rule for rule in config.rules}
    assert rules["dunning_reminder"].after == 2 * 86400
    assert rules["dunning_final"].channels == ("voice", "sms")
    assert rules["dunning_final"].after == 7 * 86400  # the rest is kept
    added = rules["dunning_second_reminder"]
    assert (added.sequence, added.after) == ("dunning", 5 * 86400)


@pytest.mark.parametrize("after", ['"-3d"', "-60", '"soon"', "true"])
def test_a_dunning_step_with_a_delay_that_is_not_one_is_refused_with_its_line(
    tmp_path: Path, after: str
) -> None:
    text = f"\n[rules.dunning_reminder]\nafter = {after}\n"
    message = problem(tmp_path, text)
    assert ":3: rules.dunning_reminder.after:" in message
    assert 'use a duration like "3d"' in message


def test_a_sequence_that_does_not_exist_is_refused_with_its_line(tmp_path: Path) -> None:
    message = problem(tmp_path, '\n[rules.dunning_final]\nsequence = "recovery"\n')
    assert ':3: rules.dunning_final.sequence: the only sequence is "dunning".' in message


def test_a_dunning_step_with_an_unknown_variable_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    message = problem(tmp_path, '\n[rules.dunning_final]\ntemplate = "Pay {{ amount_owed }} now"\n')
    assert ":3: rules.dunning_final.template:" in message
    assert "amount_owed" in message


def test_a_dunning_step_started_by_another_event_is_refused_with_its_line(
    tmp_path: Path,
) -> None:
    message = problem(tmp_path, '\n[rules.dunning_final]\nevents = ["invoice.paid"]\n')
    assert (
        ":3: rules.dunning_final.events: a dunning step is started by invoice.payment_failed "
        'alone; set events = ["invoice.payment_failed"].'
    ) in message


def test_a_dunning_step_for_a_team_is_refused_with_its_line(tmp_path: Path) -> None:
    text = (
        '\n[teams.finance]\nsms = ["+14155550100"]\n\n[rules.dunning_final]\nto = "team:finance"\n'
    )
    message = problem(tmp_path, text)
    assert (
        ':6: rules.dunning_final.to: a dunning step is for the customer; set to = "customer".'
        in message
    )


def test_every_dunning_step_turned_off_is_refused_unless_dunning_is_off(tmp_path: Path) -> None:
    steps = ("invoice_payment_failed", "dunning_reminder", "dunning_final")
    text = "".join(f"\n[rules.{name}]\nenabled = false\n" for name in steps)
    message = problem(tmp_path, text)
    assert ":9: rules.dunning_final.enabled: every dunning step is off" in message
    assert "[dunning] enabled = false" in message
    config = load(tmp_path, "[dunning]\nenabled = false\n")
    assert not any(rule.enabled for rule in config.rules if rule.sequence)
    assert any(rule.enabled for rule in config.rules)
    assert ":1: dunning.enabled: must be true or false." in problem(
        tmp_path, 'dunning = {enabled = "no"}'
    )
