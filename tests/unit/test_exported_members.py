from __future__ import annotations

import pytest

import payherald


def test_every_name_in_all_is_importable() -> None:
    for name in payherald.__all__:
        assert getattr(payherald, name) is not None, name


def test_unknown_names_raise_attribute_error() -> None:
    with pytest.raises(AttributeError, match="nothing_here"):
        payherald.nothing_here  # type: ignore[attr-defined]  # noqa: B018
