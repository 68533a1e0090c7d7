"""The fixtures of today's Stripe, checked against the installed SDK's own model of its pinned
version (its resource classes' annotated fields) and against Stripe's published examples
(../shared/stripe/fixtures3.json); and the fields the reading layer reads, checked against
the same model, so that a field Stripe removed cannot go on being read in silence."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from stripe._object_classes import OBJECT_CLASSES

from payherald.api_versions import NEWEST_SUPPORTED
from payherald.config import Config
from payherald.recipients import resolve_email, resolve_phone
from payherald.rules import Team
from payherald.simulate import (
    SIMULATED_EVENT_TYPES,
    build_event,
    build_payment_events,
    build_renewal_failure_events,
    build_simulation,
    build_subscription_payment_events,
)
from payherald.stripe_objects import LEGACY_FIELDS, read_object
from payherald.subjects import SUBJECTS
from payherald.templates import TemplateRenderer
from payherald.variables import MessageContext, message_context
from payherald.webhook import StripeEvent

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BOOK = Config(
    teams={"finance": Team(name="finance", sms=("+14155550100",))}, high_value={"usd": 1}
).rule_book(TemplateRenderer())
OLDER = "2024-06-20"  # the last version before the release families
FIXTURES3 = Path(__file__).resolve().parents[3] / "shared" / "stripe" / "fixtures3.json"


def _class(kind: str) -> Any:
    found = OBJECT_CLASSES[kind]
    if isinstance(found, tuple):
        module, name = found
        return getattr(importlib.import_module(module), name)
    return found


def _fields(cls: Any) -> set[str]:
    names: set[str] = set()
    for base in reversed(cls.__mro__):
        names.update(getattr(base, "__annotations__", {}))
    return {name for name in names if not name.startswith("_") and name != "OBJECT_NAME"}


def _inner(cls: Any, name: str) -> Any:
    inner = getattr(cls, "_inner_class_types", {}).get(name)
    return inner


def unknown_fields(value: Any, cls: Any, path: str) -> Iterator[str]:
    """Every field under ``value`` that the SDK class ``cls`` (or the class its ``object``
    names) does not know, as a dotted path."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            yield from unknown_fields(item, cls, f"{path}[{index}]")
        return
    if not isinstance(value, Mapping):
        return
    if isinstance(value.get("object"), str) and value["object"] in OBJECT_CLASSES:
        cls = _class(value["object"])
    if cls is None:
        return  # a free-form hash (metadata) or a type the model does not describe
    known = _fields(cls) | {"object"}  # lists carry "object" without annotating it
    for name, item in value.items():
        if name not in known:
            yield f"{path}.{name}"
            continue
        yield from unknown_fields(item, _inner(cls, name), f"{path}.{name}")


def todays_events() -> list[dict[str, Any]]:
    # What `payherald simulate` posts for every type, and the builders the tests use.
    events = [e for t in SIMULATED_EVENT_TYPES for e in build_simulation(t, now=NOW)]
    events += build_payment_events(now=NOW)
    events += build_subscription_payment_events(now=NOW)
    events += build_renewal_failure_events(now=NOW)
    return events


@pytest.mark.parametrize("event", todays_events(), ids=lambda event: event["type"])
def test_every_fixture_of_today_has_only_fields_the_sdk_knows(event: dict[str, Any]) -> None:
    assert event["api_version"] == NEWEST_SUPPORTED
    assert list(unknown_fields(event, _class("event"), "event")) == []


def test_the_check_finds_a_field_stripe_removed() -> None:
    event = build_event("invoice.paid", now=NOW)
    event["data"]["object"]["payment_intent"] = "pi_1"  # gone since 2025-03-31
    event["data"]["object"]["lines"]["data"][0]["plan"] = {"id": "plan_1"}
    assert sorted(unknown_fields(event, _class("event"), "event")) == [
        "event.data.object.lines.data[0].plan",
        "event.data.object.payment_intent",
    ]


