"""In-memory state of the development OpenID provider: browser sessions, codes, refresh tokens.

`GrantStore` remembers who signed in at the provider (keyed by the `_devprovider_session` cookie
value, which is also the `sid` claim), the one-time authorization codes with their PKCE challenge,
and refresh tokens (one-time when rotation is on). Ending a provider session revokes its refresh
tokens. Time is passed in; randomness is injectable. Pure: no aiohttp.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

CODE_TTL_SECONDS = 60


@dataclass(frozen=True)
class BrowserSession:
    """A user signed in at the provider (one browser)."""

    sid: str
    user: dict[str, Any]
    auth_time: int


@dataclass(frozen=True)
class Grant:
    """What a code or refresh token stands for."""

    client_id: str
    session: BrowserSession
    scopes: frozenset[str]
    nonce: str | None
    params: Mapping[str, str] = field(default_factory=dict)  # the authorization request's


@dataclass(frozen=True)
class PendingCode:
    grant: Grant
    redirect_uri: str
    code_challenge: str | None
    expires_at: float


class GrantStore:
    """Provider sessions, authorization codes and refresh tokens, all in memory."""

    def __init__(self, token_urlsafe: Callable[[int], str] = secrets.token_urlsafe) -> None:
        self._token = token_urlsafe
        self._sessions: dict[str, BrowserSession] = {}
        self._codes: dict[str, PendingCode] = {}
        self._refresh: dict[str, Grant] = {}

    def new_id(self) -> str:
        return self._token(16)

    def start_session(self, user: dict[str, Any], *, now: float) -> BrowserSession:
        session = BrowserSession(sid=self._token(24), user=dict(user), auth_time=int(now))
        self._sessions[session.sid] = session
        return session

    def session(self, sid: str | None) -> BrowserSession | None:
        return self._sessions.get(sid) if sid else None

    def end_session(self, sid: str) -> bool:
        """Forget a provider session and revoke its refresh tokens. True if it existed."""
        existed = self._sessions.pop(sid, None) is not None
        for token, grant in list(self._refresh.items()):
            if grant.session.sid == sid:
                del self._refresh[token]
        return existed

    def issue_code(
        self, grant: Grant, *, redirect_uri: str, code_challenge: str | None, now: float
    ) -> str:
        code = self._token(32)
        self._codes[code] = PendingCode(
            grant=grant,
            redirect_uri=redirect_uri,
            code_challenge=code_challenge,
            expires_at=now + CODE_TTL_SECONDS,
        )
        return code

    def take_code(self, code: str, *, now: float) -> PendingCode | None:
        """The pending code (removed: codes are one-time), or None when unknown or expired."""
        pending = self._codes.pop(code, None)
        if pending is None or pending.expires_at <= now:
            return None
        return pending

    def issue_refresh_token(self, grant: Grant) -> str:
        token = self._token(32)
        self._refresh[token] = grant
        return token

    def take_refresh_token(self, token: str, *, rotate: bool) -> Grant | None:
        """The grant behind a refresh token (consumed when rotating), or None when unknown."""
        if rotate:
            return self._refresh.pop(token, None)
        return self._refresh.get(token)

    def refresh_grant(self, token: str) -> Grant | None:
        """Look at a refresh token without consuming it (introspection)."""
        return self._refresh.get(token)
