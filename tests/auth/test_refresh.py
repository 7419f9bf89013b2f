"""Refresh timing (pure) and the coordinator: one refresh per session, grace for old cookies."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from sidecar.auth.refresh import RefreshCoordinator, needs_refresh, still_usable
from sidecar.errors import ProviderUnavailableError, RefreshRejectedError
from sidecar.session.model import Identity, Session, Tokens


def make_session(
    *,
    expires_at: float | None = 1000.0,
    refresh_token: str | None = "rt-1",  # noqa: S107
    sid: str = "s1",
) -> Session:
    return Session(
        id=sid,
        identity=Identity(sub="u1", user="u1"),
        tokens=Tokens(access_token="at-1", refresh_token=refresh_token, expires_at=expires_at),
        created_at=0.0,
        expires_at=50_000.0,
        last_seen_at=0.0,
    )


@pytest.mark.parametrize(
    ("expires_at", "refresh_token", "now", "margin", "expected"),
    [
        (1000.0, "rt", 100.0, 60.0, False),
        (1000.0, "rt", 939.0, 60.0, False),
        (1000.0, "rt", 940.0, 60.0, True),
        (1000.0, "rt", 1000.0, 60.0, True),
        (1000.0, "rt", 5000.0, 0.0, True),
        (1000.0, "rt", 999.0, 0.0, False),
        (1000.0, None, 5000.0, 60.0, False),
        (1000.0, "", 5000.0, 60.0, False),
        (None, "rt", 5000.0, 60.0, False),
    ],
)
def test_needs_refresh(
    expires_at: float | None, refresh_token: str | None, now: float, margin: float, expected: bool
) -> None:
    session = make_session(expires_at=expires_at, refresh_token=refresh_token)
    assert needs_refresh(session, now=now, margin=margin) is expected


def test_still_usable_until_the_access_token_really_expires() -> None:
    assert still_usable(make_session(expires_at=1000.0), now=999.9)
    assert not still_usable(make_session(expires_at=1000.0), now=1000.0)
    assert still_usable(make_session(expires_at=None), now=1e12)


class FakeClock:
    def __init__(self, now: float = 900.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Provider:
    """A refresh function that counts calls and can be held, rejected or made unavailable."""

    def __init__(self) -> None:
        self.calls = 0
        self.gate = asyncio.Event()
        self.gate.set()
        self.error: Exception | None = None

    async def __call__(self, session: Session) -> Session:
        self.calls += 1
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        tokens = Tokens(
            access_token=f"at-{self.calls + 1}",
            refresh_token=f"rt-{self.calls + 1}",
            expires_at=2000.0,
        )
        return replace(session, tokens=tokens)


async def test_concurrent_refreshes_of_one_session_call_the_provider_once() -> None:
    provider = Provider()
    provider.gate.clear()
    coordinator = RefreshCoordinator(provider, clock=FakeClock(), grace_seconds=30)
    session = make_session()
    waiters = [asyncio.ensure_future(coordinator.refresh(session)) for _ in range(20)]
    await asyncio.sleep(0)
    provider.gate.set()
    results = await asyncio.gather(*waiters)
    assert provider.calls == 1
    assert {result.tokens.access_token for result in results} == {"at-2"}


async def test_different_sessions_refresh_independently() -> None:
    provider = Provider()
    coordinator = RefreshCoordinator(provider, clock=FakeClock(), grace_seconds=30)
    first = await coordinator.refresh(make_session(sid="a"))
    second = await coordinator.refresh(make_session(sid="b"))
    assert provider.calls == 2
    assert first.id == "a" and second.id == "b"


async def test_pre_refresh_cookie_within_grace_gets_the_refreshed_session() -> None:
    clock = FakeClock()
    provider = Provider()
    coordinator = RefreshCoordinator(provider, clock=clock, grace_seconds=30)
    old = make_session()
    refreshed = await coordinator.refresh(old)
    clock.now += 29
    assert await coordinator.refresh(old) == refreshed
    assert provider.calls == 1


async def test_pre_refresh_cookie_after_grace_refreshes_again() -> None:
    clock = FakeClock()
    provider = Provider()
    coordinator = RefreshCoordinator(provider, clock=clock, grace_seconds=30)
    old = make_session()
    await coordinator.refresh(old)
    clock.now += 30
    await coordinator.refresh(old)
    assert provider.calls == 2


async def test_rejected_refresh_fails_every_waiter_and_is_remembered() -> None:
    provider = Provider()
    provider.gate.clear()
    provider.error = RefreshRejectedError(reason="invalid_grant")
    coordinator = RefreshCoordinator(provider, clock=FakeClock(), grace_seconds=30)
    session = make_session()
    waiters = [asyncio.ensure_future(coordinator.refresh(session)) for _ in range(3)]
    await asyncio.sleep(0)
    provider.gate.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert all(isinstance(result, RefreshRejectedError) for result in results)
    with pytest.raises(RefreshRejectedError):
        await coordinator.refresh(session)
    assert provider.calls == 1


async def test_unavailable_provider_is_not_remembered() -> None:
    provider = Provider()
    provider.error = ProviderUnavailableError(reason="connection refused")
    coordinator = RefreshCoordinator(provider, clock=FakeClock(), grace_seconds=30)
    session = make_session()
    with pytest.raises(ProviderUnavailableError):
        await coordinator.refresh(session)
    provider.error = None
    refreshed = await coordinator.refresh(session)
    assert refreshed.tokens.access_token == "at-3"
    assert provider.calls == 2


async def test_a_cancelled_request_does_not_cancel_the_shared_refresh() -> None:
    provider = Provider()
    provider.gate.clear()
    coordinator = RefreshCoordinator(provider, clock=FakeClock(), grace_seconds=30)
    session = make_session()
    leader = asyncio.ensure_future(coordinator.refresh(session))
    follower = asyncio.ensure_future(coordinator.refresh(session))
    await asyncio.sleep(0)
    leader.cancel()
    await asyncio.sleep(0)
    provider.gate.set()
    assert (await follower).tokens.access_token == "at-2"
    assert leader.cancelled()
    assert provider.calls == 1


async def test_grace_cache_is_bounded() -> None:
    provider = Provider()
    coordinator = RefreshCoordinator(provider, clock=FakeClock(), grace_seconds=30, max_entries=3)
    sessions = [make_session(sid=f"s{index}") for index in range(5)]
    for session in sessions:
        await coordinator.refresh(session)
    await asyncio.sleep(0)
    assert provider.calls == 5
    await coordinator.refresh(sessions[0])  # evicted: refreshed again
    assert provider.calls == 6
    await coordinator.refresh(sessions[4])  # still remembered
    assert provider.calls == 6
