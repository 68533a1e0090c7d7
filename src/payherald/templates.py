"""What a message says: templates and conditions, compiled and rendered in a sandbox.

Templates and conditions are Jinja2 in a bounded sandbox (``sandbox``) with
``StrictUndefined``: the sandbox keeps them away from Python internals and bounds their time
and size, and a misspelt variable is an error, never an empty gap in a customer's message.
What a template prints from the variables (``variables``) is data: cleaned, cut, and
escaped for the channel's markup (``sandbox``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.dates import format_date, format_datetime
from jinja2 import ChainableUndefined, StrictUndefined, TemplateError, meta, pass_context
from jinja2.runtime import Context

from payherald.exceptions import RenderError
from payherald.money import format_money
from payherald.sandbox import BoundedSandbox
from payherald.stripe_objects import as_int
from payherald.variables import CONDITION_VARIABLES, MESSAGE_VARIABLES

__all__ = ["TemplateRenderer"]

# The filters templates have beside Jinja's own.
_PAYHERALD_FILTERS = ("money", "date", "datetime")


def _not_compiled(what: str, exc: TemplateError, *, filters: tuple[str, ...] = ()) -> RenderError:
    """Jinja's complaint about a template or condition as one sentence: its message,
    without the source location that ``str()`` appends on a line of its own."""
    message = " ".join((exc.message or type(exc).__name__).split()).rstrip(".")
    if filters and message.startswith("No filter named"):
        message += f"; beside Jinja's own filters there are {', '.join(filters)}"
    return RenderError(f"The {what} does not compile: {message}.")


class TemplateRenderer:
    """Compiles and renders templates and conditions in one sandbox."""

    def __init__(self, *, locale: str = "en_US") -> None:
        self._locale = locale
        self._env = BoundedSandbox(
            undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False
        )
        self._env.add_filters(
            dict(zip(_PAYHERALD_FILTERS, (self._money, self._date, self._datetime), strict=True))
        )
        # Conditions test for fields that an event may not have (`metadata.tier == 'gold'`):
        # there, a missing field is simply undefined, and false. Unknown top-level names
        # are still refused when the condition is compiled.
        self._conditions = BoundedSandbox(undefined=ChainableUndefined)
        # The rules' templates are few and rendered for every message: compile each once.
        self._compiled = functools.lru_cache(maxsize=512)(self._env.from_string)
        # The composer asks which variables a rule's texts use, for every message.
        self._variables = functools.lru_cache(maxsize=512)(self._parse_variables)

    def _money(self, amount: Any, currency: Any) -> str:
        if isinstance(amount, bool) or not isinstance(amount, int):
            raise RenderError(
                f"The event has no amount in Stripe's integer form (got {amount!r}), so the "
                "message would state a wrong amount."
            )
        return format_money(amount, str(currency), self._locale)

    def _when(self, context: Context, value: Any) -> datetime:
        if as_int(value) is None:
            raise RenderError(f"Expected a Unix timestamp for a date, got {value!r}.")
        try:
            zone = ZoneInfo(str(context.get("timezone") or "UTC"))
        except (ZoneInfoNotFoundError, ValueError):
            zone = ZoneInfo("UTC")
        return datetime.fromtimestamp(value, UTC).astimezone(zone)

    @pass_context
    def _date(self, context: Context, value: Any) -> str:
        """A date in the recipient's time zone: ``Nov 29, 2026``."""
        return str(format_date(self._when(context, value), format="medium", locale=self._locale))

    @pass_context
    def _datetime(self, context: Context, value: Any) -> str:
        """A date and time in the recipient's time zone, with the zone."""
        when = self._when(context, value)
        return (
            str(format_datetime(when, format="medium", tzinfo=when.tzinfo, locale=self._locale))
            + f" {when.tzname()}"
        )

    def variables(self, template: str) -> frozenset[str]:
        """The variables ``template`` uses (it must compile)."""
        return self._variables(template)

    def _parse_variables(self, template: str) -> frozenset[str]:
        try:
            return frozenset(meta.find_undeclared_variables(self._env.parse(template)))
        except TemplateError as exc:
            raise _not_compiled("template", exc, filters=_PAYHERALD_FILTERS) from exc

    def check(self, template: str, *, extra: frozenset[str] = frozenset()) -> None:
        """Raise RenderError if ``template`` does not compile or uses an unknown variable
        (neither a message's nor one of ``extra``); a template that passes is compiled now,
        not in the first message."""
        known = MESSAGE_VARIABLES | extra
        unknown = self.variables(template) - known
        if unknown:
            raise RenderError(
                f"The template uses {', '.join(sorted(unknown))}, which payherald does not "
                f"provide; it can use {', '.join(sorted(known - {'object'}))}."
            )
        self._compiled(template)

    def warm_up(self) -> None:
        """Load the locale's data now: Babel reads and merges it on first use, about 0.1 s
        that the first messages after a start would otherwise wait."""
        format_money(100, "usd", self._locale)
        format_date(datetime.now(UTC), format="medium", locale=self._locale)

    def compile_condition(self, expression: str) -> tuple[Callable[..., Any], frozenset[str]]:
        """A condition as a callable of the variables, and the names it uses."""
        try:
            names = frozenset(
                meta.find_undeclared_variables(self._env.parse("{{ (" + expression + ") }}"))
            )
            expression_of = self._conditions.compile_expression(expression)
        except TemplateError as exc:
            raise _not_compiled("condition", exc) from exc

        def compiled(**variables: Any) -> Any:
            return self._conditions.bounded(expression_of, **variables)

        unknown = names - CONDITION_VARIABLES
        if unknown:
            raise RenderError(
                f"The condition uses {', '.join(sorted(unknown))}, which payherald does not "
                "provide."
            )
        return compiled, names

    def render(
        self,
        template: str,
        variables: Mapping[str, Any],
        *,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        """Render ``template``; runs of white space collapse, so that a template can be
        written over several lines and still yield one SMS. ``escape`` is the channel's
        markup escape (Slack's), applied to what the template prints from the variables.
        Raises RenderError, also for a template that overruns the sandbox's bounds."""
        compiled = self._compiled(template)
        try:
            text = self._env.render(compiled, variables, escape=escape)
        except RenderError:
            raise
        except TemplateError as exc:
            raise RenderError(f"The message could not be rendered: {exc}") from exc
        except (ArithmeticError, LookupError, TypeError, ValueError, RecursionError) as exc:
            # Operator text went wrong in plain Python terms: 1/0, range(10**9), an int
            # of a word. The template is at fault, never the event.
            raise RenderError(f"The message could not be rendered: {exc}") from exc
        return " ".join(text.split())
