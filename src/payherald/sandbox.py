"""The sandbox that templates and conditions run in: Jinja's, bounded in time and size.

Jinja's ``SandboxedEnvironment`` keeps a template away from Python's internals, but not
from running for hours or building a gigabyte: ``{% for i in range(10**5) %}`` nested
twice, or ``{{ 'x' * 10**9 }}``. So each render has a budget, and a template that
overruns it is refused with a RenderError instead of holding up the worker:

- ``MAX_STEPS`` loop iterations, calls and filters in one render;
- ``MAX_SIZE`` characters (or items) in any value a template builds, checked before the
  operations that multiply a size (``*``, ``**``, widths, ``replace``, ``join``);
- ``MAX_OUTPUT`` characters of message.

What a ``{{ ... }}`` prints is data, never markup: control and bidirectional characters
are dropped (they can hide or reorder text in an alert), it is cut at ``MAX_VALUE``
characters, and for a channel with markup (Slack) it is escaped by ``escape``. The
template's own text is left as written, so an operator's ``<https://...|Open in Stripe>``
stays a link.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes, pass_context
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment, safe_range
from jinja2.visitor import NodeTransformer

from payherald.exceptions import RenderError
from payherald.terminal import CONTROL_CHARACTERS

__all__ = [
    "MAX_OUTPUT",
    "MAX_SIZE",
    "MAX_STEPS",
    "MAX_VALUE",
    "BoundedSandbox",
    "clean_value",
]

MAX_STEPS = 10_000
MAX_SIZE = 10_000
MAX_OUTPUT = 10_000
MAX_VALUE = 300  # a name, a description, a link: Stripe's hosted invoice links are ~170

_INT_BITS = 4_096  # a number a template computes: far beyond any amount
_LOOP = "_payherald_loop"
_SIZED = "_payherald_sized"

# Dropped from printed values: the characters that control a terminal or the direction of
# text (terminal.CONTROL_CHARACTERS). White space among them becomes a space.
_SPACES = "\t\n\v\f\r\x85\u2028\u2029"
_CLEAN = str.maketrans({c: (" " if c in _SPACES else None) for c in CONTROL_CHARACTERS})
# The widths and precisions of %-formats and str.format specs.
_WIDTHS = re.compile(r"%[-+ #0]*(\d*)(?:\.(\d+))?|\{[^{}]*?:[^{}\d]*(\d+)(?:[,_]?\.(\d+))?")


def clean_value(value: Any) -> str:
    """``value`` as printed text: controls and bidi characters dropped, cut at
    ``MAX_VALUE`` characters."""
    text = str(value).translate(_CLEAN)
    return text if len(text) <= MAX_VALUE else text[: MAX_VALUE - 1] + "…"


@dataclass(slots=True)
class _Render:
    escape: Callable[[str], str] | None
    steps: int = 0


_current: contextvars.ContextVar[_Render | None] = contextvars.ContextVar(
    "payherald_render", default=None
)


def _too_costly(what: str) -> RenderError:
    return RenderError(f"The template {what}; payherald stops it there. Simplify the template.")


def _step() -> None:
    state = _current.get()
    if state is None:
        return  # compiling: nothing runs yet
    state.steps += 1
    if state.steps > MAX_STEPS:
        raise _too_costly(f"takes more than {MAX_STEPS:,} loop iterations and calls")


def _sized(value: Any) -> Any:
    """``value``, if it is within ``MAX_SIZE``."""
    if isinstance(value, str | bytes | list | tuple | dict | set | frozenset | range):
        _check_length(len(value))
    elif isinstance(value, int) and value.bit_length() > _INT_BITS:
        raise _too_costly("builds a number of more than a thousand digits")
    return value


def _check_length(length: int) -> None:
    if length > MAX_SIZE:
        raise _too_costly(f"builds a value of more than {MAX_SIZE:,} characters or items")


def _check_format(spec: Any) -> None:
    """Refuse a %-format or format string whose widths alone exceed ``MAX_SIZE``."""
    if isinstance(spec, str):
        for match in _WIDTHS.finditer(spec):
            for width in match.groups():
                if width and int(width) > MAX_SIZE:
                    raise _too_costly(f"formats a value wider than {MAX_SIZE:,} characters")


def _joined_length(items: list[Any], separator: str) -> int:
    return sum(len(str(item)) for item in items) + len(separator) * len(items)


def _replaced_length(text: str, old: Any, new: Any, count: Any = -1) -> int:
    occurrences = text.count(str(old)) if old else len(text) + 1
    if isinstance(count, int) and count >= 0:
        occurrences = min(occurrences, count)
    return len(text) + occurrences * max(len(str(new)) - len(str(old)), 0)


def _check_call(func: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> None:
    """Before ``range`` or a str method runs: refuse sizes, widths and growth beyond
    ``MAX_SIZE``."""
    if func is safe_range and all(isinstance(arg, int) for arg in args):
        _check_length(len(range(*args)))
        return
    func = getattr(func, "__wrapped__", func)  # the sandbox wraps str.format
    owner = getattr(func, "__self__", None)
    if not isinstance(owner, str):
        return
    name = getattr(func, "__name__", "")
    values = [*args, *kwargs.values()]
    if name in ("format", "format_map"):
        _check_format(owner)
    elif name == "replace" and len(args) >= 2:
        _check_length(_replaced_length(owner, *args[:3]))
    elif name == "join" and args:
        items = list(args[0]) if isinstance(args[0], Iterable) else []
        _check_length(_joined_length(items, owner))
    elif name == "expandtabs":
        width = values[0] if values else 8
        _check_length(len(owner) + owner.count("\t") * (width if isinstance(width, int) else 0))
    elif any(isinstance(value, int) and value > MAX_SIZE for value in values):
        _check_length(max(value for value in values if isinstance(value, int)))


# Jinja filters that can multiply a size, and how large their result may get.
_GROWING_FILTERS = frozenset({"center", "indent", "replace", "format", "join"})


def _filter_estimate(
    name: str, value: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> int:
    text = str(value) if name in ("center", "indent", "replace", "format") else ""
    width = args[0] if args else kwargs.get("width", 0)
    if name == "center":
        return max(len(text), width if isinstance(width, int) else 0)
    if name == "indent":
        width = width if isinstance(width, int) else len(str(width))
        return len(text) + (text.count("\n") + 1) * width
    if name == "replace" and len(args) >= 2:
        return _replaced_length(text, *args[:3])
    if name == "format":
        _check_format(text)
    return 0


def _bounded_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` as a filter that counts as a step and whose result is size-checked."""

    # pass_context/pass_environment filters get the context first; the value follows.
    offset = 1 if getattr(func, "jinja_pass_arg", None) else 0
    growing = name in _GROWING_FILTERS

    def bounded(*args: Any, **kwargs: Any) -> Any:
        _step()
        if not growing or len(args) <= offset:
            return _sized(func(*args, **kwargs))
        _check_length(_filter_estimate(name, args[offset], args[offset + 1 :], kwargs))
        if name == "join" and isinstance(args[offset], Iterable):
            items = list(args[offset])
            separator = str(args[offset + 1] if len(args) > offset + 1 else kwargs.get("d", ""))
            _check_length(_joined_length(items, separator))
            args = (*args[:offset], items, *args[offset + 1 :])
        return _sized(func(*args, **kwargs))

    bounded.__name__ = getattr(func, "__name__", name)
    if hasattr(func, "jinja_pass_arg"):
        bounded.jinja_pass_arg = func.jinja_pass_arg  # type: ignore[attr-defined]
    return bounded


