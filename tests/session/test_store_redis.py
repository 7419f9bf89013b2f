"""The Redis session store against a real redis-server: the shared suite, then what only a
server-side store can promise (nothing readable in a dump, TTLs, no lost updates across
replicas, ending sessions by provider sid or user, and what a Redis outage looks like)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as redis_asyncio
from hypothesis import given
from hypothesis import strategies as st
from support.redis_server import RedisServer

from sidecar.config.model import RedisConfig
from sidecar.errors import SessionStoreUnavailableError
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy
from sidecar.session.redis_client import RedisHealth, build_redis
from sidecar.session.store import SessionStore
from sidecar.session.store_redis import RedisSessionStore, Ticket, index_digest

from .conftest import Jar, make_config
from .store_suite import COOKIE, LIFETIME, NOW, StoreKit, StoreSuite, make_session

OTHER_SECRET = "a different deployment's key, 32+ characters"
_ID_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-"


class RedisKit:
    """Builds Redis stores over one real server; closes every client it made."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        self.clients: list[redis_asyncio.Redis] = []
        self.health = RedisHealth("test")

    def store(
        self, *, secrets: list[str] | None = None, prefix: str = "sidecar:", **session: Any
    ) -> RedisSessionStore:
        options: dict[str, Any] = {"store": "redis", "redis": {"url": self.server.url}, **session}
        if secrets is not None:
            options["secrets"] = secrets
        config = make_config(**options)
        assert config.session is not None and config.session.redis is not None
        client = build_redis(replace_prefix(config.session.redis, prefix))
        self.clients.append(client)
        return RedisSessionStore(
            client,
            SessionCodec([s.get_secret_value() for s in config.session.secrets]),
            CookiePolicy.from_config(config),
            config.session,
            key_prefix=prefix,
            health=self.health,
        )

    async def close(self) -> None:
        for client in self.clients:
            await client.aclose()


def replace_prefix(config: RedisConfig, prefix: str) -> RedisConfig:
    return config.model_copy(update={"key_prefix": prefix})


@pytest.fixture
async def redis_kit(redis_server: RedisServer) -> AsyncIterator[RedisKit]:
    kit = RedisKit(redis_server)
    yield kit
    await kit.close()


class TestRedisStore(StoreSuite):
    """The shared store behaviour (tests/session/store_suite.py), for the Redis store."""

    @pytest.fixture
    def kit(self, redis_kit: RedisKit) -> StoreKit:
        async def make(**session: Any) -> SessionStore:
            return redis_kit.store(**session)

        async def foreign() -> SessionStore:
            return redis_kit.store(secrets=[OTHER_SECRET], prefix="other:")

        return StoreKit(make, foreign)


async def dump(server: RedisServer) -> dict[str, Any]:
    """Every key and value in the server, as an operator's dump would show them."""
    client = redis_asyncio.Redis.from_url(server.url)
    try:
        found: dict[str, Any] = {}
        async for key in client.scan_iter("*"):
            raw_kind = await client.type(key)
            kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
            if kind == "hash":
                found[key.decode()] = await client.hgetall(key)
            elif kind == "set":
                found[key.decode()] = await client.smembers(key)
            else:
                found[key.decode()] = await client.get(key)
        return found
    finally:
        await client.aclose()


async def ttl_seconds(server: RedisServer, key: str) -> int:
    client = redis_asyncio.Redis.from_url(server.url)
    try:
        return int(await client.ttl(key))
    finally:
        await client.aclose()


async def test_a_redis_dump_reveals_no_token_or_identity(
    redis_kit: RedisKit, redis_server: RedisServer
) -> None:
    session = make_session(20)
    jar = Jar()
    jar.apply(await redis_kit.store().save(session, jar.cookies, now=NOW))
    text = repr(await dump(redis_server))
    secrets = [
        session.tokens.access_token,
        session.tokens.refresh_token,
        session.tokens.id_token,
        session.identity.email,
        session.identity.sub,
        session.provider_sid,
        session.identity.groups[0],
    ]
    for secret in secrets:
        assert secret is not None
        assert secret[:16] not in text
    assert session.id in text  # the key name: useless without the ticket's key


async def test_the_cookie_holds_only_a_small_ticket(redis_kit: RedisKit) -> None:
    jar = Jar()
    jar.apply(await redis_kit.store().save(make_session(200), jar.cookies, now=NOW))
    assert list(jar.cookies) == [COOKIE]
    assert len(jar.cookies[COOKIE]) < 150


