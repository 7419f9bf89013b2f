"""Fixtures shared by every test package; keep it small (the rest live beside their tests)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp.test_utils import TestServer
from support.echo import make_echo_app


@pytest.fixture
async def echo_server(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
) -> TestServer:
    """The echo backend (tests/support/echo.py) served on 127.0.0.1."""
    return await aiohttp_server(make_echo_app())
