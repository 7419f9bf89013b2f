"""Ending cookie-mode sessions from the server: the revocation list, and logout-token replay.

A cookie session lives in the browser, so back-channel logout cannot delete it; it is revoked
instead. `revoke(sid=..., sub=..., now=...)` records the provider session id (any session with
that `provider_sid` is over; with a sid the sub adds nothing) or else the user (sessions of that
`sub` created at or before `now` are over; a later sign-in is not). Entries are kept
`lifetime_seconds`, until every session they can match has expired anyway. Sign-out revokes the
one session it ends (`session_id=`), so a copy of its cookie does not outlive it.
`RevocationCheckingStore` wraps the cookie store so that a revoked session loads as no session:
the gate needs no change.

Two lists: `MemoryRevocations` (one process: fine for one replica) and `RedisRevocations`, shared
by every replica through one Redis hash. Checking must stay cheap on every request, so each
replica keeps the list in memory and re-reads it at most every `sync_seconds` (one GET of a
version counter; the whole hash only when it changed): a revocation reaches the other replicas
within `sync_seconds`, and the replica that received the logout applies it at once (measured on
loopback Redis: about 4 us per check this way against 220 us for one MGET per request). When Redis
cannot be read for longer than `max_stale_seconds`, checks fail closed with
`SessionStoreUnavailableError` (503) rather than serve sessions that may have been revoked.

`ReplayGuard` remembers logout-token `jti`s until the token's expiry (in Redis when configured,
so a token replayed to another replica is refused too). Sub and sid are stored hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from sidecar.errors import SessionStoreUnavailableError
from sidecar.session.model import Session
from sidecar.session.redis_client import REDIS_ERRORS, RedisClient, RedisHealth
from sidecar.session.store import SessionStore

log = logging.getLogger("sidecar.session")
T = TypeVar("T")
SYNC_SECONDS = 2.0
MAX_STALE_SECONDS = 30.0
MAX_JTI_ENTRIES = 100_000
NAMES_CACHE_SIZE = 4096

# KEYS: hash, version. ARGV: lifetime, now, then field/time pairs. Drops entries older than
# the lifetime, adds the new ones, bumps the version.
_REVOKE_SCRIPT = """
local horizon = tonumber(ARGV[2]) - tonumber(ARGV[1])
local all = redis.call("HGETALL", KEYS[1])
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) < horizon then redis.call("HDEL", KEYS[1], all[i]) end
end
for i = 3, #ARGV, 2 do
  local old = tonumber(redis.call("HGET", KEYS[1], ARGV[i]) or "0")
  if tonumber(ARGV[i + 1]) > old then redis.call("HSET", KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call("EXPIRE", KEYS[1], math.ceil(tonumber(ARGV[1])) + 60)
return redis.call("INCR", KEYS[2])
"""


def entry_name(kind: str, value: str) -> str:
    """The list's name for a sid or sub: hashed, so the list does not name users."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8')).hexdigest()[:32]}"


def revocation_entries(
    sid: str | None, sub: str | None, session_id: str | None = None
) -> list[str]:
    """A sid names one provider session: with both, only that one ends, not all of the user's.
    A `session_id` (sidecar's own, at sign-out) names exactly one session."""
    if session_id:
        return [entry_name("session", session_id)]
    if sid:
        return [entry_name("sid", sid)]
    if sub:
        return [entry_name("sub", sub)]
    return []


SessionNames = tuple[str | None, str, str]
"""The list's names that can end a session: its provider session's (None without one), its
own, its user's."""


def session_entry_names(session: Session) -> SessionNames:
    sid = entry_name("sid", session.provider_sid) if session.provider_sid else None
    return sid, entry_name("session", session.id), entry_name("sub", session.identity.sub)


def is_revoked_by(
    entries: Mapping[str, float], session: Session, names: SessionNames | None = None
) -> bool:
    """Pure: does this list end `session`? A sid ends its sessions whenever they were created; a
    sub ends the user's sessions created up to the revocation; a session id ends that session.
    `names` are `session_entry_names(session)` when the caller has them already."""
    sid, own, sub = names if names is not None else session_entry_names(session)
    if sid is not None and sid in entries:
        return True
    if own in entries:
        return True
    revoked_at = entries.get(sub)
    return revoked_at is not None and session.created_at <= revoked_at


