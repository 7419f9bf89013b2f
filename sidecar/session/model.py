"""What a session is: the user's identity and their tokens, as plain frozen values.

`Session` is what the cookie (or, later, Redis) store keeps. It is built once from a cookie by the
store and trusted from then on; nothing downstream re-reads raw cookie data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class Identity:
    """Who the user is, from the ID token and userinfo claims (or a bearer token's claims)."""

    sub: str
    user: str
    email: str | None = None
    email_verified: bool | None = None
    username: str | None = None
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sub": self.sub,
            "user": self.user,
            "email": self.email,
            "email_verified": self.email_verified,
            "username": self.username,
            "groups": list(self.groups),
            "claims": dict(self.claims),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Identity:
        return cls(
            sub=str(data["sub"]),
            user=str(data["user"]),
            email=data.get("email"),
            email_verified=data.get("email_verified"),
            username=data.get("username"),
            groups=tuple(str(g) for g in data.get("groups") or ()),
            claims=dict(data.get("claims") or {}),
        )


@dataclass(frozen=True)
class Tokens:
    """The provider's tokens; `expires_at` is the access token's expiry (epoch seconds) if known."""

    access_token: str | None = None
    refresh_token: str | None = None
    id_token: str | None = None
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "refresh_token": self.refresh_token,
            "id_token": self.id_token,
            "expires_at": self.expires_at,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Tokens:
        return cls(
            access_token=data.get("access_token"),
            refresh_token=data.get("refresh_token"),
            id_token=data.get("id_token"),
            expires_at=data.get("expires_at"),
        )


@dataclass(frozen=True)
class Session:
    """A signed-in browser session.

    `id` is sidecar's own random session id; `provider_sid` is the provider's `sid` claim (for
    back-channel logout). Times are epoch seconds: `created_at` the sign-in, `expires_at` the
    absolute end, `last_seen_at` the last use (for the idle timeout).
    """

    id: str
    identity: Identity
    tokens: Tokens
    created_at: float
    expires_at: float
    last_seen_at: float
    provider_sid: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "identity": self.identity.to_dict(),
            "tokens": self.tokens.to_dict(),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "last_seen_at": self.last_seen_at,
            "provider_sid": self.provider_sid,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Session:
        return cls(
            id=str(data["id"]),
            identity=Identity.from_dict(data["identity"]),
            tokens=Tokens.from_dict(data["tokens"]),
            created_at=float(data["created_at"]),
            expires_at=float(data["expires_at"]),
            last_seen_at=float(data["last_seen_at"]),
            provider_sid=data.get("provider_sid"),
        )

    def with_tokens(self, tokens: Tokens) -> Session:
        return replace(self, tokens=tokens)
