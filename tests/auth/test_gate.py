"""The gate in front of the echo backend: who gets through, who is sent to sign in, who gets 401,
and what happens around token refresh and provider outages."""

from __future__ import annotations

import asyncio
import json
import logging
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from support.browser import SESSION_COOKIE

from .conftest import Hop, Stack, StackFactory

SHORT_TOKENS = {"access_token_ttl": 120, "id_token_ttl": 120}
REFRESH = {"refresh_margin_seconds": 30, "refresh_grace_seconds": 20}


async def raw_get(
    stack: Stack, path: str, cookies: dict[str, str], *, accept: str = "text/html"
) -> Hop:
    """A request carrying exactly `cookies` (no jar): how a tab with an old cookie looks."""
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            stack.url(path), headers={"Cookie": header, "Accept": accept}, allow_redirects=False
        ) as response,
    ):
        return Hop("GET", stack.url(path), response.status, response.headers, await response.text())


def sets_session(hop: Hop) -> bool:
    return any(c.startswith(SESSION_COOKIE + "=") and "Max-Age=0" not in c for c in hop.set_cookies)


def clears_session(hop: Hop) -> bool:
    return any(c.startswith(SESSION_COOKIE + "=;") and "Max-Age=0" in c for c in hop.set_cookies)


def user_seen(hop: Hop) -> str | None:
    for name, value in hop.json()["headers"]:
        if name.lower() == "x-forwarded-user":
            return str(value)
    return None


