"""The dashboard in Chromium, against `payherald run` as an operator runs it: signed in with
the admin token, events sent with `payherald simulate`, the live feed, filters, an
event's trace and the retry of a failed notification."""

from __future__ import annotations

import os
import re
import signal
import struct
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Locator, Page, expect

from tests.acceptance.dashboard import ADMIN_TOKEN, VIEWPORT, Dashboard, sent_event_id

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT_ENV = "PAYHERALD_SCREENSHOT"
# A number the operator opts out, so that the message to it fails, and then back in.
OPTED_OUT = "+14155550177"
# Set on the page's window; still there only if the page was not loaded again.
NOT_RELOADED = "window.__payheraldNotReloaded"


def sign_in(page: Page, dashboard: Dashboard, token: str = ADMIN_TOKEN) -> int:
    """Sign in at /signin with ``token``, as an operator types it: the status of the
    answer to the form."""
    page.goto(f"{dashboard.url}/signin")
    page.fill("#token", token)
    with (
        page.expect_navigation(),
        page.expect_response(
            lambda r: r.request.method == "POST" and r.url.split("?")[0].endswith("/signin")
        ) as answer,
    ):
        page.click("button#signin")
    return answer.value.status


def open_feed(page: Page, dashboard: Dashboard) -> None:
    """The feed page, once its live feed is open (a mark set on its window tells whether
    it is loaded again)."""
    with page.expect_response(lambda r: urlsplit(r.url).path == "/api/feed") as stream:
        page.goto(f"{dashboard.url}/")
    assert stream.value.status == 200
    assert stream.value.headers["content-type"].startswith("text/event-stream")
    page.evaluate(f"{NOT_RELOADED} = true")


def row(page: Page, event_id: str) -> Locator:
    return page.locator(f'#feed tr.event[data-event-id="{event_id}"]')


def failed_notification(dashboard: Dashboard) -> str:
    """An event whose one notification failed: a payment failure told to a number that
    opted out (the console channel sends anything else)."""
    assert dashboard.cli("optout", "add", OPTED_OUT).returncode == 0
    return dashboard.simulate("payment_intent.payment_failed", "--phone", OPTED_OUT)


