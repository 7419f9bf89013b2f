"""The connection to Redis, built once from `session.redis`, and what its health looks like.

`build_redis(config)` makes the `redis.asyncio.Redis` client the Redis session store, the
cross-replica refresh lock and the revocation list share: a standalone URL (redis://, rediss://,
unix://) or a master found through Sentinel, TLS with certificate checking when asked for (a
`rediss://` URL or `tls.enabled`), short connect and command timeouts, and one quick retry so that
pooled connections broken by a Redis restart are replaced on the next command instead of failing
it. `RedisHealth` records whether the last command got through; the readiness check reads it and a
small background task pings while the app runs (`run_pings`); `close_redis` closes it all.
`REDIS_ERRORS` is the tuple of exceptions that mean "Redis is unreachable" (as opposed to a bug),
which callers turn into `SessionStoreUnavailableError`. Passwords live only in the client;
nothing here logs them.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis.asyncio as redis_asyncio
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from sidecar.config.model import RedisConfig

log = logging.getLogger("sidecar.session.redis")

RedisClient = redis_asyncio.Redis
REDIS_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)
"""Exceptions that mean Redis did not answer (refused, reset, timed out, failed over)."""

PING_INTERVAL_SECONDS = 2.0


def _connection_options(config: RedisConfig) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_timeout": config.timeout_seconds,
        "socket_connect_timeout": config.timeout_seconds,
        # One quick retry: the first command after a Redis restart meets a dead pooled connection.
        "retry": Retry(ExponentialBackoff(cap=0.1, base=0.01), 1),
        "retry_on_error": [RedisConnectionError],
        "client_name": "sidecar",
    }
    tls = config.tls
    if tls.ca_file is not None:
        options["ssl_ca_certs"] = tls.ca_file
    if tls.cert_file is not None:
        options["ssl_certfile"] = tls.cert_file
        options["ssl_keyfile"] = tls.key_file
    return options


def _tls_url(url: str, enabled: bool) -> tuple[str, bool]:
    """The URL to connect to and whether it uses TLS (`tls.enabled` upgrades redis://)."""
    parts = urlsplit(url)
    if enabled and parts.scheme == "redis":
        return urlunsplit(parts._replace(scheme="rediss")), True
    return url, parts.scheme == "rediss"


def build_redis(config: RedisConfig) -> RedisClient:
    """A Redis client for `config` (no I/O yet: connections are made on first use)."""
    options = _connection_options(config)
    if config.url is not None:
        url, tls = _tls_url(config.url.get_secret_value(), config.tls.enabled)
        if tls:
            options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        else:
            for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
                options.pop(name, None)
        if config.password is not None:
            options["password"] = config.password.get_secret_value()
        if config.username is not None:
            options["username"] = config.username
        client: RedisClient = redis_asyncio.Redis.from_url(url, **options)
        return client
    sentinel_config = config.sentinel
    assert sentinel_config is not None  # RedisConfig guarantees url or sentinel
    nodes = []
    for node in sentinel_config.nodes:
        host, _, port = node.rpartition(":")
        nodes.append((host.strip("[]"), int(port)))
    sentinel_options: dict[str, Any] = {
        "socket_timeout": config.timeout_seconds,
        "socket_connect_timeout": config.timeout_seconds,
    }
    if sentinel_config.password is not None:
        sentinel_options["password"] = sentinel_config.password.get_secret_value()
    if config.tls.enabled:
        options["ssl"] = True
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    else:
        for name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile"):
            options.pop(name, None)
    sentinel = Sentinel(nodes, sentinel_kwargs=sentinel_options, **options)  # type: ignore[no-untyped-call]
    password = config.password.get_secret_value() if config.password is not None else None
    master: RedisClient = sentinel.master_for(
        sentinel_config.master, username=config.username, password=password, db=config.db
    )
    return master


async def close_redis(client: RedisClient) -> None:
    """Close `client` and, in Sentinel mode, its connections to the sentinels too."""
    await client.aclose()
    manager = getattr(client.connection_pool, "sentinel_manager", None)
    for sentinel_client in getattr(manager, "sentinels", ()):
        await sentinel_client.aclose()


def describe_target(config: RedisConfig) -> str:
    """Where Redis is, for logs and readiness: host:port or the Sentinel master, no password."""
    if config.url is not None:
        parts = urlsplit(config.url.get_secret_value())
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        host = parts.hostname or "localhost"
        return f"{parts.scheme}://{host}:{parts.port or 6379}"
    assert config.sentinel is not None
    return f"sentinel master {config.sentinel.master}"


@dataclass
class RedisHealth:
    """Whether Redis answered the last command; what readiness reports."""

    target: str
    ok: bool = True
    detail: str = "not contacted yet"
    failures: int = field(default=0)

    def succeeded(self) -> None:
        if not self.ok:
            log.warning("redis at %s is reachable again", self.target)
        self.ok = True
        self.detail = "reachable"

    def failed(self, exc: BaseException) -> None:
        if self.ok:
            log.warning("redis at %s is unreachable: %s", self.target, type(exc).__name__)
        self.ok = False
        self.failures += 1
        self.detail = f"unreachable ({type(exc).__name__})"


async def ping(client: RedisClient, health: RedisHealth) -> bool:
    """One PING, recorded in `health`; True when Redis answered."""
    try:
        await client.ping()
    except REDIS_ERRORS as exc:
        health.failed(exc)
        return False
    health.succeeded()
    return True


async def run_pings(
    client: RedisClient, health: RedisHealth, *, interval: float = PING_INTERVAL_SECONDS
) -> None:
    """Ping forever (until cancelled), so readiness notices an outage without traffic."""
    while True:
        await ping(client, health)
        await asyncio.sleep(interval)
