"""Trusted issuers' keys, fetched from a real development provider on 127.0.0.1: by discovery or
an explicit jwks_uri, never from a document naming another issuer, retried and re-fetched at a
bounded rate (the provider's counters prove how often it was asked)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from sidecar.auth.issuers import JWKS_REFETCH_INTERVAL_SECONDS, RETRY_SECONDS, IssuerKeys
from sidecar.config.model import TrustedIssuerConfig
from sidecar.dev.provider import DevProvider
from sidecar.errors import ProviderUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def provider() -> AsyncIterator[DevProvider]:
    dev = DevProvider()
    await dev.start()
    yield dev
    await dev.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_keys_come_by_discovery(provider: DevProvider, http: aiohttp.ClientSession) -> None:
    keys = IssuerKeys(TrustedIssuerConfig(issuer=provider.issuer), http, clock=Clock())
    found = await keys.key_set(provider.keys.current_kid)
    assert [key.kid for key in found.keys] == [provider.keys.current_kid]
    assert (provider.counters.discovery, provider.counters.jwks) == (1, 1)
    await keys.key_set(provider.keys.current_kid)  # cached
    assert provider.counters.jwks == 1


async def test_explicit_jwks_uri_skips_discovery(
    provider: DevProvider, http: aiohttp.ClientSession
) -> None:
    config = TrustedIssuerConfig(issuer=provider.issuer, jwks_uri=provider.url("/jwks"))
    await IssuerKeys(config, http, clock=Clock()).key_set(None)
    assert (provider.counters.discovery, provider.counters.jwks) == (0, 1)


async def test_document_for_another_issuer_is_refused_then_retried_later(
    provider: DevProvider, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    provider.faults.discovery_wrong_issuer = True
    keys = IssuerKeys(TrustedIssuerConfig(issuer=provider.issuer), http, clock=clock)
    with pytest.raises(ProviderUnavailableError) as caught:
        await keys.key_set(None)
    assert "issuer mismatch" in caught.value.reason
    provider.faults.discovery_wrong_issuer = False
    with pytest.raises(ProviderUnavailableError):  # not asked again yet: no storm of fetches
        await keys.key_set(None)
    assert provider.counters.discovery == 1
    clock.now += RETRY_SECONDS
    assert await keys.key_set(None)
    assert provider.counters.discovery == 2


async def test_unknown_kid_refetches_at_most_once_per_interval(
    provider: DevProvider, http: aiohttp.ClientSession
) -> None:
    clock = Clock()
    keys = IssuerKeys(TrustedIssuerConfig(issuer=provider.issuer), http, clock=clock)
    await keys.key_set(provider.keys.current_kid)
    new_kid = provider.rotate_keys()
    clock.now += JWKS_REFETCH_INTERVAL_SECONDS
    found = await keys.key_set(new_kid)
    assert new_kid in [key.kid for key in found.keys]
    assert provider.counters.jwks == 2
    for _ in range(3):  # a flood of made-up kids costs nothing until the interval passes
        await keys.key_set("made-up")
    assert provider.counters.jwks == 2


async def test_unreachable_issuer_is_unavailable_not_a_crash(http: aiohttp.ClientSession) -> None:
    config = TrustedIssuerConfig(issuer="http://127.0.0.1:9")
    keys = IssuerKeys(config, http, clock=Clock(), timeout_seconds=2)
    await keys.prefetch()  # logs, never raises
    with pytest.raises(ProviderUnavailableError) as caught:
        await keys.key_set(None)
    assert "not loaded" in caught.value.reason


def test_plain_http_issuer_off_loopback_needs_the_insecure_flag() -> None:
    with pytest.raises(ValueError, match="plain http"):
        TrustedIssuerConfig(issuer="http://ci.example.com")
    assert TrustedIssuerConfig(issuer="http://ci.example.com", insecure_allow_http=True)
