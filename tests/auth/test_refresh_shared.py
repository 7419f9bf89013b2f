"""Refresh across replicas (Redis mode): two sidecars in front of one Redis and one provider that
rotates one-time refresh tokens. However the requests of one session at token expiry are spread
over the replicas, the provider sees one refresh and every request succeeds."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Callable
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support.redis_server import RedisServer

from sidecar import keys
from sidecar.auth.refresh_shared import refreshed_elsewhere
from sidecar.session.model import Identity, Session, Tokens

from .conftest import ServerFactory, StackFactory, add_replica

SHORT_TOKENS = {"access_token_ttl": 120, "id_token_ttl": 120}
POLL_LIMIT_SECONDS = 10.0


def redis_options(server: RedisServer) -> dict[str, Any]:
    return {
        "refresh_margin_seconds": 30,
        "refresh_grace_seconds": 20,
        "store": "redis",
        "redis": {"url": server.url},
    }


async def get(server: TestServer, path: str, cookies: dict[str, str]) -> tuple[int, str | None]:
    header = "; ".join(f"{name}={value}" for name, value in cookies.items())
    async with (
        aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
        http.get(
            server.make_url(path),
            headers={"Cookie": header, "Accept": "application/json"},
            allow_redirects=False,
        ) as response,
    ):
        text = await response.text()
        if response.status != 200:
            return response.status, None
        for name, value in json.loads(text)["headers"]:
            if name.lower() == "x-forwarded-user":
                return 200, str(value)
        return 200, None


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for something other tasks make true."""
    async with asyncio.timeout(POLL_LIMIT_SECONDS):
        while not condition():
            await asyncio.sleep(0.005)


def coordinators_started(server: TestServer) -> int:
    return server.app[keys.AUTH_SERVICES].coordinator.refreshes_started


async def test_concurrent_requests_on_two_replicas_at_expiry_cause_one_refresh(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=redis_options(redis_server))
    replica = await add_replica(stack, aiohttp_server)
    browser = await stack.browser()
    await stack.sign_in(browser)
    cookies = browser.cookies()
    token_requests = stack.provider.counters.token_requests
    stack.clock.advance(100)  # the access token expires at +120, refresh is due from +90
    hold = asyncio.Event()
    stack.provider.faults.token_hold = hold
    servers = itertools.cycle([stack.sidecar, replica])
    requests = [asyncio.ensure_future(get(next(servers), f"/r{i}", cookies)) for i in range(24)]
    # Both replicas are refreshing (one at the provider, held there; the other waiting for the
    # Redis lock) before the provider answers.
    await until(
        lambda: (
            coordinators_started(stack.sidecar) == 1
            and coordinators_started(replica) == 1
            and stack.provider.counters.token_requests == token_requests + 1
        )
    )
    hold.set()
    results = await asyncio.gather(*requests)
    assert results == [(200, "alice")] * 24
    assert stack.provider.counters.refreshes == 1
    # Later requests on either replica use the refreshed tokens without refreshing again.
    assert await get(replica, "/later", cookies) == (200, "alice")
    assert await get(stack.sidecar, "/later", cookies) == (200, "alice")
    assert stack.provider.counters.refreshes == 1


async def test_a_rejected_refresh_ends_the_session_on_both_replicas(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=redis_options(redis_server))
    replica = await add_replica(stack, aiohttp_server)
    browser = await stack.browser()
    await stack.sign_in(browser)
    cookies = browser.cookies()
    stack.clock.advance(100)
    stack.provider.faults.refresh_invalid_grant = True
    results = await asyncio.gather(
        *(get(server, "/x", cookies) for server in (stack.sidecar, replica) * 3)
    )
    assert [status for status, _ in results] == [401] * 6
    stack.provider.faults.refresh_invalid_grant = False
    assert await get(replica, "/again", cookies) == (401, None)
    assert stack.provider.counters.refreshes == 0


async def test_refresh_after_a_replica_restart_uses_the_stored_session(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(provider_options=SHORT_TOKENS, session=redis_options(redis_server))
    browser = await stack.browser()
    await stack.sign_in(browser)
    cookies = browser.cookies()
    stack.clock.advance(100)
    assert await get(stack.sidecar, "/x", cookies) == (200, "alice")
    fresh = await add_replica(stack, aiohttp_server)  # a restarted process: nothing in memory
    stack.clock.advance(100)  # due again
    assert await get(fresh, "/y", cookies) == (200, "alice")
    assert stack.provider.counters.refreshes == 2


def session_with(refresh_token: str, expires_at: float) -> Session:
    return Session(
        id="s",
        identity=Identity(sub="alice", user="alice"),
        tokens=Tokens(access_token="a", refresh_token=refresh_token, expires_at=expires_at),
        created_at=0,
        expires_at=1000,
        last_seen_at=0,
    )


@pytest.mark.parametrize(
    ("stored", "mine", "elsewhere"),
    [
        (("rt-1", 100.0), ("rt-1", 100.0), False),
        (("rt-2", 100.0), ("rt-1", 100.0), True),
        (("rt-1", 200.0), ("rt-1", 100.0), True),  # a provider that does not rotate
        (("rt-1", 50.0), ("rt-1", 100.0), False),
    ],
)
def test_refreshed_elsewhere_compares_the_tokens(
    stored: tuple[str, float], mine: tuple[str, float], elsewhere: bool
) -> None:
    assert refreshed_elsewhere(session_with(*stored), session_with(*mine)) is elsewhere
