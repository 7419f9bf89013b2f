"""The session backend a configuration chooses, and how sidecar behaves when Redis goes away:
public routes keep working, protected ones answer 503 "session store unavailable" (never a
sign-in loop), readiness says so, and sessions resume when Redis is back. A restarted sidecar
(a new app over the same Redis) loses no session."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from support.redis_server import RedisServer, require_redis

from sidecar.app import create_app
from sidecar.config.model import RouteConfig
from sidecar.dev.provider_clients import DevClient
from sidecar.session.revocation import RedisRevocations, RevocationCheckingStore
from sidecar.session.store_redis import RedisSessionStore

from .conftest import CLIENT_ID, CLIENT_SECRET, Browser, ServerFactory, Stack, StackFactory

PUBLIC = (RouteConfig(path="/public", access="public"),)


@pytest.fixture
async def persistent_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server that keeps its data over stop() and start() (append-only file)."""
    require_redis()
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    yield server
    server.stop()


async def replica_with_routes(
    stack: Stack, aiohttp_server: ServerFactory, *, first_running: bool = True
) -> TestServer:
    """Another sidecar like the stack's, with a public route (the stack's own has none)."""
    config = stack.config.model_copy(update={"routes": PUBLIC})
    server = await aiohttp_server(create_app(config, clock=stack.clock))
    uris = [str(server.make_url("/oauth2/callback"))]
    if first_running:
        uris.append(stack.url("/oauth2/callback"))
    stack.provider.add_client(DevClient(CLIENT_ID, CLIENT_SECRET, redirect_uris=uris))
    return server


async def get(browser: Browser, server: TestServer, path: str, **headers: str) -> Any:
    return await browser.request("GET", str(server.make_url(path)), headers=headers)


def redis_mode(server: RedisServer) -> dict[str, Any]:
    return {"session": {"store": "redis", "redis": {"url": server.url}}}


async def test_configuration_picks_the_store(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    cookie = await make_stack()
    assert isinstance(cookie.services.store, RevocationCheckingStore)
    shared = await make_stack(session={"redis": {"url": redis_server.url}})
    assert isinstance(shared.services.store, RevocationCheckingStore)
    assert isinstance(shared.services.store.revocations, RedisRevocations)
    redis = await make_stack(**redis_mode(redis_server))
    assert isinstance(redis.services.store, RedisSessionStore)


async def test_redis_outage_is_a_503_on_protected_routes_only_and_sessions_resume(
    make_stack: StackFactory, aiohttp_server: ServerFactory, persistent_redis: RedisServer
) -> None:
    stack = await make_stack(**redis_mode(persistent_redis))
    sidecar = await replica_with_routes(stack, aiohttp_server)
    browser = await stack.browser()
    await stack.sign_in(browser)
    assert (await get(browser, sidecar, "/private")).status == 200

    persistent_redis.stop()
    assert (await get(browser, sidecar, "/public")).status == 200
    page = await get(browser, sidecar, "/private")
    assert page.status == 503
    assert "session store" in page.text.lower()
    assert not page.location and not any("Max-Age=0" in c for c in page.set_cookies)
    api = await get(browser, sidecar, "/private", Accept="application/json")
    assert api.status == 503 and api.json()["error"] == "session_store_unavailable"
    ready = await get(browser, sidecar, "/oauth2/readyz")
    assert ready.status == 503 and ready.json()["failing"] == ["session_store"]
    assert (await get(browser, sidecar, "/oauth2/healthz")).status == 200

    persistent_redis.start()
    assert (await get(browser, sidecar, "/private")).status == 200  # the same session
    assert (await get(browser, sidecar, "/oauth2/readyz")).status == 200


async def test_sidecar_starts_and_serves_public_routes_while_redis_is_down(
    make_stack: StackFactory, aiohttp_server: ServerFactory, persistent_redis: RedisServer
) -> None:
    persistent_redis.stop()
    stack = await make_stack(**redis_mode(persistent_redis))
    sidecar = await replica_with_routes(stack, aiohttp_server)
    browser = await stack.browser()
    assert (await get(browser, sidecar, "/public")).status == 200
    assert (await get(browser, sidecar, "/private")).status in (302, 503)  # no ticket yet
    persistent_redis.start()
    await stack.sign_in(browser)
    assert (await get(browser, sidecar, "/private")).status == 200


async def test_a_restarted_sidecar_loses_no_session(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(**redis_mode(redis_server))
    browser = await stack.browser()
    await stack.sign_in(browser)
    await stack.sidecar.close()  # the old process is gone
    restarted = await replica_with_routes(stack, aiohttp_server, first_running=False)
    hop = await get(browser, restarted, "/private", Accept="application/json")
    assert hop.status == 200


async def test_cookie_mode_revocation_list_fails_closed_only_when_too_stale(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(session={"redis": {"url": redis_server.url}})
    browser = await stack.browser()
    await stack.sign_in(browser)
    redis_server.stop()
    stack.clock.advance(5)  # the copy is a little stale: still trusted
    hop = await get(browser, stack.sidecar, "/x", Accept="application/json")
    assert hop.status == 200
    stack.clock.advance(60)  # far too stale: a revoked session could slip through
    hop = await get(browser, stack.sidecar, "/x", Accept="application/json")
    assert hop.status == 503 and hop.json()["error"] == "session_store_unavailable"


async def test_readiness_names_the_session_store(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(**redis_mode(redis_server))
    browser = await stack.browser()
    await stack.sign_in(browser)
    ready = await get(browser, stack.sidecar, "/oauth2/readyz")
    assert ready.status == 200
    assert ready.json()["checks"]["session_store"] == {"ok": True, "detail": "redis reachable"}


async def test_sign_out_during_a_redis_outage_still_clears_the_browser(
    make_stack: StackFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(**redis_mode(redis_server))
    browser = await stack.browser()
    await stack.sign_in(browser)
    redis_server.stop()
    hops = await browser.follow(
        stack.url("/oauth2/sign_out"), method="POST", headers={"Origin": stack.origin}
    )
    assert hops[0].status == 303
    assert not browser.has_session()


async def test_several_workers_without_redis_are_warned_about(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    await make_stack(server={"workers": 2})
    assert any("session.redis" in record.getMessage() for record in caplog.records)
