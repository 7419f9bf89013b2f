"""The auth side of the forward-auth integration tests, whichever ingress is in front.

`start_auth_side(aiohttp_server, ...)` starts the development provider (auto-login), the echo
backend and sidecar (`create_app`, in-process) sharing one fake clock, configured for
forward-auth: `server.trusted_proxies` is 127.0.0.1; public `/static` and `/health`, `/admin` for
the `admins` group, `/api/admin` (sub `alice`) and `/api` for bearer tokens whose audience is the
provider's issuer (`machine_token` gets one, as a program would), and staff (`example.org`
emails) everywhere else; the signed identity assertion is on. `Stack` puts the running ingress
in front; `Browser` is an aiohttp client with a cookie jar that follows redirects itself and
records every answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import aiohttp
import jwt
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from support.clock import FakeClock
from support.echo import make_echo_app

from sidecar.app import create_app
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.dev.provider_tokens import pkce_s256

from .conftest import RunningProxy

CLIENT_ID = "forward-auth-tests"
CLIENT_SECRET = "client-secret-for-forward-auth-tests"
SESSION_SECRET = "a-session-secret-of-at-least-32-characters"
ALICE = {
    "sub": "alice",
    "email": "alice@example.org",
    "preferred_username": "alice",
    "groups": ["admins", "staff"],
}
BOB = {"sub": "bob", "email": "bob@example.org", "preferred_username": "bob", "groups": ["staff"]}
EVE = {"sub": "eve", "email": "eve@elsewhere.example", "preferred_username": "eve", "groups": []}
SESSION_COOKIE = "_sidecar"
MACHINE_ID = "machine"
MACHINE_SECRET = "machine-secret-for-forward-auth-tests"
MACHINE_REDIRECT = "http://127.0.0.1:9/machine"
VERIFIER = "v" * 64

ServerFactory = Callable[..., Awaitable[TestServer]]


def replace_each_once(text: str, replacements: Mapping[str, str]) -> str:
    """`text` with each key replaced by its value; each key must occur exactly once, so an
    example that changed shape fails loudly instead of running half-rendered."""
    for old, new in replacements.items():
        assert text.count(old) == 1, f"the example no longer has exactly one {old!r}"
        text = text.replace(old, new)
    return text


@dataclass
class Answer:
    url: str
    status: int
    headers: Mapping[str, str]
    set_cookies: list[str]
    text: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def json(self) -> Any:
        return json.loads(self.text)

    def seen(self, name: str) -> list[str]:
        """The values of header `name` the echo backend received (exact spelling, any case)."""
        return [value for key, value in self.json()["headers"] if key.lower() == name.lower()]


@dataclass
class Browser:
    http: aiohttp.ClientSession
    hops: list[Answer] = field(default_factory=list)

    async def get(self, url: str, headers: Mapping[str, str] | None = None) -> Answer:
        sent = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8", **(headers or {})}
        async with self.http.get(url, headers=sent, allow_redirects=False) as response:
            text = await response.text()
            answer = Answer(
                url,
                response.status,
                response.headers,
                response.headers.getall("Set-Cookie", []),
                text,
            )
        self.hops.append(answer)
        return answer

    async def follow(self, url: str, headers: Mapping[str, str] | None = None) -> list[Answer]:
        hops = [await self.get(url, headers)]
        while hops[-1].status in (301, 302, 303, 307, 308) and len(hops) < 10:
            hops.append(await self.get(urljoin(hops[-1].url, hops[-1].location)))
        return hops

    def session_cookie(self) -> str | None:
        for cookie in self.http.cookie_jar:
            if cookie.key == SESSION_COOKIE:
                return cookie.value
        return None


@dataclass
class Stack:
    proxy: RunningProxy
    provider: DevProvider
    clock: FakeClock
    browsers: list[Browser] = field(default_factory=list)

    def url(self, path: str) -> str:
        return self.proxy.url(path)

    async def browser(self) -> Browser:
        browser = Browser(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        self.browsers.append(browser)
        return browser

    async def signed_in(self, user: Mapping[str, Any] = ALICE) -> Browser:
        self.provider.auto_login = dict(user)
        browser = await self.browser()
        # Any ingress's way in, landing on a public page that answers whoever signed in.
        hops = await browser.follow(self.url("/oauth2/start?rd=/static/signed-in"))
        assert hops[-1].status == 200, [(hop.status, hop.url) for hop in hops]
        assert browser.session_cookie() is not None
        return browser


@dataclass
class AuthSide:
    provider: DevProvider
    clock: FakeClock
    echo: TestServer
    sidecar: TestServer

    @property
    def sidecar_port(self) -> int:
        assert self.sidecar.port is not None
        return self.sidecar.port

    @property
    def echo_port(self) -> int:
        assert self.echo.port is not None
        return self.echo.port

    def register(self, proxy: RunningProxy) -> Stack:
        """Let the provider send browsers back through `proxy`; the stack to test with."""
        self.provider.add_client(
            DevClient(CLIENT_ID, CLIENT_SECRET, redirect_uris=[proxy.url("/oauth2/callback")])
        )
        return Stack(proxy, self.provider, self.clock)


def assertion_key() -> str:
    """A fresh ES256 signing key (PEM) for the signed identity assertion."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


