"""Where sign-in keeps sessions, and what comes with that choice (cookie or Redis).

`build_session_store(config, codec, policy)` is called by `sidecar.auth.build_services`:

- `session.store: cookie` without `session.redis`: the cookie store, with a per-process
  revocation list for back-channel logout (fine for one replica);
- `session.store: cookie` with `session.redis`: the cookie store with the revocation list in
  Redis, shared by every replica;
- `session.store: redis`: the Redis store (`sidecar.session.store_redis`).

`install_session_backend(app, services)` is called by `sidecar.auth.setup` once the services
exist. It registers the back-channel logout endpoint, and with Redis: the `session_store`
readiness check, a cleanup context that pings Redis while the app runs and closes the client with
it, and (Redis store) the cross-replica refresh (`sidecar.auth.refresh_shared`) behind the
per-process refresh coordinator. The Redis client is made here without I/O: connections are
opened on first use, so sidecar starts (and serves public routes) while Redis is down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from sidecar import keys
from sidecar.auth.backchannel import SessionEnder, add_backchannel_route
from sidecar.auth.refresh import RefreshCoordinator
from sidecar.auth.refresh_shared import SharedRefresh
from sidecar.auth.services import AuthServices
from sidecar.carry_over import CarryOver
from sidecar.config.model import SidecarConfig
from sidecar.observability.health import CheckResult
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy
from sidecar.session.redis_client import (
    RedisClient,
    RedisHealth,
    build_redis,
    close_redis,
    describe_target,
    run_pings,
)
from sidecar.session.revocation import (
    MemoryReplayGuard,
    MemoryRevocations,
    RedisReplayGuard,
    RedisRevocations,
    ReplayGuard,
    RevocationCheckingStore,
)
from sidecar.session.store import CookieSessionStore, SessionStore
from sidecar.session.store_redis import RedisSessionStore

log = logging.getLogger("sidecar.auth")

LOCK_MARGIN_SECONDS = 5.0


def build_session_store(
    config: SidecarConfig,
    codec: SessionCodec,
    policy: CookiePolicy,
    *,
    carry_over: CarryOver | None = None,
) -> SessionStore:
    """The session store `config` asks for (see the module docstring). The per-process
    revocation list is kept in `carry_over`, so a live config reload does not forget it."""
    session = config.session
    if session is None:
        raise ValueError("sessions need the session section")
    redis_config = session.redis
    if redis_config is None:
        lifetime = session.lifetime_seconds
        carry = carry_over if carry_over is not None else CarryOver()
        revocations = carry.keep(
            "memory_revocations",
            MemoryRevocations,
            lambda: MemoryRevocations(lifetime_seconds=lifetime),
        )
        return RevocationCheckingStore(CookieSessionStore(codec, policy, session), revocations)
    client = build_redis(redis_config)
    health = RedisHealth(describe_target(redis_config))
    if session.store == "redis":
        return RedisSessionStore(
            client, codec, policy, session, key_prefix=redis_config.key_prefix, health=health
        )
    shared = RedisRevocations(
        client,
        health,
        key_prefix=redis_config.key_prefix,
        lifetime_seconds=session.lifetime_seconds,
    )
    return RevocationCheckingStore(CookieSessionStore(codec, policy, session), shared)


def _redis_of(store: SessionStore) -> tuple[RedisClient, RedisHealth, str] | None:
    if isinstance(store, RedisSessionStore):
        return store.client, store.health, store.key_prefix
    if isinstance(store, RevocationCheckingStore) and isinstance(
        store.revocations, RedisRevocations
    ):
        revocations = store.revocations
        return revocations.client, revocations.health, revocations.key_prefix
    return None


def _redis_context(
    client: RedisClient, health: RedisHealth
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def redis_connection(app: web.Application) -> AsyncIterator[None]:
        pinger = asyncio.ensure_future(run_pings(client, health))
        try:
            yield
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
            await close_redis(client)

    return redis_connection


def install_session_backend(app: web.Application, services: AuthServices) -> None:
    """Back-channel logout, and with Redis its readiness, lifetime and shared refresh."""
    store = services.store
    redis = _redis_of(store)
    carry = app.get(keys.CARRY_OVER) or CarryOver()
    replays: ReplayGuard = carry.keep("memory_replay_guard", MemoryReplayGuard, MemoryReplayGuard)
    if redis is None and services.config.server.workers > 1:
        log.warning(
            "back-channel logout without session.redis reaches only the worker process the "
            "provider calls (server.workers is %d): configure session.redis",
            services.config.server.workers,
        )
    if redis is not None:
        client, health, prefix = redis
        replays = RedisReplayGuard(client, health, key_prefix=prefix)

        def readiness() -> CheckResult:
            return CheckResult("session_store", health.ok, f"redis {health.detail}")

        app[keys.READINESS].append(readiness)
        app.cleanup_ctx.append(_redis_context(client, health))
    if isinstance(store, RedisSessionStore):
        shared = SharedRefresh(
            store.client,
            store,
            services.refresh_session,
            key_prefix=store.key_prefix,
            clock=services.clock,
            lock_seconds=services.provider.http_timeout_seconds + LOCK_MARGIN_SECONDS,
        )
        services.coordinator = RefreshCoordinator(
            shared, clock=services.clock, grace_seconds=services.session.refresh_grace_seconds
        )
    if isinstance(store, RedisSessionStore | RevocationCheckingStore):
        ender: SessionEnder = store
        add_backchannel_route(app, services, ender, replays)
