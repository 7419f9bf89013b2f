"""Configuration of the identity provider (`provider`), with its provider-specific sections."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from sidecar.config.model.base import _TENANT, Model, _check_http_url, is_loopback_url
from sidecar.config.model.routes import _no_duplicates


class ClaimsConfig(Model):
    """Which claims make up the identity (for providers whose claim names differ)."""

    user: str = Field("sub", description="Claim that identifies the user (X-Forwarded-User).")
    email: str = Field("email", description="Claim holding the email address.")
    username: str = Field("preferred_username", description="Claim holding the display user name.")
    groups: str = Field(
        "groups",
        description="Claim holding the groups, a list; dotted paths reach nested claims.",
    )


class EntraConfig(Model):
    """Microsoft Entra ID specifics: multi-tenant issuers and the groups overage."""

    allowed_tenants: tuple[str, ...] = Field(
        (),
        description=(
            "Tenant ids (GUIDs) whose users may sign in through a multi-tenant issuer "
            "(.../common/v2.0, .../organizations/v2.0: the discovered issuer has {tenantid}). "
            "Every token's iss (ID tokens, bearer access tokens, back-channel logout tokens) "
            "must equal the issuer with the token's own tid filled in. Empty: a "
            "multi-tenant issuer is refused. [any]: every tenant (then restrict with policies)."
        ),
    )
    groups_overage: Literal["graph", "deny"] = Field(
        "deny",
        description=(
            "When a user has more groups than fit in the token (the ID token carries "
            "_claim_names.groups or hasgroups instead): graph fetches them from Microsoft Graph "
            "with the sign-in access token (needs GroupMember.Read.All); deny refuses sign-in."
        ),
    )
    graph_url: str = Field(
        "https://graph.microsoft.com",
        description="Microsoft Graph base URL (national clouds: https://graph.microsoft.us, ...).",
    )
    graph_security_groups_only: bool = Field(
        True,
        description=(
            "Ask Graph for security groups only (as the 'Security groups' group claim does); "
            "false: Microsoft 365 groups and distribution lists too."
        ),
    )

    @field_validator("allowed_tenants")
    @classmethod
    def _tenants(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if "any" in value and len(value) > 1:
            raise ValueError("any allows every tenant: list it alone")
        for tenant in value:
            if tenant != "any" and not _TENANT.fullmatch(tenant):
                raise ValueError(f"{tenant!r} is not a tenant id (a GUID) or any")
        return _no_duplicates(tuple(tenant.lower() for tenant in value))

    @field_validator("graph_url")
    @classmethod
    def _graph_url(cls, value: str) -> str:
        return _check_http_url(value).rstrip("/")


class GitHubConfig(Model):
    """GitHub sign-in (plain OAuth 2.0): identity, email and groups from the REST API."""

    api_url: str = Field(
        "https://api.github.com",
        description="REST API base URL (GitHub Enterprise Server: https://HOST/api/v3).",
    )
    orgs: bool = Field(True, description="Add each organization's login as a group (read:org).")
    teams: bool = Field(True, description="Add each team as a group org/team-slug (read:org).")

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        return _check_http_url(value).rstrip("/")


TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


class ProviderConfig(Model):
    """The OpenID Connect (or plain OAuth 2.0) provider users sign in with."""

    issuer: str | None = Field(
        None,
        description=(
            "Issuer URL; metadata comes from <issuer>/.well-known/openid-configuration and the "
            "discovered issuer must equal this exactly."
        ),
    )
    discovery: bool = Field(True, description="Use OpenID Connect discovery from the issuer.")
    authorization_endpoint: str | None = Field(
        None, description="Explicit authorization endpoint (overrides discovery)."
    )
    token_endpoint: str | None = Field(
        None, description="Explicit token endpoint (overrides discovery)."
    )
    userinfo_endpoint: str | None = Field(
        None,
        description=(
            "Explicit userinfo endpoint (overrides discovery); for plain OAuth 2.0 the identity "
            "source."
        ),
    )
    jwks_uri: str | None = Field(None, description="Explicit JWKS URI (overrides discovery).")
    end_session_endpoint: str | None = Field(
        None, description="Explicit RP-initiated logout endpoint (overrides discovery)."
    )
    client_id: str = Field(description="OAuth 2.0 client id registered at the provider.")
    client_secret: SecretStr | None = Field(
        None, description="Client secret (or client_secret_file: a file holding it)."
    )
    token_endpoint_auth_method: TokenAuthMethod = Field(
        "client_secret_basic", description="How sidecar authenticates at the token endpoint."
    )
    private_key: SecretStr | None = Field(
        None,
        description="PEM private key for private_key_jwt (or private_key_file: a PEM file).",
    )
    private_key_id: str | None = Field(
        None, description="`kid` to put in private_key_jwt assertions."
    )
    scopes: tuple[str, ...] = Field(
        ("openid", "email", "profile"), description="Scopes requested at sign-in."
    )
    extra_authorize_params: dict[str, str] = Field(
        default_factory=dict,
        description="Extra authorization request parameters: prompt, acr_values, audience, ...",
    )
    id_token_algorithms: tuple[str, ...] = Field(
        ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"),
        description="Signature algorithms accepted on ID tokens. Never none, never HMAC.",
    )
    clock_skew_seconds: int = Field(60, ge=0, le=600, description="Leeway for exp/iat/nbf checks.")
    use_userinfo: bool = Field(
        True, description="Fetch the userinfo endpoint after sign-in and merge its claims."
    )
    claims: ClaimsConfig = Field(default_factory=ClaimsConfig, description="Claim names.")
    http_timeout_seconds: float = Field(
        10.0, gt=0, description="Timeout for calls to the provider."
    )
    entra: EntraConfig | None = Field(
        None, description="Microsoft Entra ID specifics (multi-tenant issuers, groups overage)."
    )
    github: GitHubConfig | None = Field(
        None,
        description="GitHub sign-in: identity, verified primary email, orgs and teams via its API.",
    )
    required_acr: tuple[str, ...] = Field(
        (),
        description=(
            "If set, the ID token's acr must be one of these or sign-in is refused (ask for it "
            "with extra_authorize_params.acr_values)."
        ),
    )
    insecure_allow_http: bool = Field(
        False,
        description="Allow a plain-http provider that is not on loopback. Never in production.",
    )

    @field_validator(
        "issuer",
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
    )
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return None if value is None else _check_http_url(value)

    @field_validator("id_token_algorithms")
    @classmethod
    def _algorithms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for alg in value:
            if alg.lower() == "none" or alg.upper().startswith("HS"):
                raise ValueError(f"{alg} is not allowed: only asymmetric signature algorithms")
        if not value:
            raise ValueError("at least one algorithm is needed")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProviderConfig:
        if self.discovery and not self.issuer:
            raise ValueError("issuer is required when discovery is on (or set discovery: false)")
        if not self.discovery and not (self.authorization_endpoint and self.token_endpoint):
            raise ValueError(
                "with discovery: false, authorization_endpoint and token_endpoint are required"
            )
        if self.is_oidc and not self.discovery and not (self.jwks_uri and self.issuer):
            raise ValueError(
                "with discovery: false and the openid scope, issuer and jwks_uri are required "
                "(the ID token's iss is checked against issuer)"
            )
        if self.github is not None and self.is_oidc:
            raise ValueError("GitHub sign-in is plain OAuth 2.0: leave openid out of scopes")
        if self.required_acr and not self.is_oidc:
            raise ValueError("required_acr checks the ID token: it needs the openid scope")
        if not self.is_oidc and not self.userinfo_endpoint:
            raise ValueError(
                "without the openid scope, userinfo_endpoint is the identity source and is required"
            )
        if self.token_endpoint_auth_method == "private_key_jwt":  # noqa: S105 - a method name
            if self.private_key is None:
                raise ValueError("private_key_jwt needs private_key or private_key_file")
        elif self.client_secret is None:
            raise ValueError(
                f"{self.token_endpoint_auth_method} needs client_secret or client_secret_file"
            )
        if not self.insecure_allow_http:
            for url in (self.issuer, self.authorization_endpoint, self.token_endpoint):
                if url and url.startswith("http:") and not is_loopback_url(url):
                    raise ValueError(
                        f"{url} is plain http; use https (insecure_allow_http: true only for tests)"
                    )
        return self

    @property
    def is_oidc(self) -> bool:
        """True when ID tokens are expected (the openid scope is requested)."""
        return "openid" in self.scopes
