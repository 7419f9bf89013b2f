"""`sidecar doctor`: check what users get wrong before sign-in fails, and say how to fix it.

`diagnose(path)` runs the checks in order and returns `Finding`s (ok, warn, fail, skip), each
with a detail and, when not ok, a fix: the config file is valid; then the provider checks
(`sidecar.doctor.provider`: reachable, discovery and issuer, clock, JWKS, client credentials, the
redirect URI to register); the session estimates (`sidecar.doctor.sessions`: secret strength,
cookie size); and the reachability probes (`sidecar.doctor.reachability`: Redis, every upstream).
`doctor_main` prints them with `sidecar.doctor.report.render_report` as ✓/!/✗ lines; the exit
code is 1 when anything failed. Nothing secret is ever printed: no client secret, session secret
or token.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp

from sidecar.config.load import load_config
from sidecar.doctor.provider import check_provider, check_redirect_uri
from sidecar.doctor.reachability import check_redis, check_upstream
from sidecar.doctor.report import Finding, exit_code, render_report
from sidecar.doctor.sessions import check_cookie_size, check_secrets
from sidecar.errors import ConfigError

__all__ = ["diagnose", "doctor_main"]


async def diagnose(
    path: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> list[Finding]:
    """Every check for the config file at `path` (see the module docstring)."""
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        return [
            Finding(
                "fail",
                "configuration is valid",
                f"{len(exc.problems)} problem(s):\n      " + "\n      ".join(exc.problems),
                f"correct the file; `sidecar check-config -c {path}` lists the same problems",
            )
        ]
    findings = [Finding("ok", "configuration is valid")]
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
        if config.provider is None:
            findings.append(
                Finding("skip", "identity provider", "none configured: a plain transparent proxy")
            )
        else:
            findings += await check_provider(config, config.provider, http, clock)
            findings.append(check_redirect_uri(config))
        if config.session is not None:
            findings += check_secrets(config)
            findings.append(check_cookie_size(config, clock))
            if config.session.redis is not None:
                findings.append(await check_redis(config.session.redis))
        for upstream in config.upstreams:
            findings.append(
                await check_upstream(
                    upstream.path, upstream.url, upstream.connect_timeout_seconds, http
                )
            )
    return findings


def doctor_main(path: str) -> int:
    """`sidecar doctor -c FILE`: print the report, return the exit code."""
    logger = logging.getLogger("sidecar")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # the report says it all
    try:
        findings = asyncio.run(diagnose(path))
    finally:
        logger.setLevel(level)  # as it was, for whatever runs next in this process
    print(render_report(findings, source=path))
    return exit_code(findings)