async def test_the_ticket_cookie_alone_reveals_nothing(redis_kit: RedisKit) -> None:
    session = make_session()
    jar = Jar()
    jar.apply(await redis_kit.store().save(session, jar.cookies, now=NOW))
    assert session.id not in jar.cookies[COOKIE]


async def test_redis_ttl_is_the_remaining_absolute_lifetime(
    redis_kit: RedisKit, redis_server: RedisServer
) -> None:
    session = make_session()
    await redis_kit.store().save(session, {}, now=NOW + 3600)
    ttl = await ttl_seconds(redis_server, f"sidecar:session:{session.id}")
    assert LIFETIME - 3600 - 2 <= ttl <= LIFETIME - 3600
    sub_ttl = await ttl_seconds(redis_server, f"sidecar:sub:{index_digest(session.identity.sub)}")
    assert sub_ttl >= ttl


async def test_saving_a_known_ticket_sends_no_cookie(redis_kit: RedisKit) -> None:
    store, jar, session = redis_kit.store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    touched = replace(session, last_seen_at=NOW + 60)
    assert await store.save(touched, jar.cookies, now=NOW + 60) == []
    assert await redis_kit.store().load(jar.cookies, now=NOW + 61) == touched


async def test_a_copied_ticket_is_dead_after_sign_out(redis_kit: RedisKit) -> None:
    store, jar = redis_kit.store(), Jar()
    jar.apply(await store.save(make_session(), jar.cookies, now=NOW))
    stolen = dict(jar.cookies)
    jar.apply(await redis_kit.store().clear(jar.cookies, now=NOW + 1))
    assert await redis_kit.store().load(stolen, now=NOW + 2) is None


async def test_a_new_sign_in_ends_the_browsers_previous_session(redis_kit: RedisKit) -> None:
    store, jar = redis_kit.store(), Jar()
    jar.apply(await store.save(make_session(seed=1), jar.cookies, now=NOW))
    old_cookies = dict(jar.cookies)
    jar.apply(await store.save(make_session(seed=2), jar.cookies, now=NOW + 1))
    assert await redis_kit.store().load(old_cookies, now=NOW + 2) is None


async def test_a_stale_replica_cannot_put_back_spent_tokens(redis_kit: RedisKit) -> None:
    jar, session = Jar(), make_session()
    jar.apply(await redis_kit.store().save(session, jar.cookies, now=NOW))
    replica_a, replica_b = redis_kit.store(), redis_kit.store()
    seen_by_a = await replica_a.load(jar.cookies, now=NOW + 10)
    assert seen_by_a is not None
    refreshed = replace(
        session, tokens=replace(session.tokens, refresh_token="rt-2", expires_at=NOW + 320)
    )
    seen_by_b = await replica_b.load(jar.cookies, now=NOW + 10)
    assert seen_by_b is not None
    assert await replica_b.store_refreshed(refreshed, previous=seen_by_b, now=NOW + 20)
    await replica_a.save(replace(seen_by_a, last_seen_at=NOW + 30), jar.cookies, now=NOW + 30)
    assert not await replica_a.update(replace(seen_by_a, last_seen_at=NOW + 31), now=NOW + 31)
    loaded = await redis_kit.store().load(jar.cookies, now=NOW + 32)
    assert loaded is not None and loaded.tokens.refresh_token == "rt-2"
    # Refreshing again from the spent generation is refused too.
    again = replace(refreshed, tokens=replace(refreshed.tokens, refresh_token="rt-3"))
    assert not await replica_a.store_refreshed(again, previous=seen_by_a, now=NOW + 33)


async def test_a_shorter_token_lifetime_after_refresh_is_still_stored(
    redis_kit: RedisKit,
) -> None:
    store, jar, session = redis_kit.store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    shorter = replace(
        session, tokens=replace(session.tokens, refresh_token="rt-2", expires_at=NOW + 60)
    )
    assert await store.store_refreshed(shorter, previous=session, now=NOW + 1)
    assert await redis_kit.store().load(jar.cookies, now=NOW + 2) == shorter


async def test_a_session_ended_elsewhere_is_not_brought_back(redis_kit: RedisKit) -> None:
    jar, session = Jar(), make_session()
    jar.apply(await redis_kit.store().save(session, jar.cookies, now=NOW))
    replica_a = redis_kit.store()
    assert await replica_a.load(jar.cookies, now=NOW + 1) is not None
    await redis_kit.store().clear(dict(jar.cookies), now=NOW + 2)
    await replica_a.save(replace(session, last_seen_at=NOW + 3), jar.cookies, now=NOW + 3)
    assert await redis_kit.store().load(jar.cookies, now=NOW + 4) is None


