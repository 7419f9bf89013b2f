"""Real nginx with `auth_request` in front of the echo backend, sidecar as its auth service.

nginx runs `deploy/nginx/nginx.conf` itself, with only its three addresses replaced (and its
files kept in the test's directory), so the shipped example is what is proven: a browser is sent
to sign in and lands on the URL it asked for, the backend sees sidecar's identity and never a
client's forgery, policies deny, programs get 401, a refreshed session reaches the browser, and
clients cannot ask `/oauth2/auth` themselves. Sidecar (in-process) and the development provider
share one fake clock.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest

from .conftest import StartNginx, free_port, private_paths
from .forward_auth_stack import (
    ALICE,
    BOB,
    SESSION_COOKIE,
    ServerFactory,
    Stack,
    app_gets_sidecars_signed_assertion,
    machine_token,
    replace_each_once,
    send_raw,
    staff_everywhere_outsiders_only_on_public_paths,
    start_auth_side,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "nginx.conf"


def render_example(*, listen: int, sidecar: int, app: int, directory: Path) -> str:
    """The example with its addresses replaced and its files kept in `directory`."""
    return replace_each_once(
        EXAMPLE.read_text(),
        {
            "listen 8080;": f"listen 127.0.0.1:{listen};",
            "server 127.0.0.1:4180;": f"server 127.0.0.1:{sidecar};",
            "server 127.0.0.1:8000;": f"server 127.0.0.1:{app};",
            "http {\n": "http {\n    " + private_paths(directory) + "\n",
        },
    )


StackFactory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make_stack(
    nginx: StartNginx, aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(**provider_options: Any) -> Stack:
        side = await start_auth_side(aiohttp_server, **provider_options)
        directory = tmp_path / f"nginx-{len(stacks)}"
        directory.mkdir()
        listen = free_port()
        text = render_example(
            listen=listen, sidecar=side.sidecar_port, app=side.echo_port, directory=directory
        )
        stack = side.register(await nginx(text, directory, listen))
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()


async def test_browser_is_sent_to_sign_in_and_lands_on_the_url_it_asked_for(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    asked = "/reports/2026?q=a%20b&sort=-date&x=1"
    hops = await browser.follow(stack.url(asked))
    first = hops[0]
    assert first.status == 302
    start = urlsplit(urljoin(first.url, first.location))
    assert start.path == "/oauth2/start"
    assert parse_qs(start.query) == {"rd": [stack.url(asked)]}  # escaped: & and %20 survive
    assert any(hop.url.startswith(stack.provider.issuer) for hop in hops)  # to the provider
    assert hops[-1].status == 200
    assert hops[-1].url == stack.url(asked)
    assert hops[-1].json()["raw_path"] == asked
    assert hops[-1].seen("X-Forwarded-User") == ["alice"]


async def test_backend_sees_sidecars_identity_never_a_clients_forgery(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.signed_in(ALICE)
    forged = {
        "X-Forwarded-User": "root",
        "X-Forwarded-Email": "root@example.org",
        "X-Forwarded-Groups": "admins",
        "X-Auth-Request-Email": "root@example.org",
        "X-Auth-Request-User": "root",
        "X_Forwarded_Email": "root@example.org",
        "X-Forwarded-Access-Token": "forged",
    }
    answer = await browser.get(stack.url("/whoami"), forged)
    assert answer.status == 200
    assert answer.set_cookies == []  # nothing refreshed: no (empty) Set-Cookie either
    assert answer.seen("X-Forwarded-User") == ["alice"]
    assert answer.seen("X-Forwarded-Email") == ["alice@example.org"]
    assert answer.seen("X-Forwarded-Groups") == ["admins,staff"]
    assert answer.seen("X-Forwarded-Preferred-Username") == ["alice"]
    for name in ("X-Auth-Request-Email", "X-Auth-Request-User", "X_Forwarded_Email"):
        assert answer.seen(name) == [], name
    assert answer.seen("X-Forwarded-Access-Token") == []


async def test_anonymous_forgery_reaches_nothing_and_public_paths_carry_no_identity(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    forged = {"X-Forwarded-User": "root", "X-Forwarded-Uri": "/static/x", "X-Original-URL": "/"}
    denied = await browser.get(stack.url("/private"), forged)
    assert denied.status == 302  # still sent to sign in: the forged URI names nothing
    public = await browser.get(stack.url("/static/app.css"), {"X-Forwarded-User": "root"})
    assert public.status == 200
    assert public.seen("X-Forwarded-User") == []


async def test_policy_denies_with_403_and_allows_its_members(make_stack: StackFactory) -> None:
    stack = await make_stack()
    bob = await stack.signed_in(BOB)
    assert (await bob.get(stack.url("/reports"))).status == 200
    assert (await bob.get(stack.url("/admin/users"))).status == 403
    assert (await bob.get(stack.url("/static/../admin/users"))).status == 403
    alice = await stack.signed_in(ALICE)
    allowed = await alice.get(stack.url("/admin/users"))
    assert allowed.status == 200
    assert allowed.seen("X-Forwarded-User") == ["alice"]


async def test_api_client_gets_401_not_a_sign_in_redirect(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    answer = await browser.get(stack.url("/api/items"), {"Accept": "application/json"})
    assert answer.status == 401
    assert answer.json()["error"] == "unauthenticated"
    assert answer.location == ""


async def test_clients_cannot_ask_the_auth_endpoint_themselves(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    answer = await browser.get(stack.url("/oauth2/auth"), {"X-Original-URL": "/static/x"})
    assert answer.status == 404


async def test_refreshed_session_reaches_the_browser_through_nginx(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(access_token_ttl=120, id_token_ttl=120)
    browser = await stack.signed_in(ALICE)
    before = browser.session_cookie()
    stack.clock.advance(100)  # expires at +120; refresh is due from +90
    answer = await browser.get(stack.url("/after-refresh"))
    assert answer.status == 200
    assert answer.seen("X-Forwarded-User") == ["alice"]
    assert stack.provider.counters.refreshes == 1
    assert any(cookie.startswith(SESSION_COOKIE + "=") for cookie in answer.set_cookies)
    assert browser.session_cookie() not in (None, before)
    again = await browser.get(stack.url("/again"))
    assert again.status == 200
    assert stack.provider.counters.refreshes == 1  # the new cookie was kept: no second refresh


async def test_sign_out_through_nginx_ends_the_session(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.signed_in(ALICE)
    signed_out = await browser.follow(
        stack.url("/oauth2/sign_out?rd=/"), {"Sec-Fetch-Site": "same-origin"}
    )
    assert signed_out[0].status == 302
    assert browser.session_cookie() is None
    after = await browser.get(stack.url("/reports"))
    assert after.status == 302
    assert urlsplit(after.location).path == "/oauth2/start"


async def test_request_body_reaches_the_app_but_never_the_auth_service(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.signed_in(ALICE)
    body = b"x" * 100_000
    async with browser.http.post(
        stack.url("/upload-form"), data=body, headers={"Accept": "text/html"}
    ) as response:
        assert response.status == 200
        echoed = await response.json()
    assert echoed["method"] == "POST"
    assert echoed["body_length"] == len(body)
    assert [v for k, v in echoed["headers"] if k.lower() == "x-forwarded-user"] == ["alice"]


async def test_program_with_a_bearer_token_reaches_the_api_as_its_user(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    token = await machine_token(stack.provider, BOB)
    program = await stack.browser()
    bearer = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    answer = await program.get(stack.url("/api/items"), bearer)
    assert answer.status == 200
    assert answer.seen("X-Forwarded-User") == ["bob"]
    assert answer.set_cookies == []  # no session for a program
    # The token's user is held to the route's policy; a bad token is a 401, never a sign-in.
    assert (await program.get(stack.url("/api/admin/keys"), bearer)).status == 403
    admin = {"Authorization": f"Bearer {await machine_token(stack.provider, ALICE)}"}
    assert (await program.get(stack.url("/api/admin/keys"), admin)).status == 200
    forged = {"Authorization": f"Bearer {token[:-4]}AAAA", "Accept": "application/json"}
    refused = await program.get(stack.url("/api/items"), forged)
    assert refused.status == 401
    assert refused.location == ""
    # Routes without `bearer` do not take tokens: a program gets 401, not a login page.
    elsewhere = await program.get(stack.url("/reports"), {"Authorization": f"Bearer {token}"})
    assert elsewhere.status == 401
    assert elsewhere.location == ""


async def test_app_gets_sidecars_signed_assertion_never_a_clients(
    make_stack: StackFactory,
) -> None:
    await app_gets_sidecars_signed_assertion(await make_stack())


async def test_staff_everywhere_outsiders_only_on_public_paths(make_stack: StackFactory) -> None:
    await staff_everywhere_outsiders_only_on_public_paths(await make_stack())


@pytest.mark.parametrize(
    "target",
    [
        "/static/../admin/users",
        "/static/%2e%2e/admin/users",
        "/static/%2E%2E/admin/users",
        "/static/.%2e/admin/users",
        "/static/..%2fadmin/users",
        "/static/%2fadmin/users",
        "/static/..;/admin/users",
        "/static//../admin/users",
        "//admin/users",
        "/./admin/users",
        "/admin;x/users",
    ],
)
async def test_path_tricks_never_reach_admin_through_a_public_rule(
    make_stack: StackFactory, target: str
) -> None:
    stack = await make_stack()
    bob = await stack.signed_in(BOB)  # staff, not an admin
    cookie = "; ".join(f"{c.key}={c.value}" for c in bob.http.cookie_jar)
    status, _ = await send_raw(stack.proxy.port, target, {"Cookie": cookie})
    assert status == 403  # sent byte for byte: nginx passes $request_uri as the client wrote it


async def test_double_encoding_stays_under_the_public_prefix(make_stack: StackFactory) -> None:
    stack = await make_stack()
    target = "/static/%252e%252e/admin/users"  # `%25` is `%`: never decoded twice
    status, body = await send_raw(stack.proxy.port, target)
    assert status == 200
    assert json.loads(body)["raw_path"] == target  # the app gets it as it was decided on
