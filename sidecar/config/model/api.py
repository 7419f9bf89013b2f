"""Configuration of machine clients (`api`) and the signed identity assertion."""

from __future__ import annotations

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sidecar.config.model.base import _HEADER_NAME, Model, _check_http_url, is_loopback_url
from sidecar.config.model.provider import ClaimsConfig
from sidecar.config.model.routes import _no_duplicates

_ASYMMETRIC_ALGORITHMS = (
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
)  # fmt: skip


def _asymmetric_only(value: tuple[str, ...]) -> tuple[str, ...]:
    if not value:
        raise ValueError("at least one algorithm is needed")
    for alg in value:
        if alg not in _ASYMMETRIC_ALGORITHMS:
            raise ValueError(
                f"{alg} is not allowed: only asymmetric signature algorithms "
                f"({', '.join(_ASYMMETRIC_ALGORITHMS)})"
            )
    return value


class TrustedIssuerConfig(Model):
    """Another issuer whose JWT access tokens sidecar accepts (a CI system, a second provider)."""

    issuer: str = Field(
        description="Issuer URL; a token's iss must equal it exactly. Keys come from its "
        "discovery document (<issuer>/.well-known/openid-configuration) unless jwks_uri is given."
    )
    jwks_uri: str | None = Field(None, description="Explicit JWKS URI (skips discovery).")
    audiences: tuple[str, ...] = Field(
        (),
        description="Audiences accepted from this issuer (the token's aud must contain one). "
        "Empty: api.bearer.audiences.",
    )
    claims: ClaimsConfig | None = Field(
        None, description="Claim names for this issuer's tokens (default: provider.claims)."
    )
    insecure_allow_http: bool = Field(
        False, description="Allow a plain-http issuer that is not on loopback. Never in production."
    )

    @field_validator("issuer", "jwks_uri")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @model_validator(mode="after")
    def _https(self) -> TrustedIssuerConfig:
        if not self.insecure_allow_http:
            for url in (self.issuer, self.jwks_uri):
                if url and url.startswith("http:") and not is_loopback_url(url):
                    raise ValueError(f"{url} is plain http; use https")
        return self


