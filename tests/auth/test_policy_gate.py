"""Routes and policies through the real app: public routes without sign-in, policy routes that
let the right people in and show everyone else a 403, and path tricks sent byte for byte (no
client library normalises them first) that must never reach a protected path by a public rule.

The stack is the auth tests' one (development provider, echo backend, sidecar), built here with
`routes` and `policies` in the configuration."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from support.echo import make_echo_app

from sidecar.app import create_app
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient

from .conftest import ALICE, CLIENT_ID, CLIENT_SECRET, SESSION_SECRET, Browser, FakeClock, Stack

BOB = {"sub": "bob", "email": "bob@example.org", "preferred_username": "bob", "groups": ["staff"]}
MALLORY = {
    "sub": "mallory",
    "email": "mallory@example.org",
    "email_verified": False,
    "groups": ["admins"],
}

POLICIES = {
    "admins": {"groups_any": ["admins"]},
    "staff": {"email_domains": ["example.org"]},
    "finance": {"email_domains": ["example.org"], "groups_all": ["finance"]},
}
ROUTES = [
    {"path": "/static", "access": "public", "name": "static"},
    {"exact": "/health", "access": "public", "methods": ["GET", "HEAD"], "name": "health"},
    {"path": "/admin", "policy": "admins", "name": "admin"},
    {"path": "/finance", "policy": "finance", "name": "finance"},
    {"path": "/team", "policy": "staff", "name": "team"},
]

ServerFactory = Callable[..., Awaitable[TestServer]]
PolicyStackFactory = Callable[..., Awaitable[Stack]]


@dataclass
class Raw:
    """A response to a request sent byte for byte."""

    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


async def send_raw(
    stack: Stack, target: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
) -> Raw:
    """Send `method target HTTP/1.1` exactly as given: aiohttp's client would normalise `..`."""
    assert stack.sidecar.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", stack.sidecar.port)
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{stack.sidecar.port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1"))
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed[name.strip().lower()] = value.strip()
    if parsed.get("transfer-encoding") == "chunked":
        body = _unchunk(body)
    return Raw(int(status_line.split()[1]), parsed, body.decode("utf-8", "replace"))


def _unchunk(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out, data = out + data[:size], data[size + 2 :]
    return out


def cookie_header(browser: Browser) -> dict[str, str]:
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in browser.cookies().items())}


def seen_header(echoed: Any, name: str) -> list[str]:
    return [value for key, value in echoed["headers"] if key.lower() == name.lower()]


@pytest.fixture
async def make_policy_stack(aiohttp_server: ServerFactory) -> AsyncIterator[PolicyStackFactory]:
    stacks: list[Stack] = []

    async def make(
        *,
        user: Mapping[str, Any] = ALICE,
        routes: list[dict[str, Any]] = ROUTES,
        policies: dict[str, Any] = POLICIES,
    ) -> Stack:
        clock = FakeClock()
        provider = DevProvider(clock=clock, auto_login=user)
        issuer = await provider.start()
        echo = await aiohttp_server(make_echo_app())
        config = SidecarConfig.model_validate(
            {
                "version": 1,
                "upstream": str(echo.make_url("")).rstrip("/"),
                "provider": {
                    "issuer": issuer,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scopes": ["openid", "email", "profile", "groups"],
                },
                "session": {"secret": SESSION_SECRET},
                "policies": policies,
                "routes": routes,
            }
        )
        sidecar = await aiohttp_server(create_app(config, clock=clock))
        stack = Stack(provider, sidecar, echo, clock, config)
        stacks.append(stack)
        provider.add_client(
            DevClient(
                CLIENT_ID,
                CLIENT_SECRET,
                redirect_uris=[stack.url("/oauth2/callback")],
                post_logout_redirect_uris=[stack.url("/")],
            )
        )
        await stack.wait_ready()
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()


async def signed_in(stack: Stack) -> Browser:
    browser = await stack.browser()
    await stack.sign_in(browser, "/")
    return browser


async def access_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    for _ in range(50):
        await asyncio.sleep(0)  # the access line is written after the response is flushed
    return [r for r in caplog.records if r.name == "sidecar.access"]