def notifications_of(dashboard: Dashboard, event_id: str) -> list[dict[str, Any]]:
    """``event_id``'s notifications, as the JSON API gives them to the admin token."""
    answer = httpx.get(
        f"{dashboard.url}/api/events/{event_id}",
        headers={"Authorization": f"Bearer {dashboard.token}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return list(answer.json()["notifications"])


def test_signing_in_with_the_token_opens_the_feed_with_a_session_cookie(
    page: Page, dashboard: Dashboard
) -> None:
    page.goto(dashboard.url + "/")
    assert page.url.startswith(f"{dashboard.url}/signin")  # anonymous: sent to sign in
    assert sign_in(page, dashboard) == 303
    assert page.url == f"{dashboard.url}/"
    for selector in ("#feed", "#summary", "svg#chart", "#filters", "a#nav-failed"):
        expect(page.locator(selector).first).to_be_visible()
    (cookie,) = [c for c in page.context.cookies() if c["name"] == "payherald_session"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Strict"
    assert ADMIN_TOKEN not in cookie["value"]


def test_a_wrong_token_is_refused_with_401_and_shows_no_data(
    page: Page, dashboard: Dashboard
) -> None:
    event_id = dashboard.simulate("payment_intent.succeeded")
    assert sign_in(page, dashboard, token="not-the-admin-token") == 401
    expect(page.locator("#token")).to_be_visible()
    assert page.locator("#feed").count() == 0
    assert event_id not in page.content()
    assert [c for c in page.context.cookies() if c["name"] == "payherald_session"] == []
    page.goto(f"{dashboard.url}/events/{event_id}")
    assert page.url.startswith(f"{dashboard.url}/signin")
    assert event_id not in page.locator("body").inner_text()
    api = page.request.get(f"{dashboard.url}/api/events")
    assert api.status == 401
    assert event_id not in api.text()


def test_a_simulated_payment_appears_in_the_open_feed_without_a_reload(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    expect(page.locator("#feed tr.event")).to_have_count(0)
    event_id = dashboard.simulate("payment_intent.succeeded")
    arrived = row(page, event_id)
    expect(arrived).to_be_visible(timeout=10_000)
    expect(arrived).to_have_class(re.compile(r"\bkind-succeeded\b"))
    expect(arrived).to_contain_text("$20.00")
    # Its notification was sent by the time simulate returned; the feed says so too.
    expect(arrived.locator(".notification-status")).to_contain_text("sent", timeout=10_000)
    assert page.evaluate(NOT_RELOADED) is True
    expect(page.locator("#feed tr.event")).to_have_count(1)


def test_events_seconds_apart_each_appear_in_turn(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    started = []
    for _ in range(3):
        started.append(dashboard.start_simulate("payment_intent.succeeded", "--wait", "0"))
        time.sleep(1)
    event_ids = []
    for at, process in enumerate(started, start=1):
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr
        event_ids.append(sent_event_id("payment_intent.succeeded", stderr))
        expect(row(page, event_ids[-1])).to_be_visible(timeout=10_000)
        # Each once, however many times its notifications changed after it arrived.
        for seen in event_ids:
            expect(row(page, seen)).to_have_count(1)
        assert page.locator("#feed tr.event").count() >= at
    expect(page.locator("#feed tr.event")).to_have_count(3)
    assert page.evaluate(NOT_RELOADED) is True


def test_the_kind_filter_shows_only_events_of_that_kind(page: Page, dashboard: Dashboard) -> None:
    succeeded = dashboard.simulate("payment_intent.succeeded")
    failed = dashboard.simulate("payment_intent.payment_failed")
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    expect(row(page, succeeded)).to_be_visible()
    expect(row(page, failed)).to_be_visible()
    page.select_option("#filters select[name=kind]", "failed")
    page.click("#filters button#apply")
    page.wait_for_url(re.compile(r"[?&]kind=failed\b"))
    expect(row(page, failed)).to_be_visible()
    expect(row(page, failed)).to_have_class(re.compile(r"\bkind-failed\b"))
    expect(row(page, succeeded)).to_have_count(0)
    # The form keeps what it filters by.
    assert page.locator("#filters select[name=kind]").input_value() == "failed"
    page.select_option("#filters select[name=kind]", "succeeded")
    page.click("#filters button#apply")
    page.wait_for_url(re.compile(r"[?&]kind=succeeded\b"))
    expect(row(page, succeeded)).to_be_visible()
    expect(row(page, failed)).to_have_count(0)


def test_the_status_filter_shows_events_with_a_failed_notification(
    page: Page, dashboard: Dashboard
) -> None:
    told = dashboard.simulate("payment_intent.payment_failed")
    not_told = failed_notification(dashboard)
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    page.select_option("#filters select[name=status]", "failed")
    page.click("#filters button#apply")
    page.wait_for_url(re.compile(r"[?&]status=failed\b"))
    expect(row(page, not_told)).to_be_visible()
    expect(row(page, not_told).locator(".notification-status")).to_contain_text("failed")
    expect(row(page, told)).to_have_count(0)


def test_the_search_finds_an_event_by_the_start_of_its_id(page: Page, dashboard: Dashboard) -> None:
    wanted = dashboard.simulate("payment_intent.succeeded")
    other = dashboard.simulate("payment_intent.succeeded")
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    page.fill("#filters input[name=q]", wanted[:16])
    page.click("#filters button#apply")
    page.wait_for_url(re.compile(r"[?&]q=evt_"))
    expect(row(page, wanted)).to_be_visible()
    expect(row(page, other)).to_have_count(0)


def test_an_events_trace_lists_its_steps_and_its_sent_notification(
    page: Page, dashboard: Dashboard
) -> None:
    event_id = dashboard.simulate("payment_intent.succeeded")
    (notification,) = notifications_of(dashboard, event_id)
    sign_in(page, dashboard)
    page.goto(f"{dashboard.url}/events/{event_id}")
    steps = page.locator("#trace li.step")
    # Received, a rule matched, the notification queued, claimed and sent: at least.
    expect(steps.first).to_be_visible()
    assert steps.count() >= 3, steps.all_inner_texts()
    shown = page.locator(f'tr.notification[data-notification-id="{notification["id"]}"]')
    expect(shown.locator(".status")).to_contain_text("sent")
    assert event_id in page.locator("body").inner_text()


def test_an_unknown_event_is_a_404_page(page: Page, dashboard: Dashboard) -> None:
    sign_in(page, dashboard)
    answer = page.goto(f"{dashboard.url}/events/evt_nosuchevent000000")
    assert answer is not None
    assert answer.status == 404
    assert page.locator("#trace li.step").count() == 0


def test_retrying_a_failed_notification_sends_it_once_the_cause_is_gone(
    page: Page, dashboard: Dashboard
) -> None:
    event_id = failed_notification(dashboard)
    (notification,) = notifications_of(dashboard, event_id)
    assert notification["status"] == "failed", notification
    sign_in(page, dashboard)
    page.goto(f"{dashboard.url}/events/{event_id}")
    shown = page.locator(f'tr.notification[data-notification-id="{notification["id"]}"]')
    expect(shown.locator(".status")).to_contain_text("failed")
    # The operator finds the number opted out by mistake, takes it back, then retries.
    assert dashboard.cli("optout", "remove", OPTED_OUT).returncode == 0
    with page.expect_navigation():
        shown.locator("form.retry button").click()
    assert page.url.split("?")[0] == f"{dashboard.url}/events/{event_id}"
    deadline = time.monotonic() + 15
    while "sent" not in shown.locator(".status").inner_text() and time.monotonic() < deadline:
        time.sleep(0.2)
        page.reload()
    expect(shown.locator(".status")).to_contain_text("sent")
    expect(page.locator("#trace li.step .what").last).to_have_text("sent")
    expect(shown.locator("form.retry")).to_have_count(0)  # nothing left to retry
    (after,) = notifications_of(dashboard, event_id)
    assert after["status"] == "sent", after
    assert after["to"] == OPTED_OUT


def test_the_feed_of_several_kinds_renders_for_a_screenshot(
    page: Page, dashboard: Dashboard, tmp_path: Path
) -> None:
    """The screenshot in docs/: written there with PAYHERALD_SCREENSHOT=1, to the test's
    folder always."""
    kinds = {
        dashboard.simulate("payment_intent.succeeded"): "succeeded",
        dashboard.simulate("payment_intent.succeeded", "--amount", "12900"): "succeeded",
        dashboard.simulate("payment_intent.payment_failed", "--amount", "4500"): "failed",
        failed_notification(dashboard): "failed",
        dashboard.simulate("refund.created", "--amount", "1500"): "refund",
        dashboard.simulate("charge.dispute.created", "--amount", "8000"): "dispute",
    }
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    for event_id, kind in kinds.items():
        expect(row(page, event_id)).to_have_class(re.compile(rf"\bkind-{kind}\b"))
    expect(page.locator("#summary")).to_be_visible()
    expect(page.locator("svg#chart")).to_be_visible()
    targets = [tmp_path / "dashboard.png"]
    if os.environ.get(SCREENSHOT_ENV) == "1":
        targets.append(ROOT / "docs" / "dashboard.png")
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target))
        assert png_size(target) == (VIEWPORT["width"], VIEWPORT["height"])


def png_size(path: Path) -> tuple[int, int]:
    """A PNG's width and height, from its IHDR chunk."""
    data = path.read_bytes()
    if not data.startswith(b"\x89PNG\r\n\x1a\n") or data[12:16] != b"IHDR":
        pytest.fail(f"{path} is not a PNG")
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def test_payherald_run_stops_on_sigterm_while_a_browser_has_the_feed_open(
    page: Page, dashboard: Dashboard
) -> None:
    sign_in(page, dashboard)
    open_feed(page, dashboard)
    assert dashboard.process is not None
    started = time.monotonic()
    dashboard.process.send_signal(signal.SIGTERM)
    try:
        dashboard.process.wait(10)
    except subprocess.TimeoutExpired:
        pytest.fail(
            "payherald run had not stopped 10 s after SIGTERM with the live feed open:\n"
            + dashboard.log.read_text()
        )
    assert dashboard.process.returncode == 0, dashboard.log.read_text()
    assert time.monotonic() - started < 10
