"""Forward-auth (`/oauth2/auth`): which original request a proxy may name, the policy applied to
it, the 202 identity headers, the 401 with its sign-in URL, and refreshed cookies passed back.

Parsing and route choice are tested as tables; the endpoint through the auth tests' real stack
(development provider, echo backend, sidecar), asked the way nginx and Traefik ask it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict
from support.browser import SESSION_COOKIE
from support.echo import make_echo_app

from sidecar.app import create_app
from sidecar.auth.forward_auth import (
    OriginalRequest,
    OriginalRequestError,
    choose_route,
    parse_original_request,
)
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.routing import RouteTable

from .conftest import (
    ALICE,
    CLIENT_ID,
    CLIENT_SECRET,
    SESSION_SECRET,
    Browser,
    FakeClock,
    Hop,
    Stack,
)

BOB = {"sub": "bob", "email": "bob@example.org", "preferred_username": "bob", "groups": ["staff"]}
POLICIES: dict[str, Any] = {"admins": {"groups_any": ["admins"]}}
ROUTES: list[dict[str, Any]] = [
    {"path": "/static", "access": "public", "name": "static"},
    {"exact": "/health", "access": "public", "methods": ["GET", "HEAD"], "name": "health"},
    {"path": "/admin", "policy": "admins", "name": "admin"},
]
LOOPBACK = ["127.0.0.1/32", "::1/128"]

# -- parsing the original request ---------------------------------------------------------------


def parse(headers: Mapping[str, str]) -> OriginalRequest | None:
    return parse_original_request(CIMultiDict(headers), scheme="http", host="auth.internal:4180")


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        (  # Traefik
            {
                "X-Forwarded-Method": "POST",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "app.example.com",
                "X-Forwarded-Uri": "/admin/users?page=2",
            },
            OriginalRequest("POST", "https://app.example.com", "/admin/users?page=2"),
        ),
        (  # nginx example: a full URL, its scheme and host win over the request's own
            {"X-Original-URL": "https://app.example.com:8443/a?b=c", "X-Original-Method": "GET"},
            OriginalRequest("GET", "https://app.example.com:8443", "/a?b=c"),
        ),
        (  # a full URL's host wins over X-Forwarded-Host (nginx names the URL it routed)
            {"X-Original-URL": "http://app.example.com/admin", "X-Forwarded-Host": "a.example"},
            OriginalRequest("GET", "http://app.example.com", "/admin"),
        ),
        (  # a path only: the request's own scheme and host
            {"x-original-url": "/docs"},
            OriginalRequest("GET", "http://auth.internal:4180", "/docs"),
        ),
        (  # a full URL without a path is its root
            {"X-Original-URL": "http://app.example.com?x=1"},
            OriginalRequest("GET", "http://app.example.com", "/?x=1"),
        ),
        (  # both conventions at once: fine while they agree
            {
                "X-Forwarded-Uri": "/admin",
                "X-Forwarded-Host": "app.example.com",
                "X-Original-URL": "http://app.example.com/admin",
                "X-Forwarded-Method": "delete",
                "X-Original-Method": "DELETE",
            },
            OriginalRequest("DELETE", "http://app.example.com", "/admin"),
        ),
        (  # the first of a chain of forwarded hosts and schemes (the client-most)
            {"X-Forwarded-Uri": "/", "X-Forwarded-Host": "a.example, b.example"},
            OriginalRequest("GET", "http://a.example", "/"),
        ),
        ({"X-Forwarded-Method": "POST"}, None),  # no URI: the proxy named no request
        ({}, None),
    ],
)
def test_parse_original_request_reads_traefik_and_nginx_headers(
    headers: dict[str, str], expected: OriginalRequest | None
) -> None:
    assert parse(headers) == expected


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Uri": "admin"},  # not a path
        {"X-Forwarded-Uri": "/a b"},
        {"X-Forwarded-Uri": "/a\x00b"},
        {"X-Forwarded-Uri": "/caf\u00e9"},
        {"X-Forwarded-Uri": "/", "X-Forwarded-Method": "GET /x"},
        {"X-Forwarded-Uri": "/", "X-Forwarded-Host": "evil.example/path"},
        {"X-Forwarded-Uri": "/", "X-Forwarded-Host": "user@evil.example"},
        {"X-Forwarded-Uri": "/", "X-Forwarded-Proto": "javascript"},
        {"X-Original-URL": "https://user:pw@app.example.com/"},
        {"X-Original-URL": "ftp://app.example.com/"},
        {"X-Original-URL": "http:///path"},
        # A client adding the other convention's header behind a proxy that sets one.
        {"X-Original-URL": "http://app.example.com/admin", "X-Forwarded-Uri": "/static/x"},
        {"X-Original-URL": "https://app.example.com/", "X-Forwarded-Uri": "/"},
        {"X-Forwarded-Uri": "/admin", "X-Original-URL": "/static"},
        {"X-Forwarded-Uri": "/", "X-Forwarded-Method": "POST", "X-Original-Method": "GET"},
    ],
)
def test_parse_original_request_refuses_malformed_names(headers: dict[str, str]) -> None:
    with pytest.raises(OriginalRequestError):
        parse(headers)


def table(routes: list[dict[str, Any]]) -> RouteTable:
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "upstream": "http://127.0.0.1:1",
            "provider": {"issuer": "http://127.0.0.1:2", "client_id": "c", "client_secret": "s"},
            "session": {"secret": SESSION_SECRET},
            "policies": POLICIES,
            "routes": routes,
        }
    )
    return RouteTable.from_config(config)


@pytest.mark.parametrize(
    ("method", "uri", "route", "reason"),
    [
        ("GET", "/static/app.css", "static", ""),
        # A path whose spellings reach different routes is refused, whichever is stricter: the
        # backend may read the literal one (`/admin/../static/x` would pass as static).
        ("GET", "/static/../admin/x", None, "path-ambiguous"),
        ("GET", "/static/%2e%2e/admin", None, "path-ambiguous"),
        ("GET", "//admin", None, "path-ambiguous"),
        ("GET", "/admin/../static/app.css", None, "path-ambiguous"),
        ("GET", "/ADMIN/x", None, "path-ambiguous"),
        ("GET", "/health", "health", ""),
        ("POST", "/health", "default", ""),  # the original method picks the route
        ("GET", "/static/%2fadmin", None, "path-ambiguous"),
        ("GET", "/static/..;/admin", None, "path-ambiguous"),
        ("GET", "/admin;x/secret", None, "path-ambiguous"),
    ],
)
def test_choose_route_applies_routes_to_the_original_method_and_uri(
    method: str, uri: str, route: str | None, reason: str
) -> None:
    original = OriginalRequest(method, "https://app.example.com", uri)
    choice = choose_route(table(ROUTES), original)
    assert (choice.route.name if choice.route else None, choice.reason) == (route, reason)


def test_choose_route_refuses_an_unknown_original_request_when_routes_differ() -> None:
    choice = choose_route(table(ROUTES), None)
    assert choice.route is None
    assert choice.reason == "original-request-unknown"


def test_choose_route_without_routes_applies_the_one_rule_every_path_has() -> None:
    choice = choose_route(table([]), None)
    assert choice.route is not None
    assert choice.route.name == "default"


# -- the endpoint ------------------------------------------------------------------------------

ServerFactory = Callable[..., Awaitable[TestServer]]
FAStackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_fa_stack(aiohttp_server: ServerFactory) -> AsyncIterator[FAStackFactory]:
    stacks: list[Stack] = []

    async def make(
        *,
        trusted: list[str] | None = LOOPBACK,
        routes: list[dict[str, Any]] = ROUTES,
        provider_options: Mapping[str, Any] | None = None,
        **sections: Any,
    ) -> Stack:
        clock = FakeClock()
        provider = DevProvider(clock=clock, auto_login=ALICE, **(provider_options or {}))
        issuer = await provider.start()
        echo = await aiohttp_server(make_echo_app())
        data: dict[str, Any] = {
            "version": 1,
            "upstream": str(echo.make_url("")).rstrip("/"),
            "provider": {
                "issuer": issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["openid", "email", "profile", "groups"],
            },
            "session": {"secret": SESSION_SECRET},
            "server": {"trusted_proxies": trusted or []},
            "policies": POLICIES,
            "routes": routes,
        }
        for name, value in sections.items():
            data[name] = {**data.get(name, {}), **value}
        config = SidecarConfig.model_validate(data)
        sidecar = await aiohttp_server(create_app(config, clock=clock))
        stack = Stack(provider, sidecar, echo, clock, config)
        stacks.append(stack)
        provider.add_client(
            DevClient(CLIENT_ID, CLIENT_SECRET, redirect_uris=[stack.url("/oauth2/callback")])
        )
        await stack.wait_ready()
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()


async def signed_in(stack: Stack, user: Mapping[str, Any] = ALICE) -> Browser:
    stack.provider.auto_login = dict(user)
    browser = await stack.browser()
    await stack.sign_in(browser, "/")
    return browser


def traefik(uri: str, *, method: str = "GET", host: str = "") -> dict[str, str]:
    """What Traefik's ForwardAuth adds to the copy of the client's headers."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-Host": host,
        "X-Forwarded-Uri": uri,
    }


