"""The Redis session store: the browser holds a ticket, Redis holds the session, encrypted.

The cookie (chunked and named like the cookie store's, by the same `CookiePolicy`) carries only a
ticket: the session id and a random 32-byte per-session key, encrypted by the deployment's
`SessionCodec` (purpose "ticket"). Redis keeps, under `<prefix>session:<id>`, a hash with `d`, the
session JSON encrypted with the per-session key (a `SessionCodec` whose one secret is that key;
purpose "session-data:<id>") and `g` (see below). A Redis dump alone therefore reveals no token;
the ticket alone (without the deployment secrets) reveals nothing either. The key's TTL is the
session's remaining absolute lifetime.

Writes go through one Lua script so that they cannot undo each other across replicas. Beside `d`
the hash keeps `g`, the token generation (a digest of the refresh token). A new session is only
created where none exists; an update only applies while the session still exists (a session
signed out elsewhere is never brought back) and still carries the same generation, so a request
that loaded the session before another replica refreshed it cannot put the spent refresh token
back; only `store_refreshed`, called by the replica holding the refresh lock, moves the stored
session to a new generation. Sets `<prefix>sid:<h>` and `<prefix>sub:<h>` (h: SHA-256 of the
provider's sid / the user's sub) index the sessions for back-channel logout (`end_sessions`).

Any Redis failure raises `SessionStoreUnavailableError` (503), never "no session": a Redis outage
must not send every user into a sign-in loop. `RedisHealth` records it for readiness. The store
remembers the per-session keys of sessions it recently loaded or saved (bounded), so that the
cross-replica refresh (`sidecar.auth.refresh_shared`) can read and write a session by id.
"""

from __future__ import annotations

import hashlib
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from sidecar.config.model import SessionConfig
from sidecar.errors import SessionStoreUnavailableError
from sidecar.session.codec import SessionCodec, SessionDecodeError, generate_secret
from sidecar.session.cookies import (
    CookiePolicy,
    build_clear_session_cookies,
    build_set_cookies,
    join_chunks,
)
from sidecar.session.model import Session
from sidecar.session.redis_client import REDIS_ERRORS, RedisClient, RedisHealth
from sidecar.session.store import decode_session_json, encode_session_json, is_live, kept_tokens

TICKET_PURPOSE = "ticket"
DATA_PURPOSE = "session-data"
KEY_BYTES = 32
KEY_CACHE_SIZE = 10_000
SESSION_ID_MAX_CHARS = 128

T = TypeVar("T")

# KEYS: session, then the index sets. ARGV: data, generation, ttl_ms, mode, id, previous
# generation. Modes: "new" (only where no session is), "update" (only over the same token
# generation), "refresh" (only over the generation refreshed from, or the new one).
# Returns 1 stored, 0 gone (the session ended), 2 other tokens are stored, 3 id taken.
_SAVE_SCRIPT = """
local current = redis.call("HGET", KEYS[1], "g")
if ARGV[4] == "new" then
  if current then return 3 end
else
  if not current then return 0 end
  if current ~= ARGV[2] and not (ARGV[4] == "refresh" and current == ARGV[6]) then
    return 2
  end
end
redis.call("HSET", KEYS[1], "d", ARGV[1], "g", ARGV[2])
redis.call("PEXPIRE", KEYS[1], ARGV[3])
for i = 2, #KEYS do
  redis.call("SADD", KEYS[i], ARGV[5])
  if redis.call("PTTL", KEYS[i]) < tonumber(ARGV[3]) then
    redis.call("PEXPIRE", KEYS[i], ARGV[3])
  end
end
return 1
"""

# KEYS: the index sets to intersect. ARGV: the session key prefix. Returns sessions deleted.
_END_SCRIPT = """
local ids
if #KEYS == 1 then
  ids = redis.call("SMEMBERS", KEYS[1])
else
  ids = redis.call("SINTER", unpack(KEYS))
end
local ended = 0
for _, id in ipairs(ids) do
  ended = ended + redis.call("DEL", ARGV[1] .. id)
  for i = 1, #KEYS do redis.call("SREM", KEYS[i], id) end
end
return ended
"""


@dataclass(frozen=True)
class Ticket:
    """What the cookie holds in redis mode: whose session, and the key that opens it."""

    session_id: str
    key: bytes = field(repr=False)

    def to_payload(self) -> bytes:
        return self.key + self.session_id.encode("ascii")

    @classmethod
    def from_payload(cls, payload: bytes) -> Ticket:
        """Parse what `to_payload` made; ValueError for anything else."""
        key, raw_id = payload[:KEY_BYTES], payload[KEY_BYTES:]
        if len(key) != KEY_BYTES or not 0 < len(raw_id) <= SESSION_ID_MAX_CHARS:
            raise ValueError("not a ticket")
        session_id = raw_id.decode("ascii")
        if not session_id.isprintable() or " " in session_id:
            raise ValueError("not a ticket")
        return cls(session_id, key)