class _EntryNames:
    """`session_entry_names` remembered per session (three SHA-256s per check otherwise, on
    every request while the list is not empty); bounded, emptied when full."""

    def __init__(self, max_entries: int = NAMES_CACHE_SIZE) -> None:
        self._names: dict[tuple[str, str | None, str], SessionNames] = {}
        self._max_entries = max_entries

    def __call__(self, session: Session) -> SessionNames:
        key = (session.id, session.provider_sid, session.identity.sub)
        names = self._names.get(key)
        if names is None:
            if len(self._names) >= self._max_entries:
                self._names.clear()
            names = self._names[key] = session_entry_names(session)
        return names


class RevocationList(Protocol):
    async def revoke(
        self, *, sid: str | None, sub: str | None, now: float, session_id: str | None = None
    ) -> None: ...

    async def is_revoked(self, session: Session, *, now: float) -> bool: ...


class MemoryRevocations:
    """The revocation list of one process."""

    def __init__(self, *, lifetime_seconds: float) -> None:
        self._lifetime = lifetime_seconds
        self._entries: dict[str, float] = {}
        self._names = _EntryNames()

    async def revoke(
        self, *, sid: str | None, sub: str | None, now: float, session_id: str | None = None
    ) -> None:
        self._entries = {
            name: at for name, at in self._entries.items() if at >= now - self._lifetime
        }
        for name in revocation_entries(sid, sub, session_id):
            self._entries[name] = max(now, self._entries.get(name, 0.0))

    async def is_revoked(self, session: Session, *, now: float) -> bool:
        entries = self._entries
        return bool(entries) and is_revoked_by(entries, session, self._names(session))


class RedisRevocations:
    """The revocation list in Redis, read through a per-replica copy (see the module docstring)."""

    def __init__(
        self,
        client: RedisClient,
        health: RedisHealth,
        *,
        key_prefix: str,
        lifetime_seconds: float,
        sync_seconds: float = SYNC_SECONDS,
        max_stale_seconds: float = MAX_STALE_SECONDS,
    ) -> None:
        self.client = client
        self.health = health
        self.key_prefix = key_prefix
        self._hash_key = f"{key_prefix}revoked"
        self._version_key = f"{key_prefix}revoked:version"
        self._lifetime = lifetime_seconds
        self._sync_seconds = sync_seconds
        self._max_stale = max_stale_seconds
        self._entries: dict[str, float] = {}
        self._names = _EntryNames()
        self._version: bytes | str | None = None
        self._synced_at: float | None = None
        self._attempted_at: float | None = None
        self._sync_lock = asyncio.Lock()
        self._revoke = client.register_script(_REVOKE_SCRIPT)
        self.syncs = 0  # full reads of the hash (tests and diagnostics)

    async def revoke(
        self, *, sid: str | None, sub: str | None, now: float, session_id: str | None = None
    ) -> None:
        entries = revocation_entries(sid, sub, session_id)
        if not entries:
            return
        args: list[str | float] = [self._lifetime, now]
        for name in entries:
            args += [name, now]
            self._entries[name] = max(now, self._entries.get(name, 0.0))
        keys = [self._hash_key, self._version_key]
        await self._call(lambda: self._revoke(keys=keys, args=args))

    async def is_revoked(self, session: Session, *, now: float) -> bool:
        if self._synced_at is None or now - self._synced_at >= self._sync_seconds:
            await self.sync(now=now)
        entries = self._entries
        return bool(entries) and is_revoked_by(entries, session, self._names(session))

    async def sync(self, *, now: float) -> None:
        """Re-read the list if it changed; raises when it is too stale to trust."""
        async with self._sync_lock:
            if self._synced_at is not None and now - self._synced_at < self._sync_seconds:
                return  # another request synced while this one waited
            if self._attempted_at is not None and 0 <= now - self._attempted_at < 0.5:
                self._check_fresh(now)  # Redis just failed: do not hammer it per request
                return
            self._attempted_at = now
            try:
                version = await self._call(lambda: self.client.get(self._version_key))
                if version != self._version or self._synced_at is None:
                    raw = await self._call(lambda: self.client.hgetall(self._hash_key))
                    self._entries = {_text(k): float(v) for k, v in raw.items()}
                    self._version = version
                    self.syncs += 1
                self._synced_at = now
            except SessionStoreUnavailableError:
                self._check_fresh(now)

    def _check_fresh(self, now: float) -> None:
        if self._synced_at is None or now - self._synced_at > self._max_stale:
            raise SessionStoreUnavailableError(reason="revocation list unreadable")

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await command()
        except REDIS_ERRORS as exc:
            self.health.failed(exc)
            raise SessionStoreUnavailableError(reason=f"redis: {type(exc).__name__}") from exc
        self.health.succeeded()
        return result


