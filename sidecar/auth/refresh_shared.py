"""Refresh across replicas: one refresh per session however many replicas ask (Redis mode).

`sidecar.auth.refresh.RefreshCoordinator` collapses the concurrent refreshes of one process;
`SharedRefresh` is the refresh function it calls in Redis mode, and collapses those of all
replicas, so that a provider rotating one-time refresh tokens sees each token spent once:

1. take the session's lock in Redis (`SET <prefix>lock:<id> <random token> NX PX`);
2. the holder reads the stored session: when another replica already refreshed it (other
   tokens than the caller's), that is the result; otherwise it refreshes at the provider, stores
   the result and only then releases the lock (compare-and-delete, so an expired lock that
   another replica has since taken is never released by mistake);
3. the others poll the lock (every `poll_seconds`, for at most `wait_seconds`) and, once it is
   gone, read the stored result; if none is there (the holder failed) they try step 1 themselves.

A refresh the provider rejects deletes the stored session, so waiters fail fast instead of
spending the rejected token again. The lock expires after `lock_seconds` (longer than a provider
call can take), so a replica dying mid-refresh blocks nobody for long.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sidecar.auth.refresh import RefreshFunction
from sidecar.errors import (
    ProviderUnavailableError,
    RefreshRejectedError,
    SessionStoreUnavailableError,
)
from sidecar.session.model import Session
from sidecar.session.redis_client import REDIS_ERRORS, RedisClient
from sidecar.session.store_redis import RedisSessionStore

T = TypeVar("T")

_RELEASE_SCRIPT = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


def refreshed_elsewhere(stored: Session, mine: Session) -> bool:
    """Pure: does the stored session carry other tokens than the ones this request holds?"""
    return stored.tokens.refresh_token != mine.tokens.refresh_token or (
        stored.tokens.expires_at or 0.0
    ) > (mine.tokens.expires_at or 0.0)


class SharedRefresh:
    """The cross-replica refresh function (see the module docstring)."""

    def __init__(
        self,
        client: RedisClient,
        store: RedisSessionStore,
        refresh: RefreshFunction,
        *,
        key_prefix: str,
        clock: Callable[[], float],
        lock_seconds: float,
        wait_seconds: float | None = None,
        poll_seconds: float = 0.02,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self._client = client
        self._store = store
        self._refresh = refresh
        self._prefix = key_prefix
        self._clock = clock
        self._lock_ms = max(1, int(lock_seconds * 1000))
        self._wait_seconds = lock_seconds + 1.0 if wait_seconds is None else wait_seconds
        self._poll_seconds = poll_seconds
        self._token_bytes = token_bytes
        self._release = client.register_script(_RELEASE_SCRIPT)
        self.refreshes = 0  # refreshes this replica did at the provider
        self.waits = 0  # times this replica waited for another's refresh

    async def __call__(self, session: Session) -> Session:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._wait_seconds
        lock_key = f"{self._prefix}lock:{session.id}"
        waited = False
        while True:
            token = self._token_bytes(16).hex()
            taken = await self._redis(self._client.set(lock_key, token, nx=True, px=self._lock_ms))
            if taken:
                try:
                    return await self._refresh_holding_lock(session)
                finally:
                    await self._redis(self._release(keys=[lock_key], args=[token]))
            if not waited:
                self.waits += 1
                waited = True
            while await self._redis(self._client.exists(lock_key)):
                if loop.time() >= deadline:
                    raise ProviderUnavailableError(
                        reason="another replica's refresh of this session did not finish in time"
                    )
                await asyncio.sleep(self._poll_seconds)
            stored = await self._store.load_by_id(session.id, now=self._clock())
            if stored is None:
                raise RefreshRejectedError(reason="session ended while another replica refreshed")
            if refreshed_elsewhere(stored, session):
                return stored
            if loop.time() >= deadline:
                raise ProviderUnavailableError(reason="refresh by another replica failed")

    async def _refresh_holding_lock(self, session: Session) -> Session:
        now = self._clock()
        stored = await self._store.load_by_id(session.id, now=now)
        if stored is not None and refreshed_elsewhere(stored, session):
            return stored
        current = stored or session  # key not known here: refresh what the request holds
        try:
            refreshed = await self._refresh(current)
        except RefreshRejectedError:
            await self._store.delete(session.id)
            raise
        self.refreshes += 1
        await self._store.store_refreshed(refreshed, previous=current, now=self._clock())
        return refreshed

    async def _redis(self, command: Awaitable[T]) -> T:
        try:
            return await command
        except REDIS_ERRORS as exc:
            raise SessionStoreUnavailableError(reason=f"redis: {type(exc).__name__}") from exc
