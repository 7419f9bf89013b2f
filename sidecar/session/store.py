"""Where sessions live between requests: the `SessionStore` interface and the cookie store.

Every store applies the same rules, kept here beside the interface: `is_live` (absolute lifetime
and idle timeout), `kept_tokens` (`session.keep_tokens`) and the session's JSON payload
(`encode_session_json` / `decode_session_json`).

`CookieSessionStore` keeps the whole `Session` in the browser: the compact JSON of
`Session.to_dict()`, encrypted by the codec (purpose "session") and split across cookies by the
cookie policy. `load` gives a `Session` or None (absent, tampered, truncated, foreign-key, expired
or idle: all simply "no session"); `save` gives the Set-Cookie values to send; `clear` those that
delete the session cookies present. Decoding every request's cookie is the hot path, so decoded
sessions are kept in a small LRU cache keyed by the SHA-256 of the raw cookie value (a digest, so
large sessions do not pin large strings); a cached session is still checked against `now`. Only
values that authenticated are cached, so the cache cannot be poisoned.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from typing import Protocol

from sidecar.config.model import SessionConfig
from sidecar.session.codec import SessionCodec, SessionDecodeError
from sidecar.session.cookies import (
    CookiePolicy,
    build_clear_session_cookies,
    build_set_cookies,
    join_chunks,
)
from sidecar.session.model import Session, Tokens

PURPOSE = "session"
CACHE_SIZE = 1024


class SessionStore(Protocol):
    """What the gate and the handlers need from any session store (cookie, or Redis in
    `sidecar.session.store_redis`). Async, because a server-side store does I/O; a store that
    cannot reach its backend raises `SessionStoreUnavailableError` rather than answer "no
    session". `clear` ends the session (server-side too) and gives the cookies to delete."""

    async def load(self, cookies: Mapping[str, str], *, now: float) -> Session | None: ...

    async def save(
        self, session: Session, cookies_present: Mapping[str, str], *, now: float
    ) -> list[str]: ...

    async def clear(self, cookies_present: Mapping[str, str], *, now: float) -> list[str]: ...


def is_live(session: Session, config: SessionConfig, *, now: float) -> bool:
    """Whether `session` is within its absolute lifetime and, when one is set, its idle timeout."""
    if now >= session.expires_at:
        return False
    idle = config.idle_timeout_seconds
    return idle is None or session.last_seen_at + idle >= now


def kept_tokens(tokens: Tokens, config: SessionConfig) -> Tokens:
    """`tokens` without those `session.keep_tokens` says not to store."""
    keep = config.keep_tokens
    return Tokens(
        access_token=tokens.access_token if keep.access_token else None,
        refresh_token=tokens.refresh_token if keep.refresh_token else None,
        id_token=tokens.id_token if keep.id_token else None,
        expires_at=tokens.expires_at,
    )


def encode_session_json(session: Session) -> bytes:
    """The compact UTF-8 JSON of `session.to_dict()` that a store encrypts."""
    return json.dumps(session.to_dict(), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_session_json(payload: bytes) -> Session:
    """The session in `payload`; ValueError, KeyError, TypeError or AttributeError when it is
    not one this version understands."""
    data = json.loads(payload.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("session payload is not an object")
    return Session.from_dict(data)


class CookieSessionStore:
    """Sessions encrypted into the browser's cookies; no server-side state but a decode cache."""

    def __init__(
        self,
        codec: SessionCodec,
        policy: CookiePolicy,
        config: SessionConfig,
        *,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self._codec = codec
        self._policy = policy
        self._config = config
        self._cache: OrderedDict[bytes, Session] = OrderedDict()
        self._cache_size = cache_size

    async def load(self, cookies: Mapping[str, str], *, now: float) -> Session | None:
        """The session the cookies carry, or None if there is none that is valid at `now`."""
        raw = join_chunks(self._policy, cookies)
        if raw is None or not raw.isascii():
            return None
        digest = hashlib.sha256(raw.encode("ascii")).digest()
        session = self._cache.get(digest)
        if session is not None:
            self._cache.move_to_end(digest)
        else:
            session = self._decode(raw, now=now)
            if session is None:
                return None
            self._remember(digest, session)
        return session if is_live(session, self._config, now=now) else None

    async def save(
        self, session: Session, cookies_present: Mapping[str, str], *, now: float
    ) -> list[str]:
        """Set-Cookie values storing `session` (without the tokens `keep_tokens` drops).

        Chunks left from a larger previous session are deleted. Max-Age is the remaining absolute
        lifetime; a session already past its end is cleared instead.
        """
        max_age = int(session.expires_at - now)
        if max_age <= 0:
            return await self.clear(cookies_present, now=now)
        stored = replace(session, tokens=kept_tokens(session.tokens, self._config))
        payload = encode_session_json(stored)
        value = self._codec.encode(payload, purpose=PURPOSE, now=now)
        headers = build_set_cookies(
            self._policy, self._policy.name, value, cookies_present, max_age_seconds=max_age
        )
        # The browser sends this value next: prime the cache with exactly what load would decode.
        self._remember(hashlib.sha256(value.encode("ascii")).digest(), decode_session_json(payload))
        return headers

    async def clear(self, cookies_present: Mapping[str, str], *, now: float) -> list[str]:
        """Set-Cookie values deleting the session cookies present (sign-ins in progress stay)."""
        del now  # nothing is kept server-side
        return build_clear_session_cookies(self._policy, cookies_present)

    def _decode(self, raw: str, *, now: float) -> Session | None:
        try:
            payload = self._codec.decode(
                raw, purpose=PURPOSE, now=now, max_age_seconds=self._config.lifetime_seconds
            )
        except SessionDecodeError:
            return None
        try:
            return decode_session_json(payload)
        except (ValueError, KeyError, TypeError, AttributeError):
            return None  # authentic but not a session this version understands

    def _remember(self, digest: bytes, session: Session) -> None:
        if self._cache_size <= 0:
            return
        self._cache[digest] = session
        self._cache.move_to_end(digest)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
