"""Operator text cannot hang the service: a runaway template or condition is refused at
render within its budget, and the sandbox still holds against escapes."""

from __future__ import annotations

import time

import pytest

from payherald import RenderError
from payherald.channels.slack import escape_mrkdwn
from payherald.sandbox import MAX_VALUE, clean_value
from payherald.templates import TemplateRenderer

RENDERER = TemplateRenderer()

RUNAWAYS = {
    "huge range": "{% for i in range(10**9) %}x{% endfor %}",
    "nested loops": "{% for i in range(5000) %}{% for j in range(5000) %}{% endfor %}{% endfor %}",
    "string times a billion": "{{ 'x' * 10**9 }}",
    "list times a billion": "{{ [1] * 10**9 }}",
    "a power of a thousand digits": "{{ 2 ** 100000 }}",
    "a padded method": "{{ 'x'.ljust(10**9) }}",
    "a wide %-format": "{{ '%0999999999d' % 1 }}",
    "a wide format": "{{ '{:>999999999}'.format(1) }}",
    "a wide center": "{{ 'x' | center(999999999) }}",
    "replace into itself": "{% set s = 'x' * 9000 %}{{ s | replace('x', s) }}",
    "concatenation doubling": "{% set s = 'x' * 5000 %}{% set s = s ~ s ~ s %}{{ s }}",
    "a long join": "{{ range(9000) | join('xxxxxxxxxx') }}",
    "an exponential macro": "{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}"
    "{% endmacro %}{{ f(40) }}",
    "a long output": "{% for i in range(9999) %}{{ i }}{% endfor %}",
}


@pytest.mark.parametrize("template", RUNAWAYS.values(), ids=RUNAWAYS.keys())
def test_a_runaway_template_is_refused_quickly_at_render(template: str) -> None:
    RENDERER.check(template)
    started = time.monotonic()
    with pytest.raises(RenderError, match="payherald stops it there"):
        RENDERER.render(template, {})
    assert time.monotonic() - started < 1


def test_a_runaway_condition_is_refused_quickly() -> None:
    condition, _ = RENDERER.compile_condition("('x' * 10**9) != ''")
    with pytest.raises(RenderError, match="payherald stops it there"):
        condition()


def test_ordinary_templates_are_untouched_by_the_bounds() -> None:
    template = (
        "{% for line in lines %}{{ loop.index }}. {{ line | upper }} {% endfor %}"
        "{{ '%05d' % 42 }} {{ 'a' ~ 'b' }} {{ [1, 2] | join('+') }} {{ 3 * 4 }} {{ 2 ** 10 }}"
    )
    assert RENDERER.render(template, {"lines": ["tea", "cake"]}) == (
        "1. TEA 2. CAKE 00042 ab 1+2 12 1024"
    )


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ (1).__class__.__subclasses__() }}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum(n=10**6) }}",
    ],
)
def test_the_sandbox_still_holds(template: str) -> None:
    with pytest.raises(RenderError):
        RENDERER.render(template, {})


def test_a_printed_value_is_cleaned_and_cut_but_the_template_text_is_kept() -> None:
    name = "Ada\u202e\u2066\u200e\u061c Lovelace\x00\x1b\x9b" + "z" * 1000
    text = RENDERER.render("<b>{{ name }}</b>", {"name": name}, escape=escape_mrkdwn)
    assert text.startswith("<b>Ada Lovelace")
    assert text.endswith("…</b>")
    assert len(text) == len("<b></b>") + MAX_VALUE
    assert clean_value("one\ntwo\tthree") == "one two three"


def test_slack_escaping_applies_to_printed_values_only() -> None:
    text = RENDERER.render(
        "<https://dashboard.stripe.com|Open> {{ name }} {{ '<!here>' }}",
        {"name": "<!channel> & <https://evil.example|Approve>"},
        escape=escape_mrkdwn,
    )
    assert text == (
        "<https://dashboard.stripe.com|Open> &lt;!channel&gt; &amp; "
        "&lt;https://evil.example|Approve&gt; &lt;!here&gt;"
    )
