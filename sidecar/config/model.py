"""The configuration model: typed, frozen, unknown keys rejected.

The YAML file is parsed once (see `sidecar.config.load`) into a `SidecarConfig`; nothing downstream
reads raw dictionaries. Every field carries a description: the configuration reference in `docs/`
and the JSON Schema printed by `sidecar config-schema` are generated from them. YAML keys equal the
field names. A field typed `SecretStr` (or a list of them) may instead be given as `<name>_file`:
the loader reads the secret from that file (a Kubernetes Secret mounted as a file).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_TENANT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Model(BaseModel):
    """Base for every config object: immutable, and a typo is an error, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:4180`; port 0 = any free port); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("expected host:port, e.g. 0.0.0.0:4180")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - listening on all interfaces is the default
    return host, int(port)


def is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS


class ServerConfig(Model):
    """How sidecar listens and what it trusts about the network in front of it."""

    listen: str = Field(
        "0.0.0.0:4180",
        description="Address and port sidecar serves on, as host:port.",
    )
    public_url: str | None = Field(
        None,
        description=(
            "External base URL that browsers see (scheme, host, optional port), e.g. "
            "https://app.example.com. Needed behind an ingress or TLS terminator; it fixes the "
            "redirect URI, the cookie Secure flag and the origin that redirects must stay on."
        ),
    )
    trusted_proxies: tuple[IPNetwork, ...] = Field(
        (),
        description=(
            "Addresses or CIDR ranges of proxies in front of sidecar whose X-Forwarded-For/-Proto/"
            "-Host and X-Request-Id are believed and appended to. From others they are replaced."
        ),
    )
    internal_listen: str | None = Field(
        None,
        description=(
            "Optional second host:port for health, readiness and metrics, apart from user traffic. "
            "Health endpoints are always also served under the auth prefix."
        ),
    )
    shutdown_grace_seconds: float = Field(
        15.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    max_request_line_bytes: int = Field(
        8190, ge=256, description="Longest request line accepted; longer gets 414/431."
    )
    max_header_bytes: int = Field(
        32768,
        ge=1024,
        description=(
            "Longest single header field accepted (the Cookie header of a large split session can "
            "reach 16 KB); larger gets 431."
        ),
    )
    max_headers: int = Field(100, ge=10, description="Most header fields in one request.")
    header_read_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=600,
        description=(
            "A connection whose request line and headers have not all arrived this long after "
            "it opened (or after the next request's first byte) is closed: slow-header clients "
            "(slowloris) cannot hold connections open. Idle keep-alive connections and bodies "
            "are not affected."
        ),
    )
    max_body_bytes: int | None = Field(
        None,
        ge=0,
        description="Largest request body passed upstream; larger gets 413. None: no limit.",
    )
    workers: int = Field(1, ge=1, description="Worker processes sharing the listening port.")
    metrics_on_main_port: bool = Field(
        False,
        description=(
            "Also serve Prometheus metrics at <auth.prefix>/metrics on the main port (reachable by "
            "anyone who reaches sidecar). Off: metrics only on internal_listen at /metrics."
        ),
    )
    watch_config: bool = Field(
        True,
        description=(
            "Poll the config file every 2 s and reload it live when it changes (a Kubernetes "
            "ConfigMap update included). SIGHUP always reloads. An invalid file is refused and "
            "the running configuration kept."
        ),
    )
    request_id_header: str = Field(
        "X-Request-Id",
        description="Header carrying the request id; generated, or taken from trusted proxies.",
    )

    @field_validator("listen", "internal_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError("must be scheme://host[:port] only, without path, query or fragment")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("request_id_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("not a valid HTTP header name")
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class UpstreamConfig(Model):
    """One backend and the path prefix it serves."""

    path: str = Field("/", description="Path prefix this upstream serves; the longest prefix wins.")
    url: str = Field(description="Base URL of the backend, e.g. http://127.0.0.1:8080.")
    preserve_host: bool = Field(
        True,
        description="Pass the client's Host header through (true) or send the upstream's (false).",
    )
    connect_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout to connect upstream (504)."
    )
    read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest wait for the upstream between two reads (504 before a response).",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        _check_http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")


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
            "The ID token's iss must equal the issuer with its tid filled in. Empty: a "
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


class RedisSentinelConfig(Model):
    """Redis Sentinel: the sentinels to ask and the name of the master they watch."""

    master: str = Field(description="Name of the monitored master (sentinel.conf `monitor`).")
    nodes: tuple[str, ...] = Field(
        description="Sentinel addresses as host:port, e.g. [sentinel-0:26379, sentinel-1:26379]."
    )
    password: SecretStr | None = Field(
        None, description="Password of the sentinels themselves (or password_file), if they ask."
    )

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one sentinel as host:port")
        for node in value:
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{node!r} is not host:port")
        return value


class RedisTlsConfig(Model):
    """TLS to Redis. A rediss:// URL turns it on too; the server certificate is always checked."""

    enabled: bool = Field(False, description="Use TLS (implied by a rediss:// URL).")
    ca_file: str | None = Field(
        None, description="PEM file of the CA(s) that sign the Redis server certificate."
    )
    cert_file: str | None = Field(
        None, description="PEM client certificate, for Redis servers that require one."
    )
    key_file: str | None = Field(None, description="PEM private key of the client certificate.")

    @model_validator(mode="after")
    def _pair(self) -> RedisTlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give cert_file and key_file together")
        return self


_REDIS_SCHEMES = ("redis", "rediss", "unix")


class RedisConfig(Model):
    """Where the Redis session store (and the back-channel logout revocation list) lives."""

    url: SecretStr | None = Field(
        None,
        description=(
            "Standalone Redis: redis://[user:password@]host:port/db, rediss://... for TLS, or "
            "unix:///path/to/redis.sock. Holds the password, so it is a secret (or url_file)."
        ),
    )
    sentinel: RedisSentinelConfig | None = Field(
        None, description="Find the master through Redis Sentinel instead of a fixed url."
    )
    username: str | None = Field(
        None, description="ACL user name (or in the url: redis://user:password@host...)."
    )
    password: SecretStr | None = Field(
        None,
        description=(
            "Password of Redis (of the master, with Sentinel), or password_file: keeps it out of "
            "the url. Give it here or in the url, not both."
        ),
    )
    db: int = Field(0, ge=0, description="Database number in Sentinel mode (the url carries it).")
    tls: RedisTlsConfig = Field(default_factory=RedisTlsConfig, description="TLS to Redis.")
    key_prefix: str = Field(
        "sidecar:",
        description=(
            "Prefix of every key sidecar writes, so several deployments can share one Redis. "
            "Replicas of one deployment must use the same prefix (and the same session secrets)."
        ),
    )
    timeout_seconds: float = Field(
        2.0,
        gt=0,
        le=30,
        description=(
            "Connect and command timeout. When Redis does not answer within it, protected routes "
            "answer 503 (session store unavailable) and readiness fails; public routes still work."
        ),
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            scheme = urlsplit(value.get_secret_value()).scheme
            if scheme not in _REDIS_SCHEMES:
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:{}-]{1,64}", value):
            raise ValueError("1 to 64 of letters, digits and _ . : { } -")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> RedisConfig:
        if (self.url is None) == (self.sentinel is None):
            raise ValueError("give url (standalone Redis) or sentinel, exactly one")
        if self.url is not None:
            parts = urlsplit(self.url.get_secret_value())
            if self.password is not None and parts.password:
                raise ValueError("the url already holds a password: give it once")
            if self.username is not None and parts.username:
                raise ValueError("the url already holds a user name: give it once")
        return self


class KeepTokensConfig(Model):
    """Which tokens the session keeps. Dropping what the backend never needs keeps cookies small."""

    access_token: bool = Field(
        True, description="Keep the access token (needed to pass it upstream)."
    )
    refresh_token: bool = Field(True, description="Keep the refresh token (needed to refresh).")
    id_token: bool = Field(
        True, description="Keep the ID token (needed for id_token_hint at sign-out)."
    )


class SessionConfig(Model):
    """The browser session: encrypted, authenticated cookies."""

    secrets: tuple[SecretStr, ...] = Field(
        description=(
            "Cookie encryption keys (from `sidecar secret`). The first encrypts, all decrypt: put "
            "a new key first to rotate. `secret: KEY` is the one-key shorthand; secrets_file / "
            "secret_file read them from a file (one per line)."
        ),
    )
    cookie_name: str = Field(
        "_sidecar",
        description="Base cookie name; __Host- is prefixed whenever Secure and no Domain allow it.",
    )
    cookie_domain: str | None = Field(
        None, description="Cookie Domain attribute (default: host only)."
    )
    cookie_secure: bool | None = Field(
        None, description="Secure attribute; default: on when server.public_url is https."
    )
    cookie_samesite: Literal["Lax", "Strict", "None"] = Field(
        "Lax", description="SameSite attribute."
    )
    lifetime_seconds: int = Field(43200, gt=0, description="Absolute session lifetime.")
    idle_timeout_seconds: int | None = Field(
        None, gt=0, description="End sessions unused for this long (None: no idle timeout)."
    )
    refresh_margin_seconds: int = Field(
        60, ge=0, description="Refresh the access token this long before it expires."
    )
    refresh_grace_seconds: int = Field(
        30,
        ge=0,
        description="How long a pre-refresh cookie is still served with the refreshed tokens.",
    )
    keep_tokens: KeepTokensConfig = Field(
        default_factory=KeepTokensConfig, description="Tokens kept."
    )
    max_cookie_bytes: int = Field(
        3800,
        ge=1000,
        le=4093,
        description="Largest single Set-Cookie value; larger sessions are split.",
    )
    max_login_attempts: int = Field(
        5,
        ge=1,
        le=20,
        description="Concurrent sign-in attempts (tabs) remembered; oldest dropped first.",
    )
    login_timeout_seconds: int = Field(
        600,
        gt=0,
        description="How long a sign-in attempt (state, nonce, PKCE verifier) stays valid.",
    )
    store: Literal["cookie", "redis"] = Field(
        "cookie",
        description=(
            "Where sessions live. cookie: encrypted in the browser, no server state. redis: "
            "the cookie holds only an encrypted ticket (session id and a per-session key); the "
            "session, encrypted with that key, lives in Redis (`redis`), shared by every replica."
        ),
    )
    redis: RedisConfig | None = Field(
        None,
        description=(
            "The Redis server: required with store: redis. With store: cookie it is optional and "
            "holds the back-channel logout revocation list shared by all replicas (without it "
            "that list is per process: fine for one replica)."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _one_secret(cls, data: Any) -> Any:
        if isinstance(data, dict) and "secret" in data:
            data = dict(data)
            if "secrets" in data:
                raise ValueError("give secret or secrets, not both")
            data["secrets"] = [data.pop("secret")]
        return data

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if not value:
            raise ValueError("at least one secret is required (generate one with `sidecar secret`)")
        for secret in value:
            if len(secret.get_secret_value()) < 32:
                raise ValueError("each secret needs at least 32 characters (use `sidecar secret`)")
        return value

    @field_validator("cookie_name")
    @classmethod
    def _cookie_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_]+", value) or value.startswith("__"):
            raise ValueError("letters, digits and _ only, not starting with __")
        return value

    @model_validator(mode="after")
    def _redis_store(self) -> SessionConfig:
        if self.store == "redis" and self.redis is None:
            raise ValueError("store: redis needs the redis section (url or sentinel)")
        return self


class HeadersConfig(Model):
    """Identity headers sent to the backend. Client-sent copies are always removed first."""

    claims: dict[str, str] = Field(
        default_factory=lambda: {
            "X-Forwarded-User": "user",
            "X-Forwarded-Email": "email",
            "X-Forwarded-Preferred-Username": "username",
            "X-Forwarded-Groups": "groups",
        },
        description=(
            "Header name -> identity field (user, email, username, groups) or claim name (dotted "
            "paths reach nested claims). Lists are comma-joined."
        ),
    )
    access_token: bool = Field(False, description="Send X-Forwarded-Access-Token.")
    authorization: bool = Field(
        False, description="Send Authorization: Bearer <access token> (replacing the client's)."
    )
    strip: tuple[str, ...] = Field(
        (), description="More header names to remove from every incoming request."
    )

    @field_validator("claims")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return value


class AuthConfig(Model):
    """Sign-in behaviour and sidecar's own endpoints."""

    prefix: str = Field(
        "/oauth2", description="Path prefix of sidecar's endpoints (start, callback, ...)."
    )
    allowed_redirect_domains: tuple[str, ...] = Field(
        (),
        description=(
            "Hosts that post-login/post-logout redirects may go to besides sidecar's own origin. "
            "A leading dot allows subdomains: .example.com."
        ),
    )
    sign_in_page: bool = Field(
        False, description="Show a 'Sign in with ...' page instead of redirecting at once."
    )
    provider_name: str = Field("your identity provider", description="Name shown on pages.")
    templates_dir: str | None = Field(
        None, description="Directory with sign_in.html / error.html replacing the built-in pages."
    )
    post_logout_redirect: str = Field("/", description="Where sign-out lands by default.")
    provider_logout: bool = Field(
        True,
        description="On sign-out also end the provider session (RP-initiated logout) if possible.",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError("must look like /oauth2")
        return value


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["json", "text"] = Field(
        "json", description="json for machines, text for humans."
    )


ClaimValue = str | int | bool
"""A value a policy's `claims` rule accepts; compared by type and value."""

_POLICY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
_DOMAIN = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def _no_duplicates(values: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for value in values:
        if not value:
            raise ValueError("empty entries are not allowed")
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


class PolicyConfig(Model):
    """Who may reach a route that names this policy (`policy: NAME` on the route).

    Every rule kind listed must be satisfied (AND); a kind left out is not checked. `emails` and
    `email_domains` together form one rule, satisfied by either list. A policy with no rule at all
    is an error. Reasons for a denial (`policy:NAME:groups_any-missing`, ...) go to the access log.
    """

    emails: tuple[str, ...] = Field(
        (),
        description=(
            "Email addresses allowed (case-insensitive). Together with email_domains one rule: "
            "the user's verified email is listed here or has a listed domain."
        ),
    )
    email_domains: tuple[str, ...] = Field(
        (),
        description=(
            "Email domains allowed: the part after the last @, matched exactly (example.com "
            "never matches evil-example.com). A leading dot allows subdomains only "
            "(.example.com); * allows any verified email."
        ),
    )
    groups_any: tuple[str, ...] = Field(
        (), description="The user must be in at least one of these groups (exact names)."
    )
    groups_all: tuple[str, ...] = Field(
        (), description="The user must be in every one of these groups (exact names)."
    )
    claims: dict[str, tuple[ClaimValue, ...]] = Field(
        default_factory=dict,
        description=(
            "Claim path -> allowed values; every entry must be satisfied. The claim (a dotted "
            "path reaches nested claims: realm_access.roles) must equal one of the values or be a "
            "list holding one. Values compare by type: 3 matches the number, '3' the string."
        ),
    )
    require_email_verified: bool = Field(
        True,
        description=(
            "Email rules accept only an email the provider marked email_verified: true. Turn off "
            "only for a provider that never sends email_verified but verifies every address."
        ),
    )

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _no_duplicates(tuple(email.lower() for email in value))
        for email in value:
            local, at, domain = email.rpartition("@")
            if not (at and local and domain) or any(char.isspace() for char in email):
                raise ValueError(f"{email!r} is not an email address")
        return value

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _no_duplicates(tuple(domain.lower() for domain in value))
        for domain in (domain.lower() for domain in value):
            if domain.startswith("*.") or domain.startswith("@"):
                hint = "." + domain[2:] if domain.startswith("*.") else domain[1:]
                raise ValueError(f"{domain!r}: write {hint!r}")
            if domain != "*" and not _DOMAIN.fullmatch(domain):
                raise ValueError(
                    f"{domain!r} is not a domain (example.com, .example.com for subdomains, or *)"
                )
        return value

    @field_validator("groups_any", "groups_all")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(value)

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, tuple[ClaimValue, ...]]) -> dict[str, tuple[ClaimValue, ...]]:
        for path, values in value.items():
            if not path or path.startswith(".") or path.endswith(".") or ".." in path:
                raise ValueError(f"{path!r} is not a claim name or dotted path")
            if path == "email":
                raise ValueError(
                    "use emails / email_domains for the email: they also require email_verified"
                )
            if not values:
                raise ValueError(f"{path}: list at least one allowed value")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> PolicyConfig:
        rules = (self.emails, self.email_domains, self.groups_any, self.groups_all, self.claims)
        if not any(rules):
            raise ValueError(
                "a policy needs at least one rule: emails, email_domains, groups_any, "
                "groups_all or claims"
            )
        return self


class RouteConfig(Model):
    """One entry of `routes`: which requests it matches and what they need.

    Exactly one of `path`, `exact` or `regex`. Matching sees the path as the backend will (dot
    segments and duplicate slashes resolved, unreserved characters decoded, no query string); a
    path sidecar cannot read unambiguously is refused with 400 before any route is matched.
    """

    name: str | None = Field(None, description="Name in the access log (default: routes[INDEX]).")
    path: str | None = Field(
        None,
        description=(
            "Path prefix, by whole segments: /static matches /static and /static/x, never "
            "/staticfoo. A trailing slash is ignored. / matches everything."
        ),
    )
    exact: str | None = Field(None, description="Exact path: /health matches only /health.")
    regex: str | None = Field(
        None,
        description=(
            "Python regular expression that must match the whole normalised path "
            "(e.g. /api/v[0-9]+/public/.*)."
        ),
    )
    methods: tuple[str, ...] | None = Field(
        None,
        description="HTTP methods matched (e.g. [GET, HEAD]); leave out to match every method.",
    )
    host: str | None = Field(
        None,
        description=(
            "Host matched (without port, case-insensitive): app.example.com, or *.example.com "
            "for every subdomain. Leave out to match every host."
        ),
    )
    access: Literal["public", "authenticated"] = Field(
        "authenticated",
        description=(
            "public: no sign-in (identity headers are still stripped). authenticated: any "
            "signed-in user. To require a policy, set `policy` instead."
        ),
    )
    policy: str | None = Field(
        None, description="Name of a policy (under `policies`) the user must satisfy."
    )
    bearer: bool | None = Field(
        None,
        description="Accept Authorization: Bearer tokens here (None: the global setting).",
    )
    cors_preflight: bool = Field(
        False,
        description="Let CORS preflight requests (OPTIONS with Access-Control-Request-Method) "
        "through to the backend without sign-in.",
    )
    identity_assertion: bool | None = Field(
        None,
        description="Send the signed identity assertion here (None: the global setting).",
    )

    @field_validator("path", "exact")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Imported here: sidecar.routing imports sidecar.policy, which needs this module.
        from sidecar.routing import normalize_path

        if not value.startswith("/"):
            raise ValueError("must start with /")
        normal = normalize_path(value)
        if normal is None or "?" in value:
            raise ValueError(
                "not a path sidecar can match (no query, no encoded / or \\, no ;-hidden dot "
                "segments, escapes must be valid UTF-8)"
            )
        if normal != value:
            raise ValueError(f"write it as requests are matched: {normal}")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one method, or leave methods out to match every one")
        upper = _no_duplicates(tuple(method.upper() for method in value))
        for method in upper:
            if not _METHOD.fullmatch(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return upper

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.lower().rstrip(".")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(
                "not a host name (app.example.com, or *.example.com; no scheme, port or path)"
            )
        return host

    @field_validator("policy")
    @classmethod
    def _policy_name(cls, value: str | None) -> str | None:
        if value is not None and not _POLICY_NAME.fullmatch(value):
            raise ValueError("policy names use letters, digits, _ . and - only")
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> RouteConfig:
        given = [key for key in ("path", "exact", "regex") if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of path, exact or regex (found: {found})")
        if self.policy is not None and self.access == "public":
            raise ValueError("a public route cannot name a policy (leave out access: public)")
        return self


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
