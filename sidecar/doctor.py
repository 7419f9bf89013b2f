"""`sidecar doctor`: check what users get wrong before sign-in fails, and say how to fix it.

`diagnose(path)` runs the checks in order and returns `Finding`s (ok, warn, fail, skip), each
with a detail and, when not ok, a fix: the config file is valid; the provider answers; its
discovery document is valid and names the configured issuer exactly; the JWKS holds a key for an
allowed ID-token algorithm; the token endpoint accepts the client's credentials (a probe with a
made-up code must fail with `invalid_grant`, not `invalid_client`); the exact redirect URI to
register; the clock agrees with the provider's HTTP `Date` within `clock_skew_seconds`; each
session secret is a `sidecar secret` key or a long random passphrase; a typical session with the
configured `keep_tokens` fits in few cookies; Redis (when configured) answers a PING; every
upstream accepts a TCP connection and answers a HEAD. `render_report` prints them as ✓/!/✗
lines; the exit code is 1 when anything failed.
Nothing secret is ever printed: no client secret, session secret or token.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp

from sidecar.config.load import load_config
from sidecar.config.model import ProviderConfig, RedisConfig, SidecarConfig
from sidecar.endpoints import Endpoints
from sidecar.errors import ConfigError, LoginError, ProviderUnavailableError
from sidecar.oidc.client import ProviderClient
from sidecar.oidc.discovery import (
    WELL_KNOWN_PATH,
    ProviderDirectory,
    ProviderMetadata,
    ProviderResponseError,
    build_metadata,
    describe_http_failure,
    parse_jwks,
    read_json,
)
from sidecar.oidc.tokens import build_identity
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy, build_set_cookies
from sidecar.session.model import Session, Tokens
from sidecar.session.redis_client import (
    RedisHealth,
    build_redis,
    close_redis,
    describe_target,
    ping,
)

Status = Literal["ok", "warn", "fail", "skip"]
SYMBOLS: dict[Status, str] = {"ok": "✓", "warn": "!", "fail": "✗", "skip": "-"}

# A typical session for the cookie estimate: token sizes seen from Keycloak, Entra ID and Okta
# (JWT access tokens with roles, a JWT refresh token), as incompressible random text.
TYPICAL_TOKEN_CHARS = {"access_token": 1400, "id_token": 1100, "refresh_token": 900}
TYPICAL_CLAIMS: dict[str, Any] = {
    "sub": "5f1c2b7e-8a3d-4f6e-9b0a-1c2d3e4f5a6b",
    "email": "firstname.lastname@example.com",
    "email_verified": True,
    "name": "Firstname Lastname",
    "preferred_username": "firstname.lastname",
    "groups": ["engineering", "platform-team", "oncall", "vpn-users", "confluence-users"],
}
PROXY_HEADER_LIMIT_BYTES = 8192  # nginx's and many load balancers' default per header line
PROBE_CODE = "sidecar-doctor-probe"
_KEY_ALGORITHMS = {
    ("RSA", None): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",),
    ("OKP", "Ed448"): ("EdDSA",),
}


@dataclass(frozen=True)
class Finding:
    """One line of the report."""

    status: Status
    title: str
    detail: str = ""
    fix: str = ""


def render_report(findings: Sequence[Finding], *, source: str) -> str:
    """The report as text: a line per finding, its fix indented below, a summary at the end."""
    lines = [f"sidecar doctor: {source}", ""]
    for finding in findings:
        line = f"{SYMBOLS[finding.status]} {finding.title}"
        if finding.detail:
            line += f": {finding.detail}"
        lines.append(line)
        if finding.fix and finding.status in ("warn", "fail"):
            lines.append(f"    fix: {finding.fix}")
    failed = sum(f.status == "fail" for f in findings)
    warned = sum(f.status == "warn" for f in findings)
    lines.append("")
    if failed:
        lines.append(
            f"{failed} problem{'s' * (failed != 1)}, {warned} warning{'s' * (warned != 1)}"
        )
    else:
        lines.append(f"all checks passed, {warned} warning{'s' * (warned != 1)}")
    return "\n".join(lines)


def exit_code(findings: Sequence[Finding]) -> int:
    return 1 if any(f.status == "fail" for f in findings) else 0


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


# -- the provider --------------------------------------------------------------------------------


async def check_provider(
    config: SidecarConfig,
    provider: ProviderConfig,
    http: aiohttp.ClientSession,
    clock: Callable[[], float],
) -> list[Finding]:
    findings: list[Finding] = []
    timeout = aiohttp.ClientTimeout(total=provider.http_timeout_seconds)
    doc: Mapping[str, Any] | None = None
    if provider.discovery:
        assert provider.issuer is not None  # the config model requires it
        url = provider.issuer.rstrip("/") + WELL_KNOWN_PATH
        started = time.monotonic()
        try:
            async with http.get(url, timeout=timeout, headers={"Accept": "application/json"}) as r:
                status, date = r.status, r.headers.get("Date")
                body = await read_json(r) if status == 200 else None
        except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
            if isinstance(exc, ProviderResponseError):
                findings.append(Finding("ok", "provider reachable", url))
                findings.append(_bad_discovery(str(exc), url))
                return findings
            findings.append(
                Finding(
                    "fail",
                    "provider reachable",
                    f"{url}: {describe_http_failure(exc, provider.http_timeout_seconds)}",
                    "check provider.issuer for typos, DNS, and that this host may reach the "
                    "provider (egress rules, an HTTP proxy in between)",
                )
            )
            return findings
        elapsed = (time.monotonic() - started) * 1000
        findings.append(Finding("ok", "provider reachable", f"{url} answered in {elapsed:.0f} ms"))
        findings.append(check_clock(date, clock(), provider.clock_skew_seconds))
        if status != 200:
            findings.append(_bad_discovery(f"HTTP {status} from {url}", url))
            return findings
        if not isinstance(body, dict):
            findings.append(_bad_discovery("the discovery document is not a JSON object", url))
            return findings
        doc = body
        found = doc.get("issuer")
        if found != provider.issuer:
            findings.append(
                Finding(
                    "fail",
                    "issuer matches",
                    f"the provider says issuer {json.dumps(found)}, provider.issuer is "
                    f"{json.dumps(provider.issuer)}",
                    f"set provider.issuer to exactly {json.dumps(found)} (a trailing slash counts)",
                )
            )
            return findings
        findings.append(Finding("ok", "issuer matches", str(found)))
    try:
        metadata = build_metadata(provider, doc)
    except ProviderResponseError as exc:
        findings.append(_bad_discovery(str(exc), "the explicit endpoints"))
        return findings
    findings.append(
        Finding(
            "ok",
            "discovery valid" if doc is not None else "explicit endpoints",
            _endpoints(metadata),
        )
    )
    if doc is not None:
        methods = doc.get("code_challenge_methods_supported")
        if isinstance(methods, list) and "S256" not in methods:
            findings.append(
                Finding(
                    "warn",
                    "PKCE",
                    "the provider does not list S256 in code_challenge_methods_supported",
                    "sidecar always sends PKCE S256; enable PKCE for this client at the provider",
                )
            )
    if provider.is_oidc:
        jwks = await check_jwks(provider, metadata, doc, http, timeout)
        findings.append(jwks)
        if jwks.status == "fail":
            return findings
    findings.append(await check_client(config, provider, http, clock))
    return findings


def _bad_discovery(detail: str, where: str) -> Finding:
    return Finding(
        "fail",
        "discovery valid",
        detail,
        f"provider.issuer must be the issuer itself, the part before {WELL_KNOWN_PATH} (Keycloak: "
        "https://HOST/realms/REALM; Entra ID: https://login.microsoftonline.com/TENANT/v2.0); "
        f"check {where}",
    )


def _endpoints(metadata: ProviderMetadata) -> str:
    present = [
        name
        for name in ("authorization", "token", "userinfo", "end_session")
        if getattr(metadata, f"{name}_endpoint")
    ]
    return "endpoints: " + ", ".join(present) + (", jwks_uri" if metadata.jwks_uri else "")


def check_clock(date_header: str | None, now: float, allowed_seconds: int) -> Finding:
    """This host's clock against the provider's `Date` header (1 s resolution)."""
    if not date_header:
        return Finding("skip", "clock skew", "the provider sent no Date header")
    try:
        theirs = parsedate_to_datetime(date_header).timestamp()
    except (TypeError, ValueError):
        return Finding("skip", "clock skew", "the provider's Date header is not a date")
    skew = now - theirs
    side = "ahead of" if skew > 0 else "behind"
    detail = f"this host is {abs(skew):.0f} s {side} the provider"
    if abs(skew) > allowed_seconds:
        return Finding(
            "fail",
            "clock skew",
            f"{detail}; provider.clock_skew_seconds allows {allowed_seconds} s, so ID tokens "
            "will look expired or not yet valid",
            "synchronise this host's clock (NTP, chrony, the node's time service)",
        )
    return Finding("ok", "clock skew", f"{detail} (allowed: {allowed_seconds} s)")


async def check_jwks(
    provider: ProviderConfig,
    metadata: ProviderMetadata,
    doc: Mapping[str, Any] | None,
    http: aiohttp.ClientSession,
    client_timeout: aiohttp.ClientTimeout,
) -> Finding:
    """At least one published signing key usable with an allowed ID-token algorithm."""
    allowed = provider.id_token_algorithms
    fix_algorithms = (
        "add the provider's signing algorithm to provider.id_token_algorithms, or make the "
        "provider sign ID tokens with one of them (never HS256 or none)"
    )
    if metadata.jwks_uri is None:
        return Finding(
            "fail", "JWKS usable", "no jwks_uri", "set provider.jwks_uri (or use discovery)"
        )
    try:
        async with http.get(metadata.jwks_uri, timeout=client_timeout) as response:
            if response.status != 200:
                raise ProviderResponseError(f"HTTP {response.status} from {metadata.jwks_uri}")
            keys = parse_jwks(await read_json(response))
    except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
        return Finding(
            "fail",
            "JWKS usable",
            describe_http_failure(exc, provider.http_timeout_seconds),
            "the provider's jwks_uri must serve its public signing keys to this host",
        )
    usable = []
    for key in keys.keys:
        crv = key.get("crv") if key.key_type in ("EC", "OKP") else None
        crv = crv if isinstance(crv, str) else None
        algorithms = _KEY_ALGORITHMS.get((key.key_type, crv), ())
        if key.alg is not None:
            algorithms = (key.alg,) if key.alg in algorithms else ()
        if set(algorithms) & set(allowed):
            usable.append(key.kid or "(no kid)")
    advertised = doc.get("id_token_signing_alg_values_supported") if doc is not None else None
    if isinstance(advertised, list) and not set(advertised) & set(allowed):
        return Finding(
            "fail",
            "JWKS usable",
            f"the provider signs ID tokens with {', '.join(map(str, advertised))}; "
            f"allowed: {', '.join(allowed)}",
            fix_algorithms,
        )
    if not usable:
        return Finding(
            "fail",
            "JWKS usable",
            f"{len(keys.keys)} key(s), none for the allowed algorithms ({', '.join(allowed)})",
            fix_algorithms,
        )
    return Finding("ok", "JWKS usable", f"{len(usable)} usable signing key(s): {', '.join(usable)}")


async def check_client(
    config: SidecarConfig,
    provider: ProviderConfig,
    http: aiohttp.ClientSession,
    clock: Callable[[], float],
) -> Finding:
    """Redeem a made-up code: `invalid_grant` means the client's credentials were accepted."""
    title = "client credentials accepted"
    directory = ProviderDirectory(provider, http, clock=clock)
    await directory.start()
    try:
        try:
            async with asyncio.timeout(provider.http_timeout_seconds * 2):
                await directory.wait_ready()
        except TimeoutError:
            return Finding("skip", title, "the provider did not finish loading")
        client = ProviderClient(provider, directory, http, clock=clock)
        verifier = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
        try:
            await client.exchange_code(PROBE_CODE, verifier, redirect_uri(config))
        except LoginError as exc:
            if "invalid_client" in exc.reason or "unauthorized_client" in exc.reason:
                method = provider.token_endpoint_auth_method
                return Finding(
                    "fail",
                    title,
                    f"the token endpoint refused client {provider.client_id!r} ({method})",
                    "check provider.client_id and the client secret (or private key), and that "
                    "token_endpoint_auth_method is the method registered for this client",
                )
            return Finding("ok", title, "a probe code was refused for the code, not the client")
        except ProviderUnavailableError as exc:
            return Finding(
                "fail",
                title,
                f"token endpoint: {exc.reason}",
                "the token endpoint must be reachable from this host",
            )
        return Finding("warn", title, "the provider accepted a made-up authorization code")
    finally:
        await directory.close()


