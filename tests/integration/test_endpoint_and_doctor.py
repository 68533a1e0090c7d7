"""`payherald endpoint register|list` and `payherald doctor`, as a user runs them,
against localstripe (with the webhook endpoints API the test launcher adds to it), a
loopback Twilio-shaped account API, and, where Stripe must refuse or fail one call, a
loopback stand-in for Stripe's webhook endpoints API."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from payherald import FrozenClock, load_settings
from payherald.api_versions import NEWEST_SUPPORTED
from payherald.doctor import run_checks
from payherald.quiet_hours import QuietHours
from tests import peers
from tests.acceptance.test_cli import cli
from tests.support import LiveServer, answer_json, build_for_tests, serving

ACCOUNT = "AC" + "1" * 32
TOKEN = "e" * 32
SENDER = "+15005550006"
PUBLIC = "https://payherald.example.com"


class TwilioAccountPeer(ThreadingHTTPServer):
    """Answers the two requests doctor makes: the account, and its numbers."""

    daemon_threads = True

    def __init__(self, *, status: str = "active", numbers: tuple[str, ...] = (SENDER,)) -> None:
        super().__init__(("127.0.0.1", 0), _TwilioHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.status, self.numbers = status, numbers


class _TwilioHandler(BaseHTTPRequestHandler):
    server: TwilioAccountPeer

    def do_GET(self) -> None:
        expected = base64.b64encode(f"{ACCOUNT}:{TOKEN}".encode()).decode()
        if self.headers.get("Authorization") != f"Basic {expected}":
            answer_json(self, 401, {"code": 20003, "message": "Authenticate", "status": 401})
            return
        url = urlsplit(self.path)
        if url.path == f"/2010-04-01/Accounts/{ACCOUNT}.json":
            answer_json(self, 200, {"sid": ACCOUNT, "status": self.server.status})
            return
        if url.path == f"/2010-04-01/Accounts/{ACCOUNT}/IncomingPhoneNumbers.json":
            wanted = parse_qs(url.query).get("PhoneNumber", [None])[0]
            numbers = [
                {"sid": "PN" + "0" * 32, "phone_number": n, "capabilities": {"sms": True}}
                for n in self.server.numbers
                if wanted in (None, n)
            ]
            answer_json(
                self,
                200,
                {
                    "incoming_phone_numbers": numbers,
                    "next_page_uri": None,
                    "page": 0,
                    "page_size": 20,
                    "start": 0,
                    "end": len(numbers),
                },
            )
            return
        answer_json(self, 404, {"code": 20404, "message": "Not found", "status": 404})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def twilio_account() -> Iterator[TwilioAccountPeer]:
    with serving(TwilioAccountPeer()) as server:
        yield server


@pytest.fixture
def fresh(localstripe: peers.LocalStripe) -> peers.LocalStripe:
    localstripe.flush()
    client = localstripe.stripe_client()
    for endpoint in client.v1.webhook_endpoints.list().data:
        client.v1.webhook_endpoints.delete(endpoint.id)
    return localstripe


def secret_in(output: str) -> str:
    # Marked with the endpoint's mode: localstripe's keys are test keys.
    match = re.search(r"export STRIPE_WEBHOOK_SECRET=test:(whsec_\w+)", output)
    assert match, output
    return match.group(1)


def test_register_twice_gives_one_endpoint_and_its_secret_works(
    fresh: peers.LocalStripe, tmp_path: Path, sqlite_url: str
) -> None:
    build_for_tests(sqlite_url).engine.dispose()  # a migrated store
    holder: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await holder["app"](scope, receive, send)

    server = LiveServer(app)
    env = {
        "STRIPE_SECRET_KEY": "sk_test_payherald",
        "STRIPE_API_BASE": fresh.url,
        "PAYHERALD_DATABASE_URL": sqlite_url,
    }
    first = cli(tmp_path, "endpoint", "register", server.url, **env)
    assert first.returncode == 0, first.stderr
    assert f"for {server.url}/webhooks/stripe" in first.stdout
    secret = secret_in(first.stdout)
    second = cli(tmp_path, "endpoint", "register", server.url + "/webhooks/stripe", **env)
    assert second.returncode == 0, second.stderr
    assert "no new endpoint was made" in second.stdout
    assert "whsec_" not in second.stdout
    (endpoint,) = fresh.stripe_client().v1.webhook_endpoints.list().data
    assert endpoint.url == f"{server.url}/webhooks/stripe"
    listed = cli(tmp_path, "endpoint", "list", "--json", **env)
    assert f'"id": "{endpoint.id}"' in listed.stdout

    # Exactly the rules' event types; a rule turned off is dropped on the next register.
    ph = build_for_tests(
        sqlite_url,
        settings={**env, "STRIPE_WEBHOOK_SECRET": secret, "PAYHERALD_TEST_ALLOWLIST": ""},
        quiet_hours=QuietHours(enabled=False),
    )
    assert sorted(endpoint.enabled_events) == sorted(ph.rules.event_types)
    rules = tmp_path / "payherald.toml"
    rules.write_text(
        "[rules.dispute_alert]\nenabled = false\n[rules.dispute_customer]\nenabled = false\n"
    )
    third = cli(tmp_path, "endpoint", "register", server.url, PAYHERALD_CONFIG=str(rules), **env)
    assert "removed: charge.dispute.created" in third.stdout
    assert len(fresh.stripe_client().v1.webhook_endpoints.list().data) == 1

    # The secret it printed is the one Stripe signs with: an event gets through.
    holder["app"] = ph.http_app
    with server:
        peers.create_customer_and_succeeded_payment(fresh.stripe_client())
        deadline = time.monotonic() + 20
        while not ph.store.list_events(type="payment_intent.succeeded"):
            assert time.monotonic() < deadline, "localstripe's event never got through"
            time.sleep(0.05)
    ph.engine.dispose()


def test_register_refuses_plain_http_to_another_host(tmp_path: Path) -> None:
    result = cli(
        tmp_path,
        "endpoint",
        "register",
        "http://payherald.example.com",
        STRIPE_SECRET_KEY="sk_test_a1b2c3",
    )
    assert result.returncode == 2
    assert "is not HTTPS" in result.stderr


# -- doctor ------------------------------------------------------------------------------


def doctor_env(
    localstripe: peers.LocalStripe, twilio: TwilioAccountPeer, database: str, **changes: str
) -> dict[str, str]:
    env = {
        "STRIPE_SECRET_KEY": "sk_test_payherald",
        "STRIPE_API_BASE": localstripe.url,
        "PAYHERALD_DATABASE_URL": database,
        "PAYHERALD_PUBLIC_URL": PUBLIC,
        "TWILIO_ACCOUNT_SID": ACCOUNT,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "TWILIO_FROM_NUMBER": SENDER,
        "TWILIO_API_BASE": twilio.url,
    }
    env.update(changes)
    return {k: v for k, v in env.items() if v}


@pytest.fixture
def ready(
    fresh: peers.LocalStripe, twilio_account: TwilioAccountPeer, sqlite_url: str, tmp_path: Path
) -> dict[str, str]:
    """Everything doctor checks, set up right: the environment to run it in."""
    build_for_tests(sqlite_url).engine.dispose()
    env = doctor_env(fresh, twilio_account, sqlite_url)
    registered = cli(tmp_path, "endpoint", "register", PUBLIC, **env)
    assert registered.returncode == 0, registered.stderr
    env["STRIPE_WEBHOOK_SECRET"] = secret_in(registered.stdout)
    return env


def test_doctor_passes_when_everything_is_right(ready: dict[str, str], tmp_path: Path) -> None:
    result = cli(tmp_path, "doctor", **ready)
    assert result.returncode == 0, result.stdout + result.stderr
    for name in (
        "store",
        "stripe key",
        "clock",
        "webhook secret",
        "webhook endpoint",
        "webhook secret matches",
        "webhook api version",
        "public url",
        "twilio",
        "twilio sender",
    ):
        assert f"ok   {name}:" in result.stdout, result.stdout
    assert "Everything checked is ready." in result.stdout


@pytest.mark.parametrize(
    ("changes", "failing", "words"),
    [
        ({"STRIPE_SECRET_KEY": ""}, "stripe key", "STRIPE_SECRET_KEY is not set"),
        ({"STRIPE_WEBHOOK_SECRET": ""}, "webhook secret", "development secret"),
        (
            {"STRIPE_WEBHOOK_SECRET": "whsec_" + "0" * 32},
            "webhook secret matches",
            "is not the signing secret of",
        ),
        ({"PAYHERALD_PUBLIC_URL": "http://payherald.example.com"}, "public url", "is not HTTPS"),
        (
            {"STRIPE_SECRET_KEY": "sk_live_payherald"},
            "webhook endpoint",
            "it is a test-mode endpoint but the key is live mode",
        ),
        (
            {"PAYHERALD_PUBLIC_URL": "https://elsewhere.example.com"},
            "webhook endpoint",
            "no Stripe webhook endpoint for",
        ),
        ({"TWILIO_AUTH_TOKEN": "d" * 32}, "twilio", "Twilio refused the credentials"),
        (
            {"TWILIO_FROM_NUMBER": "+15005550009"},
            "twilio sender",
            "is not a number of this Twilio account",
        ),
        (
            {"TWILIO_ACCOUNT_SID": "", "TWILIO_AUTH_TOKEN": "", "TWILIO_FROM_NUMBER": ""},
            "twilio",
            "are not set",
        ),
        (
            {"PAYHERALD_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/payherald"},
            "store",
            "The event store is unavailable",
        ),
    ],
)
def test_doctor_explains_each_misconfiguration(
    ready: dict[str, str], tmp_path: Path, changes: dict[str, str], failing: str, words: str
) -> None:
    env = {k: v for k, v in {**ready, **changes}.items() if v}
    result = cli(tmp_path, "doctor", **env)
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(text for text in result.stdout.splitlines() if text.startswith(f"FAIL {failing}:"))
    assert words in line
    assert "fix:" in result.stdout


def test_doctor_finds_an_endpoint_missing_event_types(
    ready: dict[str, str], fresh: peers.LocalStripe, tmp_path: Path
) -> None:
    client = fresh.stripe_client()
    (endpoint,) = client.v1.webhook_endpoints.list().data
    client.v1.webhook_endpoints.update(endpoint.id, params={"enabled_events": ["invoice.paid"]})
    result = cli(tmp_path, "doctor", **ready)
    assert result.returncode == 1
    assert "it does not send charge.dispute.created" in result.stdout


def test_doctor_finds_a_disabled_endpoint_and_register_enables_it(
    ready: dict[str, str], fresh: peers.LocalStripe, tmp_path: Path
) -> None:
    client = fresh.stripe_client()
    (endpoint,) = client.v1.webhook_endpoints.list().data
    client.v1.webhook_endpoints.update(endpoint.id, params={"disabled": True})
    result = cli(tmp_path, "doctor", **ready)
    assert result.returncode == 1
    assert f"FAIL webhook endpoint: {endpoint.id} for {PUBLIC}/webhooks/stripe: it is disabled" in (
        result.stdout
    )
    assert f"fix: payherald endpoint register {PUBLIC}" in result.stdout
    assert cli(tmp_path, "endpoint", "register", PUBLIC, **ready).returncode == 0
    assert cli(tmp_path, "doctor", **ready).returncode == 0


def test_doctor_finds_a_suspended_twilio_account(
    ready: dict[str, str], twilio_account: TwilioAccountPeer, tmp_path: Path
) -> None:
    twilio_account.status = "suspended"
    result = cli(tmp_path, "doctor", **ready)
    assert result.returncode == 1
    assert "FAIL twilio: the Twilio account is suspended" in result.stdout
    assert "fix: Reactivate it in the Twilio console" in result.stdout


def test_an_endpoint_made_by_hand_with_a_trailing_slash_is_the_same_endpoint(
    fresh: peers.LocalStripe, twilio_account: TwilioAccountPeer, sqlite_url: str, tmp_path: Path
) -> None:
    """Someone made the endpoint in the dashboard as https://Host/webhooks/stripe/: doctor
    finds it, and register updates it instead of making a second one."""
    build_for_tests(sqlite_url).engine.dispose()
    env = doctor_env(fresh, twilio_account, sqlite_url)
    client = fresh.stripe_client()
    by_hand = client.v1.webhook_endpoints.create(
        params={
            "url": "https://PayHerald.example.com:443/webhooks/stripe/",
            "enabled_events": ["invoice.paid"],
        }
    )
    env["STRIPE_WEBHOOK_SECRET"] = by_hand.secret or ""
    before = cli(tmp_path, "doctor", **env)
    assert f"FAIL webhook endpoint: {by_hand.id} for {PUBLIC}/webhooks/stripe: it does not" in (
        before.stdout
    )
    registered = cli(tmp_path, "endpoint", "register", PUBLIC, **env)
    assert registered.returncode == 0, registered.stderr
    assert "no new endpoint was made" in registered.stdout
    assert [e.id for e in client.v1.webhook_endpoints.list().data] == [by_hand.id]
    after = cli(tmp_path, "doctor", **env)
    assert f"ok   webhook endpoint: {by_hand.id} sends every event type" in after.stdout


# -- API versions: localstripe's endpoints (the launcher's) keep the api_version given at
# creation and return it, as Stripe's do, and ignore it on update.


def test_register_pins_a_new_endpoint_to_the_sdks_api_version(
    fresh: peers.LocalStripe, tmp_path: Path, sqlite_url: str
) -> None:
    build_for_tests(sqlite_url).engine.dispose()
    env = {
        "STRIPE_SECRET_KEY": "sk_test_payherald",
        "STRIPE_API_BASE": fresh.url,
        "PAYHERALD_DATABASE_URL": sqlite_url,
    }
    result = cli(tmp_path, "endpoint", "register", PUBLIC, **env)
    assert result.returncode == 0, result.stderr
    assert f"  pinned to API version {NEWEST_SUPPORTED}\n" in result.stdout
    (endpoint,) = fresh.stripe_client().v1.webhook_endpoints.list().data
    assert endpoint.api_version == NEWEST_SUPPORTED == "2026-10-28.endive"


def by_hand(localstripe: peers.LocalStripe, api_version: str | None) -> Any:
    """An endpoint for PUBLIC made in the dashboard, on ``api_version`` (None: the
    account's default), sending every event."""
    params: dict[str, Any] = {"url": PUBLIC + "/webhooks/stripe", "enabled_events": ["*"]}
    if api_version is not None:
        params["api_version"] = api_version
    return localstripe.stripe_client().v1.webhook_endpoints.create(params=params)


@pytest.fixture
def hand_made_env(
    fresh: peers.LocalStripe, twilio_account: TwilioAccountPeer, sqlite_url: str
) -> dict[str, str]:
    build_for_tests(sqlite_url).engine.dispose()
    return doctor_env(fresh, twilio_account, sqlite_url)


def test_register_on_an_endpoint_of_another_version_says_stripe_cannot_change_it(
    fresh: peers.LocalStripe, hand_made_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = by_hand(fresh, "2024-06-20")
    result = cli(tmp_path, "endpoint", "register", PUBLIC, **hand_made_env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        f"warning: {endpoint.id} is on API version 2024-06-20, not {NEWEST_SUPPORTED}, the "
        "one payherald pins; Stripe cannot change an endpoint's API version in place: to pin "
        f"it to {NEWEST_SUPPORTED}, delete {endpoint.id} in Developers > Webhooks, run "
        f"`payherald endpoint register {PUBLIC}` to create a new endpoint pinned to it, and "
        "set STRIPE_WEBHOOK_SECRET to the new secret it prints."
    ]
    (still,) = fresh.stripe_client().v1.webhook_endpoints.list().data
    assert (still.id, still.api_version) == (endpoint.id, "2024-06-20")


def test_doctor_warns_of_an_endpoint_older_than_basil_and_passes(
    fresh: peers.LocalStripe, hand_made_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = by_hand(fresh, "2024-06-20")
    result = cli(tmp_path, "doctor", STRIPE_WEBHOOK_SECRET=endpoint.secret, **hand_made_env)
    assert result.returncode == 0, result.stdout
    assert (
        f"warn webhook api version: {endpoint.id} is on 2024-06-20: payherald reads it, but "
        "recent Stripe accounts default to newer shapes (basil, 2025-03-31, and later)"
    ) in result.stdout
    assert "fix: Stripe cannot change an endpoint's API version in place" in result.stdout
    assert "Everything checked is ready (1 warning(s) above)." in result.stdout


def test_doctor_warns_of_an_endpoint_on_the_accounts_default_version(
    fresh: peers.LocalStripe, hand_made_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = by_hand(fresh, None)
    result = cli(tmp_path, "doctor", STRIPE_WEBHOOK_SECRET=endpoint.secret, **hand_made_env)
    assert result.returncode == 0, result.stdout
    assert (
        f"warn webhook api version: {endpoint.id} has no API version of its own: Stripe sends "
        "it events in the account's default version"
    ) in result.stdout


def test_doctor_fails_an_endpoint_on_a_version_newer_than_payherald_reads(
    fresh: peers.LocalStripe, hand_made_env: dict[str, str], tmp_path: Path
) -> None:
    endpoint = by_hand(fresh, "2099-01-01.zinnia")
    result = cli(tmp_path, "doctor", STRIPE_WEBHOOK_SECRET=endpoint.secret, **hand_made_env)
    assert result.returncode == 1
    assert (
        f"FAIL webhook api version: {endpoint.id} is on 2099-01-01.zinnia, whose events "
        "payherald stores but does not act on: API version 2099-01-01.zinnia is newer than "
        f"{NEWEST_SUPPORTED}"
    ) in result.stdout


def test_doctor_finds_an_unmigrated_store(ready: dict[str, str], tmp_path: Path) -> None:
    env = {**ready, "PAYHERALD_DATABASE_URL": f"sqlite:///{tmp_path / 'empty.db'}"}
    result = cli(tmp_path, "doctor", **env)
    assert result.returncode == 1
    assert "FAIL store:" in result.stdout
    assert "payherald migrate" in result.stdout


def test_doctor_finds_a_clock_far_from_stripes(ready: dict[str, str], sqlite_url: str) -> None:
    from payherald.app import stripe_client

    settings = load_settings(**ready)
    ph = build_for_tests(sqlite_url, settings=ready)
    slow = FrozenClock(FrozenClock().now() - timedelta(minutes=4))
    checks = {
        check.name: check
        for check in run_checks(
            settings=settings,
            store=ph.store,
            rules=ph.rules,
            stripe_client=stripe_client(settings),
            twilio_client=None,
            clock=slow,
        )
    }
    assert not checks["clock"].ok
    assert "s off Stripe's" in checks["clock"].detail
    ph.engine.dispose()


# -- Stripe refusing or failing one call ---------------------------------------------------
# localstripe answers every call it knows, so these use a loopback stand-in for Stripe's
# webhook endpoints API that refuses or fails the one call a test needs.

RESTRICTED = (
    "The provided key 'rk_test_***' does not have the required permissions for this "
    "endpoint on account 'acct_1'. Having the 'rak_webhook_write' permission would allow "
    "this request to continue."
)


class StripeStandIn(ThreadingHTTPServer):
    """/v1/webhook_endpoints on 127.0.0.1: GET lists ``endpoints``, POST creates one; a
    status in ``failing`` (by method) answers that status with Stripe's error shape."""

    daemon_threads = True

    def __init__(self, **failing: tuple[int, str]) -> None:
        super().__init__(("127.0.0.1", 0), _StripeStandInHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.failing = failing
        self.endpoints: list[dict[str, Any]] = []
        self.created: list[dict[str, list[str]]] = []


class _StripeStandInHandler(BaseHTTPRequestHandler):
    server: StripeStandIn

    def _fail(self) -> bool:
        if self.command not in self.server.failing:
            return False
        status, message = self.server.failing[self.command]
        kind = "api_error" if status >= 500 else "invalid_request_error"
        answer_json(self, status, {"error": {"type": kind, "message": message}})
        return True

    def do_GET(self) -> None:
        if not self._fail():
            answer_json(
                self,
                200,
                {
                    "object": "list",
                    "data": self.server.endpoints,
                    "has_more": False,
                    "url": "/v1/webhook_endpoints",
                },
            )

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"] or 0)).decode())
        if self._fail():
            return
        self.server.created.append(form)
        endpoint = {
            "id": f"we_{len(self.server.created)}",
            "object": "webhook_endpoint",
            "url": form["url"][0],
            "enabled_events": form.get("enabled_events[]", []),
            "api_version": form.get("api_version", [None])[0],
            "status": "enabled",
            "livemode": False,
            "created": int(time.time()),
            "secret": "whsec_" + "5" * 32,
        }
        self.server.endpoints.append({k: v for k, v in endpoint.items() if k != "secret"})
        answer_json(self, 200, endpoint)

    def log_message(self, format: str, *args: object) -> None:
        pass


def stand_in_env(stand_in: StripeStandIn, sqlite_url: str) -> dict[str, str]:
    build_for_tests(sqlite_url).engine.dispose()  # a migrated store
    return {
        "STRIPE_SECRET_KEY": "rk_test_payherald",
        "STRIPE_API_BASE": stand_in.url,
        "PAYHERALD_DATABASE_URL": sqlite_url,
        "PAYHERALD_PUBLIC_URL": PUBLIC,
    }


def doctor_line(stdout: str, start: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith(start))


def test_doctor_does_not_blame_a_key_that_may_not_list_endpoints(
    tmp_path: Path, sqlite_url: str
) -> None:
    with serving(StripeStandIn(GET=(403, RESTRICTED))) as stand_in:
        result = cli(tmp_path, "doctor", **stand_in_env(stand_in, sqlite_url))
    assert "ok   stripe key: works (test mode), but it may not list webhook endpoints" in (
        result.stdout
    )
    assert doctor_line(result.stdout, "FAIL webhook endpoint:") == (
        "FAIL webhook endpoint: STRIPE_SECRET_KEY may not list the webhook endpoints (GET "
        f"/v1/webhook_endpoints: HTTP 403, {RESTRICTED.rstrip('.')}); use a secret key, or "
        "give the restricted key write access to Webhook Endpoints."
    )
    assert result.returncode == 1


def test_doctor_says_which_call_failed_when_stripe_fails_and_leaves_the_key_alone(
    tmp_path: Path, sqlite_url: str
) -> None:
    with serving(StripeStandIn(GET=(503, "Stripe is down for maintenance."))) as stand_in:
        result = cli(tmp_path, "doctor", **stand_in_env(stand_in, sqlite_url))
    assert "ok   stripe key: not checked: GET /v1/webhook_endpoints failed (below)" in (
        result.stdout
    )
    assert doctor_line(result.stdout, "FAIL webhook endpoint:").startswith(
        "FAIL webhook endpoint: Could not list the webhook endpoints: Stripe failed (GET "
        "/v1/webhook_endpoints: HTTP 503, Stripe is down for maintenance); this is on "
        "Stripe's side"
    )
    assert "FAIL stripe key" not in result.stdout


def test_doctor_fails_the_key_stripe_refuses(tmp_path: Path, sqlite_url: str) -> None:
    with serving(StripeStandIn(GET=(401, "Invalid API Key provided: rk_test_***"))) as stand_in:
        result = cli(tmp_path, "doctor", **stand_in_env(stand_in, sqlite_url))
    assert doctor_line(result.stdout, "FAIL stripe key:") == (
        "FAIL stripe key: Stripe refused STRIPE_SECRET_KEY when asked to list the webhook "
        "endpoints (GET /v1/webhook_endpoints: Invalid API Key provided: rk_test_***); check "
        "the key in the Stripe dashboard, Developers > API keys."
    )


def test_endpoint_list_when_stripe_fails_is_one_sentence(tmp_path: Path, sqlite_url: str) -> None:
    with serving(StripeStandIn(GET=(500, "An unknown error occurred"))) as stand_in:
        result = cli(tmp_path, "endpoint", "list", **stand_in_env(stand_in, sqlite_url))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "payherald: Could not list the webhook endpoints: Stripe failed (GET "
        "/v1/webhook_endpoints: HTTP 500, An unknown error occurred); this is on Stripe's "
        "side, so run this again in a few minutes (status.stripe.com says whether Stripe is "
        "down)."
    ]


def test_endpoint_register_when_stripe_cannot_be_reached_is_one_sentence(
    tmp_path: Path, sqlite_url: str
) -> None:
    build_for_tests(sqlite_url).engine.dispose()
    env = {
        "STRIPE_SECRET_KEY": "sk_test_payherald",
        "STRIPE_API_BASE": f"http://127.0.0.1:{peers.free_port()}",  # nobody listens
        "PAYHERALD_DATABASE_URL": sqlite_url,
    }
    result = cli(tmp_path, "endpoint", "register", PUBLIC, **env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "payherald: Could not list the webhook endpoints: Stripe could not be reached (GET "
        "/v1/webhook_endpoints: Connection refused); check this machine's network (and "
        "STRIPE_API_BASE, if it is set), then run this again."
    ]


def test_endpoint_register_that_stripe_refuses_says_what_it_refused(
    tmp_path: Path, sqlite_url: str
) -> None:
    refusal = "Invalid URL: URLs must be publicly accessible."
    with serving(StripeStandIn(POST=(400, refusal))) as stand_in:
        env = stand_in_env(stand_in, sqlite_url)
        result = cli(tmp_path, "endpoint", "register", PUBLIC, **env)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "payherald: Stripe refused to create the webhook endpoint (POST /v1/webhook_endpoints: "
        "HTTP 400, Invalid URL: URLs must be publicly accessible); fix what it names, then run "
        "this again."
    ]
