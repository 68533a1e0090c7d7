from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import POSTGRES_ENV, postgres_database


def _postgres_or_skip() -> None:
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (for example "
            "postgresql://postgres@127.0.0.1:5432/test); .ci/run sets it"
        )


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'payherald.db'}"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    _postgres_or_skip()
    with postgres_database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes this runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'payherald.db'}"
        return
    _postgres_or_skip()
    with postgres_database() as url:
        yield url


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """In CI (``CI`` set, as ``.ci/run`` runs) every tier must run: a test skipped for want
    of PostgreSQL, a peer or Stripe's example objects fails instead of passing quietly."""
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"Skipped in CI, where every tier must run: {reason}"