def redirect_uri(config: SidecarConfig) -> str:
    """The callback URL as browsers will reach it (public_url, else the listen address)."""
    callback = Endpoints(config.auth.prefix).callback
    if config.server.public_url:
        return config.server.public_url + callback
    host, port = config.server.host, config.server.port
    shown = "localhost" if host in ("0.0.0.0", "::", "127.0.0.1") else host  # noqa: S104
    return f"http://{shown}:{port}{callback}"


def check_redirect_uri(config: SidecarConfig) -> Finding:
    uri = redirect_uri(config)
    if config.server.public_url:
        return Finding("ok", "redirect URI to register at the provider", uri)
    return Finding(
        "warn",
        "redirect URI to register at the provider",
        f"server.public_url is not set, so it follows each request's Host header, e.g. {uri}",
        "set server.public_url to the URL browsers use (https://app.example.com) and register "
        f"<public_url>{Endpoints(config.auth.prefix).callback} exactly",
    )


# -- sessions ------------------------------------------------------------------------------------


def _is_generated_key(secret: str) -> bool:
    if len(secret.rstrip("=")) != 43:
        return False
    try:
        raw = base64.urlsafe_b64decode(secret.rstrip("=") + "=")
    except ValueError:
        return False
    return len(raw) == 32


def passphrase_bits(secret: str) -> float:
    """A generous upper bound of a passphrase's entropy: length times log2 of its alphabet."""
    alphabet = 0
    if any(c.islower() for c in secret):
        alphabet += 26
    if any(c.isupper() for c in secret):
        alphabet += 26
    if any(c.isdigit() for c in secret):
        alphabet += 10
    if any(not c.isalnum() for c in secret):
        alphabet += 32
    return len(secret) * math.log2(max(alphabet, 2))


