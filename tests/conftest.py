"""Fixtures shared by every test package; keep it small (the rest live beside their tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, settings
from support.echo import make_echo_app
from support.redis_server import RedisServer, require_redis

# The machine (and CI's) is shared and noisy: property tests check behaviour, not speed, so no
# per-example deadline and no "too slow" health check.
settings.register_profile("sidecar", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("sidecar")


@pytest.fixture
async def echo_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> TestServer:
    """The echo backend (tests/support/echo.py) served on 127.0.0.1."""
    return await aiohttp_server(make_echo_app())


@pytest.fixture
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free 127.0.0.1 port, without persistence, stopped afterwards.
    Skips when redis-server is missing, except in CI (env CI set), where that fails."""
    require_redis()
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()
