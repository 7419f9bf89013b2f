"""Tests for sidecar.oidc.discovery against a small provider of our own on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc.jwk import ECKey, OctKey, RSAKey
from pydantic import ValidationError

from sidecar.config.model import ProviderConfig
from sidecar.errors import ProviderUnavailableError
from sidecar.oidc.discovery import (
    JWKS_REFETCH_INTERVAL_SECONDS,
    MAX_DOCUMENT_BYTES,
    ProviderDirectory,
    ProviderResponseError,
    build_metadata,
    parse_jwks,
)

ServerFactory = Callable[..., Awaitable[TestServer]]
Jwks = Callable[..., dict[str, Any]]  # the public_jwks fixture (conftest.py)


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class FakeSleep:
    """Records the backoff delays instead of sleeping; can run a hook or park after N calls."""

    def __init__(
        self,
        *,
        park_after: int | None = None,
        hook: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.delays: list[float] = []
        self._park_after = park_after
        self._hook = hook
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        for count, waiter in self._waiters:
            if len(self.delays) >= count and not waiter.done():
                waiter.set_result(None)
        if self._hook is not None:
            await self._hook(len(self.delays))
        if self._park_after is not None and len(self.delays) >= self._park_after:
            await asyncio.Event().wait()  # parked until close() cancels the task
        await asyncio.sleep(0)

    async def reached(self, count: int) -> None:
        if len(self.delays) >= count:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((count, waiter))
        await asyncio.wait_for(waiter, 10)


class FakeProvider:
    """Discovery + JWKS, with counters and knobs to misbehave."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.issuer = ""  # set once the port is known
        self.issuer_override: str | None = None
        self.jwks = jwks
        self.jwks_status = 200
        self.discovery_hits = 0
        self.jwks_hits = 0
        self.app = web.Application()
        self.app.router.add_get("/.well-known/openid-configuration", self.discovery)
        self.app.router.add_get("/jwks", self.keys)

    async def discovery(self, request: web.Request) -> web.Response:
        self.discovery_hits += 1
        return web.json_response(
            {
                "issuer": self.issuer_override or self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks",
                "end_session_endpoint": f"{self.issuer}/logout",
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": True,
            }
        )

    async def keys(self, request: web.Request) -> web.Response:
        self.jwks_hits += 1
        if self.jwks_status != 200:
            return web.Response(status=self.jwks_status, text="broken")
        return web.json_response(self.jwks)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def config(issuer: str | None, **overrides: Any) -> ProviderConfig:
    values: dict[str, Any] = {"issuer": issuer, "client_id": "app", "client_secret": "s"}
    values.update(overrides)
    return ProviderConfig.model_validate(values)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def provider(rsa_key: RSAKey, public_jwks: Jwks) -> FakeProvider:
    return FakeProvider(public_jwks(rsa_key))


async def serve(provider: FakeProvider, aiohttp_server: ServerFactory, port: int = 0) -> str:
    server = (
        await aiohttp_server(provider.app, port=port)
        if port
        else await aiohttp_server(provider.app)
    )
    provider.issuer = str(server.make_url("")).rstrip("/")
    return provider.issuer


async def started(
    cfg: ProviderConfig,
    http: aiohttp.ClientSession,
    *,
    clock: FakeClock | None = None,
    sleep: FakeSleep | None = None,
) -> ProviderDirectory:
    directory = ProviderDirectory(
        cfg, http, clock=clock or FakeClock(), sleep=sleep or FakeSleep(park_after=1)
    )
    await directory.start()
    return directory