def check_secrets(config: SidecarConfig) -> list[Finding]:
    assert config.session is not None
    findings = []
    values = [secret.get_secret_value() for secret in config.session.secrets]
    for index, value in enumerate(values):
        name = f"session.secrets[{index}]"
        if _is_generated_key(value):
            findings.append(
                Finding("ok", f"{name} strength", "a 256-bit key from `sidecar secret`")
            )
            continue
        bits = passphrase_bits(value)
        distinct = len(set(value))
        if len(value) >= 64 and bits >= 256 and distinct >= 16:
            findings.append(
                Finding("ok", f"{name} strength", f"a passphrase of {len(value)} characters")
            )
            continue
        findings.append(
            Finding(
                "warn",
                f"{name} strength",
                f"a passphrase of {len(value)} characters ({distinct} distinct): it is only "
                "hashed (HKDF), never stretched, so a guessable one lets anyone forge sessions",
                "replace it with the output of `sidecar secret` (put the new one first and keep "
                "this one second until old sessions have expired)",
            )
        )
    if len(set(values)) != len(values):
        findings.append(
            Finding(
                "warn",
                "session secrets",
                "the same secret is listed twice",
                "list each secret once",
            )
        )
    return findings


def typical_session(config: SidecarConfig, now: float) -> Session:
    """A session like a real sign-in makes: typical claims and token sizes (module constants)."""
    assert config.provider is not None and config.session is not None
    keep = config.session.keep_tokens

    def token(name: str, kept: bool) -> str | None:
        if not kept:
            return None
        chars = TYPICAL_TOKEN_CHARS[name]
        return base64.urlsafe_b64encode(os.urandom(chars * 3 // 4)).decode()[:chars]

    return Session(
        id=base64.urlsafe_b64encode(os.urandom(18)).decode(),
        identity=build_identity(TYPICAL_CLAIMS, config.provider.claims),
        tokens=Tokens(
            access_token=token("access_token", keep.access_token),
            refresh_token=token("refresh_token", keep.refresh_token),
            id_token=token("id_token", keep.id_token),
            expires_at=now + 300,
        ),
        created_at=now,
        expires_at=now + config.session.lifetime_seconds,
        last_seen_at=now,
    )


def check_cookie_size(config: SidecarConfig, clock: Callable[[], float]) -> Finding:
    """How many cookies, and how big a Cookie header, a typical session needs."""
    session_config = config.session
    assert session_config is not None
    title = "session cookie size"
    if getattr(session_config, "store", "cookie") != "cookie" or config.provider is None:
        return Finding("skip", title, "sessions are not kept in cookies")
    now = clock()
    session = typical_session(config, now)
    payload = json.dumps(session.to_dict(), separators=(",", ":"), ensure_ascii=False)
    codec = SessionCodec([s.get_secret_value() for s in session_config.secrets])
    value = codec.encode(payload.encode("utf-8"), purpose="session", now=now)
    policy = CookiePolicy.from_config(config)
    kept = ", ".join(name for name, on in session_config.keep_tokens if on) or "no tokens"
    fix = (
        "keep fewer tokens (session.keep_tokens: id_token: false, refresh_token: false when no "
        "refresh is needed), ask the provider for fewer claims or groups in the tokens, or keep "
        "sessions server-side"
    )
    try:
        cookies = build_set_cookies(policy, policy.name, value, ())
    except ValueError:
        return Finding("fail", title, f"a typical session ({kept}) needs too many cookies", fix)
    pairs = [header.split(";", 1)[0] for header in cookies]
    header_bytes = len("; ".join(pairs))
    detail = (
        f"a typical session ({kept}) takes {len(cookies)} cookie(s), a Cookie header of about "
        f"{header_bytes} bytes"
    )
    if header_bytes > config.server.max_header_bytes:
        return Finding(
            "fail",
            title,
            f"{detail}, over server.max_header_bytes ({config.server.max_header_bytes})",
            fix,
        )
    if header_bytes > PROXY_HEADER_LIMIT_BYTES:
        return Finding(
            "warn",
            title,
            f"{detail}: a proxy in front with an 8 KB header limit (nginx's default) refuses it",
            fix,
        )
    if len(cookies) > 2:
        return Finding("warn", title, detail, fix)
    return Finding("ok", title, detail)


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


# -- upstreams -----------------------------------------------------------------------------------


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


def doctor_main(path: str) -> int:
    """`sidecar doctor -c FILE`: print the report, return the exit code."""
    logging.getLogger("sidecar").setLevel(logging.CRITICAL)  # the report says it all
    findings = asyncio.run(diagnose(path))
    print(render_report(findings, source=path))
    return exit_code(findings)
