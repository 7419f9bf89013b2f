"""Configuration of sessions (`session`): cookies, lifetimes, and the Redis store."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sidecar.config.model.base import Model


class RedisSentinelConfig(Model):
    """Redis Sentinel: the sentinels to ask and the name of the master they watch."""

    master: str = Field(description="Name of the monitored master (sentinel.conf `monitor`).")
    nodes: tuple[str, ...] = Field(
        description="Sentinel addresses as host:port, e.g. [sentinel-0:26379, sentinel-1:26379]."
    )
    password: SecretStr | None = Field(
        None, description="Password of the sentinels themselves (or password_file), if they ask."
    )

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one sentinel as host:port")
        for node in value:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{node!r} is not host:port")
        return value


class RedisTlsConfig(Model):
    """TLS to Redis. A rediss:// URL turns it on too; the server certificate is always checked."""

    enabled: bool = Field(False, description="Use TLS (implied by a rediss:// URL).")
    ca_file: str | None = Field(
        None, description="PEM file of the CA(s) that sign the Redis server certificate."
    )
    cert_file: str | None = Field(
        None, description="PEM client certificate, for Redis servers that require one."
    )
    key_file: str | None = Field(None, description="PEM private key of the client certificate.")

    @model_validator(mode="after")
    def _pair(self) -> RedisTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together")
        return self


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisConfig(Model):
    """Where the Redis session store (and the back-channel logout revocation list) lives."""

    url: SecretStr | None = Field(
        None,
        description=(
            "Standalone Redis: redis://[user:password@]host:port/db, rediss://... for TLS, or "
            "unix:///path/to/redis.sock. Holds the password, so it is a secret (or url_file)."
        ),
    )
    sentinel: RedisSentinelConfig | None = Field(
        None, description="Find the master through Redis Sentinel instead of a fixed url."
    )
    username: str | None = Field(
        None, description="ACL user name (or in the url: redis://user:password@host...)."
    )
    password: SecretStr | None = Field(
        None,
        description=(
            "Password of Redis (of the master, with Sentinel), or password_file: keeps it out of "
            "the url. Give it here or in the url, not both."
        ),
    )
    db: int = Field(0, ge=0, description="Database number in Sentinel mode (the url carries it).")
    tls: RedisTlsConfig = Field(default_factory=RedisTlsConfig, description="TLS to Redis.")
    key_prefix: str = Field(
        "sidecar:",
        description=(
            "Prefix of every key sidecar writes, so several deployments can share one Redis. "
            "Replicas of one deployment must use the same prefix (and the same session secrets)."
        ),
    )
    timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description=(
            "Connect and command timeout. When Redis does not answer within it, protected routes "
            "answer 503 (session store unavailable) and readiness fails; public routes still work."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in _REDIS_SCHEMES:
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:{}-]{1,64}", value):
            raise ValueError("1 to 64 of letters, digits and _ . : { } -")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RedisConfig:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError("give url (standalone Redis) or sentinel, exactly one")
        if self.url is not None:
            parts = urlsplit(self.url.get_secret_value())
            if self.password is not None and parts.password:
                raise ValueError("the url already holds a password: give it once")
            if self.username is not None and parts.username:
                raise ValueError("the url already holds a user name: give it once")
        return self


class KeepTokensConfig(Model):
    """Which tokens the session keeps. Dropping what the backend never needs keeps cookies small."""

    access_token: bool = Field(
        True, description="Keep the access token (needed to pass it upstream)."
    )
    refresh_token: bool = Field(True, description="Keep the refresh token (needed to refresh).")
    id_token: bool = Field(
        True, description="Keep the ID token (needed for id_token_hint at sign-out)."
    )


class SessionConfig(Model):
    """The browser session: encrypted, authenticated cookies."""

    secrets: tuple[SecretStr, ...] = Field(
        description=(
            "Cookie encryption keys (from `sidecar secret`). The first encrypts, all decrypt: put "
            "a new key first to rotate. `secret: KEY` is the one-key shorthand; secrets_file / "
            "secret_file read them from a file (one per line)."
        ),
    )
    cookie_name: str = Field(
        "_sidecar",
        description="Base cookie name; __Host- is prefixed whenever Secure and no Domain allow it.",
    )
    cookie_domain: str | None = Field(
        None, description="Cookie Domain attribute (default: host only)."
    )
    cookie_secure: bool | None = Field(
        None, description="Secure attribute; default: on when server.public_url is https."
    )
    cookie_samesite: Literal["Lax", "Strict", "None"] = Field(
        "Lax", description="SameSite attribute."
    )
    lifetime_seconds: int = Field(43200, gt=0, description="Absolute session lifetime.")
    idle_timeout_seconds: int | None = Field(
        None, gt=0, description="End sessions unused for this long (None: no idle timeout)."
    )
    refresh_margin_seconds: int = Field(
        60, ge=0, description="Refresh the access token this long before it expires."
    )
    refresh_grace_seconds: int = Field(
        30,
        ge=0,
        description="How long a pre-refresh cookie is still served with the refreshed tokens.",
    )
    keep_tokens: KeepTokensConfig = Field(
        default_factory=KeepTokensConfig, description="Tokens kept."
    )
    max_cookie_bytes: int = Field(
        3800,
        ge=1000,
        le=4093,
        description="Largest single Set-Cookie value; larger sessions are split.",
    )
    max_login_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Concurrent sign-in attempts (tabs) remembered; oldest dropped first.",
    )
    login_timeout_seconds: int = Field(
        600,
        gt=0,
        description="How long a sign-in attempt (state, nonce, PKCE verifier) stays valid.",
    )
    store: Literal["cookie", "redis"] = Field(
        "cookie",
        description=(
            "Where sessions live. cookie: encrypted in the browser, no server state. redis: "
            "the cookie holds only an encrypted ticket (session id and a per-session key); the "
            "session, encrypted with that key, lives in Redis (`redis`), shared by every replica."
        ),
    )
    redis: RedisConfig | None = Field(
        None,
        description=(
            "The Redis server: required with store: redis. With store: cookie it is optional and "
            "holds the back-channel logout revocation list shared by all replicas (without it "
            "that list is per process: fine for one replica)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _one_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "secret" in data:
            data = dict(data)
            if "secrets" in data:
                raise ValueError("give secret or secrets, not both")
            data["secrets"] = [data.pop("secret")]
        return data

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if not value:
            raise ValueError("at least one secret is required (generate one with `sidecar secret`)")
        for secret in value:
            if len(secret.get_secret_value()) < 32:
                raise ValueError("each secret needs at least 32 characters (use `sidecar secret`)")
        return value

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_]+", value) or value.startswith("__"):
            raise ValueError("letters, digits and _ only, not starting with __")
        return value

    @model_validator(mode="after")
    def _redis_store(self) -> SessionConfig:
        if self.store == "redis" and self.redis is None:
            raise ValueError("store: redis needs the redis section (url or sentinel)")
        return self
