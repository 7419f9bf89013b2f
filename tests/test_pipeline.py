"""The one middleware in front of every request: ids, limits, errors, and the 499 line."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from sidecar import keys
from sidecar.app import create_app
from sidecar.config.model import SidecarConfig
from sidecar.errors import NotAuthenticatedError
from sidecar.gating import GateResult

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
CONFIG = SidecarConfig.model_validate(
    {"version": 1, "upstreams": [{"path": "/", "url": "http://127.0.0.1:9"}]}
)


class AccessLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record)


@pytest.fixture
def access() -> Iterator[AccessLines]:
    handler = AccessLines()
    logger = logging.getLogger("sidecar.access")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


async def test_a_cancelled_request_is_logged_as_499_with_its_fields(
    aiohttp_client: ClientFactory, access: AccessLines
) -> None:
    async def gate(request: web.Request) -> GateResult:
        request[keys.ACCESS_LOG_FIELDS]["route"] = "cancelled-here"
        raise asyncio.CancelledError  # what the server does to a handler whose client left

    app = create_app(CONFIG)
    app[keys.GATE] = gate
    client = await aiohttp_client(app)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.get("/x")
    for _ in range(100):
        if access.lines:
            break
        await asyncio.sleep(0)
    (line,) = access.lines
    assert vars(line)["status"] == 499
    assert vars(line)["route"] == "cancelled-here"
    assert len(vars(line)["request_id"]) == 32


async def test_errors_raised_below_carry_the_request_id_and_log_the_error_code(
    aiohttp_client: ClientFactory, access: AccessLines
) -> None:
    async def gate(request: web.Request) -> GateResult:
        raise NotAuthenticatedError()

    app = create_app(CONFIG)
    app[keys.GATE] = gate
    client = await aiohttp_client(app)
    response = await client.get("/x", headers={"Accept": "application/json"})
    assert response.status == 401
    body = await response.json()
    assert body["request_id"] == response.headers["X-Request-Id"]
    for _ in range(100):
        if access.lines:
            break
        await asyncio.sleep(0)
    assert vars(access.lines[0])["error"] == body["error"]


async def test_every_request_of_an_app_gets_its_own_id(aiohttp_client: ClientFactory) -> None:
    client = await aiohttp_client(create_app(CONFIG))
    ids = set()
    for _ in range(20):
        response = await client.get("/healthz")
        ids.add(response.headers["X-Request-Id"])
    assert len(ids) == 20
