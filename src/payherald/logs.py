"""Structured logs (structlog): stable keys, secrets scrubbed, phone numbers masked."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

from payherald.recipients import mask_phone

__all__ = ["configure_logging", "scrubber"]

# E.164 numbers, also URL-encoded (To=%2B14155550123 in a provider's URL).
_PHONE = re.compile(r"(?:\+|%2B)\d{7,15}\b", re.IGNORECASE)


def scrubber(secrets: Iterable[str]) -> structlog.types.Processor:
    """A processor that replaces every configured secret and masks E.164 numbers."""
    known = sorted({s for s in secrets if len(s) >= 6}, key=len, reverse=True)

    def clean(value: str) -> str:
        for secret in known:
            value = value.replace(secret, "[redacted]")
        return _PHONE.sub(lambda match: mask_phone(match.group(0)), value)

    def scrub(value: Any) -> Any:
        if isinstance(value, str):
            return clean(value)
        if isinstance(value, list | tuple):
            return [scrub(item) for item in value]
        if isinstance(value, dict):
            return {key: scrub(item) for key, item in value.items()}
        return value

    def process(
        _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key, value in event_dict.items():
            event_dict[key] = scrub(value)
        return event_dict

    return process


def configure_logging(
    *, secrets: Iterable[str], log_format: str = "auto", level: int = logging.INFO
) -> None:
    """Log to stderr as JSON (or human-readable lines on a terminal with ``auto``)."""
    render_json = log_format == "json" or (log_format == "auto" and not sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if render_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            scrubber(secrets),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