@pytest.mark.parametrize(
    "headers",
    [
        {"Accept": "application/json"},
        {"Accept": "text/html", "X-Requested-With": "XMLHttpRequest"},
    ],
)
async def test_api_client_gets_401_json_not_a_redirect(
    make_stack: StackFactory, headers: dict[str, str]
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hop = await browser.request("GET", stack.url("/api/items"), headers=headers)
    assert hop.status == 401
    assert "Location" not in hop.headers
    assert hop.headers["WWW-Authenticate"] == 'Bearer realm="sidecar"'
    assert hop.json()["error"] == "unauthenticated"
    assert stack.provider.counters.authorize == 0


async def test_non_get_request_without_session_gets_401(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hop = await browser.request("POST", stack.url("/form"), data={"a": "1"})
    assert hop.status == 401
    assert "Location" not in hop.headers
    assert not any("_login_" in c for c in hop.set_cookies)


async def test_browser_without_session_is_sent_to_the_provider(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hop = await browser.request("GET", stack.url("/docs/a?b=c"))
    assert hop.status == 302
    location = urlsplit(hop.location)
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert hop.location.startswith(stack.provider.issuer + "/authorize?")
    assert query["redirect_uri"] == stack.url("/oauth2/callback")
    assert query["code_challenge_method"] == "S256"
    assert query["state"] and query["nonce"]
    assert hop.headers["Cache-Control"] == "no-store"
    assert any("_login_" in c for c in hop.set_cookies)


async def test_sign_in_page_instead_of_the_redirect(make_stack: StackFactory) -> None:
    stack = await make_stack(auth={"sign_in_page": True, "provider_name": "Example ID"})
    browser = await stack.browser()
    hop = await browser.request("GET", stack.url("/docs?page=2"))
    assert hop.status == 401
    assert "Sign in with Example ID" in hop.text
    assert "/oauth2/start?rd=%2Fdocs%3Fpage%3D2" in hop.text
    hops = await browser.follow(stack.url("/oauth2/start?rd=%2Fdocs%3Fpage%3D2"))
    assert hops[-1].json()["raw_path"] == "/docs?page=2"


async def test_tampered_session_cookie_counts_as_none_and_is_cleared(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    cookies = browser.cookies()
    value = cookies[SESSION_COOKIE]
    cookies[SESSION_COOKIE] = value[:-4] + ("AAAA" if not value.endswith("AAAA") else "BBBB")
    hop = await raw_get(stack, "/private", cookies)
    assert hop.status == 302
    assert hop.location.startswith(stack.provider.issuer)
    assert clears_session(hop)
    api = await raw_get(stack, "/private", cookies, accept="application/json")
    assert api.status == 401


async def test_concurrent_requests_at_expiry_cause_one_refresh(make_stack: StackFactory) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=REFRESH)
    browser = await stack.browser()
    await stack.sign_in(browser)
    old_cookies = browser.cookies()
    stack.clock.advance(100)  # the access token expires at +120, refresh is due from +90
    hops = await asyncio.gather(*(raw_get(stack, f"/r{i}", old_cookies) for i in range(8)))
    assert [hop.status for hop in hops] == [200] * 8
    assert all(user_seen(hop) == "alice" for hop in hops)
    assert stack.provider.counters.refreshes == 1
    assert all(sets_session(hop) for hop in hops)


async def test_pre_refresh_cookie_is_served_within_the_grace_window(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=REFRESH)
    browser = await stack.browser()
    await stack.sign_in(browser)
    old_cookies = browser.cookies()
    stack.clock.advance(100)
    refreshed = await browser.request("GET", stack.url("/first"))
    assert refreshed.status == 200
    assert stack.provider.counters.refreshes == 1
    stack.clock.advance(15)  # inside the 20 s grace window
    late_tab = await raw_get(stack, "/late-tab", old_cookies)
    assert late_tab.status == 200
    assert user_seen(late_tab) == "alice"
    assert stack.provider.counters.refreshes == 1  # the rotated-out token was not spent again
    fresh = await browser.request("GET", stack.url("/second"))  # the jar has the new cookie
    assert fresh.status == 200
    assert stack.provider.counters.refreshes == 1


async def test_old_cookie_after_the_grace_window_must_sign_in_again(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=REFRESH)
    browser = await stack.browser()
    await stack.sign_in(browser)
    old_cookies = browser.cookies()
    stack.clock.advance(100)
    assert (await browser.request("GET", stack.url("/first"))).status == 200
    stack.clock.advance(21)
    hop = await raw_get(stack, "/late-tab", old_cookies)  # its refresh token was rotated out
    assert hop.status == 302
    assert hop.location.startswith(stack.provider.issuer)
    assert clears_session(hop)


async def test_rejected_refresh_sends_browsers_to_sign_in_and_apis_401(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=REFRESH)
    browser = await stack.browser()
    await stack.sign_in(browser)
    cookies = browser.cookies()
    stack.provider.faults.refresh_invalid_grant = True
    stack.clock.advance(100)
    api = await raw_get(stack, "/api", cookies, accept="application/json")
    assert api.status == 401
    assert api.json()["error"] == "unauthenticated"
    assert clears_session(api)
    page = await raw_get(stack, "/page", cookies)
    assert page.status == 302
    assert page.location.startswith(stack.provider.issuer + "/authorize")
    assert clears_session(page)


async def test_provider_outage_keeps_the_session_until_the_token_expires(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=REFRESH)
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.provider.faults.down = True
    stack.clock.advance(100)
    kept = await browser.request("GET", stack.url("/during-outage"))
    assert kept.status == 200
    assert user_seen(kept) == "alice"
    assert not kept.set_cookies
    stack.clock.advance(25)  # past the access token's real expiry
    expired = await browser.request("GET", stack.url("/still-down"))
    assert expired.status == 503
    assert "identity provider is not reachable" in expired.text
    stack.provider.faults.down = False
    back = await browser.request("GET", stack.url("/recovered"))
    assert back.status == 200
    assert stack.provider.counters.refreshes == 1


async def test_provider_down_at_start_then_up(make_stack: StackFactory) -> None:
    stack = await make_stack(provider_down=True, wait_ready=False)
    browser = await stack.browser()
    ready = await browser.request("GET", stack.url("/oauth2/readyz"))
    assert ready.status == 503
    assert "provider" in ready.json()["failing"]
    live = await browser.request("GET", stack.url("/oauth2/healthz"))
    assert live.status == 200
    page = await browser.request("GET", stack.url("/"))
    assert page.status == 503
    assert "identity provider is not reachable" in page.text
    stack.provider.faults.down = False
    await stack.wait_ready(timeout=10)
    assert (await browser.request("GET", stack.url("/oauth2/readyz"))).status == 200
    await stack.sign_in(browser, "/works")


async def test_logs_name_the_user_and_never_a_secret(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack = await make_stack()
    browser = await stack.browser()
    hops = await stack.sign_in(browser, "/logged")
    await browser.request("GET", stack.url("/again"))
    for _ in range(50):
        await asyncio.sleep(0)  # the access line is written after the response is flushed
    callback_query = parse_qs(urlsplit(hops[2].url).query)
    secrets = [
        callback_query["code"][0],
        callback_query["state"][0],
        browser.cookies()[SESSION_COOKIE],
    ]
    events = [r for r in caplog.records if r.name == "sidecar.auth"]
    assert [getattr(r, "event", "") for r in events] == ["sign_in_started", "sign_in_completed"]
    access = [r for r in caplog.records if r.name == "sidecar.access"]
    allowed = [r for r in access if getattr(r, "decision", "") == "allow"]
    assert allowed and getattr(allowed[-1], "sub", "") == "alice"
    assert getattr(allowed[-1], "email", "") == "alice@example.org"
    everything = "\n".join(
        json.dumps({k: str(v) for k, v in vars(r).items()}) + r.getMessage() for r in caplog.records
    )
    for secret in secrets:
        assert secret not in everything


async def test_background_fetch_without_session_gets_401_not_an_attempt(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hop = await browser.request(
        "GET", stack.url("/poll"), headers={"Accept": "*/*", "Sec-Fetch-Mode": "cors"}
    )
    assert hop.status == 401
    assert not any("_login_" in c for c in hop.set_cookies)
    navigation = await browser.request(
        "GET", stack.url("/page"), headers={"Sec-Fetch-Mode": "navigate"}
    )
    assert navigation.status == 302


async def test_idle_timeout_is_extended_by_use(make_stack: StackFactory) -> None:
    stack = await make_stack(session={"idle_timeout_seconds": 600})
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.clock.advance(300)
    touched = await browser.request("GET", stack.url("/a"))
    assert touched.status == 200
    assert sets_session(touched)
    stack.clock.advance(500)  # 800 s after sign-in, 500 s after the last use
    assert (await browser.request("GET", stack.url("/b"))).status == 200
    stack.clock.advance(601)
    idle = await browser.request("GET", stack.url("/c"))
    assert idle.status == 302
    assert idle.location.startswith(stack.provider.issuer)


async def test_public_url_fixes_the_redirect_uri(make_stack: StackFactory) -> None:
    stack = await make_stack(server={"public_url": "https://app.example.com"})
    browser = await stack.browser()
    hop = await browser.request("GET", stack.url("/x"), headers={"Host": "evil.test"})
    query = {k: v[0] for k, v in parse_qs(urlsplit(hop.location).query).items()}
    assert query["redirect_uri"] == "https://app.example.com/oauth2/callback"
    attempt_cookies = [c for c in hop.set_cookies if "_login_" in c]
    assert attempt_cookies and all("Secure" in c for c in attempt_cookies)
    assert all(c.startswith("__Host-") for c in attempt_cookies)


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [
        (["127.0.0.1/32"], "https://app.example.com/oauth2/callback"),
        ([], None),
    ],
)
async def test_forwarded_host_is_believed_only_from_trusted_proxies(
    make_stack: StackFactory, trusted: list[str], expected: str | None
) -> None:
    stack = await make_stack(server={"trusted_proxies": trusted})
    browser = await stack.browser()
    hop = await browser.request(
        "GET",
        stack.url("/x"),
        headers={"X-Forwarded-Proto": "https", "X-Forwarded-Host": "app.example.com"},
    )
    query = {k: v[0] for k, v in parse_qs(urlsplit(hop.location).query).items()}
    assert query["redirect_uri"] == (expected or stack.url("/oauth2/callback"))
