"""The database URL's password is never printed nor logged, whatever fails and however
the logs are written."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.acceptance.test_cli import cli
from tests.peers import free_port
from tests.support import POSTGRES_ENV

PASSWORD = "s3cretpw"
COMMANDS = [["run"], ["serve"], ["migrate"], ["worker"], ["doctor"]]


def assert_never_shown(tmp_path: Path, command: list[str], url: str) -> str:
    result = cli(tmp_path, *command, PAYHERALD_DATABASE_URL=url, PAYHERALD_LOG_FORMAT="json")
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert PASSWORD not in output
    assert "Cannot open the database" in output or "FAIL store" in output
    return output


@pytest.mark.parametrize("command", COMMANDS, ids=lambda command: command[0])
def test_not_when_postgresql_is_unreachable(tmp_path: Path, command: list[str]) -> None:
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/test"
    output = assert_never_shown(tmp_path, command, url)
    assert "Connection refused" in output


@pytest.mark.postgres
@pytest.mark.parametrize("wrong", ["database", "user"])
@pytest.mark.parametrize("command", [["run"], ["doctor"]], ids=lambda c: c[0])
def test_not_when_postgresql_refuses_the_database_or_user(
    tmp_path: Path, command: list[str], wrong: str
) -> None:
    if not os.environ.get(POSTGRES_ENV):
        pytest.skip(f"needs {POSTGRES_ENV}")
    server = urlsplit(os.environ[POSTGRES_ENV])
    user, database = ("postgres", "no_such_database") if wrong == "database" else ("nobody", "x")
    url = f"postgresql://{user}:{PASSWORD}@{server.hostname}:{server.port or 5432}/{database}"
    output = assert_never_shown(tmp_path, command, url)
    assert ("no_such_database" if wrong == "database" else '"nobody"') in output
