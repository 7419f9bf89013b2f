"""The revocation list (per process and in Redis) and the logout-token replay guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
import redis.asyncio as redis_asyncio
from support.redis_server import RedisServer

from sidecar.errors import SessionStoreUnavailableError
from sidecar.session.redis_client import RedisHealth
from sidecar.session.revocation import (
    MemoryReplayGuard,
    MemoryRevocations,
    RedisReplayGuard,
    RedisRevocations,
    RevocationCheckingStore,
    entry_name,
    is_revoked_by,
)

from .conftest import Jar
from .store_suite import NOW, make_session
from .test_store import make_store

LIFETIME = 3600.0


def test_a_sid_revokes_its_sessions_whenever_they_were_created() -> None:
    session = make_session(seed=1)  # provider_sid sid-1
    entries = {entry_name("sid", "sid-1"): NOW - 100}
    assert is_revoked_by(entries, session)
    assert not is_revoked_by(entries, make_session(seed=2))


def test_a_sub_revokes_only_sessions_created_up_to_the_revocation() -> None:
    session = make_session(sub="alice")
    assert is_revoked_by({entry_name("sub", "alice"): NOW}, session)
    assert not is_revoked_by({entry_name("sub", "alice"): NOW - 1}, session)
    assert not is_revoked_by({entry_name("sub", "bob"): NOW}, session)


def test_entries_do_not_name_the_user() -> None:
    assert "alice" not in entry_name("sub", "alice")


async def test_memory_list_revokes_and_forgets_after_the_lifetime() -> None:
    revocations = MemoryRevocations(lifetime_seconds=LIFETIME)
    session = make_session(sub="alice")
    await revocations.revoke(sid=None, sub="alice", now=NOW)
    assert await revocations.is_revoked(session, now=NOW + 1)
    await revocations.revoke(sid="other", sub=None, now=NOW + LIFETIME + 1)
    assert not await revocations.is_revoked(session, now=NOW + LIFETIME + 2)


async def test_with_sid_and_sub_only_that_provider_session_is_revoked() -> None:
    revocations = MemoryRevocations(lifetime_seconds=LIFETIME)
    await revocations.revoke(sid="sid-1", sub="alice", now=NOW)
    assert await revocations.is_revoked(make_session(seed=1, sub="alice"), now=NOW)
    assert not await revocations.is_revoked(make_session(seed=2, sub="alice"), now=NOW)


async def test_a_session_checked_before_is_checked_again_under_its_new_provider_session() -> None:
    revocations = MemoryRevocations(lifetime_seconds=LIFETIME)
    await revocations.revoke(sid="unrelated", sub=None, now=NOW)
    session = make_session(seed=1)  # provider_sid sid-1
    assert not await revocations.is_revoked(session, now=NOW)
    refreshed = replace(session, provider_sid="sid-after-refresh")
    await revocations.revoke(sid="sid-after-refresh", sub=None, now=NOW + 1)
    assert not await revocations.is_revoked(session, now=NOW + 2)
    assert await revocations.is_revoked(refreshed, now=NOW + 2)


async def test_checking_store_loads_a_revoked_session_as_none() -> None:
    store = RevocationCheckingStore(make_store(), MemoryRevocations(lifetime_seconds=LIFETIME))
    jar, session = Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    assert await store.load(jar.cookies, now=NOW) == session
    assert await store.end_sessions(sid=session.provider_sid, sub=None, now=NOW + 1) == 0
    assert await store.load(jar.cookies, now=NOW + 2) is None
    later = replace(make_session(seed=5), created_at=NOW + 3)
    jar.apply(await store.save(later, jar.cookies, now=NOW + 3))
    assert await store.load(jar.cookies, now=NOW + 4) == later


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[redis_asyncio.Redis]:
    client = redis_asyncio.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


def redis_list(client: redis_asyncio.Redis) -> RedisRevocations:
    return RedisRevocations(
        client, RedisHealth("test"), key_prefix="t:", lifetime_seconds=LIFETIME, sync_seconds=2
    )


async def test_redis_list_reaches_other_replicas_within_the_sync_interval(
    redis_client: redis_asyncio.Redis,
) -> None:
    here, there = redis_list(redis_client), redis_list(redis_client)
    session = make_session(sub="alice")
    assert not await there.is_revoked(session, now=NOW)
    await here.revoke(sid=None, sub="alice", now=NOW + 1)
    assert await here.is_revoked(session, now=NOW + 1)  # at once where it was received
    assert not await there.is_revoked(session, now=NOW + 1.5)  # the copy is 1.5 s old
    assert await there.is_revoked(session, now=NOW + 2)


async def test_redis_list_reads_the_hash_only_when_it_changed(
    redis_client: redis_asyncio.Redis,
) -> None:
    here, there = redis_list(redis_client), redis_list(redis_client)
    await there.is_revoked(make_session(), now=NOW)
    for step in range(1, 6):
        await there.is_revoked(make_session(), now=NOW + 2 * step)
    assert there.syncs == 1
    await here.revoke(sid="x", sub=None, now=NOW + 20)
    await there.is_revoked(make_session(), now=NOW + 22)
    assert there.syncs == 2


async def test_redis_list_drops_entries_older_than_the_lifetime(
    redis_client: redis_asyncio.Redis,
) -> None:
    revocations = redis_list(redis_client)
    await revocations.revoke(sid=None, sub="alice", now=NOW)
    await revocations.revoke(sid=None, sub="bob", now=NOW + LIFETIME + 1)
    stored = await redis_client.hgetall("t:revoked")
    assert {key.decode() if isinstance(key, bytes) else key for key in stored} == {
        entry_name("sub", "bob")
    }


async def test_redis_list_fails_closed_when_too_stale(
    redis_client: redis_asyncio.Redis, redis_server: RedisServer
) -> None:
    revocations = redis_list(redis_client)
    session = make_session()
    assert not await revocations.is_revoked(session, now=NOW)
    redis_server.stop()
    assert not await revocations.is_revoked(session, now=NOW + 10)  # stale copy, still trusted
    with pytest.raises(SessionStoreUnavailableError):
        await revocations.is_revoked(session, now=NOW + 31)
    assert not revocations.health.ok


@pytest.mark.parametrize("shared", [False, True])
async def test_replay_guard_accepts_a_jti_once_until_it_expires(
    redis_client: redis_asyncio.Redis, shared: bool
) -> None:
    guard = (
        RedisReplayGuard(redis_client, RedisHealth("test"), key_prefix="t:")
        if shared
        else MemoryReplayGuard()
    )
    assert await guard.first_use("jti-1", now=NOW, until=NOW + 60)
    assert not await guard.first_use("jti-1", now=NOW + 1, until=NOW + 61)
    assert await guard.first_use("jti-2", now=NOW + 1, until=NOW + 61)


async def test_memory_replay_guard_refuses_rather_than_forgets_when_flooded() -> None:
    guard = MemoryReplayGuard(max_entries=3)
    for jti in ("a", "b", "c"):
        assert await guard.first_use(jti, now=NOW, until=NOW + 60)
    assert not await guard.first_use("d", now=NOW, until=NOW + 60)
    assert await guard.first_use("d", now=NOW + 61, until=NOW + 120)  # the others expired