async def test_discovery_loads_metadata_and_keys(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    directory = await started(config(issuer), http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert directory.ready and directory.status() == {"provider": "ready"}
    meta = directory.metadata()
    assert meta.issuer == issuer
    assert meta.token_endpoint == f"{issuer}/token"
    assert meta.end_session_endpoint == f"{issuer}/logout"
    assert meta.code_challenge_methods_supported == ("S256",)
    assert meta.authorization_response_iss_parameter_supported is True
    assert [key.kid for key in await directory.key_set("rsa-1")] == ["rsa-1"]
    await directory.close()


async def test_explicit_endpoints_override_discovered_ones(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    cfg = config(issuer, token_endpoint=f"{issuer}/other-token", end_session_endpoint=None)
    directory = await started(cfg, http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert directory.metadata().token_endpoint == f"{issuer}/other-token"
    assert directory.metadata().authorization_endpoint == f"{issuer}/authorize"
    await directory.close()


async def test_without_discovery_metadata_comes_from_the_config_alone(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    cfg = config(
        issuer,
        discovery=False,
        authorization_endpoint=f"{issuer}/a",
        token_endpoint=f"{issuer}/t",
        jwks_uri=f"{issuer}/jwks",
    )
    directory = await started(cfg, http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert provider.discovery_hits == 0 and provider.jwks_hits == 1
    assert directory.metadata().authorization_endpoint == f"{issuer}/a"
    assert directory.metadata().userinfo_endpoint is None
    await directory.close()


async def test_plain_oauth_provider_is_ready_without_keys(http: aiohttp.ClientSession) -> None:
    cfg = config(
        None,
        discovery=False,
        scopes=["read:user"],
        authorization_endpoint="https://github.example/authorize",
        token_endpoint="https://github.example/token",
        userinfo_endpoint="https://api.github.example/user",
    )
    directory = await started(cfg, http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert directory.status() == {"provider": "ready"}
    with pytest.raises(ProviderUnavailableError):
        await directory.key_set(None)
    await directory.close()


async def test_issuer_mismatch_keeps_the_provider_not_ready(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    provider.issuer_override = "https://impostor.example.com"
    sleep = FakeSleep(park_after=2)
    directory = await started(config(issuer), http, sleep=sleep)
    await sleep.reached(2)
    assert not directory.ready
    assert directory.status() == {
        "provider": f"issuer mismatch: expected {issuer}, got https://impostor.example.com"
    }
    with pytest.raises(ProviderUnavailableError) as caught:
        directory.metadata()
    assert caught.value.status == 503
    assert provider.discovery_hits == 2  # it keeps retrying: the provider may be fixed
    await directory.close()


async def test_provider_down_at_start_becomes_ready_when_it_comes_up(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    statuses: list[dict[str, str]] = []
    directory: ProviderDirectory | None = None

    async def bring_up_on_third_failure(calls: int) -> None:
        assert directory is not None
        statuses.append(directory.status())
        if calls == 3:
            await serve(provider, aiohttp_server, port=port)

    sleep = FakeSleep(hook=bring_up_on_third_failure)
    directory = await started(config(issuer), http, sleep=sleep)
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert sleep.delays == [1, 2, 4]
    assert statuses[0] == {"provider": "discovery failed: connection refused"}
    assert directory.status() == {"provider": "ready"}
    assert directory.metadata().issuer == issuer
    await directory.close()


async def test_backoff_doubles_up_to_sixty_seconds(http: aiohttp.ClientSession) -> None:
    issuer = f"http://127.0.0.1:{free_port()}"
    sleep = FakeSleep(park_after=9)
    directory = await started(config(issuer), http, sleep=sleep)
    await sleep.reached(9)
    assert sleep.delays == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    await directory.close()


async def test_jwks_failure_is_reported_and_retried_without_rediscovery(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    provider.jwks_status = 500
    seen: list[str] = []
    directory: ProviderDirectory | None = None

    async def fix_after_first(calls: int) -> None:
        assert directory is not None
        seen.append(directory.status()["provider"])
        provider.jwks_status = 200

    directory = await started(config(issuer), http, sleep=FakeSleep(hook=fix_after_first))
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert seen == [f"JWKS failed: HTTP 500 from {issuer}/jwks"]
    assert provider.discovery_hits == 1 and provider.jwks_hits == 2
    await directory.close()


async def test_metadata_before_start_raises_provider_unavailable(
    http: aiohttp.ClientSession,
) -> None:
    directory = ProviderDirectory(config("https://id.example.com"), http, clock=FakeClock())
    assert not directory.ready
    assert directory.status() == {"provider": "discovery not attempted yet"}
    with pytest.raises(ProviderUnavailableError):
        directory.metadata()
    with pytest.raises(ProviderUnavailableError):
        await directory.key_set("x")
    await directory.close()


async def test_unknown_kid_triggers_one_refetch_then_rate_limits(
    provider: FakeProvider,
    aiohttp_server: ServerFactory,
    http: aiohttp.ClientSession,
    rsa_key: RSAKey,
    rsa_key_2: RSAKey,
    public_jwks: Jwks,
) -> None:
    issuer = await serve(provider, aiohttp_server)
    clock = FakeClock()
    directory = await started(config(issuer), http, clock=clock)
    await asyncio.wait_for(directory.wait_ready(), 10)
    assert provider.jwks_hits == 1

    await directory.key_set("rsa-1")
    assert provider.jwks_hits == 1  # known kid: no fetch

    provider.jwks = public_jwks(rsa_key, rsa_key_2)  # the provider rotates in a new key
    keys = await directory.key_set("rsa-2")
    assert provider.jwks_hits == 2
    assert sorted(key.kid or "" for key in keys) == ["rsa-1", "rsa-2"]

    clock.now += JWKS_REFETCH_INTERVAL_SECONDS - 1
    keys = await directory.key_set("forged-kid")
    assert provider.jwks_hits == 2  # within 30 s: no second fetch
    assert "forged-kid" not in {key.kid for key in keys}

    clock.now += 1
    await directory.key_set("forged-kid")
    assert provider.jwks_hits == 3  # 30 s later one more fetch is allowed
    await directory.close()


async def test_missing_kid_refetches_only_when_there_are_several_keys(
    provider: FakeProvider,
    aiohttp_server: ServerFactory,
    http: aiohttp.ClientSession,
    rsa_key: RSAKey,
    ec_key: ECKey,
    public_jwks: Jwks,
) -> None:
    issuer = await serve(provider, aiohttp_server)
    directory = await started(config(issuer), http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    await directory.key_set(None)
    assert provider.jwks_hits == 1
    await directory.close()

    provider.jwks = public_jwks(rsa_key, ec_key)
    directory = await started(config(issuer), http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    await directory.key_set(None)
    assert provider.jwks_hits == 3
    await directory.close()


async def test_concurrent_unknown_kids_cause_one_refetch(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    directory = await started(config(issuer), http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    await asyncio.gather(*(directory.key_set(f"kid-{i}") for i in range(10)))
    assert provider.jwks_hits == 2
    await directory.close()


async def test_failed_refetch_keeps_the_old_keys(
    provider: FakeProvider, aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    issuer = await serve(provider, aiohttp_server)
    directory = await started(config(issuer), http)
    await asyncio.wait_for(directory.wait_ready(), 10)
    provider.jwks_status = 503
    keys = await directory.key_set("new-kid")
    assert [key.kid for key in keys] == ["rsa-1"]
    assert directory.ready
    await directory.close()


def test_parse_jwks_keeps_only_asymmetric_signing_keys(
    rsa_key: RSAKey, ec_key: ECKey, public_jwks: Jwks
) -> None:
    doc = public_jwks(rsa_key, ec_key)
    encryption = dict(
        RSAKey.generate_key(2048, parameters={"kid": "enc-1", "use": "enc"}).as_dict(private=False)
    )
    doc["keys"] += [
        encryption,
        dict(OctKey.generate_key(256, parameters={"kid": "hmac"}).as_dict()),
        {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x25519"},
        {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
        {"kty": "PQC", "kid": "future"},
        "not a key",
    ]
    assert sorted(key.kid or "" for key in parse_jwks(doc)) == ["ec-1", "rsa-1"]


@pytest.mark.parametrize("doc", [[], {}, {"keys": "x"}, {"keys": []}, {"keys": [{"kty": "oct"}]}])
def test_parse_jwks_rejects_documents_without_usable_keys(doc: Any) -> None:
    with pytest.raises(ProviderResponseError):
        parse_jwks(doc)


def test_build_metadata_refuses_plain_http_endpoints_off_loopback() -> None:
    doc = {
        "issuer": "https://id.example.com",
        "authorization_endpoint": "https://id.example.com/a",
        "token_endpoint": "http://id.example.com/t",
        "jwks_uri": "https://id.example.com/jwks",
    }
    with pytest.raises(ProviderResponseError, match="token_endpoint"):
        build_metadata(config("https://id.example.com"), doc)
    relaxed = config("https://id.example.com", insecure_allow_http=True)
    assert build_metadata(relaxed, doc).token_endpoint == "http://id.example.com/t"


@pytest.mark.parametrize(
    ("doc", "problem"),
    [
        ({"issuer": "https://id.example.com", "token_endpoint": "https://t"}, "authorization"),
        (
            {"issuer": "https://id.example.com", "authorization_endpoint": "https://a",
             "token_endpoint": "https://t"},
            "jwks_uri",
        ),
        ({"issuer": "https://id.example.com", "authorization_endpoint": 5}, "not a string"),
        ({}, "issuer mismatch"),
    ],
)  # fmt: skip
def test_build_metadata_names_what_is_missing(doc: dict[str, Any], problem: str) -> None:
    with pytest.raises(ProviderResponseError, match=problem):
        build_metadata(config("https://id.example.com"), doc)


async def test_discovery_that_is_not_json_is_reported(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    app = web.Application()

    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html>login</html>", content_type="text/html")

    app.router.add_get("/.well-known/openid-configuration", html)
    server = await aiohttp_server(app)
    issuer = str(server.make_url("")).rstrip("/")
    sleep = FakeSleep(park_after=1)
    directory = await started(config(issuer), http, sleep=sleep)
    await sleep.reached(1)
    assert directory.status() == {"provider": "discovery failed: response is not JSON"}
    await directory.close()


def test_openid_without_an_issuer_is_refused_by_the_config() -> None:
    # Without an issuer no ID token's iss could be checked: the config itself refuses it.
    with pytest.raises(ValidationError, match="issuer and jwks_uri are required"):
        config(
            None,
            discovery=False,
            authorization_endpoint="https://id.example.com/a",
            token_endpoint="https://id.example.com/t",
            jwks_uri="https://id.example.com/jwks",
        )


async def test_oversized_discovery_document_is_refused(
    aiohttp_server: ServerFactory, http: aiohttp.ClientSession
) -> None:
    app = web.Application()

    async def huge(request: web.Request) -> web.Response:
        return web.json_response({"padding": "x" * (MAX_DOCUMENT_BYTES + 10)})

    app.router.add_get("/.well-known/openid-configuration", huge)
    server = await aiohttp_server(app)
    sleep = FakeSleep(park_after=1)
    directory = await started(config(str(server.make_url("")).rstrip("/")), http, sleep=sleep)
    await sleep.reached(1)
    assert directory.status() == {
        "provider": f"discovery failed: response larger than {MAX_DOCUMENT_BYTES} bytes"
    }
    await directory.close()
