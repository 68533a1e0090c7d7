"""Private by default: the SQLite database and the files SQLite writes beside it are
readable by their owner only, whatever the umask; doctor says when an older one is not."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from payherald import FrozenClock, parse_event
from payherald.doctor import Check, run_checks
from tests.support import build_for_tests, event_body


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, which leaves new files readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture
def ph(tmp_path: Path, umask_022: None) -> Iterator[Any]:
    built = build_for_tests(f"sqlite:///{tmp_path / 'payherald.db'}")
    yield built
    built.engine.dispose()


def modes(database: Path) -> dict[str, int]:
    files = (database, Path(f"{database}-wal"), Path(f"{database}-shm"))
    return {path.name: stat.S_IMODE(path.stat().st_mode) for path in files}


def test_a_new_database_and_its_wal_and_shm_are_0600(ph: Any, tmp_path: Path) -> None:
    ph.store.record_event(parse_event(event_body(event_id="evt_1")), [])
    # The engine's pooled connection is open: the -wal and -shm files are there.
    assert modes(tmp_path / "payherald.db") == {
        "payherald.db": 0o600,
        "payherald.db-wal": 0o600,
        "payherald.db-shm": 0o600,
    }


def store_file_check(ph: Any) -> Check | None:
    checks = run_checks(
        settings=ph.settings,
        store=ph.store,
        rules=ph.rules,
        stripe_client=None,
        twilio_client=None,
        clock=FrozenClock(),
    )
    return next((check for check in checks if check.name == "store file"), None)


def test_doctor_says_how_to_make_a_readable_database_private(ph: Any, tmp_path: Path) -> None:
    database = tmp_path / "payherald.db"
    assert store_file_check(ph) is None
    ph.store.record_event(parse_event(event_body(event_id="evt_1")), [])
    for name in ("payherald.db", "payherald.db-wal"):
        (tmp_path / name).chmod(0o644)
    check = store_file_check(ph)
    assert check is not None
    assert (check.ok, check.warning) == (True, True)
    assert "others than its owner may read the database" in check.detail
    assert check.fix == f"chmod 600 {database} {database}-wal"


def test_doctor_warns_of_deferred_work_that_failed_on_every_attempt(ph: Any) -> None:
    def checks() -> list[Check]:
        return list(
            run_checks(
                settings=ph.settings,
                store=ph.store,
                rules=ph.rules,
                stripe_client=None,
                twilio_client=None,
                clock=FrozenClock(),
            )
        )

    assert "jobs" not in [check.name for check in checks()]
    ph.store.jobs.enqueue("consent.write_back", "consent.write_back:1", {"consent_id": 1})
    (job,) = ph.store.jobs.claim(kinds=["consent.write_back"], limit=1, lease=60, worker_id="test")
    assert ph.store.jobs.fail(job, error="Traceback ...\nstripe.AuthenticationError: bad key")
    (warning,) = [check for check in checks() if check.name == "jobs"]
    assert warning.warning
    assert warning.detail == "1 job(s) failed on every attempt and will not run again"
    assert warning.fix is not None
    assert "last_error FROM jobs WHERE status = 'failed'" in warning.fix