async def start_auth_side(aiohttp_server: ServerFactory, **provider_options: Any) -> AuthSide:
    clock = FakeClock()
    provider = DevProvider(clock=clock, auto_login=ALICE, **provider_options)
    issuer = await provider.start()
    provider.add_client(DevClient(MACHINE_ID, MACHINE_SECRET, redirect_uris=[MACHINE_REDIRECT]))
    echo = await aiohttp_server(make_echo_app())
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "upstream": str(echo.make_url("")).rstrip("/"),  # unused: the ingress proxies the app
            "provider": {
                "issuer": issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["openid", "email", "profile", "groups"],
            },
            "session": {"secret": SESSION_SECRET, "refresh_margin_seconds": 30},
            "server": {"trusted_proxies": ["127.0.0.1/32"]},
            # The issue's example: public under /static and /health, admins under /admin,
            # programs with a token of the provider's audience under /api, staff everywhere else.
            "policies": {
                "staff": {"email_domains": ["example.org"]},
                "admins": {"groups_any": ["admins"]},
                "api-admins": {"claims": {"sub": ["alice"]}},  # access tokens carry no groups
            },
            "routes": [
                {"path": "/static", "access": "public"},
                {"exact": "/health", "access": "public", "methods": ["GET", "HEAD"]},
                {"path": "/admin", "policy": "admins"},
                {"path": "/api/admin", "bearer": True, "policy": "api-admins"},
                {"path": "/api", "bearer": True},
                {"path": "/", "policy": "staff"},
            ],
            "api": {"bearer": {"audiences": [issuer]}},
            "identity_assertion": {"enabled": True, "keys": [{"key": assertion_key()}]},
        }
    )
    sidecar = await aiohttp_server(create_app(config, clock=clock))
    return AuthSide(provider, clock, echo, sidecar)


async def machine_token(provider: DevProvider, user: Mapping[str, Any] = ALICE) -> str:
    """An access token for `user` (its audience: the issuer), as a program gets one."""
    provider.auto_login = dict(user)
    query = {
        "client_id": MACHINE_ID,
        "redirect_uri": MACHINE_REDIRECT,
        "response_type": "code",
        "scope": "openid",
        "state": "s",
        "code_challenge": pkce_s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(
            provider.url("/authorize"), params=query, allow_redirects=False
        ) as response:
            code = parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": MACHINE_REDIRECT,
            "code_verifier": VERIFIER,
        }
        basic = base64.b64encode(f"{MACHINE_ID}:{MACHINE_SECRET}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
        async with http.post(provider.url("/token"), data=form, headers=headers) as response:
            assert response.status == 200, await response.text()
            token: str = (await response.json())["access_token"]
    return token


async def send_raw(
    port: int, target: str, headers: Mapping[str, str] | None = None
) -> tuple[int, bytes]:
    """`GET target HTTP/1.1` sent byte for byte (clients normalise `..` before sending); the
    status and the body (enough to tell an echo from an error page)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Connection: close", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1"))
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


# --- scenarios both ingresses must pass, word for word -------------------------------------


async def app_gets_sidecars_signed_assertion(stack: Stack) -> None:
    """The app receives sidecar's signed identity assertion (verifiable with /oauth2/jwks),
    never a client's, and none on public paths."""
    browser = await stack.signed_in(ALICE)
    answer = await browser.get(stack.url("/whoami"), {"X-Sidecar-Assertion": "forged"})
    (assertion,) = answer.seen("X-Sidecar-Assertion")
    jwks = (await browser.get(stack.url("/oauth2/jwks"))).json()
    key = jwt.PyJWK(jwks["keys"][0]).key
    claims = jwt.decode(assertion, key, algorithms=["ES256"], audience=stack.proxy.origin)
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.org"
    anonymous = await stack.browser()
    public = await anonymous.get(stack.url("/static/x"), {"X-Sidecar-Assertion": "forged"})
    assert public.seen("X-Sidecar-Assertion") == []


async def staff_everywhere_outsiders_only_on_public_paths(stack: Stack) -> None:
    """The issue's example policy: staff everywhere, everyone on the public paths."""
    eve = await stack.signed_in(EVE)  # signed in, but not staff
    assert (await eve.get(stack.url("/reports"))).status == 403
    assert (await eve.get(stack.url("/"))).status == 403
    assert (await eve.get(stack.url("/static/app.css"))).status == 200
    assert (await eve.get(stack.url("/health"))).status == 200
    bob = await stack.signed_in(BOB)
    assert (await bob.get(stack.url("/reports"))).status == 200
    assert (await bob.get(stack.url("/healthz-not-public"))).status == 200  # exact, not a prefix
