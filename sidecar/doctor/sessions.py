"""The doctor's session estimates, without I/O: each session secret is a `sidecar secret` key or a
long random passphrase, and a typical session with the configured `keep_tokens` fits in few
cookies. Secrets are judged, never printed."""

from __future__ import annotations

import base64
import math
import os
from collections.abc import Callable
from typing import Any

from sidecar.config.model import SidecarConfig
from sidecar.doctor.report import Finding
from sidecar.oidc.tokens import build_identity
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy, build_set_cookies
from sidecar.session.model import Session, Tokens
from sidecar.session.store import PURPOSE, encode_session_json

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
    codec = SessionCodec([s.get_secret_value() for s in session_config.secrets])
    value = codec.encode(encode_session_json(session), purpose=PURPOSE, now=now)
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