class IntrospectionConfig(Model):
    """Token introspection (RFC 7662) for opaque (non-JWT) access tokens of the provider."""

    enabled: bool = Field(
        False, description="Ask the provider about bearer tokens that are not JWTs."
    )
    endpoint: str | None = Field(
        None,
        description="Introspection endpoint (default: the provider's introspection_endpoint "
        "from discovery). sidecar authenticates as at the token endpoint.",
    )
    cache_seconds: int = Field(
        30,
        ge=0,
        le=600,
        description="How long an answer is reused (never past the token's exp). A revoked token "
        "may be accepted this long after revocation; 0 asks on every request.",
    )
    cache_max_entries: int = Field(
        10000, ge=1, description="Most answers remembered (the least recently used go first)."
    )

    @field_validator("endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)


class BearerConfig(Model):
    """`Authorization: Bearer <token>` from API and machine clients, instead of a session cookie."""

    enabled: bool = Field(
        False,
        description="Accept bearer tokens on every route that needs sign-in (a route's own "
        "`bearer:` wins). Off: only on routes with bearer: true.",
    )
    audiences: tuple[str, ...] = Field(
        (),
        description="Audiences accepted: a token's aud must contain one (e.g. the API's "
        "identifier at the provider). Required when bearer tokens are accepted anywhere.",
    )
    provider_tokens: bool = Field(
        True, description="Accept JWT access tokens of the configured provider (its JWKS)."
    )
    trusted_issuers: tuple[TrustedIssuerConfig, ...] = Field(
        (), description="More issuers whose JWT access tokens are accepted."
    )
    algorithms: tuple[str, ...] = Field(
        _ASYMMETRIC_ALGORITHMS,
        description="Signature algorithms accepted on bearer JWTs. Never none, never HMAC.",
    )
    introspection: IntrospectionConfig = Field(
        default_factory=IntrospectionConfig, description="Opaque tokens (RFC 7662)."
    )
    pass_authorization: bool = Field(
        True,
        description="Send the client's Authorization: Bearer header on to the backend (the "
        "token's audience, which may check it again). false: remove it.",
    )

    @field_validator("algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _asymmetric_only(value)

    @field_validator("audiences")
    @classmethod
    def _audiences(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(value)


class ApiConfig(Model):
    """API and machine clients: bearer tokens and static htpasswd users."""

    bearer: BearerConfig = Field(default_factory=BearerConfig, description="Bearer tokens.")
    htpasswd: SecretStr | None = Field(
        None,
        description="Static users for HTTP Basic credentials, in htpasswd format with bcrypt "
        "hashes only (`htpasswd -B`); usually htpasswd_file: PATH. Accepted on every route that "
        "needs sign-in; route policies apply (these users have no email).",
    )
    htpasswd_groups: dict[str, tuple[str, ...]] = Field(
        default_factory=dict, description="Groups of htpasswd users: user -> [group, ...]."
    )

    @field_validator("htpasswd")
    @classmethod
    def _htpasswd(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Imported here: sidecar.auth imports this module.
        from sidecar.auth.htpasswd import parse_htpasswd

        if not parse_htpasswd(value.get_secret_value()):
            raise ValueError("no users in the htpasswd file")
        return value

    @model_validator(mode="after")
    def _groups_of_known_users(self) -> ApiConfig:
        if self.htpasswd_groups:
            from sidecar.auth.htpasswd import parse_htpasswd

            users = parse_htpasswd(self.htpasswd.get_secret_value()) if self.htpasswd else {}
            unknown = sorted(set(self.htpasswd_groups) - set(users))
            if unknown:
                raise ValueError(f"htpasswd_groups names users not in htpasswd: {unknown}")
        return self


class AssertionKeyConfig(Model):
    """One signing key of the identity assertion."""

    key: SecretStr = Field(
        description="Private key, PEM (usually key_file: PATH): EC P-256 (ES256), P-384 (ES384), "
        "RSA of 2048 bits or more (RS256) or Ed25519 (EdDSA). `openssl ecparam -name prime256v1 "
        "-genkey -noout | openssl pkcs8 -topk8 -nocrypt` makes one."
    )
    key_id: str | None = Field(
        None, description="kid published in the JWKS (default: the RFC 7638 thumbprint)."
    )

    @field_validator("key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        from sidecar.assertion import load_signing_key

        load_signing_key(value.get_secret_value())  # ValueError says what is wrong
        return value


class IdentityAssertionConfig(Model):
    """A short-lived JWT of the identity for the backend, signed with sidecar's own key."""

    enabled: bool = Field(
        False,
        description="Send the assertion on every route that needs sign-in (a route's own "
        "`identity_assertion:` wins). The public keys are served at <auth.prefix>/jwks.",
    )
    header: str = Field(
        "X-Sidecar-Assertion",
        description="Header carrying the assertion; a client-sent one is always removed.",
    )
    keys: tuple[AssertionKeyConfig, ...] = Field(
        (),
        description="Signing keys: the first signs, all are published (put a new key first to "
        "rotate, drop the old one after ttl_seconds).",
    )
    ttl_seconds: int = Field(60, ge=5, le=3600, description="Lifetime of an assertion (exp - iat).")
    audience: str | None = Field(
        None, description="The aud claim (default: the URL of the upstream the request goes to)."
    )
    issuer: str | None = Field(
        None, description="The iss claim (default: server.public_url, else the request's origin)."
    )

    @field_validator("header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("not a valid HTTP header name")
        return value

    @field_validator("keys")
    @classmethod
    def _key_ids(cls, value: tuple[AssertionKeyConfig, ...]) -> tuple[AssertionKeyConfig, ...]:
        _no_duplicates(tuple(key.key_id for key in value if key.key_id is not None))
        return value
