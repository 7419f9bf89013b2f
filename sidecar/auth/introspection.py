"""Opaque bearer tokens: asking the provider about them (RFC 7662) and remembering the answer.

`check_introspection(doc, ...)` is the pure part: an answer counts only when `active` is exactly
`true`, it is not about a refresh token, `exp`/`nbf` hold (with leeway), `iss` (when present) is
the provider and `aud` (when present) contains a configured audience; it returns the claims the
identity is built from, or raises `InvalidTokenError`. `Introspector` adds the I/O and the cache:
answers (positive and negative) are kept for `cache_seconds` but never past the token's `exp`,
in a bounded LRU keyed by the SHA-256 of the token (the token itself is never stored, logged or
used as a key); concurrent requests with the same token share one call to the provider. A
provider that cannot answer gives `ProviderUnavailableError` (503), which is not cached.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from sidecar.errors import InvalidTokenError

_REFUSED_TOKEN_TYPES = frozenset(
    {
        "refresh_token",
        "id_token",
        "urn:ietf:params:oauth:token-type:refresh_token",
        "urn:ietf:params:oauth:token-type:id_token",
    }
)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def check_introspection(
    doc: Mapping[str, Any],
    *,
    issuer: str | None,
    audiences: Collection[str],
    now: float,
    leeway: int,
) -> dict[str, Any]:
    """The claims of an active access token from an introspection answer, else InvalidTokenError."""
    if doc.get("active") is not True:
        raise InvalidTokenError(reason="introspection: token not active")
    token_type = doc.get("token_type")
    if isinstance(token_type, str) and token_type.lower() in _REFUSED_TOKEN_TYPES:
        raise InvalidTokenError(reason=f"introspection: a {token_type[:60]}, not an access token")
    exp = _number(doc.get("exp"))
    if "exp" in doc and (exp is None or exp <= now - leeway):
        raise InvalidTokenError(reason="introspection: exp passed")
    nbf = _number(doc.get("nbf"))
    if "nbf" in doc and (nbf is None or nbf > now + leeway):
        raise InvalidTokenError(reason="introspection: nbf in the future")
    if issuer is not None and "iss" in doc and doc["iss"] != issuer:
        raise InvalidTokenError(reason="introspection: iss is not the provider")
    if "aud" in doc and audiences:
        aud = doc["aud"]
        held = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        if not any(isinstance(item, str) and item in audiences for item in held):
            raise InvalidTokenError(reason="introspection: aud has no accepted audience")
    claims = {name: value for name, value in doc.items() if name != "active"}
    if "sub" not in claims and isinstance(claims.get("username"), str):
        claims["sub"] = claims["username"]
    return claims


def token_digest(token: str) -> bytes:
    """The cache key for a token: its SHA-256, so the token itself is never kept."""
    return hashlib.sha256(token.encode("utf-8")).digest()


@dataclass(frozen=True)
class _Answer:
    claims: dict[str, Any] | None  # None: not an active access token
    reason: str
    until: float


class Introspector:
    """Introspects opaque tokens through `ask` (the provider call) with a short, bounded cache."""

    def __init__(
        self,
        ask: Callable[[str], Awaitable[Mapping[str, Any]]],
        *,
        issuer: Callable[[], str | None],
        audiences: Collection[str],
        cache_seconds: float,
        cache_max_entries: int,
        leeway: int,
        clock: Callable[[], float],
    ) -> None:
        self._ask = ask
        self._issuer = issuer
        self._audiences = frozenset(audiences)
        self._cache_seconds = cache_seconds
        self._max_entries = cache_max_entries
        self._leeway = leeway
        self._clock = clock
        self._cache: OrderedDict[bytes, _Answer] = OrderedDict()
        self._pending: dict[bytes, asyncio.Future[_Answer]] = {}

    async def claims(self, token: str) -> dict[str, Any]:
        """The active token's claims (see `check_introspection`), else InvalidTokenError."""
        key = token_digest(token)
        now = self._clock()
        answer = self._cache.get(key)
        if answer is not None and answer.until > now:
            self._cache.move_to_end(key)  # least recently used goes first
        else:
            pending = self._pending.get(key)
            if pending is not None:
                answer = await asyncio.shield(pending)
            else:
                answer = await self._fetch(key, token)
        if answer.claims is None:
            raise InvalidTokenError(reason=answer.reason)
        return answer.claims

    async def _fetch(self, key: bytes, token: str) -> _Answer:
        future: asyncio.Future[_Answer] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            doc = await self._ask(token)
            answer = self._judge(doc)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody waited
            raise
        finally:
            del self._pending[key]
        future.set_result(answer)
        if self._cache_seconds > 0:
            self._remember(key, answer)
        return answer

    def _judge(self, doc: Mapping[str, Any]) -> _Answer:
        now = self._clock()
        until = now + self._cache_seconds
        try:
            claims = check_introspection(
                doc,
                issuer=self._issuer(),
                audiences=self._audiences,
                now=now,
                leeway=self._leeway,
            )
        except InvalidTokenError as exc:
            return _Answer(None, exc.reason, until)
        exp = _number(claims.get("exp"))
        if exp is not None:
            until = min(until, exp)
        return _Answer(claims, "", until)

    def _remember(self, key: bytes, answer: _Answer) -> None:
        cache = self._cache
        cache[key] = answer
        cache.move_to_end(key)
        while len(cache) > self._max_entries:
            cache.popitem(last=False)
