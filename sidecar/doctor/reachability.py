"""The doctor's reachability probes for what sidecar talks to besides the provider: Redis (when
configured) answers a PING, and each upstream accepts a TCP connection and answers a HEAD."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import aiohttp

from sidecar.config.model import RedisConfig
from sidecar.doctor.report import Finding
from sidecar.session.redis_client import (
    RedisHealth,
    build_redis,
    close_redis,
    describe_target,
    ping,
)


async def check_redis(redis_config: RedisConfig) -> Finding:
    """One PING to the configured Redis (sessions or the shared revocation list)."""
    target = describe_target(redis_config)
    client = build_redis(redis_config)
    health = RedisHealth(target)
    try:
        async with asyncio.timeout(redis_config.timeout_seconds + 1):
            answered = await ping(client, health)
    except TimeoutError:
        answered, health.detail = False, "no answer"
    finally:
        await close_redis(client)
    if answered:
        return Finding("ok", "session store reachable", f"redis at {target} answered PING")
    return Finding(
        "fail",
        "session store reachable",
        f"redis at {target}: {health.detail}",
        "check session.redis (url, password, TLS) and that this host may reach Redis; while it "
        "is down sidecar answers 503 to requests that need a session",
    )


async def check_upstream(
    path: str, url: str, connect_timeout: float, http: aiohttp.ClientSession
) -> Finding:
    """TCP connect to the upstream, then a HEAD of its base URL (any HTTP answer will do)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    title = f"upstream {path} -> {parts.scheme}://{parts.netloc.rpartition('@')[2]}"
    fix = (
        "start the backend, or correct the URL; in a Kubernetes pod the app container listens "
        "on 127.0.0.1:<its port>, and it must not be the port sidecar itself listens on"
    )
    try:
        async with asyncio.timeout(connect_timeout):
            _, writer = await asyncio.open_connection(host, port)
        writer.close()
        await writer.wait_closed()
    except TimeoutError:
        return Finding("fail", title, f"no TCP connection within {connect_timeout:g}s", fix)
    except OSError as exc:
        reason = "connection refused" if isinstance(exc, ConnectionRefusedError) else str(exc)
        return Finding("fail", title, f"{host}:{port}: {reason}", fix)
    try:
        timeout = aiohttp.ClientTimeout(total=max(connect_timeout, 5.0))
        async with http.head(url + "/", timeout=timeout, allow_redirects=False) as response:
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Finding(
            "warn",
            title,
            f"TCP connect works, but HEAD / failed ({type(exc).__name__})",
            "make sure this port speaks HTTP (not TLS-only or another protocol)",
        )
    return Finding("ok", title, f"HEAD / answered HTTP {status}")
