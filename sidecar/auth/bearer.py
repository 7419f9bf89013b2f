"""Bearer tokens of API and machine clients: which issuer, which keys, and who the token names.

`parse_bearer(value)` reads `Authorization: Bearer <token>`. `validate_access_token` is the pure
check of a JWT access token (RFC 9068 / RFC 7519), sharing the signature step with ID tokens
(`sidecar.oidc.tokens.verify_signature`: compact JWS, allow-listed asymmetric `alg`, key by
`kid`): `typ` absent, `JWT` or `at+jwt`; `iss` exactly the issuer; `aud` containing an accepted
audience; `exp` required, `nbf` and `iat` checked when present, all with the provider's leeway.
No nonce: an access token has none. `BearerVerifier.identity(token)` picks the keys by the token's
(unverified) `iss`: the configured provider (`ProviderDirectory.key_set`, which re-fetches on an
unknown `kid`) or a trusted issuer (`sidecar.auth.issuers`); a token that is not a JWT goes to
introspection when it is on (`sidecar.auth.introspection`). A multi-tenant Entra provider
(discovered issuer `.../{tenantid}/v2.0`) has no one `iss`: its tokens must carry the template
filled with their own `tid`, for an allowed tenant, exactly as ID tokens at sign-in
(`sidecar.oidc.entra.expected_issuer`). The claims become an `Identity` with
`build_identity`, so route policies apply to them as to a session. Every refusal is
`InvalidTokenError` whose reason names the failed check; keys that cannot be fetched are
`ProviderUnavailableError` (503), since the token may well be fine.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import ClaimError, ExpiredTokenError, MissingClaimError
from joserfc.jwk import KeySet

from sidecar.auth.introspection import Introspector
from sidecar.auth.issuers import IssuerKeys
from sidecar.config.model import BearerConfig, ClaimsConfig, EntraConfig
from sidecar.errors import IdTokenError, InvalidTokenError, LoginError
from sidecar.oidc.entra import expected_issuer, fits_tenant_template, read_unverified_claims
from sidecar.oidc.tokens import (
    MAX_ID_TOKEN_BYTES,
    build_identity,
    read_token_header,
    verify_signature,
)
from sidecar.session.model import Identity

MAX_TOKEN_BYTES = MAX_ID_TOKEN_BYTES
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
_ACCEPTED_TYP = frozenset({"jwt", "at+jwt", "application/at+jwt", "application/jwt"})


def parse_bearer(value: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value (RFC 6750 2.1), None if malformed."""
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > MAX_TOKEN_BYTES:
        return None
    return token if _TOKEN68.fullmatch(token) else None


def looks_like_jwt(token: str) -> bool:
    """A compact JWS has exactly three dot-separated parts; anything else is opaque."""
    return token.count(".") == 2


def unverified_issuer(token: str) -> str | None:
    """The `iss` a JWT claims, read without verification (only to choose the keys)."""
    issuer = read_unverified_claims(token).get("iss")
    return issuer if isinstance(issuer, str) else None


def _fail(reason: str) -> InvalidTokenError:
    return InvalidTokenError(reason=reason)


