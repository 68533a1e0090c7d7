"""`payherald run` as the dashboard's browser tests start it, and the Chromium they drive."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.acceptance.test_cli import PAYHERALD, clean_env

CHROMIUM_ENV = "PAYHERALD_TEST_CHROMIUM"
DEBIAN_CHROMIUM = Path("/usr/bin/chromium")
ADMIN_TOKEN = "dashboard-admin-token-for-the-browser-tests-0123456789"
VIEWPORT = {"width": 1280, "height": 800}
# The finance team, so that a simulated dispute is told to someone.
RULES = '[teams.finance]\nsms = ["+14155550100"]\n'


def find_chromium() -> str | None:
    """The Chromium to drive: ``PAYHERALD_TEST_CHROMIUM``, else Debian's, else the one on
    PATH; None when there is none."""
    named = os.environ.get(CHROMIUM_ENV)
    if named:
        return named
    if DEBIAN_CHROMIUM.exists():
        return str(DEBIAN_CHROMIUM)
    return shutil.which("chromium")


class Dashboard:
    """`payherald run` in ``cwd`` on a loopback port, with ``token`` as its admin token."""

    def __init__(self, cwd: Path, port: int, token: str) -> None:
        self.cwd, self.port, self.token = cwd, port, token
        self.url = f"http://127.0.0.1:{port}"
        self.log = cwd / "run.log"
        self.process: subprocess.Popen[str] | None = None  # the fixture's `payherald run`
        self.env = clean_env(
            cwd,
            PAYHERALD_DATABASE_URL=f"sqlite:///{cwd / 'payherald.db'}",
            PAYHERALD_ADMIN_TOKEN=token,
            PAYHERALD_CONFIG=str(cwd / "payherald.toml"),
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """A payherald command on the same database and rules as the server."""
        return subprocess.run(
            [*PAYHERALD, *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def simulate(self, event_type: str, *options: str) -> str:
        """`payherald simulate event_type` against this server: the id of the event sent."""
        result = self.cli("simulate", event_type, "--url", self.url, *options)
        assert result.returncode == 0, result.stderr
        return sent_event_id(event_type, result.stderr)

    def start_simulate(self, event_type: str, *options: str) -> subprocess.Popen[str]:
        """`payherald simulate event_type` started, not waited for (``sent_event_id`` reads
        its stderr)."""
        return subprocess.Popen(
            [*PAYHERALD, "simulate", event_type, "--url", self.url, *options],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )


def sent_event_id(event_type: str, stderr: str) -> str:
    """The id simulate printed for the ``event_type`` event it sent (not a companion)."""
    (line,) = [text for text in stderr.splitlines() if text.startswith(f"Sent {event_type} ")]
    return line.split()[2]


def wait_until_healthy(server: Dashboard, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{server.url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise AssertionError("payherald run did not start:\n" + server.log.read_text())
        time.sleep(0.1)