@pytest.mark.skipif(not FIXTURES3.exists(), reason=f"needs {FIXTURES3} (CI has it)")
@pytest.mark.parametrize("event", todays_events(), ids=lambda event: event["type"])
def test_every_fixture_of_today_has_only_fields_stripes_own_example_has(
    event: dict[str, Any],
) -> None:
    examples = json.loads(FIXTURES3.read_text())["resources"]
    obj = event["data"]["object"]
    example = examples[obj["object"]]
    assert sorted(set(obj) - set(example)) == []


class _Recording(Mapping[str, Any]):
    """A Stripe object that notes every field read from it, as ``kind.path``."""

    def __init__(self, data: Mapping[str, Any], reads: set[tuple[Any, str]], cls: Any, path: str):
        self._data, self._reads, self._cls, self._path = data, reads, cls, path
        if isinstance(data.get("object"), str) and data["object"] in OBJECT_CLASSES:
            self._cls = _class(data["object"])

    def __getitem__(self, key: str) -> Any:
        self._reads.add((self._cls, f"{self._path}.{key}"))
        return self._wrap(key, self._data[key])

    def get(self, key: str, default: Any = None) -> Any:
        if key not in self._data:
            return default
        self._reads.add((self._cls, f"{self._path}.{key}"))
        return self._wrap(key, self._data[key])

    def _wrap(self, key: str, value: Any) -> Any:
        inner = _inner(self._cls, key) if self._cls is not None else None
        if isinstance(value, Mapping):
            return _Recording(value, self._reads, inner, f"{self._path}.{key}")
        if isinstance(value, list):
            return [
                _Recording(item, self._reads, inner, f"{self._path}.{key}[]")
                if isinstance(item, Mapping)
                else item
                for item in value
            ]
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def _fields_read(events: list[dict[str, Any]]) -> set[tuple[Any, str]]:
    """The fields of ``events``' objects that the reading layer, the templates' variables,
    the rules' planning, the subjects and the recipient chain read (that the objects
    have), with the SDK class of each."""
    reads: set[tuple[Any, str]] = set()
    context = MessageContext(business_name=None, locale="en_US", update_card_url=None)
    for payload in events:
        raw = payload["data"]["object"]
        obj = _Recording(raw, reads, _class(raw["object"]), raw["object"])
        event = StripeEvent(
            id=payload["id"],
            type=payload["type"],
            livemode=False,
            created=None,
            api_version=payload["api_version"],
            object=obj,
            payload=payload,
        )
        read_object(obj)
        message_context(event, None, context)
        BOOK.plan(event)
        for subject in SUBJECTS.values():
            subject(event)
        for resolve in (resolve_phone, resolve_email):
            try:
                resolve(obj, None)
            except Exception:  # noqa: S112 - which fields were read is what counts here
                continue
    return reads


def _older_events() -> list[dict[str, Any]]:
    events = [build_event(t, now=NOW, api_version=OLDER) for t in SIMULATED_EVENT_TYPES]
    events += build_payment_events(now=NOW, api_version=OLDER)
    events += build_renewal_failure_events(now=NOW, api_version=OLDER)
    # What older objects may carry beside: an invoice's subscription details, and a
    # subscription with its plan and no items.
    invoice = build_event("invoice.paid", now=NOW, api_version=OLDER)
    invoice["data"]["object"]["subscription_details"] = {"metadata": {"phone": "+14155550123"}}
    subscription = build_event("customer.subscription.updated", now=NOW, api_version=OLDER)
    subscription["data"]["object"]["items"] = {"object": "list", "data": [], "has_more": False}
    return [*events, invoice, subscription]


def test_a_field_read_that_todays_sdk_no_longer_has_is_named_as_read_for_older_versions() -> None:
    # Read from an older version's objects, a field today's model lacks is one Stripe
    # removed: it may be read only as a fallback for those versions, and then it is named.
    removed = sorted(
        path
        for cls, path in _fields_read(_older_events())
        if cls is not None and path.rsplit(".", 1)[1] not in _fields(cls) | {"object"}
    )
    assert removed == sorted(LEGACY_FIELDS)


def test_todays_objects_are_read_through_fields_the_sdk_has() -> None:
    unknown = sorted(
        path
        for cls, path in _fields_read(todays_events())
        if cls is not None and path.rsplit(".", 1)[1] not in _fields(cls) | {"object"}
    )
    assert unknown == []
