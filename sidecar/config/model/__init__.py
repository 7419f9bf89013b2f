"""The configuration model: typed, frozen, unknown keys rejected.

The YAML file is parsed once (see `sidecar.config.load`) into a `SidecarConfig`; nothing downstream
reads raw dictionaries. Every field carries a description: the configuration reference in `docs/`
and the JSON Schema printed by `sidecar config-schema` are generated from them. YAML keys equal the
field names. A field typed `SecretStr` (or a list of them) may instead be given as `<name>_file`:
the loader reads the secret from that file (a Kubernetes Secret mounted as a file).

Each section lives in its own module (`server`, `provider`, `session`, `signin`, `routes`, `api`,
on the shared `base`); this one holds the whole-file `SidecarConfig` with the checks that span
sections, and re-exports every config class, so `from sidecar.config.model import X` is the one
import path.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from sidecar.config.model.api import (
    ApiConfig,
    AssertionKeyConfig,
    BearerConfig,
    IdentityAssertionConfig,
    IntrospectionConfig,
    TrustedIssuerConfig,
)
from sidecar.config.model.base import (
    IPNetwork,
    Model,
    _check_http_url,
    is_loopback_url,
    parse_listen,
)
from sidecar.config.model.provider import (
    ClaimsConfig,
    EntraConfig,
    GitHubConfig,
    ProviderConfig,
    TokenAuthMethod,
)
from sidecar.config.model.routes import _POLICY_NAME, ClaimValue, PolicyConfig, RouteConfig
from sidecar.config.model.server import LoggingConfig, ServerConfig, UpstreamConfig
from sidecar.config.model.session import (
    KeepTokensConfig,
    RedisConfig,
    RedisSentinelConfig,
    RedisTlsConfig,
    SessionConfig,
)
from sidecar.config.model.signin import AuthConfig, HeadersConfig


def _validate_reporting_all(
    title: str, value: Any, handler: ValidatorFunctionWrapHandler, problems: list[InitErrorDetails]
) -> Any:
    """Run the inner validation and raise its errors together with `problems` (found beside it),
    so that a user sees every problem of a section at once, each at its own line."""
    try:
        result = handler(value)
    except ValidationError as exc:
        found = [
            InitErrorDetails(
                type=PydanticCustomError(error["type"], error["msg"]), loc=error["loc"], input=None
            )
            for error in exc.errors(include_url=False, include_input=False)
        ]
        raise ValidationError.from_exception_data(title, found + problems) from None
    if problems:
        raise ValidationError.from_exception_data(title, problems)
    return result


def _unknown_policies(names: list[Any], defined: dict[str, Any]) -> list[InitErrorDetails]:
    """An error at `routes[i].policy` for each route naming a policy that is not defined."""
    known = ", ".join(defined) or "none defined"
    return [
        InitErrorDetails(
            type=PydanticCustomError(
                "value_error", f"no policy named {name.strip()} under policies ({known})"
            ),
            loc=(index, "policy"),
            input=None,
        )
        for index, name in enumerate(names)
        if isinstance(name, str) and name.strip() not in defined
    ]


class SidecarConfig(Model):
    """The whole configuration file."""

    version: Literal[1] = Field(description="Config format version; always 1.")
    server: ServerConfig = Field(default_factory=ServerConfig, description="Listening and trust.")
    upstream: str | None = Field(
        None, description="Shorthand for a single upstream at path /: the backend's base URL."
    )
    upstreams: tuple[UpstreamConfig, ...] = Field(
        (), description="Backends by path prefix; the longest prefix wins."
    )
    provider: ProviderConfig | None = Field(
        None, description="The identity provider. Without it sidecar is a plain transparent proxy."
    )
    session: SessionConfig | None = Field(
        None, description="Session cookies; required with a provider."
    )
    headers: HeadersConfig = Field(default_factory=HeadersConfig, description="Identity headers.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="Sign-in endpoints and pages.")
    logging: LoggingConfig = Field(default_factory=LoggingConfig, description="Logging.")
    policies: dict[str, PolicyConfig] = Field(
        default_factory=dict,
        description="Named policies that routes can require (policy: NAME).",
    )
    routes: tuple[RouteConfig, ...] = Field(
        (),
        description=(
            "Ordered routes; the first match wins. A request no route matches needs sign-in. "
            "Needs a provider."
        ),
    )
    api: ApiConfig = Field(
        default_factory=ApiConfig, description="API and machine clients (bearer tokens, htpasswd)."
    )
    identity_assertion: IdentityAssertionConfig = Field(
        default_factory=IdentityAssertionConfig,
        description="Signed identity assertion (a JWT) for the backend.",
    )

    @field_validator("upstream")
    @classmethod
    def _upstream(cls, value: str | None) -> str | None:
        # Checked here so that a bad shorthand is reported at `upstream`, not inside the
        # UpstreamConfig built from it below.
        if value is not None:
            _check_http_url(value)
            parts = urlsplit(value)
            if parts.query or parts.fragment:
                raise ValueError("must not carry a query or fragment")
        return value

    @field_validator("policies", mode="wrap")
    @classmethod
    def _policies(
        cls, value: Any, handler: ValidatorFunctionWrapHandler
    ) -> dict[str, PolicyConfig]:
        problems = [
            InitErrorDetails(
                type=PydanticCustomError(
                    "value_error", "policy names use letters, digits, _ . and - only"
                ),
                loc=(name,),
                input=None,
            )
            for name in (value if isinstance(value, dict) else ())
            if not (isinstance(name, str) and _POLICY_NAME.fullmatch(name))
        ]
        policies: dict[str, PolicyConfig] = _validate_reporting_all(
            cls.__name__, value, handler, problems
        )
        return policies

    @field_validator("routes", mode="wrap")
    @classmethod
    def _routes(
        cls, value: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
    ) -> tuple[RouteConfig, ...]:
        # A wrap validator, so that a route naming an unknown policy is reported together with
        # every other problem of the routes, each at its own line.
        problems: list[InitErrorDetails] = []
        if value and "provider" in info.data and info.data["provider"] is None:
            problems.append(
                InitErrorDetails(
                    type=PydanticCustomError(
                        "value_error", "routes need a provider: without one nobody can sign in"
                    ),
                    loc=(),
                    input=None,
                )
            )
        defined = info.data.get("policies")
        if defined is not None and isinstance(value, list | tuple):
            raw = [item.get("policy") if isinstance(item, dict) else None for item in value]
            problems += _unknown_policies(raw, defined)
        routes: tuple[RouteConfig, ...] = _validate_reporting_all(
            cls.__name__, value, handler, problems
        )
        if defined is not None:  # routes given as RouteConfig objects (not from YAML)
            unknown = _unknown_policies([route.policy for route in routes], defined)
            if unknown:
                raise ValidationError.from_exception_data(cls.__name__, unknown)
        return routes

    @model_validator(mode="after")
    def _consistent(self) -> SidecarConfig:
        if self.upstream is not None:
            if self.upstreams:
                raise ValueError("give upstream or upstreams, not both")
            shorthand = UpstreamConfig(path="/", url=self.upstream)
            object.__setattr__(self, "upstreams", (shorthand,))
            object.__setattr__(self, "upstream", None)
        if not self.upstreams:
            raise ValueError("an upstream is required (upstream: URL, or upstreams: [...])")
        if self.provider is not None and self.session is None:
            raise ValueError("session (with secrets) is required when a provider is configured")
        _check_api(self)
        return self

    @property
    def bearer_anywhere(self) -> bool:
        """Whether some route accepts bearer tokens (globally on, or a route says so)."""
        return self.api.bearer.enabled or any(route.bearer for route in self.routes)

    @property
    def assertion_anywhere(self) -> bool:
        """Whether some route sends the signed identity assertion."""
        return self.identity_assertion.enabled or any(
            route.identity_assertion for route in self.routes
        )

    @property
    def cookie_secure(self) -> bool:
        """Whether cookies carry Secure: explicit setting, else on when public_url is https."""
        if self.session is not None and self.session.cookie_secure is not None:
            return self.session.cookie_secure
        return bool(self.server.public_url and self.server.public_url.startswith("https:"))


def _check_api(config: SidecarConfig) -> None:
    """Bearer tokens, htpasswd users and assertions need what they rely on."""
    bearer = config.api.bearer
    needs_provider = config.bearer_anywhere or config.api.htpasswd or config.assertion_anywhere
    if needs_provider and config.provider is None:
        raise ValueError(
            "api (bearer, htpasswd) and identity_assertion need a provider section (the gate "
            "that checks credentials runs only with one)"
        )
    if config.bearer_anywhere:
        if not bearer.provider_tokens and not bearer.trusted_issuers:
            raise ValueError(
                "api.bearer: accepting bearer tokens needs provider_tokens: true or trusted_issuers"
            )
        issuers_without = [i.issuer for i in bearer.trusted_issuers if not i.audiences]
        if not bearer.audiences and (bearer.provider_tokens or issuers_without):
            raise ValueError(
                "api.bearer.audiences: list the audience(s) a bearer token must carry in aud "
                "(e.g. your API's identifier at the provider)"
            )
    if config.assertion_anywhere and not config.identity_assertion.keys:
        raise ValueError(
            "identity_assertion.keys: the assertion needs a signing key (keys: [{key_file: PATH}])"
        )


__all__ = [
    "ApiConfig",
    "AssertionKeyConfig",
    "AuthConfig",
    "BearerConfig",
    "ClaimValue",
    "ClaimsConfig",
    "EntraConfig",
    "GitHubConfig",
    "HeadersConfig",
    "IPNetwork",
    "IdentityAssertionConfig",
    "IntrospectionConfig",
    "KeepTokensConfig",
    "LoggingConfig",
    "Model",
    "PolicyConfig",
    "ProviderConfig",
    "RedisConfig",
    "RedisSentinelConfig",
    "RedisTlsConfig",
    "RouteConfig",
    "ServerConfig",
    "SessionConfig",
    "SidecarConfig",
    "TokenAuthMethod",
    "TrustedIssuerConfig",
    "UpstreamConfig",
    "is_loopback_url",
    "parse_listen",
]
