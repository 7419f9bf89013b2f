"""Introspection answers (RFC 7662) judged as tables, and the cache: how long, how big, keyed by a
hash, one provider call for concurrent requests, outages never cached."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import pytest

from sidecar.auth.introspection import Introspector, check_introspection, token_digest
from sidecar.errors import InvalidTokenError, ProviderUnavailableError

ISSUER = "https://idp.example.com"
AUDIENCE = "https://api.example.com"
NOW = 1_800_000_000.0
ACTIVE = {"active": True, "sub": "svc", "iss": ISSUER, "aud": AUDIENCE, "exp": NOW + 600}


def check(doc: Mapping[str, Any]) -> dict[str, Any]:
    return check_introspection(doc, issuer=ISSUER, audiences={AUDIENCE}, now=NOW, leeway=60)


@pytest.mark.parametrize(
    "doc",
    [
        ACTIVE,
        {"active": True, "sub": "svc"},  # minimal: nothing to contradict
        {**ACTIVE, "aud": ["other", AUDIENCE]},
        {**ACTIVE, "token_type": "Bearer"},
        {**ACTIVE, "token_type": "access_token"},
        {**ACTIVE, "exp": NOW - 30},  # within the leeway
    ],
)
def test_active_answers_pass(doc: dict[str, Any]) -> None:
    claims = check(doc)
    assert claims["sub"] == "svc"
    assert "active" not in claims


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"active": False}, "not active"),
        ({"active": "true", "sub": "svc"}, "not active"),  # exactly true, not truthy
        ({"sub": "svc"}, "not active"),
        ({**ACTIVE, "token_type": "refresh_token"}, "refresh_token"),
        ({**ACTIVE, "token_type": "urn:ietf:params:oauth:token-type:id_token"}, "id_token"),
        ({**ACTIVE, "exp": NOW - 61}, "exp"),
        ({**ACTIVE, "exp": "soon"}, "exp"),
        ({**ACTIVE, "nbf": NOW + 61}, "nbf"),
        ({**ACTIVE, "iss": "https://evil.example.com"}, "iss"),
        ({**ACTIVE, "aud": "other"}, "aud"),
        ({**ACTIVE, "aud": 42}, "aud"),
    ],
)
def test_answers_that_are_refused(doc: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidTokenError) as caught:
        check(doc)
    assert reason in caught.value.reason


def test_username_stands_in_for_a_missing_sub() -> None:
    assert check({"active": True, "username": "jdoe"})["sub"] == "jdoe"


def test_digest_is_not_the_token() -> None:
    digest = token_digest("secret-token")
    assert len(digest) == 32 and b"secret-token" not in digest


class Provider:
    """A stand-in for ProviderClient.introspect: answers from a table, counts calls."""

    def __init__(self, answers: dict[str, dict[str, Any]]) -> None:
        self.answers = answers
        self.calls = 0
        self.down = False
        self.gate: asyncio.Event | None = None

    async def __call__(self, token: str) -> Mapping[str, Any]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.down:
            raise ProviderUnavailableError(reason="down")
        return self.answers.get(token, {"active": False})


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def introspector(
    provider: Provider, clock: Clock, *, seconds: float = 30, size: int = 100
) -> Introspector:
    return Introspector(
        provider,
        issuer=lambda: ISSUER,
        audiences={AUDIENCE},
        cache_seconds=seconds,
        cache_max_entries=size,
        leeway=60,
        clock=clock,
    )


async def test_answers_are_cached_for_cache_seconds_then_asked_again() -> None:
    provider, clock = Provider({"good": ACTIVE}), Clock()
    intro = introspector(provider, clock)
    for _ in range(3):
        assert (await intro.claims("good"))["sub"] == "svc"
        with pytest.raises(InvalidTokenError):
            await intro.claims("bad")
    assert provider.calls == 2
    clock.now += 30
    await intro.claims("good")
    assert provider.calls == 3


async def test_cache_never_outlives_the_token() -> None:
    provider, clock = Provider({"short": {**ACTIVE, "exp": NOW + 5}}), Clock()
    intro = introspector(provider, clock)
    await intro.claims("short")
    clock.now += 6
    with pytest.raises(InvalidTokenError):  # asked again: the provider now judges it expired...
        provider.answers["short"] = {"active": False}
        await intro.claims("short")
    assert provider.calls == 2


async def test_cache_is_bounded_least_recently_used_first() -> None:
    provider = Provider({f"t{n}": ACTIVE for n in range(5)})
    intro = introspector(provider, Clock(), size=2)
    for token in ("t0", "t1", "t0", "t2"):  # t1 is the least recently used when t2 arrives
        await intro.claims(token)
    assert provider.calls == 3
    await intro.claims("t0")
    assert provider.calls == 3
    await intro.claims("t1")
    assert provider.calls == 4


async def test_cache_seconds_zero_asks_every_time() -> None:
    provider = Provider({"good": ACTIVE})
    intro = introspector(provider, Clock(), seconds=0)
    await intro.claims("good")
    await intro.claims("good")
    assert provider.calls == 2


async def test_concurrent_requests_with_one_token_share_one_call() -> None:
    provider = Provider({"good": ACTIVE})
    provider.gate = asyncio.Event()
    intro = introspector(provider, Clock())
    waiting = [asyncio.create_task(intro.claims("good")) for _ in range(5)]
    await asyncio.sleep(0)
    provider.gate.set()
    results = await asyncio.gather(*waiting)
    assert provider.calls == 1
    assert all(result["sub"] == "svc" for result in results)


async def test_outages_are_not_cached_and_reach_every_waiter() -> None:
    provider = Provider({"good": ACTIVE})
    provider.down = True
    provider.gate = asyncio.Event()
    intro = introspector(provider, Clock())
    waiting = [asyncio.create_task(intro.claims("good")) for _ in range(3)]
    await asyncio.sleep(0)
    provider.gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(result, ProviderUnavailableError) for result in results)
    provider.down = False
    assert (await intro.claims("good"))["sub"] == "svc"
    assert provider.calls == 2