async def ask(
    stack: Stack,
    browser: Browser | None,
    forwarded: Mapping[str, str],
    *,
    accept: str = "text/html",
) -> Hop:
    headers = {"Accept": accept, **forwarded}
    if "X-Forwarded-Host" in headers and not headers["X-Forwarded-Host"]:
        headers["X-Forwarded-Host"] = urlsplit(stack.origin).netloc
    if browser is not None:
        return await browser.request("GET", stack.url("/oauth2/auth"), headers=headers)
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(stack.url("/oauth2/auth"), headers=headers, allow_redirects=False) as response,
    ):
        text = await response.text()
        return Hop("GET", stack.url("/oauth2/auth"), response.status, response.headers, text)


def identity_of(hop: Hop) -> dict[str, str]:
    return {
        name: value for name, value in hop.headers.items() if name.startswith("X-Auth-Request-")
    }


async def test_signed_in_user_gets_202_with_x_auth_request_identity(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack()
    browser = await signed_in(stack)
    hop = await ask(stack, browser, traefik("/reports?q=1"))
    assert hop.status == 202
    assert identity_of(hop) == {
        "X-Auth-Request-User": "alice",
        "X-Auth-Request-Email": "alice@example.org",
        "X-Auth-Request-Groups": "admins,staff",
        "X-Auth-Request-Preferred-Username": "alice",
    }
    assert hop.headers["Cache-Control"] == "no-store"
    assert hop.set_cookies == []  # nothing changed, nothing to set


async def test_access_token_header_only_when_configured(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack(headers={"access_token": True})
    browser = await signed_in(stack)
    hop = await ask(stack, browser, traefik("/"))
    assert hop.status == 202
    assert hop.headers.get("X-Auth-Request-Access-Token", "").count(".") == 2  # a JWT


async def test_policy_applies_to_the_original_uri_and_method(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack()
    bob = await signed_in(stack, BOB)
    assert (await ask(stack, bob, traefik("/reports"))).status == 202
    denied = await ask(stack, bob, traefik("/admin/users"))
    assert denied.status == 403
    assert "bob@example.org" in denied.text  # the page says who is signed in
    assert identity_of(denied) == {}
    # Tricks on the original URI resolve as the backend would see them, or are refused.
    assert (await ask(stack, bob, traefik("/static/../admin/users"))).status == 403
    assert (await ask(stack, bob, traefik("/static/%2e%2e/admin"))).status == 403
    assert (await ask(stack, bob, traefik("/static/%2fadmin"))).status == 403
    alice = await signed_in(stack, ALICE)
    assert (await ask(stack, alice, traefik("/admin/users"))).status == 202


async def test_public_route_answers_202_without_identity_or_session(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack()
    hop = await ask(stack, None, traefik("/static/app.css"))
    assert hop.status == 202
    assert identity_of(hop) == {}
    assert (await ask(stack, None, traefik("/health"))).status == 202
    # The same path by another method is not the public route.
    assert (await ask(stack, None, traefik("/health", method="POST"))).status == 401


async def test_unauthenticated_browser_gets_401_naming_the_escaped_sign_in_url(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack()
    hop = await ask(stack, None, traefik("/reports/q?a=1&b=%20x#frag"))
    assert hop.status == 401
    sign_in = hop.headers["X-Auth-Request-Sign-In"]
    path, _, query = sign_in.partition("?")
    assert path == "/oauth2/start"
    assert parse_qs(query) == {"rd": [stack.origin + "/reports/q?a=1&b=%20x#frag"]}
    assert 'href="/oauth2/start?rd=' in hop.text  # the sign-in page Traefik shows as is
    assert hop.headers["Content-Type"].startswith("text/html")


async def test_unauthenticated_api_client_gets_401_json(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack()
    hop = await ask(stack, None, traefik("/api/items"), accept="application/json")
    assert hop.status == 401
    assert hop.json()["error"] == "unauthenticated"
    assert hop.headers["WWW-Authenticate"].startswith("Bearer")
    assert "X-Auth-Request-Sign-In" not in hop.headers  # no login page for a program
    post = await ask(stack, None, traefik("/api/items", method="POST"), accept="*/*")
    assert post.status == 401
    assert post.headers["Content-Type"].startswith("application/json")


async def test_sign_in_url_lands_back_on_the_original_url(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack()
    browser = await stack.browser()
    hop = await ask(stack, browser, traefik("/reports/q?a=1&b=2"))
    hops = await browser.follow(stack.url(hop.headers["X-Auth-Request-Sign-In"]))
    assert hops[-1].status == 200
    assert hops[-1].url == stack.origin + "/reports/q?a=1&b=2"
    assert hops[-1].json()["raw_path"] == "/reports/q?a=1&b=2"
    assert (await ask(stack, browser, traefik("/reports/q"))).status == 202


async def test_sign_in_url_refuses_a_foreign_original_host(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack()
    # nginx names the URL; sidecar's origin is the Host of the question (no X-Forwarded-Host).
    hop = await ask(stack, None, {"X-Original-URL": "http://evil.example/x"})
    assert hop.status == 401
    assert hop.headers["X-Auth-Request-Sign-In"] == "/oauth2/start?rd=%2F"


async def test_sign_in_url_accepts_an_allowed_domain(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack(auth={"allowed_redirect_domains": [".example.com"]})
    hop = await ask(stack, None, traefik("/x", host="app.example.com"))
    rd = parse_qs(hop.headers["X-Auth-Request-Sign-In"].partition("?")[2])["rd"]
    assert rd == ["http://app.example.com/x"]


async def test_untrusted_peer_cannot_name_the_original_request(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack(trusted=None)
    bob = await signed_in(stack, BOB)
    # Not believed, and not evaluated as `/` either: with routes, the answer is a refusal.
    for uri in ("/static/x", "/admin", "/"):
        hop = await ask(stack, bob, traefik(uri))
        assert hop.status == 403, uri
        assert identity_of(hop) == {}
    anonymous = await ask(stack, None, traefik("/static/x"))
    assert anonymous.status == 403


async def test_untrusted_peer_without_routes_gets_the_sign_in_rule(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack(trusted=None, routes=[])
    assert (await ask(stack, None, traefik("/anything"))).status == 401
    bob = await signed_in(stack, BOB)
    hop = await ask(stack, bob, traefik("/anything"))
    assert hop.status == 202
    assert hop.headers["X-Auth-Request-User"] == "bob"
    # The original URL was not believed, so the sign-in lands on `/`.
    anonymous = await ask(stack, None, traefik("/anything"))
    assert anonymous.headers["X-Auth-Request-Sign-In"] == "/oauth2/start?rd=%2F"


async def test_trusted_proxy_naming_a_malformed_request_is_refused(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack(routes=[])
    browser = await signed_in(stack)
    hop = await ask(stack, browser, {"X-Forwarded-Uri": "no-slash"})
    assert hop.status == 403


async def test_forged_identity_headers_never_echo_back(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack()
    forged = {"X-Auth-Request-User": "root", "X-Auth-Request-Email": "root@example.org"}
    hop = await ask(stack, None, {**traefik("/static/x"), **forged})
    assert hop.status == 202
    assert identity_of(hop) == {}


async def test_refreshed_session_cookies_come_back_on_the_202(
    make_fa_stack: FAStackFactory,
) -> None:
    stack = await make_fa_stack(
        provider_options={"access_token_ttl": 120, "id_token_ttl": 120},
        session={"refresh_margin_seconds": 30},
    )
    browser = await signed_in(stack)
    stack.clock.advance(100)  # expires at +120; refresh is due from +90
    hop = await ask(stack, browser, traefik("/reports"))
    assert hop.status == 202
    assert stack.provider.counters.refreshes == 1
    assert any(cookie.startswith(SESSION_COOKIE + "=") for cookie in hop.set_cookies)
    numbered = [
        hop.headers[f"X-Auth-Request-Set-Cookie-{index}"]
        for index in range(1, len(hop.set_cookies) + 1)
    ]
    assert numbered == hop.set_cookies  # the copy nginx can pass on one by one
    # The browser took the new cookie: the next question needs no refresh.
    assert (await ask(stack, browser, traefik("/reports"))).status == 202
    assert stack.provider.counters.refreshes == 1


async def test_stale_session_cookie_is_cleared_on_the_401(make_fa_stack: FAStackFactory) -> None:
    stack = await make_fa_stack()
    headers = {**traefik("/reports"), "Cookie": f"{SESSION_COOKIE}=not-a-session"}
    hop = await ask(stack, None, headers)
    assert hop.status == 401
    assert any("Max-Age=0" in cookie for cookie in hop.set_cookies)
    assert hop.headers["X-Auth-Request-Set-Cookie-1"] == hop.set_cookies[0]
