"""The doctor's checks against the identity provider, over the network.

The provider answers; its discovery document is valid and names the configured issuer exactly;
the clock agrees with the provider's HTTP `Date` within `clock_skew_seconds`; the JWKS holds a key
for an allowed ID-token algorithm; the token endpoint accepts the client's credentials (a probe
with a made-up code must fail with `invalid_grant`, not `invalid_client`); and the exact redirect
URI to register. Nothing secret is ever put in a finding.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import aiohttp

from sidecar.config.model import ProviderConfig, SidecarConfig
from sidecar.doctor.report import Finding
from sidecar.endpoints import Endpoints
from sidecar.errors import LoginError, ProviderUnavailableError
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

PROBE_CODE = "sidecar-doctor-probe"
_KEY_ALGORITHMS = {
    ("RSA", None): ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",),
    ("OKP", "Ed448"): ("EdDSA",),
}


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
