"""The provider compatibility stack: a documented provider shape, its guide's config, sidecar.

`make_shape_stack(name)` starts the development provider replaying `fixtures/<name>/` (see
`sidecar.dev.shapes`), the echo backend, and sidecar built by `create_app` from the first `yaml`
block of `docs/providers/<name>.md` (or its `# variant: X` block) with only what a user changes
replaced: the provider's URLs (every real host becomes the fake's origin, paths kept), the client
id and secret, the upstream; `server.public_url` is dropped (tests speak plain http on 127.0.0.1).
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from support.browser import Browser, Hop
from support.clock import FakeClock
from support.echo import make_echo_app

from sidecar import keys
from sidecar.app import create_app
from sidecar.auth.services import AuthServices
from sidecar.config.load import parse_config_text
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.dev.shapes import ProviderShape, load_shape, rewrite_url

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
GUIDES = REPO / "docs" / "providers"
CLIENT_ID = "sidecar-provider-tests"
CLIENT_SECRET = "client-secret-for-provider-tests"
ENV = {
    "OIDC_CLIENT_SECRET": CLIENT_SECRET,
    "SIDECAR_COOKIE_SECRET": "a-session-secret-of-at-least-32-characters",
}
SESSION_COOKIE = "_sidecar"
_URL_FIELDS = (
    "issuer",
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
)
_API_URLS = (
    ("github", "api_url", "https://api.github.com"),
    ("entra", "graph_url", "https://graph.microsoft.com"),
)
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)

ServerFactory = Callable[..., Awaitable[TestServer]]


def guide_yaml(name: str, variant: str | None = None) -> str:
    """The guide's configuration block: the first plain one, or the `# variant: X` one."""
    text = (GUIDES / f"{name}.md").read_text(encoding="utf-8")
    for block in _YAML_BLOCK.findall(text):
        first = block.splitlines()[0].strip()
        marked = first.startswith("# variant:")
        if variant is None and not marked and block.lstrip().startswith("version:"):
            return str(block)
        if variant is not None and first == f"# variant: {variant}":
            return str(block)
    raise LookupError(f"docs/providers/{name}.md has no {variant or 'main'} config block")


def config_from_guide(
    name: str,
    *,
    variant: str | None,
    origin: str,
    upstream: str,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> SidecarConfig:
    """The guide's config with the values a user changes replaced for this test stack (after
    `edit`, which changes the YAML data as a user would, for tests that vary one setting)."""
    data: dict[str, Any] = yaml.safe_load(guide_yaml(name, variant))
    if edit is not None:
        edit(data)
    data["upstream"] = upstream
    data.get("server", {}).pop("public_url", None)
    provider = data["provider"]
    for key in _URL_FIELDS:
        if isinstance(provider.get(key), str):
            provider[key] = rewrite_url(provider[key], origin)
    for section, key, default in _API_URLS:
        if isinstance(provider.get(section), dict):
            provider[section][key] = rewrite_url(provider[section].get(key, default), origin)
    provider["client_id"] = CLIENT_ID
    return parse_config_text(
        yaml.safe_dump(data, sort_keys=False), source=f"docs/providers/{name}.md", env=ENV
    )


def entra_document_for(shape: ProviderShape, tenant: str) -> ProviderShape:
    """Entra's `common` document as served for another tenant segment: `organizations`, or a
    tenant id (single tenant: the issuer's `{tenantid}` is filled in too). Microsoft serves the
    same shape under each; only the segment differs."""
    text = json.dumps(shape.discovery).replace("/common/", f"/{tenant}/")
    if tenant not in ("organizations", "consumers"):
        text = text.replace("{tenantid}", tenant)
    well_known = f"https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration"
    return replace(shape, discovery=json.loads(text), discovery_url=well_known)


def load(name: str) -> ProviderShape:
    return load_shape(FIXTURES / name)


@dataclass
class ShapeStack:
    shape: ProviderShape
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
        browser = Browser(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        self.browsers.append(browser)
        return browser

    async def sign_in(self, browser: Browser, path: str = "/echo") -> list[Hop]:
        hops = await browser.follow(self.url(path))
        assert hops[-1].status == 200, [(hop.status, hop.url, hop.text[:300]) for hop in hops]
        assert SESSION_COOKIE in browser.cookie_names()
        return hops

    async def sign_out(self, browser: Browser) -> list[Hop]:
        """POST /oauth2/sign_out as a same-origin form would, following every redirect."""
        return await browser.follow(
            self.url("/oauth2/sign_out"),
            method="POST",
            headers={"Origin": self.origin, "Sec-Fetch-Site": "same-origin"},
        )


def jwt_payload(token: str) -> dict[str, Any]:
    """A JWT's claims, unverified (to look at what the backend was given)."""
    part = token.split(".")[1]
    payload: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return payload


def seen_headers(hop: Hop) -> dict[str, str]:
    """The request headers the echo backend received (names lower-cased)."""
    return {name.lower(): value for name, value in hop.json()["headers"]}


ShapeStackFactory = Callable[..., Awaitable[ShapeStack]]


@pytest.fixture
async def make_shape_stack(
    aiohttp_server: ServerFactory,
) -> AsyncIterator[ShapeStackFactory]:
    stacks: list[ShapeStack] = []

    async def make(
        name: str,
        *,
        shape: ProviderShape | None = None,
        variant: str | None = None,
        user: Mapping[str, Any] | None = None,
        edit: Callable[[dict[str, Any]], None] | None = None,
        wait_ready: bool = True,
    ) -> ShapeStack:
        shape = shape or load(name)
        clock = FakeClock()
        provider = DevProvider(clock=clock, auto_login=user or shape.user, shape=shape)
        origin = await provider.start()
        echo = await aiohttp_server(make_echo_app())
        config = config_from_guide(
            name,
            variant=variant,
            origin=origin,
            upstream=str(echo.make_url("")).rstrip("/"),
            edit=edit,
        )
        sidecar = await aiohttp_server(create_app(config, clock=clock))
        stack = ShapeStack(shape, provider, sidecar, echo, clock, config)
        stacks.append(stack)
        assert config.provider is not None
        provider.add_client(
            DevClient(
                CLIENT_ID,
                CLIENT_SECRET,
                redirect_uris=[stack.url("/oauth2/callback")],
                post_logout_redirect_uris=[stack.url("/")],
                auth_method=config.provider.token_endpoint_auth_method,
            )
        )
        if wait_ready:
            await asyncio.wait_for(stack.services.require_directory().wait_ready(), 5)
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()
