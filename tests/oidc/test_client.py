"""Tests for sidecar.oidc.client against a recording token/userinfo server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from sidecar.config.model import ProviderConfig
from sidecar.errors import (
    ConfigError,
    LoginError,
    ProviderUnavailableError,
    RefreshRejectedError,
)
from sidecar.oidc.client import ProviderClient, TokenResponse
from sidecar.oidc.discovery import ProviderDirectory

ServerFactory = Callable[..., Awaitable[TestServer]]
Jwks = Callable[..., dict[str, Any]]  # the public_jwks fixture (conftest.py)
NOW = 1_800_000_000.0
GOOD_TOKENS = {
    "access_token": "at-1",
    "token_type": "Bearer",
    "expires_in": 300,
    "refresh_token": "rt-2",
    "id_token": "h.p.s",
}


@dataclass
class Received:
    headers: dict[str, str]
    form: dict[str, str]


@dataclass
class RecordingProvider:
    """Token, userinfo and JWKS endpoints that record what they got and answer as told."""

    jwks: dict[str, Any]
    token_status: int = 200
    token_body: Any = field(default_factory=lambda: dict(GOOD_TOKENS))
    userinfo_status: int = 200
    userinfo_body: Any = field(default_factory=lambda: {"sub": "user-1", "email": "a@b.c"})
    hang: bool = False
    received: list[Received] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        app.router.add_get("/jwks", self.keys)
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.received.append(Received(dict(request.headers), {k: str(v) for k, v in form.items()}))
        if self.hang:
            await asyncio.Event().wait()
        if isinstance(self.token_body, str):
            return web.Response(status=self.token_status, text=self.token_body)
        return web.json_response(self.token_body, status=self.token_status)

    async def userinfo(self, request: web.Request) -> web.Response:
        self.received.append(Received(dict(request.headers), {}))
        return web.json_response(self.userinfo_body, status=self.userinfo_status)

    async def keys(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def provider(rsa_key: RSAKey, public_jwks: Jwks) -> RecordingProvider:
    return RecordingProvider(public_jwks(rsa_key))


@pytest.fixture
async def base_url(provider: RecordingProvider, aiohttp_server: ServerFactory) -> str:
    server = await aiohttp_server(provider.app())
    return str(server.make_url("")).rstrip("/")


def make_config(base: str, **overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = {
        "issuer": base,
        "discovery": False,
        "authorization_endpoint": f"{base}/authorize",
        "token_endpoint": f"{base}/token",
        "userinfo_endpoint": f"{base}/userinfo",
        "jwks_uri": f"{base}/jwks",
        "client_id": "my app:1",
        "client_secret": "p@ss word/+%",
    }
    values.update(overrides)
    return ProviderConfig.model_validate(values)


async def make_client(config: ProviderConfig, http: aiohttp.ClientSession) -> ProviderClient:
    directory = ProviderDirectory(config, http, clock=lambda: NOW)
    await directory.start()
    await asyncio.wait_for(directory.wait_ready(), 10)
    return ProviderClient(config, directory, http, clock=lambda: NOW)


async def test_client_secret_basic_sends_form_urlencoded_credentials_in_basic_auth(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    client = await make_client(make_config(base_url), http)
    tokens = await client.exchange_code("the-code", "the-verifier", "https://app/cb")
    assert tokens == TokenResponse("at-1", "Bearer", 300.0, "rt-2", "h.p.s")
    [got] = provider.received
    scheme, _, encoded = got.headers["Authorization"].partition(" ")
    assert scheme == "Basic"
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    assert user == "my+app%3A1" and password == "p%40ss+word%2F%2B%25"  # RFC 6749 2.3.1
    assert (unquote_plus(user), unquote_plus(password)) == ("my app:1", "p@ss word/+%")
    assert got.form == {
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": "https://app/cb",
        "code_verifier": "the-verifier",
    }
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"


async def test_client_secret_post_puts_credentials_in_the_body(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    config = make_config(base_url, token_endpoint_auth_method="client_secret_post")
    client = await make_client(config, http)
    await client.exchange_code("c", "v", "https://app/cb")
    [got] = provider.received
    assert "Authorization" not in got.headers
    assert got.form["client_id"] == "my app:1"
    assert got.form["client_secret"] == "p@ss word/+%"


@pytest.mark.parametrize(("key_name", "alg"), [("rsa_key", "RS256"), ("ec_key", "ES256")])
async def test_private_key_jwt_sends_an_assertion_signed_with_the_key(
    key_name: str,
    alg: str,
    provider: RecordingProvider,
    base_url: str,
    http: aiohttp.ClientSession,
    request: pytest.FixtureRequest,
) -> None:
    key: RSAKey | ECKey = request.getfixturevalue(key_name)
    config = make_config(
        base_url,
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key=key.as_pem(private=True).decode(),
        private_key_id="client-key-1",
    )
    client = await make_client(config, http)
    await client.exchange_code("c", "v", "https://app/cb")
    await client.refresh("rt")
    first, second = provider.received
    assert "Authorization" not in first.headers and "client_secret" not in first.form
    assert first.form["client_assertion_type"] == (
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    )
    assert first.form["client_id"] == "my app:1"
    public = type(key).import_key(key.as_dict(private=False))
    token = jwt.decode(first.form["client_assertion"], public, algorithms=[alg])
    assert token.header["alg"] == alg and token.header["kid"] == "client-key-1"
    assert token.claims["iss"] == token.claims["sub"] == "my app:1"
    assert token.claims["aud"] == f"{base_url}/token"
    assert token.claims["iat"] == int(NOW) and token.claims["exp"] == int(NOW) + 60
    later = jwt.decode(second.form["client_assertion"], public, algorithms=[alg])
    assert later.claims["jti"] != token.claims["jti"]


async def test_private_key_jwt_with_an_unusable_key_is_a_config_error(
    base_url: str, http: aiohttp.ClientSession
) -> None:
    config = make_config(
        base_url,
        client_secret=None,
        token_endpoint_auth_method="private_key_jwt",
        private_key="-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n",
    )
    with pytest.raises(ConfigError) as caught:
        await make_client(config, http)
    assert "provider.private_key" in caught.value.problems[0]
    assert "not a key" not in str(caught.value)


async def test_refresh_sends_the_refresh_grant(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    client = await make_client(make_config(base_url), http)
    tokens = await client.refresh("rt-1")
    assert tokens.refresh_token == "rt-2"
    assert provider.received[0].form == {"grant_type": "refresh_token", "refresh_token": "rt-1"}


@pytest.mark.parametrize(
    ("status", "body"), [(400, {"error": "invalid_grant"}), (401, {"error": "invalid_token"})]
)
async def test_refresh_refused_by_the_provider_is_rejected(
    status: int,
    body: dict[str, str],
    provider: RecordingProvider,
    base_url: str,
    http: aiohttp.ClientSession,
) -> None:
    provider.token_status, provider.token_body = status, body
    client = await make_client(make_config(base_url), http)
    with pytest.raises(RefreshRejectedError) as caught:
        await client.refresh("rt-1")
    assert caught.value.status == 401 and body["error"] in caught.value.reason


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (500, {"error": "server_error"}),
        (503, "<html>maintenance</html>"),
        (400, {"error": "invalid_client"}),
        (200, "not json"),
        (200, {"token_type": "Bearer"}),
    ],
)
async def test_refresh_outage_is_provider_unavailable(
    status: int, body: Any, provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    provider.token_status, provider.token_body = status, body
    client = await make_client(make_config(base_url), http)
    with pytest.raises(ProviderUnavailableError) as caught:
        await client.refresh("rt-1")
    assert caught.value.status == 503


async def test_refresh_when_the_provider_refuses_connections(
    base_url: str, http: aiohttp.ClientSession, unused_tcp_port: int
) -> None:
    dead = make_config(base_url, token_endpoint=f"http://127.0.0.1:{unused_tcp_port}/token")
    client = await make_client(dead, http)
    with pytest.raises(ProviderUnavailableError) as caught:
        await client.refresh("rt-1")
    assert "connection refused" in caught.value.reason


async def test_refresh_that_times_out_is_provider_unavailable(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    provider.hang = True
    client = await make_client(make_config(base_url, http_timeout_seconds=0.05), http)
    with pytest.raises(ProviderUnavailableError) as caught:
        await client.refresh("rt-1")
    assert "timed out" in caught.value.reason


async def test_error_bodies_and_tokens_never_reach_logs_or_reasons(
    provider: RecordingProvider,
    base_url: str,
    http: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider.token_status = 400
    provider.token_body = {
        "error": "invalid_grant",
        "error_description": "refresh token rt-SECRET-123 was revoked",
    }
    client = await make_client(make_config(base_url), http)
    with caplog.at_level(logging.DEBUG), pytest.raises(RefreshRejectedError) as caught:
        await client.refresh("rt-SECRET-123")
    assert "rt-SECRET-123" not in caplog.text
    assert "p@ss" not in caplog.text
    assert "rt-SECRET-123" not in caught.value.reason + caught.value.message
    assert "invalid_grant" in caught.value.reason


async def test_exchange_refused_is_a_login_error(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    provider.token_status, provider.token_body = 400, {"error": "invalid_grant"}
    client = await make_client(make_config(base_url), http)
    with pytest.raises(LoginError) as caught:
        await client.exchange_code("c", "v", "https://app/cb")
    assert caught.value.code == "token_exchange_failed"
    assert "invalid_grant" in caught.value.reason


async def test_exchange_without_id_token_for_openid_is_a_login_error(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    provider.token_body = {"access_token": "at", "token_type": "Bearer"}
    client = await make_client(make_config(base_url), http)
    with pytest.raises(LoginError) as caught:
        await client.exchange_code("c", "v", "https://app/cb")
    assert caught.value.code == "id_token_missing"


async def test_exchange_for_plain_oauth_needs_no_id_token(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    provider.token_body = {"access_token": "at", "token_type": "bearer"}
    config = make_config(base_url, scopes=["read:user"], issuer=None)
    client = await make_client(config, http)
    assert (await client.exchange_code("c", "v", "https://app/cb")).id_token is None


async def test_exchange_during_outage_is_provider_unavailable(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    provider.token_status, provider.token_body = 502, "bad gateway"
    client = await make_client(make_config(base_url), http)
    with pytest.raises(ProviderUnavailableError):
        await client.exchange_code("c", "v", "https://app/cb")


async def test_userinfo_sends_the_bearer_token(
    provider: RecordingProvider, base_url: str, http: aiohttp.ClientSession
) -> None:
    client = await make_client(make_config(base_url), http)
    assert await client.userinfo("at-1") == {"sub": "user-1", "email": "a@b.c"}
    assert provider.received[0].headers["Authorization"] == "Bearer at-1"


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (401, {"error": "invalid_token"}, LoginError),
        (200, ["not", "an", "object"], LoginError),
        (503, {}, ProviderUnavailableError),
    ],
)
async def test_userinfo_failures(
    status: int,
    body: Any,
    error: type[Exception],
    provider: RecordingProvider,
    base_url: str,
    http: aiohttp.ClientSession,
) -> None:
    provider.userinfo_status, provider.userinfo_body = status, body
    client = await make_client(make_config(base_url), http)
    with pytest.raises(error):
        await client.userinfo("at-1")
