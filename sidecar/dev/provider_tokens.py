"""Claims and signatures of the tokens the development OpenID provider issues, faults included.

Pure functions (no aiohttp, time passed in): which user claims a scope releases, the claims of ID
and access tokens (also access tokens for an API, and back-channel logout tokens), signing them with
the provider's key (or, when a `Faults` knob says so, with a wrong key, `alg: none`, HS256 keyed
with the public key PEM, an unknown kid or no kid; claims left out), and reading the provider's own
tokens back (access tokens at userinfo, `id_token_hint` at end_session).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError

from sidecar.dev.faults import Faults
from sidecar.dev.keys import SigningKeys

WRONG_ISSUER = "https://wrong-issuer.invalid"
LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
OTHER_AUDIENCE = "some-other-client"
FAULT_SKEW_SECONDS = 3600

_SCOPE_CLAIMS = {
    "profile": ("name", "preferred_username", "given_name", "family_name", "picture", "locale"),
    "email": ("email", "email_verified"),
    "groups": ("groups",),
}
# Released whatever the scope: a development provider should show groups without extra setup.
_ALWAYS_CLAIMS = ("sub", "groups")


def release_user_claims(user: dict[str, Any], scopes: frozenset[str]) -> dict[str, Any]:
    """The user claims that the granted scopes release (sub and groups always)."""
    allowed = set(_ALWAYS_CLAIMS)
    for scope in scopes:
        allowed.update(_SCOPE_CLAIMS.get(scope, ()))
    return {name: value for name, value in user.items() if name in allowed}


def build_id_token_claims(
    *,
    user: dict[str, Any],
    scopes: frozenset[str],
    issuer: str,
    client_id: str,
    nonce: str | None,
    sid: str,
    auth_time: int,
    now: float,
    ttl_seconds: int,
    faults: Faults,
) -> dict[str, Any]:
    """ID token claims (OpenID Connect Core 2), with the claim faults applied."""
    issued_at = int(now)
    claims = release_user_claims(user, scopes)
    claims.update(
        iss=issuer,
        aud=client_id,
        azp=client_id,
        iat=issued_at,
        exp=issued_at + ttl_seconds,
        auth_time=auth_time,
        sid=sid,
    )
    if nonce is not None:
        claims["nonce"] = nonce
    if faults.wrong_issuer:
        claims["iss"] = WRONG_ISSUER
    if faults.wrong_audience:
        claims["aud"] = OTHER_AUDIENCE
    if faults.extra_audience:
        claims["aud"] = [client_id, OTHER_AUDIENCE]
        del claims["azp"]
    if faults.wrong_azp:
        claims["azp"] = OTHER_AUDIENCE
    if faults.wrong_nonce:
        claims["nonce"] = "not-the-nonce-you-sent"
    if faults.missing_nonce:
        claims.pop("nonce", None)
    if faults.expired:
        claims["iat"] = issued_at - 2 * FAULT_SKEW_SECONDS
        claims["exp"] = issued_at - FAULT_SKEW_SECONDS
    if faults.issued_in_future:
        claims["iat"] = issued_at + FAULT_SKEW_SECONDS
        claims["exp"] = issued_at + FAULT_SKEW_SECONDS + ttl_seconds
    for knob, claim in (
        (faults.missing_sub, "sub"),
        (faults.missing_iat, "iat"),
        (faults.missing_exp, "exp"),
        (faults.missing_audience, "aud"),
    ):
        if knob:
            claims.pop(claim, None)
    return claims


def build_access_token_claims(
    *,
    user: dict[str, Any],
    scope: str,
    issuer: str,
    client_id: str,
    sid: str,
    jti: str,
    now: float,
    ttl_seconds: int,
) -> dict[str, Any]:
    """Access token claims (JWT profile, RFC 9068 style): the resource is the userinfo endpoint."""
    issued_at = int(now)
    return {
        "iss": issuer,
        "sub": user["sub"],
        "aud": issuer,
        "client_id": client_id,
        "scope": scope,
        "sid": sid,
        "jti": jti,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }


def build_api_access_token_claims(
    *,
    user: Mapping[str, Any],
    issuer: str,
    audience: str,
    client_id: str,
    scope: str,
    jti: str,
    now: float,
    ttl_seconds: int,
) -> dict[str, Any]:
    """An access token for an API (`audience`), as a client gets one to call it: the user's
    claims (as Entra v2 access tokens carry `tid`, `oid`, `roles`...) and the protocol ones."""
    issued_at = int(now)
    claims = dict(user)
    claims.update(
        iss=issuer,
        aud=audience,
        client_id=client_id,
        scope=scope,
        jti=jti,
        iat=issued_at,
        exp=issued_at + ttl_seconds,
    )
    return claims


def build_logout_token_claims(
    *, issuer: str, client_id: str, sub: str | None, sid: str | None, jti: str, now: float
) -> dict[str, Any]:
    """A logout token's claims (OpenID Connect Back-Channel Logout 1.0, section 2.4): `sub`
    and/or `sid`, the logout event, no nonce."""
    issued_at = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "iat": issued_at,
        "exp": issued_at + 120,
        "jti": jti,
        "events": {LOGOUT_EVENT: {}},
    }
    if sub is not None:
        claims["sub"] = sub
    if sid is not None:
        claims["sid"] = sid
    return claims


def sign_token(
    claims: dict[str, Any],
    keys: SigningKeys,
    faults: Faults | None = None,
    *,
    typ: str | None = None,
) -> str:
    """A compact JWS of `claims` signed with the current key (header `typ` when given, e.g.
    `logout+jwt`), or broken as `faults` asks."""
    faults = faults or Faults()
    if faults.alg_none:
        header = {"alg": "none", "typ": "JWT", "kid": keys.current_kid}
        return _b64_json(header) + "." + _b64_json(claims) + "."
    if faults.hs256_with_public_key:
        header = {"alg": "HS256", "typ": "JWT", "kid": keys.current_kid}
        signing_input = _b64_json(header) + "." + _b64_json(claims)
        mac = hmac.new(keys.public_pem(), signing_input.encode("ascii"), hashlib.sha256)
        return signing_input + "." + _b64(mac.digest())
    if faults.unknown_kid:
        impostor = keys.impostor
        return jwt.encode({"alg": "RS256", "kid": impostor.kid}, claims, impostor)
    if faults.sign_with_wrong_key:
        return jwt.encode({"alg": "RS256", "kid": keys.current_kid}, claims, keys.impostor)
    if faults.no_kid:
        return jwt.encode({"alg": "RS256"}, claims, keys.current)
    header = {"alg": "RS256", "kid": keys.current_kid}
    if typ is not None:
        header["typ"] = typ
    return jwt.encode(header, claims, keys.current)


def read_own_token(
    token: str, keys: SigningKeys, *, issuer: str, now: float, check_expiry: bool = True
) -> dict[str, Any] | None:
    """Claims of a token this provider signed (any of its keys, RS256 only), or None."""
    try:
        decoded = jwt.decode(token, keys.all_keys(), algorithms=["RS256"])
    except (JoseError, ValueError):
        return None
    claims = dict(decoded.claims)
    if claims.get("iss") != issuer:
        return None
    exp = claims.get("exp")
    if check_expiry and (not isinstance(exp, int) or exp <= now):
        return None
    return claims


def pkce_s256(verifier: str) -> str:
    """RFC 7636 S256 code challenge of a verifier."""
    return _b64(hashlib.sha256(verifier.encode("ascii")).digest())


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64_json(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode("utf-8"))


def build_user(claims: Mapping[str, Any]) -> dict[str, Any]:
    """Full user claims from partial ones (at least sub, preferred_username or name)."""
    base = claims.get("sub") or claims.get("preferred_username") or claims.get("name")
    if not isinstance(base, str) or not base:
        raise ValueError("a dev user needs sub, preferred_username or name")
    user: dict[str, Any] = {
        "sub": base,
        "name": base,
        "preferred_username": base,
        "email": f"{base.replace(' ', '.').lower()}@example.com",
        "email_verified": True,
        "groups": [],
    }
    user.update({k: v for k, v in claims.items() if v not in ("", None)})
    return user
