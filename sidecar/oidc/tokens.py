"""ID token validation (OpenID Connect Core 3.1.3.7) and what sidecar reads from provider tokens.

`validate_id_token` checks, with joserfc, one token against the provider's `KeySet`: compact JWS
only, an allowed asymmetric `alg`, the key named by `kid`, the signature, then `iss`, `aud`, `azp`,
`exp`, `iat`, `nbf`, `sub` and `nonce`. Each failure raises `IdTokenError` whose `reason` names the
failed check (for operators; users see one generic message). The token-endpoint answer is parsed
once into a `TokenResponse`; `build_identity` maps claims to an `Identity`. Pure: no I/O, `now` is
a parameter.
"""

from __future__ import annotations

import base64
import hmac
import json
import math
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    InvalidKeyIdError,
    JoseError,
    MissingClaimError,
    SecurityWarning,
)
from joserfc.jwk import KeySet

from sidecar.config.model import ClaimsConfig
from sidecar.errors import IdTokenError, LoginError
from sidecar.session.model import Identity

MAX_ID_TOKEN_BYTES = 64 * 1024
ASYMMETRIC_ALGORITHMS = frozenset(
    {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
        "ES256", "ES384", "ES512", "EdDSA", "Ed25519", "Ed448",
    }
)  # fmt: skip


class UnknownKeyError(IdTokenError):
    """No key in the set matches the token's `kid` (the caller may re-fetch the JWKS once)."""


class TokenResponseError(ValueError):
    """The token endpoint's answer is not a usable token response; the text is secret-free."""


@dataclass(frozen=True)
class TokenResponse:
    """A successful token endpoint answer (RFC 6749 5.1). Tokens are hidden from repr."""

    access_token: str = field(repr=False)
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    expires_in: float | None = None
    refresh_token: str | None = field(default=None, repr=False)
    id_token: str | None = field(default=None, repr=False)
    scope: str | None = None


def _fail(reason: str) -> IdTokenError:
    return IdTokenError(reason=reason)


def _registry(algorithms: Collection[str]) -> jws.JWSRegistry:
    registry = jws.JWSRegistry(algorithms=list(algorithms), strict_check_header=False)
    registry.max_header_length = 4096  # room for x5c / x5t headers some providers add
    registry.max_payload_length = MAX_ID_TOKEN_BYTES
    return registry


def read_token_header(token: str) -> dict[str, Any]:
    """The (unverified) JOSE header of a compact JWS, or `IdTokenError` when it is not one."""
    if len(token) > MAX_ID_TOKEN_BYTES:
        raise _fail(f"size: token longer than {MAX_ID_TOKEN_BYTES} bytes")
    if token.count(".") != 2:
        raise _fail("format: not a compact JWS (encrypted or nested ID tokens are not supported)")
    try:
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError) as exc:
        raise _fail(f"format: unreadable JWS ({type(exc).__name__})") from exc
    return dict(header)


def token_kid(token: str) -> str | None:
    """The `kid` the token names (None if absent), for `ProviderDirectory.key_set(kid)`."""
    kid = read_token_header(token).get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _fail("kid: not a string")
    return kid


def _claims_failure(exc: ClaimError) -> IdTokenError:
    if isinstance(exc, MissingClaimError):
        return _fail(f"claims: missing {exc.claim}")
    if isinstance(exc, ExpiredTokenError):
        return _fail("exp: token expired")
    return _fail(f"{exc.claim}: {exc.description}")


def verify_signature(token: str, *, keys: KeySet, algorithms: Collection[str]) -> dict[str, Any]:
    """The claims of a compact JWS whose signature verifies with the key its `kid` names, using
    an allowed asymmetric `alg`; nothing about the claims is checked yet. Shared by ID token and
    bearer access token validation. Raises `IdTokenError` (`UnknownKeyError` for an unknown kid).
    """
    header = read_token_header(token)
    allowed = [alg for alg in algorithms if alg in ASYMMETRIC_ALGORITHMS]
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in allowed:
        raise _fail(f"alg: {str(alg)[:20]!r} is not an allowed signature algorithm")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise _fail("kid: not a string")
    try:
        key = keys.get_by_kid(kid, {"alg": alg, "use": "sig"})
    except InvalidKeyIdError as exc:
        raise UnknownKeyError(reason=f"kid: no provider key matches kid {kid!r} for {alg}") from exc

    try:
        with warnings.catch_warnings():
            # RFC 9864 deprecates the polymorphic "EdDSA" name; providers still use it.
            warnings.filterwarnings("ignore", "EdDSA is deprecated", SecurityWarning)
            decoded = jwt.decode(token, key, algorithms=allowed, registry=_registry(allowed))
    except BadSignatureError as exc:
        raise _fail("signature: does not verify with the provider key") from exc
    except JoseError as exc:
        raise _fail(f"jws: {exc.error or type(exc).__name__}") from exc
    if not isinstance(decoded.claims, dict):
        raise _fail("claims: not a JSON object")
    return dict(decoded.claims)