def index_digest(value: str) -> str:
    """How a sid or sub appears in an index key: hashed, so a dump does not list users."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()[:32]


class RedisSessionStore:
    """Sessions in Redis, encrypted with per-session keys carried by the browser's ticket."""

    def __init__(
        self,
        client: RedisClient,
        codec: SessionCodec,
        policy: CookiePolicy,
        config: SessionConfig,
        *,
        key_prefix: str,
        health: RedisHealth,
        token_bytes: Callable[[int], bytes] = secrets.token_bytes,
        key_cache_size: int = KEY_CACHE_SIZE,
    ) -> None:
        self.client = client
        self.health = health
        self.key_prefix = key_prefix
        self._client = client
        self._codec = codec
        self._policy = policy
        self._config = config
        self._prefix = key_prefix
        self._health = health
        self._token_bytes = token_bytes
        self._keys: OrderedDict[str, tuple[bytes, SessionCodec]] = OrderedDict()
        self._key_cache_size = key_cache_size
        self._save = client.register_script(_SAVE_SCRIPT)
        self._end = client.register_script(_END_SCRIPT)

    def __repr__(self) -> str:
        return f"<RedisSessionStore prefix={self._prefix!r}>"

    # -- the SessionStore interface -----------------------------------------------------------

    async def load(self, cookies: Mapping[str, str], *, now: float) -> Session | None:
        """The session the ticket names, or None (no/invalid ticket, ended, expired, idle).

        Raises `SessionStoreUnavailableError` when Redis does not answer.
        """
        ticket = self.read_ticket(cookies, now=now)
        if ticket is None:
            return None
        codec = self._remember(ticket)
        session = await self._fetch(ticket.session_id, codec, now=now)
        return session if session is not None and is_live(session, self._config, now=now) else None

    async def save(
        self, session: Session, cookies_present: Mapping[str, str], *, now: float
    ) -> list[str]:
        """Store `session`; Set-Cookie values for a new ticket (none when the ticket stays)."""
        max_age = int(session.expires_at - now)
        if max_age <= 0:
            return await self.clear(cookies_present, now=now)
        ticket = self.read_ticket(cookies_present, now=now)
        if ticket is not None and ticket.session_id == session.id:
            await self._write(session, self._remember(ticket), now=now, mode="update")
            return []
        if ticket is not None:  # a new sign-in over an older session: that one is over
            self._keys.pop(ticket.session_id, None)
            old_key = self._session_key(ticket.session_id)
            await self._call(lambda: self._client.delete(old_key))
        ticket = Ticket(session.id, self._token_bytes(KEY_BYTES))
        codec = self._remember(ticket)
        result = await self._write(session, codec, now=now, mode="new")
        if result == 3:
            raise ValueError("session id already in use")  # 144 random bits: never in practice
        value = self._codec.encode(ticket.to_payload(), purpose=TICKET_PURPOSE, now=now)
        return build_set_cookies(
            self._policy, self._policy.name, value, cookies_present, max_age_seconds=max_age
        )

    async def clear(self, cookies_present: Mapping[str, str], *, now: float) -> list[str]:
        """End the ticket's session in Redis; Set-Cookie values deleting the ticket cookies."""
        ticket = self.read_ticket(cookies_present, now=now)
        if ticket is not None:
            self._keys.pop(ticket.session_id, None)
            await self._call(lambda: self._client.delete(self._session_key(ticket.session_id)))
        return build_clear_session_cookies(self._policy, cookies_present)

    # -- by id (cross-replica refresh) and by provider session (back-channel logout) ----------

    async def load_by_id(self, session_id: str, *, now: float) -> Session | None:
        """The stored session `session_id` if its key is known here (it was loaded or saved by
        this process recently) and it still exists; None otherwise."""
        known = self._keys.get(session_id)
        if known is None:
            return None
        session = await self._fetch(session_id, known[1], now=now)
        return session if session is not None and is_live(session, self._config, now=now) else None

    async def update(self, session: Session, *, now: float) -> bool:
        """Write `session` over its stored self (see the module docstring for when that does
        not happen); False when its key is not known here or it no longer exists."""
        known = self._keys.get(session.id)
        if known is None or session.expires_at <= now:
            return False
        return await self._write(session, known[1], now=now, mode="update") == 1

    async def store_refreshed(self, session: Session, *, previous: Session, now: float) -> bool:
        """Write `session`, just refreshed from `previous`, over the stored `previous` (not over
        anything else: see the module docstring); False when that did not happen."""
        known = self._keys.get(session.id)
        if known is None or session.expires_at <= now:
            return False
        result = await self._write(session, known[1], now=now, mode="refresh", previous=previous)
        return result == 1

    async def delete(self, session_id: str) -> None:
        """End session `session_id` (a refresh the provider rejected ends it everywhere)."""
        await self._call(lambda: self._client.delete(self._session_key(session_id)))

    async def end_sessions(self, *, sid: str | None, sub: str | None, now: float) -> int:
        """Delete every session of provider session `sid` and/or user `sub` (both: those of
        that sid belonging to that sub). Returns how many were deleted."""
        del now  # sessions are deleted outright: nothing to remember
        index_keys = self._index_keys(sid, sub)
        if not index_keys:
            return 0
        prefix = self._session_key("")
        ended = await self._call(lambda: self._end(keys=index_keys, args=[prefix]))
        return int(ended)

    async def check(self) -> None:
        """One PING: raises `SessionStoreUnavailableError` when Redis does not answer."""
        await self._call(self._client.ping)

    # -- inside ---------------------------------------------------------------------------------

    def read_ticket(self, cookies: Mapping[str, str], *, now: float) -> Ticket | None:
        raw = join_chunks(self._policy, cookies)
        if raw is None or not raw.isascii():
            return None
        try:
            payload = self._codec.decode(
                raw,
                purpose=TICKET_PURPOSE,
                now=now,
                max_age_seconds=self._config.lifetime_seconds,
            )
            return Ticket.from_payload(payload)
        except (SessionDecodeError, ValueError):
            return None

    def _remember(self, ticket: Ticket) -> SessionCodec:
        known = self._keys.get(ticket.session_id)
        if known is not None and known[0] == ticket.key:
            self._keys.move_to_end(ticket.session_id)
            return known[1]
        codec = SessionCodec([generate_secret(lambda _n: ticket.key)])
        self._keys[ticket.session_id] = (ticket.key, codec)
        while len(self._keys) > self._key_cache_size:
            self._keys.popitem(last=False)
        return codec

    async def _fetch(self, session_id: str, codec: SessionCodec, *, now: float) -> Session | None:
        key = self._session_key(session_id)
        data = await self._call(lambda: self._client.hget(key, "d"))
        if data is None:
            return None
        try:
            text = data.decode("ascii") if isinstance(data, bytes) else data
            payload = codec.decode(
                text,
                purpose=f"{DATA_PURPOSE}:{session_id}",
                now=now,
                max_age_seconds=self._config.lifetime_seconds,
            )
            session = decode_session_json(payload)
        except (SessionDecodeError, ValueError, KeyError, TypeError, AttributeError):
            return None  # a different key (a forged ticket never gets here) or an old format
        return session if session.id == session_id else None

    async def _write(
        self,
        session: Session,
        codec: SessionCodec,
        *,
        now: float,
        mode: str,
        previous: Session | None = None,
    ) -> int:
        stored = replace(session, tokens=kept_tokens(session.tokens, self._config))
        data = codec.encode(
            encode_session_json(stored), purpose=f"{DATA_PURPOSE}:{session.id}", now=now
        )
        ttl_ms = max(1, int((session.expires_at - now) * 1000))
        generation = self._generation(session)
        previous_generation = self._generation(previous) if previous is not None else ""
        keys = [
            self._session_key(session.id),
            *self._index_keys(session.provider_sid, session.identity.sub),
        ]
        args: list[Any] = [data, generation, ttl_ms, mode, session.id, previous_generation]
        result = await self._call(lambda: self._save(keys=keys, args=args))
        return int(result)

    def _generation(self, session: Session) -> str:
        """Which refresh token the stored session carries, as a digest (reveals nothing)."""
        token = kept_tokens(session.tokens, self._config).refresh_token or ""
        return hashlib.sha256(b"sidecar/refresh-generation\x00" + token.encode()).hexdigest()[:32]

    def _index_keys(self, sid: str | None, sub: str | None) -> list[str]:
        keys = []
        if sid:
            keys.append(f"{self._prefix}sid:{index_digest(sid)}")
        if sub:
            keys.append(f"{self._prefix}sub:{index_digest(sub)}")
        return keys

    def _session_key(self, session_id: str) -> str:
        return f"{self._prefix}session:{session_id}"

    async def _call(self, command: Callable[[], Awaitable[T]]) -> T:
        try:
            result = await command()
        except REDIS_ERRORS as exc:
            self._health.failed(exc)
            raise SessionStoreUnavailableError(reason=f"redis: {type(exc).__name__}") from exc
        self._health.succeeded()
        return result
