"""The whole sign-in stack for the auth tests, all real and on 127.0.0.1.

`make_stack(**options)` starts the development OpenID provider (auto-login, fault knobs), the echo
backend and sidecar (`sidecar.app.create_app`) in front of it, sharing one fake clock. A
`Browser` (tests/support/browser.py) is an aiohttp client with a cookie jar that follows redirects
itself and keeps every hop, so tests can look at each Location and Set-Cookie like a browser's
network panel.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from support.browser import Browser, Hop
from support.clock import FakeClock
from support.echo import make_echo_app

from sidecar import keys
from sidecar.app import create_app
from sidecar.auth.services import AuthServices
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient

CLIENT_ID = "sidecar-tests"
CLIENT_SECRET = "client-secret-for-tests"
SESSION_SECRET = "a-session-secret-of-at-least-32-characters"
ALICE = {
    "sub": "alice",
    "email": "alice@example.org",
    "preferred_username": "alice",
    "groups": ["admins", "staff"],
}

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Stack:
    provider: DevProvider
    sidecar: TestServer
    echo: TestServer
    clock: FakeClock
    config: SidecarConfig
    browsers: list[Browser] = field(default_factory=list)

    @property
    def services(self) -> AuthServices:
        return self.sidecar.app[keys.AUTH_SERVICES]

    def url(self, path: str) -> str:
        return str(self.sidecar.make_url(path))

    @property
    def origin(self) -> str:
        return self.url("/").rstrip("/")

    async def browser(self) -> Browser:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        browser = Browser(http)
        self.browsers.append(browser)
        return browser

    async def wait_ready(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.services.require_directory().wait_ready(), timeout)

    async def sign_in(self, browser: Browser, path: str = "/") -> list[Hop]:
        hops = await browser.follow(self.url(path))
        assert hops[-1].status == 200, [(hop.status, hop.url) for hop in hops]
        assert browser.has_session()
        return hops


StackFactory = Callable[..., Awaitable[Stack]]


async def add_replica(stack: Stack, aiohttp_server: ServerFactory) -> TestServer:
    """Another sidecar with the stack's configuration (same secrets, same store), in front of the
    same provider, which accepts its callback URL too."""
    replica = await aiohttp_server(create_app(stack.config, clock=stack.clock))
    stack.provider.add_client(
        DevClient(
            CLIENT_ID,
            CLIENT_SECRET,
            redirect_uris=[
                stack.url("/oauth2/callback"),
                str(replica.make_url("/oauth2/callback")),
            ],
        )
    )
    return replica


def build_config(
    *, issuer: str, upstream: str, session: Mapping[str, Any] | None = None, **sections: Any
) -> SidecarConfig:
    data: dict[str, Any] = {
        "version": 1,
        "upstream": upstream,
        "provider": {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "email", "profile", "groups"],
        },
        "session": {"secret": SESSION_SECRET, **(session or {})},
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value}
    return SidecarConfig.model_validate(data)


@pytest.fixture
async def make_stack(aiohttp_server: ServerFactory) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(
        *,
        provider_options: Mapping[str, Any] | None = None,
        provider_down: bool = False,
        wait_ready: bool = True,
        **config_sections: Any,
    ) -> Stack:
        clock = FakeClock()
        provider = DevProvider(clock=clock, auto_login=ALICE, **(provider_options or {}))
        provider.faults.down = provider_down
        issuer = await provider.start()
        echo = await aiohttp_server(make_echo_app())
        config = build_config(
            issuer=issuer, upstream=str(echo.make_url("")).rstrip("/"), **config_sections
        )
        sidecar = await aiohttp_server(create_app(config, clock=clock))
        stack = Stack(provider, sidecar, echo, clock, config)
        stacks.append(stack)
        provider.add_client(
            DevClient(
                CLIENT_ID,
                CLIENT_SECRET,
                redirect_uris=[stack.url("/oauth2/callback")],
                post_logout_redirect_uris=[stack.url("/"), stack.url("/goodbye")],
            )
        )
        if wait_ready:
            await stack.wait_ready()
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()
