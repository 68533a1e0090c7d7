"""The dashboard's pages (``payherald.dashboard``) on a real SQLite store: who may see them,
what they show, that what a customer typed is shown as text, and the retry and sign-out
forms."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from starlette.exceptions import StarletteDeprecationWarning

from payherald.admin import AdminAuth
from payherald.clock import FrozenClock
from payherald.dashboard import add_dashboard_routes, local_path
from payherald.dashboard_format import chart_bars
from payherald.exceptions import PermanentDeliveryError
from payherald.ingest import plan_event
from payherald.testing.channels import ScriptedChannel
from payherald.webhook import parse_event
from tests.support import build_for_tests, event_body

with warnings.catch_warnings():
    # Starlette warns, on import, that it would rather drive httpx2 than httpx; the
    # TestClient works with either.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from fastapi.testclient import TestClient

TOKEN = "dashboard-test-token-0123456789"
HOSTILE = "<script>alert(1)</script>@evil.example"
NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


class Dashboard:
    """payherald with its pages on a test client, and what the tests do with them."""

    def __init__(self, ph: Any, client: TestClient, sms: ScriptedChannel) -> None:
        self.ph, self.client, self.sms = ph, client, sms

    def sign_in(self) -> None:
        answer = self.client.post("/signin", data={"token": TOKEN, "next": "/"})
        assert answer.status_code == 303, answer.text

    def csrf(self, page: str = "/") -> str:
        found = re.search(r'name="csrf" value="([^"]+)"', self.client.get(page).text)
        assert found is not None
        return found[1]

    def receive(
        self, event_type: str = "payment_intent.succeeded", *, livemode: bool = False, **obj: Any
    ) -> str:
        """Record an event as the webhook would; its notifications are sent (a live one's
        by ``sms``, as it is scripted; a test one's to the console). Returns its id."""
        raw = json.loads(event_body(event_type, livemode=livemode))
        raw["data"]["object"].update(obj)
        event = parse_event(json.dumps(raw).encode())
        self.ph.store.record(plan_event(self.ph.rules, event))
        self.ph.worker.run_until_idle()
        return event.id


def make_app(ph: Any, token: str | None) -> FastAPI:
    app = FastAPI()
    app.state.body_timeout = 5.0  # as create_http_app sets it
    add_dashboard_routes(
        app,
        store=ph.store,
        auth=AdminAuth(token=token, clock=ph.store.clock),
        default_livemode=False,
        timezone="Europe/Paris",
        business_name="Acme & Co",
        locale="en_US",
        on_queued=ph.worker.wake,
    )
    return app


@pytest.fixture
def built(tmp_path: Path) -> Iterator[tuple[Any, ScriptedChannel]]:
    sms = ScriptedChannel("sms")
    ph = build_for_tests(
        f"sqlite:///{tmp_path / 'payherald.db'}", clock=FrozenClock(NOW), channels={"sms": sms}
    )
    yield ph, sms
    ph.engine.dispose()


@pytest.fixture
def dashboard(built: tuple[Any, ScriptedChannel]) -> Iterator[Dashboard]:
    ph, sms = built
    # A loopback address: the session cookie is Secure elsewhere, and http:// would drop it.
    with TestClient(
        make_app(ph, TOKEN), base_url="http://127.0.0.1", follow_redirects=False
    ) as client:
        yield Dashboard(ph, client, sms)


@pytest.fixture
def signed_in(dashboard: Dashboard) -> Dashboard:
    dashboard.sign_in()
    return dashboard


# -- who may see the pages -----------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/events/evt_1", "/notifications?status=failed", "/optouts"])
def test_an_anonymous_page_request_is_sent_to_sign_in(dashboard: Dashboard, path: str) -> None:
    answer = dashboard.client.get(path)
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/signin?next=%2F")


def test_sign_in_goes_back_to_the_page_asked_for(dashboard: Dashboard) -> None:
    answer = dashboard.client.post(
        "/signin", data={"token": TOKEN, "next": "/notifications?status=failed"}
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/notifications?status=failed"
    assert "payherald_session" in answer.cookies


@pytest.mark.parametrize("wanted", ["//evil.example/", "/\\evil.example", "https://evil.example"])
def test_sign_in_never_sends_the_browser_to_another_site(dashboard: Dashboard, wanted: str) -> None:
    answer = dashboard.client.post("/signin", data={"token": TOKEN, "next": wanted})
    assert answer.headers["location"] == "/"


def test_a_wrong_token_is_refused_with_the_form_again(dashboard: Dashboard) -> None:
    answer = dashboard.client.post("/signin", data={"token": "guess", "next": "/"})
    assert answer.status_code == 401
    assert 'id="token"' in answer.text
    assert "payherald_session" not in answer.cookies


def test_too_many_wrong_tokens_are_answered_429_with_retry_after(dashboard: Dashboard) -> None:
    for _ in range(5):
        dashboard.client.post("/signin", data={"token": "guess", "next": "/"})
    answer = dashboard.client.post("/signin", data={"token": TOKEN, "next": "/"})
    assert answer.status_code == 429
    assert int(answer.headers["retry-after"]) >= 1


@pytest.mark.parametrize(
    "path", ["/", "/events/evt_1", "/notifications?status=failed", "/optouts", "/signin"]
)
def test_without_an_admin_token_every_page_says_how_to_set_one(
    built: tuple[Any, ScriptedChannel], path: str
) -> None:
    with TestClient(make_app(built[0], None), base_url="http://127.0.0.1") as client:
        answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 200
    assert "PAYHERALD_ADMIN_TOKEN" in answer.text
    assert 'id="nav-feed"' not in answer.text
    assert 'id="feed"' not in answer.text


@pytest.mark.parametrize("path", ["/notifications/1/retry", "/signout", "/signin"])
def test_without_an_admin_token_every_action_is_refused(
    built: tuple[Any, ScriptedChannel], path: str
) -> None:
    with TestClient(make_app(built[0], None), base_url="http://127.0.0.1") as client:
        answer = client.post(path, data={"csrf": "x", "token": ""}, follow_redirects=False)
    assert answer.status_code == 403


def test_sign_out_ends_the_session(signed_in: Dashboard) -> None:
    answer = signed_in.client.post("/signout", data={"csrf": signed_in.csrf()})
    assert answer.status_code == 303
    assert signed_in.client.get("/").status_code == 303


def test_sign_out_without_the_csrf_token_is_refused(signed_in: Dashboard) -> None:
    answer = signed_in.client.post("/signout", data={"csrf": "forged"})
    assert answer.status_code == 403
    assert signed_in.client.get("/").status_code == 200


# -- what the pages show -------------------------------------------------------------------


def test_the_feed_lists_an_event_colour_coded_and_marked_as_test(signed_in: Dashboard) -> None:
    event_id = signed_in.receive()
    page = signed_in.client.get("/").text
    row = re.search(rf'<tr class="([^"]*)" data-event-id="{event_id}">', page)
    assert row is not None
    assert row[1].split() == ["event", "kind-succeeded", "test-mode"]
    assert 'id="summary"' in page
    assert 'id="chart"' in page
    assert 'class="notification-status status-sent"' in page


def test_the_feed_filters_by_kind(signed_in: Dashboard) -> None:
    succeeded = signed_in.receive()
    failed = signed_in.receive("payment_intent.payment_failed")
    page = signed_in.client.get("/?kind=failed").text
    assert f'data-event-id="{failed}"' in page
    assert f'data-event-id="{succeeded}"' not in page


def test_a_filter_the_feed_does_not_know_is_a_422(signed_in: Dashboard) -> None:
    assert signed_in.client.get("/?kind=everything").status_code == 422


def test_a_cursor_the_feed_did_not_give_is_a_422(signed_in: Dashboard) -> None:
    assert signed_in.client.get("/?before=not-a-cursor").status_code == 422


def test_the_feed_finds_an_event_by_its_customer_email(signed_in: Dashboard) -> None:
    wanted = signed_in.receive(receipt_email=HOSTILE)
    other = signed_in.receive(receipt_email="someone@example.com")
    page = signed_in.client.get("/", params={"q": HOSTILE.upper()}).text
    assert f'data-event-id="{wanted}"' in page
    assert f'data-event-id="{other}"' not in page
    assert 'value="&lt;SCRIPT&gt;ALERT(1)&lt;/SCRIPT&gt;@EVIL.EXAMPLE"' in page


def test_a_customer_email_is_shown_as_text_never_as_markup(signed_in: Dashboard) -> None:
    event_id = signed_in.receive(receipt_email=HOSTILE)
    for page in ("/", f"/events/{event_id}"):
        text = signed_in.client.get(page).text
        assert "<script>alert" not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;@evil.example" in text


def test_pages_forbid_inline_script_and_framing(signed_in: Dashboard) -> None:
    answer = signed_in.client.get("/")
    assert "default-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-frame-options"] == "DENY"
    assert answer.headers["referrer-policy"] == "same-origin"
    assert "<script>" not in answer.text  # the script is /static/dashboard.js


def test_the_event_page_shows_the_trace_and_its_messages(signed_in: Dashboard) -> None:
    event_id = signed_in.receive()
    page = signed_in.client.get(f"/events/{event_id}").text
    assert '<ol id="trace">' in page
    assert page.count('<li class="step">') >= 2
    assert re.search(r'<tr class="notification status-sent" data-notification-id="\d+">', page)


def test_the_event_page_shows_an_invoice_s_dunning(signed_in: Dashboard) -> None:
    event_id = signed_in.receive("invoice.payment_failed", livemode=True)
    page = signed_in.client.get(f"/events/{event_id}")
    assert page.status_code == 200
    assert '<section class="dunning">' in page.text
    assert 'class="dunning-step' in page.text


def test_the_event_page_shows_that_its_number_opted_out(signed_in: Dashboard) -> None:
    event_id = signed_in.receive()
    signed_in.ph.store.consents.record(
        address="+14155550123", action="opt_out", channel="sms", words="STOP", source="reply"
    )
    page = signed_in.client.get(f"/events/{event_id}").text
    assert '<p class="opted-out">+14155550123 opted out' in page


def test_an_unknown_event_is_a_404_page(signed_in: Dashboard) -> None:
    answer = signed_in.client.get("/events/evt_nothing_here")
    assert answer.status_code == 404
    assert "evt_nothing_here" in answer.text


def test_the_optouts_page_lists_a_number_that_opted_out(signed_in: Dashboard) -> None:
    signed_in.ph.store.consents.record(
        address="+14155550199", action="opt_out", channel="sms", words="STOP", source="reply"
    )
    page = signed_in.client.get("/optouts").text
    assert "+14155550199" in page


def test_a_page_says_so_when_the_store_is_unavailable(signed_in: Dashboard, tmp_path: Path) -> None:
    signed_in.ph.engine.dispose()
    (tmp_path / "payherald.db").unlink()  # SQLite makes a new, empty one: no tables
    answer = signed_in.client.get("/")
    assert answer.status_code == 503
    assert "The store is unavailable" in answer.text


def test_static_files_are_served_by_the_app(dashboard: Dashboard) -> None:
    script = dashboard.client.get("/static/dashboard.js")
    assert script.status_code == 200
    assert "new EventSource(" in script.text
    assert "innerHTML" not in script.text
    assert dashboard.client.get("/static/dashboard.css").status_code == 200


# -- retrying a failed message -------------------------------------------------------------


def failed_event(dashboard: Dashboard) -> tuple[str, int]:
    dashboard.sms.script(PermanentDeliveryError("Twilio: account suspended", code="twilio_20003"))
    event_id = dashboard.receive(livemode=True)
    (notification,) = dashboard.ph.store.list_notifications(event_id=event_id)
    assert notification["status"] == "failed"
    return event_id, int(notification["id"])


def test_a_failed_message_has_a_retry_button_that_queues_it_again(signed_in: Dashboard) -> None:
    event_id, notification_id = failed_event(signed_in)
    page = signed_in.client.get("/notifications?status=failed").text
    assert f'action="/notifications/{notification_id}/retry"' in page
    answer = signed_in.client.post(
        f"/notifications/{notification_id}/retry",
        data={"csrf": signed_in.csrf(), "next": f"/events/{event_id}"},
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/events/{event_id}"
    (notification,) = signed_in.ph.store.list_notifications(event_id=event_id)
    assert notification["status"] == "pending"


def test_a_retry_without_the_csrf_token_is_refused(signed_in: Dashboard) -> None:
    event_id, notification_id = failed_event(signed_in)
    answer = signed_in.client.post(f"/notifications/{notification_id}/retry", data={})
    assert answer.status_code == 403
    (notification,) = signed_in.ph.store.list_notifications(event_id=event_id)
    assert notification["status"] == "failed"


def test_a_retry_of_a_message_that_was_sent_is_a_409(signed_in: Dashboard) -> None:
    event_id = signed_in.receive()
    (notification,) = signed_in.ph.store.list_notifications(event_id=event_id)
    answer = signed_in.client.post(
        f"/notifications/{notification['id']}/retry", data={"csrf": signed_in.csrf()}
    )
    assert answer.status_code == 409


# -- the live feed's rows ---------------------------------------------------------------

HARNESS = Path(__file__).with_name("feed_row_harness.js")
SCRIPT = Path(__file__).resolve().parents[2] / "src/payherald/web/static/dashboard.js"
FEED_SETTINGS = {"mode": "test", "kind": "", "status": "", "insert": "yes"}


def run_feed_script(messages: list[dict[str, Any]], **settings: str) -> dict[str, Any]:
    """What static/dashboard.js does with ``messages`` from /api/feed, in node on a
    minimal DOM: the EventSource URLs it opened and the feed's rows, as HTML."""
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: apt-get install nodejs")
    wanted = {**FEED_SETTINGS, "timezone": "Europe/Paris", **settings}
    done = subprocess.run(
        [node, str(HARNESS), str(SCRIPT), json.dumps(wanted)],
        input=json.dumps(messages),
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


class Markup(HTMLParser):
    """Markup as a list of tags (attributes sorted) and texts, whitespace between tags
    dropped."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[tuple[str, ...]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.parts.append(("start", tag, *(f"{name}={value}" for name, value in sorted(attrs))))

    def handle_endtag(self, tag: str) -> None:
        self.parts.append(("end", tag))

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.parts.append(("text", " ".join(data.split())))


def markup(html: str) -> list[tuple[str, ...]]:
    parser = Markup()
    parser.feed(html)
    parser.close()
    return parser.parts


def server_row(page: str, event_id: str) -> str:
    found = re.search(rf'<tr class="[^"]*" data-event-id="{event_id}">.*?</tr>', page, re.S)
    assert found is not None
    return found[0]


def test_the_script_builds_a_row_as_the_server_renders_it(signed_in: Dashboard) -> None:
    event_id = signed_in.receive(receipt_email=HOSTILE)
    summary = signed_in.ph.store.history.event(event_id)
    row = server_row(signed_in.client.get("/").text, event_id)
    ran = run_feed_script([summary])
    assert ran["opened"] == ["/api/feed?mode=test"]
    (built,) = ran["rows"]
    assert markup(built) == markup(row)
    assert "&lt;script&gt;" in built


def test_the_script_replaces_a_listed_event_and_skips_another_mode(signed_in: Dashboard) -> None:
    event_id = signed_in.receive()
    summary = signed_in.ph.store.history.event(event_id)
    assert summary is not None
    changed = {**summary, "notifications": [{**summary["notifications"][0], "status": "failed"}]}
    live = {**summary, "id": "evt_live", "livemode": True}
    ran = run_feed_script([summary, changed, live])
    (row,) = ran["rows"]
    assert 'class="notification-status status-failed"' in row


def test_the_script_shows_no_address_for_a_message_that_had_none(signed_in: Dashboard) -> None:
    event_id = signed_in.receive()
    summary = signed_in.ph.store.history.event(event_id)
    assert summary is not None
    nowhere = {**summary, "notifications": [{**summary["notifications"][0], "to": None}]}
    (row,) = run_feed_script([nowhere])["rows"]
    assert "null" not in row
    assert "→" not in row


# -- the parts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wanted", "kept"),
    [
        ("/events/evt_1?x=1", "/events/evt_1?x=1"),
        ("//evil.example", None),
        ("/\\evil.example", None),
        ("https://evil.example/", None),
        ("/ok\r\nSet-Cookie: x", None),
        ("", None),
        (None, None),
    ],
)
def test_only_a_path_on_this_site_is_followed(wanted: str | None, kept: str | None) -> None:
    assert local_path(wanted) == kept


def test_the_chart_scales_bars_to_the_busiest_day() -> None:
    bars = chart_bars(
        [
            {"day": "2026-12-03", "succeeded": 4, "failed": 1},
            {"day": "2026-12-04", "succeeded": 2, "failed": 0},
        ]
    )
    assert [(bar["succeeded_height"], bar["failed_height"]) for bar in bars] == [
        (100, 25),
        (50, 0),
    ]
    assert bars[0]["succeeded_y"] == 0


def test_a_chart_of_no_payments_has_flat_bars() -> None:
    bars = chart_bars([{"day": "2026-12-04", "succeeded": 0, "failed": 0}])
    assert bars[0]["succeeded_height"] == bars[0]["failed_height"] == 0