def validate_id_token(
    token: str,
    *,
    keys: KeySet,
    issuer: str,
    client_id: str,
    nonce: str | None,
    now: float,
    leeway: int,
    algorithms: Collection[str],
    expected_sub: str | None = None,
) -> dict[str, Any]:
    """Validate an ID token per OpenID Connect Core 3.1.3.7 and return its claims.

    `nonce` is the attempt's nonce; None only for ID tokens from a refresh (OIDC Core 12.2),
    where `expected_sub` (the session's `sub`) must be given instead. Raises `IdTokenError`
    (`UnknownKeyError` when no key matches the `kid`).
    """
    claims = verify_signature(token, keys=keys, algorithms=algorithms)
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=leeway,
        iss={"essential": True, "value": issuer},
        aud={"essential": True, "value": client_id},
        sub={"essential": True},
        exp={"essential": True},
        iat={"essential": True},
    )
    try:
        registry.validate(claims)
    except ClaimError as exc:
        raise _claims_failure(exc) from exc

    aud = claims["aud"]
    azp = claims.get("azp")
    if isinstance(aud, list) and len(aud) > 1 and azp is None:
        raise _fail("azp: required when aud has several audiences")
    if azp is not None and azp != client_id:
        raise _fail("azp: not this client")
    if nonce is not None:
        got = claims.get("nonce")
        if not isinstance(got, str) or not hmac.compare_digest(
            got.encode("utf-8"), nonce.encode("utf-8")
        ):
            raise _fail("nonce: does not match the sign-in attempt")
    elif expected_sub is None:
        raise _fail("nonce: no nonce to check and no expected sub given")
    if expected_sub is not None and claims["sub"] != expected_sub:
        raise _fail("sub: differs from the session's subject")
    return claims


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """A claim by name, or by dotted path into nested objects (`realm_access.roles`).

    A claim whose name itself contains dots (`https://example.com/groups`) wins over the path.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _scalar_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int):
        return str(value)
    return None


def _as_bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"  # some providers (e.g. Cognito) send strings
    return None


def _groups(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list | tuple):
        return tuple(text for item in value if (text := _scalar_text(item)) is not None)
    return ()


def build_identity(claims: Mapping[str, Any], claims_config: ClaimsConfig) -> Identity:
    """The user's identity from (ID token + userinfo) claims, by the configured claim names.

    `sub` falls back to the user claim for plain OAuth 2.0 providers without one. Raises
    `LoginError(code="identity_incomplete")` when neither identifies the user.
    """
    user = _scalar_text(claim_at(claims, claims_config.user))
    sub = _scalar_text(claims.get("sub")) or user
    if sub is None or user is None:
        raise LoginError(
            code="identity_incomplete",
            reason=f"no usable {claims_config.user!r} claim to identify the user",
        )
    return Identity(
        sub=sub,
        user=user,
        email=_scalar_text(claim_at(claims, claims_config.email)),
        email_verified=_as_bool(claims.get("email_verified")),
        username=_scalar_text(claim_at(claims, claims_config.username)),
        groups=_groups(claim_at(claims, claims_config.groups)),
        claims=dict(claims),
    )


def check_userinfo_subject(id_claims: Mapping[str, Any], userinfo: Mapping[str, Any]) -> None:
    """OIDC Core 5.3.4: the userinfo `sub` must equal the ID token's, else `LoginError`."""
    if userinfo.get("sub") != id_claims.get("sub"):
        raise LoginError(
            code="userinfo_invalid", reason="userinfo sub differs from the ID token sub"
        )


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


def parse_token_response(doc: Any) -> TokenResponse:
    """A token endpoint JSON body as a `TokenResponse`, or `TokenResponseError`."""
    if not isinstance(doc, dict):
        raise TokenResponseError("token response is not a JSON object")
    access_token = doc.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise TokenResponseError("token response has no access_token")
    token_type = doc.get("token_type")
    if not isinstance(token_type, str) or token_type.lower() != "bearer":
        raise TokenResponseError(f"token_type {str(token_type)[:20]!r} is not Bearer")

    def optional_text(name: str) -> str | None:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            raise TokenResponseError(f"token response {name} is not a string")
        return value or None

    return TokenResponse(
        access_token=access_token,
        token_type="Bearer",  # noqa: S106
        expires_in=_number(doc.get("expires_in")),
        refresh_token=optional_text("refresh_token"),
        id_token=optional_text("id_token"),
        scope=optional_text("scope"),
    )


def _unverified_jwt_exp(token: str) -> float | None:
    parts = token.split(".")
    if len(parts) != 3 or len(token) > MAX_ID_TOKEN_BYTES:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return _number(payload.get("exp")) if isinstance(payload, dict) else None


def access_token_expiry(token_response: TokenResponse, now: float) -> float | None:
    """When the access token expires (epoch seconds): `now + expires_in`, else a JWT's `exp`.

    The JWT `exp` is read unverified: sidecar is not the token's audience and uses the time only
    to decide when to refresh.
    """
    if token_response.expires_in is not None:
        return now + token_response.expires_in
    return _unverified_jwt_exp(token_response.access_token)
