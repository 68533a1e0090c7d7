"""Fixtures of the acceptance tier that drive the dashboard: `payherald run` as a
subprocess with an admin token, and Debian's Chromium driven by Playwright.

Playwright's own browser builds are never downloaded (`playwright install` is not run):
the tests launch the Chromium the machine has, found as ``find_chromium`` says.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.acceptance.dashboard import (
    ADMIN_TOKEN,
    CHROMIUM_ENV,
    PAYHERALD,
    RULES,
    VIEWPORT,
    Dashboard,
    find_chromium,
    wait_until_healthy,
)
from tests.peers import free_port


@pytest.fixture(scope="session")
def chromium_executable() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip(
            f"the dashboard's browser tests need Chromium: set {CHROMIUM_ENV}, or install "
            "Debian's (apt-get install chromium, as .ci/run does)"
        )
    if not os.access(path, os.X_OK):
        pytest.fail(f"the Chromium at {path} cannot be executed (check {CHROMIUM_ENV})")
    return path


# Per module, so that no Playwright event loop outlives the browser tests.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright, chromium_executable: str) -> Iterator[Browser]:
    # Chromium refuses to start its sandbox as root (CI runs as root).
    args = ["--no-sandbox"] if os.geteuid() == 0 else []
    launched = playwright.chromium.launch(
        executable_path=chromium_executable, headless=True, args=args
    )
    yield launched
    launched.close()


@pytest.fixture
def page(browser: Browser, dashboard: Dashboard) -> Iterator[Page]:
    """A page in a context of its own (no cookie of another test), 1280x800; a script error,
    or anything the pages' Content-Security-Policy blocks, on any page it shows fails the
    test. It is closed before ``dashboard`` is stopped, so that the live feed it holds open
    does not hold up the stop (a test of its own stops the server with a feed open)."""
    context = browser.new_context(viewport=VIEWPORT)
    context.set_default_timeout(10_000)
    errors: list[str] = []
    opened = context.new_page()
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.on(
        "console",
        lambda message: (
            errors.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    yield opened
    context.close()
    assert errors == [], f"errors on the dashboard's pages: {errors}"


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[Dashboard]:
    """`payherald run` with a fresh SQLite database, an admin token and no Stripe or
    Twilio keys (messages go to the console), answering /healthz; stopped with SIGTERM
    after the test."""
    (tmp_path / "payherald.toml").write_text(RULES)
    server = Dashboard(tmp_path, free_port(), ADMIN_TOKEN)
    with server.log.open("w") as log:
        process = subprocess.Popen(
            [*PAYHERALD, "run", "--port", str(server.port)],
            cwd=tmp_path,
            env=server.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        server.process = process
        try:
            wait_until_healthy(server, process)
            yield server
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
                pytest.fail("payherald run did not stop within 20 s of SIGTERM")