# -- public routes -------------------------------------------------------------------------------


async def test_public_route_needs_no_sign_in_and_still_strips_identity_headers(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack()
    forged = {
        "X-Forwarded-User": "admin",
        "X-Forwarded-Email": "boss@example.org",
        "x_forwarded_groups": "admins",
        "X-Auth-Request-User": "admin",
    }
    response = await send_raw(stack, "/static/app.css?v=1", headers=forged)
    assert response.status == 200
    echoed = response.json()
    assert echoed["raw_path"] == "/static/app.css?v=1"
    for name in forged:
        assert seen_header(echoed, name) == []


async def test_public_request_is_logged_with_its_route_and_reason(
    make_policy_stack: PolicyStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack = await make_policy_stack()
    assert (await send_raw(stack, "/static/logo.png")).status == 200
    lines = [r for r in await access_lines(caplog) if getattr(r, "route", "") == "static"]
    assert [(getattr(r, "decision", ""), getattr(r, "reasons", "")) for r in lines] == [
        ("public", "public-route")
    ]


async def test_public_route_sends_no_identity_even_to_a_signed_in_user(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack()
    browser = await signed_in(stack)
    hop = await browser.request("GET", stack.url("/static/x"))
    assert hop.status == 200
    assert seen_header(hop.json(), "X-Forwarded-User") == []
    assert "_sidecar" not in json.dumps(hop.json()["headers"])  # sidecar's cookie stays home


async def test_method_limited_public_route_protects_other_methods(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack()
    assert (await send_raw(stack, "/health")).status == 200
    assert (await send_raw(stack, "/health", method="HEAD")).status == 200
    post = await send_raw(stack, "/health", method="POST", headers={"Content-Length": "0"})
    assert post.status == 401
    assert (await send_raw(stack, "/health/x")).status == 302  # exact: /health/x is not public


# -- bypass attempts, byte for byte --------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    ["/admin?next=/static", "/staticfoo", "/static.css", "/admin/./x", "/other//x", "/a/../b"],
)
async def test_paths_outside_public_routes_need_sign_in(
    make_policy_stack: PolicyStackFactory, target: str
) -> None:
    stack = await make_policy_stack()
    response = await send_raw(stack, target)
    assert response.status == 302
    assert response.headers["location"].startswith(stack.provider.issuer)


@pytest.mark.parametrize(
    "target",
    [
        # resolved, these leave the public route; as written they are in it: refused
        "/static/../admin",
        "/static/%2e%2e/admin",
        "/static/%2E%2e/admin",
        "/static/.%2e/admin/x",
        "/static//../admin",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/admin/../static/x",
        # ambiguous whatever the routes
        "/static/..%2fadmin",
        "/static%2f..%2fadmin",
        "/static/..%5cadmin",
        "/static/..\\admin",
        "/static/..;/admin",
        "/static/%2e%2e;/admin",
        "/static;x/../admin;y/x",
        "/admin;x/secret",
        "/static/%c0%ae%c0%ae/admin",
        "/static/x%00",
        "/static/x%",
        # absolute-form: aiohttp has already rewritten the path, so nobody knows what was sent
        "http://127.0.0.1/static/../admin",
    ],
)
async def test_ambiguous_paths_are_refused_with_400(
    make_policy_stack: PolicyStackFactory, target: str
) -> None:
    stack = await make_policy_stack()
    page = await send_raw(stack, target, headers={"Accept": "text/html"})
    assert page.status == 400
    assert "text/html" in page.headers["content-type"]
    api = await send_raw(stack, target, headers={"Accept": "application/json"})
    assert api.status == 400
    assert api.json()["error"] == "path_refused"


async def test_double_encoding_stays_literal_and_public(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack()
    response = await send_raw(stack, "/static/%252e%252e/admin")
    assert response.status == 200  # a file literally named %2e%2e under /static, nothing else


# -- policies ------------------------------------------------------------------------------------


async def test_policy_route_lets_the_right_user_in_with_identity(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack(user=ALICE)
    browser = await signed_in(stack)
    hop = await browser.request("GET", stack.url("/admin/users"))
    assert hop.status == 200
    assert seen_header(hop.json(), "X-Forwarded-User") == ["alice"]
    assert (await browser.request("GET", stack.url("/team"))).status == 200


async def test_denied_user_sees_who_they_are_and_how_to_sign_out(
    make_policy_stack: PolicyStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    stack = await make_policy_stack(user=BOB)
    browser = await signed_in(stack)
    hop = await browser.request("GET", stack.url("/admin/users"))
    assert hop.status == 403
    assert hop.headers["Content-Type"].startswith("text/html")
    assert hop.headers["Cache-Control"] == "no-store"
    assert "bob@example.org" in hop.text
    assert 'action="/oauth2/sign_out"' in hop.text and 'method="post"' in hop.text
    assert "groups_any" not in hop.text and "admins" not in hop.text  # reasons stay in the log
    access = await access_lines(caplog)
    denied = [r for r in access if getattr(r, "decision", "") == "forbidden"]
    assert len(denied) == 1
    assert getattr(denied[0], "route", "") == "admin"
    assert getattr(denied[0], "sub", "") == "bob"
    assert "policy:admins:groups_any-missing" in getattr(denied[0], "reasons", "")


async def test_denied_api_client_gets_json_403(make_policy_stack: PolicyStackFactory) -> None:
    stack = await make_policy_stack(user=BOB)
    browser = await signed_in(stack)
    hop = await browser.request(
        "GET", stack.url("/admin/api"), headers={"Accept": "application/json"}
    )
    assert hop.status == 403
    body = hop.json()
    assert body["error"] == "forbidden"
    assert "admins" not in json.dumps(body)


async def test_unverified_email_fails_an_email_policy(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack(user=MALLORY)
    browser = await signed_in(stack)
    assert (await browser.request("GET", stack.url("/team"))).status == 403
    assert (await browser.request("GET", stack.url("/admin"))).status == 200  # groups only


async def test_every_rule_kind_of_a_policy_must_hold(make_policy_stack: PolicyStackFactory) -> None:
    stack = await make_policy_stack(user=ALICE)  # example.org, but not in the finance group
    browser = await signed_in(stack)
    assert (await browser.request("GET", stack.url("/finance"))).status == 403


async def test_unmatched_paths_need_only_sign_in(make_policy_stack: PolicyStackFactory) -> None:
    stack = await make_policy_stack(user=BOB)
    browser = await signed_in(stack)
    hop = await browser.request("GET", stack.url("/anything/else"))
    assert hop.status == 200
    assert seen_header(hop.json(), "X-Forwarded-User") == ["bob"]


async def test_signed_in_user_meets_the_policy_or_a_400_never_the_backend(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack(user=BOB)
    browser = await signed_in(stack)
    for target in ("/admin?x=/static", "/admin/./x", "/admin//x", "/admin/x/../y"):
        response = await send_raw(stack, target, headers=cookie_header(browser))
        assert response.status == 403, target
    for target in ("/static/../admin", "/static/%2e%2e/admin/x", "//admin"):
        response = await send_raw(stack, target, headers=cookie_header(browser))
        assert response.status == 400, target


async def test_sign_out_form_on_the_403_page_signs_out(
    make_policy_stack: PolicyStackFactory,
) -> None:
    stack = await make_policy_stack(user=BOB)
    browser = await signed_in(stack)
    assert (await browser.request("GET", stack.url("/admin"))).status == 403
    hop = await browser.request(
        "POST", stack.url("/oauth2/sign_out"), headers={"Origin": stack.origin}, data={}
    )
    assert hop.status == 303
    assert not browser.has_session()
    again = await browser.request("GET", stack.url("/admin"))
    assert again.status == 302  # signed out: off to sign in (as someone else)


async def test_403_page_escapes_what_the_provider_says_about_the_user(
    make_policy_stack: PolicyStackFactory,
) -> None:
    hostile = {"sub": "eve", "email": '"><script>alert(1)</script>@example.org', "groups": []}
    stack = await make_policy_stack(user=hostile)
    browser = await signed_in(stack)
    hop = await browser.request("GET", stack.url("/admin"))
    assert hop.status == 403
    assert "<script>" not in hop.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;@example.org" in hop.text