def _loop(iterable: Any) -> Iterator[Any]:
    for item in iterable:
        _step()
        yield item


class _Bounds(NodeTransformer):
    """Rewrites a parsed template so that every loop counts its iterations and every
    ``~`` concatenation is size-checked."""

    def visit_For(self, node: nodes.For) -> nodes.Node:
        self.generic_visit(node)
        node.iter = nodes.Filter(node.iter, _LOOP, [], [], None, None, lineno=node.lineno)
        return node

    def visit_Concat(self, node: nodes.Concat) -> nodes.Node:
        self.generic_visit(node)
        return nodes.Filter(node, _SIZED, [], [], None, None, lineno=node.lineno)


@pass_context
def _finalize(context: Context, value: Any) -> str:
    # pass_context also keeps Jinja from printing constants at compile time, when no
    # render (and so no escape) is known.
    text = clean_value(value)
    state = _current.get()
    return state.escape(text) if state and state.escape else text


class BoundedSandbox(SandboxedEnvironment):
    """A ``SandboxedEnvironment`` whose renders are bounded (see the module docstring).

    Render with ``render``, or run a compiled condition inside ``bounded``."""

    intercepted_binops = frozenset({"*", "**", "+", "%", "//"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals.pop("lipsum", None)  # a generator of paragraphs by the thousand
        self.filters = {name: _bounded_filter(name, func) for name, func in self.filters.items()}
        self.filters[_LOOP] = _loop
        self.filters[_SIZED] = _sized

    def add_filters(self, filters: Mapping[str, Callable[..., Any]]) -> None:
        self.filters.update({name: _bounded_filter(name, f) for name, f in filters.items()})

    def _generate(self, source: nodes.Template, *args: Any, **kwargs: Any) -> str:
        return super()._generate(_Bounds().visit(source), *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        _step()
        if operator == "*":
            for sequence, times in ((left, right), (right, left)):
                if isinstance(sequence, str | list | tuple) and isinstance(times, int):
                    _check_length(len(sequence) * times)
            if (
                isinstance(left, int)
                and isinstance(right, int)
                and left.bit_length() + right.bit_length() > _INT_BITS
            ):
                _sized(1 << (_INT_BITS + 1))
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and left.bit_length() * right > _INT_BITS:
                _sized(1 << (_INT_BITS + 1))
        elif operator == "+" and isinstance(left, str | list | tuple):
            if isinstance(right, str | list | tuple):
                _check_length(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_format(left)
        return _sized(super().call_binop(context, operator, left, right))

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _step()
        _check_call(__obj, args, kwargs)
        return _sized(super().call(__context, __obj, *args, **kwargs))

    def render(
        self,
        template: Any,
        variables: Mapping[str, Any],
        *,
        escape: Callable[[str], str] | None = None,
    ) -> str:
        """``template`` (compiled by this environment) rendered within the budget; what
        ``{{ ... }}`` prints passes through ``escape`` when there is one."""
        token = _current.set(_Render(escape=escape))
        try:
            parts: list[str] = []
            length = 0
            for part in template.generate(variables):
                length += len(part)
                if length > MAX_OUTPUT:
                    raise _too_costly(f"writes more than {MAX_OUTPUT:,} characters")
                parts.append(part)
            return "".join(parts)
        finally:
            _current.reset(token)

    def bounded(self, func: Callable[..., Any], /, **variables: Any) -> Any:
        """``func(**variables)`` (a compiled condition) within a fresh budget."""
        token = _current.set(_Render(escape=None))
        try:
            return func(**variables)
        finally:
            _current.reset(token)