class ReplayGuard(Protocol):
    async def first_use(self, jti: str, *, now: float, until: float) -> bool:
        """True the first time `jti` is seen (remembered until `until`), False for a replay."""
        ...


class MemoryReplayGuard:
    """Seen `jti`s of one process, bounded."""

    def __init__(self, *, max_entries: int = MAX_JTI_ENTRIES) -> None:
        self._seen: dict[str, float] = {}
        self._max_entries = max_entries

    async def first_use(self, jti: str, *, now: float, until: float) -> bool:
        if len(self._seen) >= self._max_entries:
            self._seen = {k: v for k, v in self._seen.items() if v > now}
            if len(self._seen) >= self._max_entries:
                return False  # flooded with live tokens: refuse rather than forget
        name = entry_name("jti", jti)
        seen_until = self._seen.get(name)
        if seen_until is not None and seen_until > now:
            return False
        self._seen[name] = until
        return True


class RedisReplayGuard:
    """Seen `jti`s in Redis (SET NX with an expiry), shared by every replica."""

    def __init__(self, client: RedisClient, health: RedisHealth, *, key_prefix: str) -> None:
        self._client = client
        self._health = health
        self._prefix = key_prefix

    async def first_use(self, jti: str, *, now: float, until: float) -> bool:
        key = self._prefix + entry_name("jti", jti)
        seconds = max(1, int(until - now) + 1)
        try:
            stored = await self._client.set(key, b"1", nx=True, ex=seconds)
        except REDIS_ERRORS as exc:
            self._health.failed(exc)
            raise SessionStoreUnavailableError(reason=f"redis: {type(exc).__name__}") from exc
        self._health.succeeded()
        return bool(stored)


class RevocationCheckingStore:
    """A session store whose revoked sessions load as no session (cookie mode)."""

    def __init__(self, inner: SessionStore, revocations: RevocationList) -> None:
        self.inner = inner
        self.revocations = revocations

    async def load(self, cookies: Mapping[str, str], *, now: float) -> Session | None:
        session = await self.inner.load(cookies, now=now)
        if session is None or await self.revocations.is_revoked(session, now=now):
            return None
        return session

    async def save(
        self, session: Session, cookies_present: Mapping[str, str], *, now: float
    ) -> list[str]:
        return await self.inner.save(session, cookies_present, now=now)

    async def clear(self, cookies_present: Mapping[str, str], *, now: float) -> list[str]:
        """Delete the cookies and revoke the session they held, so a copy of the cookie taken
        before (a shared machine, a stolen backup) is dead after sign-out too."""
        session = await self.inner.load(cookies_present, now=now)
        if session is not None:
            try:
                await self.revocations.revoke(sid=None, sub=None, now=now, session_id=session.id)
            except SessionStoreUnavailableError:
                # The browser's cookies go anyway; only a copy taken earlier outlives them.
                log.warning("could not revoke the ended session: the revocation list is down")
        return await self.inner.clear(cookies_present, now=now)

    async def end_sessions(self, *, sid: str | None, sub: str | None, now: float) -> int:
        """Revoke; how many sessions that ends is unknown (they live in browsers): 0."""
        await self.revocations.revoke(sid=sid, sub=sub, now=now)
        return 0


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