async def test_load_by_id_and_update_work_for_sessions_this_process_has_seen(
    redis_kit: RedisKit,
) -> None:
    store, jar, session = redis_kit.store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    assert await store.load_by_id(session.id, now=NOW) == session
    newer = replace(session, tokens=replace(session.tokens, expires_at=NOW + 900))
    assert await store.update(newer, now=NOW + 1)
    other = redis_kit.store()
    assert await other.load_by_id(session.id, now=NOW) is None  # its key was never seen there
    assert await other.load(jar.cookies, now=NOW + 2) == newer


@pytest.mark.parametrize(
    ("sid", "sub", "ended"),
    [
        ("sid-1", None, {"a"}),
        (None, "alice", {"a", "b"}),
        ("sid-2", "alice", {"b"}),
        ("sid-3", "alice", set()),  # sid-3 is bob's: both must match
        ("unknown", None, set()),
    ],
)
async def test_end_sessions_by_provider_sid_or_user(
    redis_kit: RedisKit, sid: str | None, sub: str | None, ended: set[str]
) -> None:
    store = redis_kit.store()
    jars = {"a": Jar(), "b": Jar(), "c": Jar()}
    sessions = {
        "a": make_session(seed=1, sub="alice"),  # provider_sid sid-1
        "b": make_session(seed=2, sub="alice"),  # sid-2
        "c": make_session(seed=3, sub="bob"),  # sid-3
    }
    for name, jar in jars.items():
        jar.apply(await store.save(sessions[name], jar.cookies, now=NOW))
    count = await redis_kit.store().end_sessions(sid=sid, sub=sub, now=NOW + 1)
    assert count == len(ended)
    for name, jar in jars.items():
        loaded = await redis_kit.store().load(jar.cookies, now=NOW + 2)
        assert (loaded is None) == (name in ended), name


async def test_redis_down_is_an_outage_not_a_missing_session(
    redis_kit: RedisKit, redis_server: RedisServer
) -> None:
    store, jar, session = redis_kit.store(), Jar(), make_session()
    jar.apply(await store.save(session, jar.cookies, now=NOW))
    redis_server.stop()
    with pytest.raises(SessionStoreUnavailableError) as raised:
        await store.load(jar.cookies, now=NOW + 1)
    assert raised.value.status == 503
    assert not redis_kit.health.ok and "unreachable" in redis_kit.health.detail
    with pytest.raises(SessionStoreUnavailableError):
        await store.save(make_session(seed=9), {}, now=NOW + 1)
    assert await store.load({}, now=NOW + 1) is None  # no ticket: no need to ask Redis


async def test_sessions_resume_when_redis_comes_back(tmp_path: Any) -> None:
    from support.redis_server import require_redis

    require_redis()
    server = RedisServer(tmp_path, persistent=True)
    server.start()
    kit = RedisKit(server)
    try:
        store, jar, session = kit.store(), Jar(), make_session()
        jar.apply(await store.save(session, jar.cookies, now=NOW))
        server.stop()
        with pytest.raises(SessionStoreUnavailableError):
            await store.load(jar.cookies, now=NOW + 1)
        server.start()
        assert await store.load(jar.cookies, now=NOW + 2) == session
        assert kit.health.ok
    finally:
        await kit.close()
        server.stop()


def test_ticket_payload_round_trips_and_rejects_junk() -> None:
    ticket = Ticket("abc_DEF-123", bytes(range(32)))
    assert Ticket.from_payload(ticket.to_payload()) == ticket
    assert "key" not in repr(ticket)
    for junk in (b"", bytes(32), bytes(31), bytes(32) + b"a b", bytes(32) + b"\xff"):
        with pytest.raises(ValueError):
            Ticket.from_payload(junk)


@given(key=st.binary(min_size=32, max_size=32), session_id=st.text(_ID_CHARS, min_size=1))
def test_any_ticket_round_trips(key: bytes, session_id: str) -> None:
    ticket = Ticket(session_id[:128], key)
    assert Ticket.from_payload(ticket.to_payload()) == ticket


@given(st.binary(max_size=200))
def test_any_payload_parses_to_itself_or_is_refused(payload: bytes) -> None:
    try:
        ticket = Ticket.from_payload(payload)
    except ValueError:
        return
    assert ticket.to_payload() == payload