def _audiences_of(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [item for item in aud if isinstance(item, str)]
    return []


def validate_access_token(
    token: str,
    *,
    keys: KeySet,
    issuer: str,
    audiences: Collection[str],
    now: float,
    leeway: int,
    algorithms: Collection[str],
) -> dict[str, Any]:
    """The claims of a valid JWT access token (see the module docstring), else InvalidTokenError.
    `keys` should already be re-fetched for an unknown `kid` (`ProviderDirectory.key_set`)."""
    try:
        typ = read_token_header(token).get("typ")
        claims = verify_signature(token, keys=keys, algorithms=algorithms)
    except IdTokenError as exc:
        raise _fail(exc.reason) from exc
    if typ is not None and (not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYP):
        raise _fail(f"typ: {str(typ)[:30]!r} is not an access token type")
    registry = jwt.JWTClaimsRegistry(
        now=int(now),
        leeway=leeway,
        iss={"essential": True, "value": issuer},
        exp={"essential": True},
    )
    try:
        registry.validate(claims)
    except MissingClaimError as exc:
        raise _fail(f"claims: missing {exc.claim}") from exc
    except ExpiredTokenError as exc:
        raise _fail("exp: token expired") from exc
    except ClaimError as exc:
        raise _fail(f"{exc.claim}: {exc.description}") from exc
    if not set(_audiences_of(claims)) & set(audiences):
        raise _fail("aud: no accepted audience")
    return claims


KeySource = Callable[[str | None], Awaitable[KeySet]]
TemplateSource = Callable[[], str | None]
"""The provider's discovered multi-tenant issuer template (`.../{tenantid}/v2.0`), None when its
issuer is an ordinary one; raises `ProviderUnavailableError` while discovery has not finished."""


@dataclass(frozen=True)
class TrustedIssuer:
    """Where one issuer's keys come from and what its tokens must carry. `tenant_template` is
    set only for the provider when it may be multi-tenant (it has `provider.entra`)."""

    issuer: str
    keys: KeySource
    audiences: frozenset[str]
    claims: ClaimsConfig
    tenant_template: TemplateSource | None = None
    entra: EntraConfig | None = None


class BearerVerifier:
    """Turns a bearer token into an `Identity`, or refuses it (see the module docstring)."""

    def __init__(
        self,
        config: BearerConfig,
        *,
        issuers: Mapping[str, TrustedIssuer],
        introspector: Introspector | None,
        provider_claims: ClaimsConfig,
        leeway: int,
        clock: Callable[[], float],
    ) -> None:
        self._config = config
        self._issuers = dict(issuers)
        self._tenanted = next(
            (each for each in self._issuers.values() if each.tenant_template is not None), None
        )
        self._introspector = introspector
        self._provider_claims = provider_claims
        self._leeway = leeway
        self._clock = clock
        self._algorithms = tuple(config.algorithms)

    async def identity(self, token: str) -> Identity:
        if looks_like_jwt(token):
            claims, claims_config = await self._jwt_claims(token)
        elif self._introspector is not None:
            claims = await self._introspector.claims(token)
            claims_config = self._provider_claims
        else:
            raise _fail("format: not a JWT, and introspection is off")
        try:
            return build_identity(claims, claims_config)
        except LoginError as exc:
            raise _fail(exc.reason) from exc

    def _trusted_issuer(self, claims: Mapping[str, Any]) -> tuple[TrustedIssuer, str]:
        """Whose keys check the token, chosen by its unverified `iss`, and the exact `iss` it
        must carry. A configured issuer matching exactly wins; else a multi-tenant provider's
        template, filled with the token's `tid` when that tenant is allowed."""
        iss = claims.get("iss")
        trusted = self._issuers.get(iss) if isinstance(iss, str) else None
        if trusted is not None and trusted.tenant_template is None:
            return trusted, trusted.issuer
        tenanted = self._tenanted
        template = None
        if tenanted is not None and tenanted.tenant_template is not None:
            template = tenanted.tenant_template()  # ProviderUnavailableError before discovery
        if tenanted is None or template is None:  # no multi-tenant provider: exact iss only
            if trusted is None:
                raise _fail("iss: not a trusted issuer")
            return trusted, trusted.issuer
        if not isinstance(iss, str) or not fits_tenant_template(template, iss):
            raise _fail("iss: not a trusted issuer")
        try:
            issuer = expected_issuer(template, claims, tenanted.entra)
        except IdTokenError as exc:  # tid missing, malformed or not an allowed tenant
            raise _fail(exc.reason) from exc
        if iss != issuer:
            raise _fail("iss: not the issuer of the token's own tenant (tid)")
        return tenanted, issuer

    async def _jwt_claims(self, token: str) -> tuple[dict[str, Any], ClaimsConfig]:
        trusted, issuer = self._trusted_issuer(read_unverified_claims(token))
        try:
            kid = read_token_header(token).get("kid")
        except IdTokenError as exc:
            raise _fail(exc.reason) from exc
        keys = await trusted.keys(kid if isinstance(kid, str) else None)
        claims = validate_access_token(
            token,
            keys=keys,
            issuer=issuer,
            audiences=trusted.audiences,
            now=self._clock(),
            leeway=self._leeway,
            algorithms=self._algorithms,
        )
        return claims, trusted.claims


def build_trusted_issuers(
    config: BearerConfig,
    *,
    provider_issuer: str | None,
    provider_keys: KeySource,
    provider_claims: ClaimsConfig,
    issuer_keys: Collection[IssuerKeys],
    provider_template: TemplateSource | None = None,
    entra: EntraConfig | None = None,
) -> dict[str, TrustedIssuer]:
    """Every issuer whose JWTs are accepted, by `iss`: the provider (when `provider_tokens`)
    and the configured trusted issuers, each with its audiences and claim names. With `entra`
    (the provider's `provider.entra`), `provider_template` tells whether the provider turned
    out multi-tenant, and the tenants its tokens may name are the ones sign-in admits."""
    issuers: dict[str, TrustedIssuer] = {}
    if config.provider_tokens and provider_issuer is not None:
        issuers[provider_issuer] = TrustedIssuer(
            provider_issuer,
            provider_keys,
            frozenset(config.audiences),
            provider_claims,
            tenant_template=provider_template if entra is not None else None,
            entra=entra,
        )
    for keys in issuer_keys:
        extra = keys.config
        issuers[extra.issuer] = TrustedIssuer(
            extra.issuer,
            keys.key_set,
            frozenset(extra.audiences or config.audiences),
            extra.claims or provider_claims,
        )
    return issuers
