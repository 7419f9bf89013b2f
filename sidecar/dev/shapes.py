"""Replaying a real provider's documented shape with the development provider (tests, demos).

A `ProviderShape` is one recorded fixture set (`load_shape(directory)`): the provider's discovery
document with its real URLs, an ID token payload, a userinfo body, API answers (GitHub's REST API,
Microsoft Graph) and, in `shape.json`, what the documents do not show (which claims a scope
releases, when a refresh token is issued, the token type, opaque access tokens). A
`DevProvider(shape=...)` serves it: every real host collapses onto the provider's origin with the
path kept, so `https://login.microsoftonline.com/common/v2.0` becomes
`http://127.0.0.1:PORT/common/v2.0`; ID tokens carry the shape's issuer (a `{tenantid}`
placeholder filled from the user's `tid`) and the recorded claims. Only `load_shape` does I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WELL_KNOWN_SUFFIX = "/.well-known/openid-configuration"
TENANT_PLACEHOLDER = "{tenantid}"
COMMENT_KEY = "$comment"  # every fixture file says which documented shape it follows

# Claims the provider sets per token (fresh each time), never part of the recorded user.
_PER_TOKEN_CLAIMS = frozenset(
    {"iss", "aud", "azp", "exp", "iat", "nbf", "nonce", "auth_time", "sid", "jti", "uti"}
    | {"at_hash", "c_hash", "s_hash"}
)
# What the dev provider puts in every ID token; a shape keeps those its recording has.
_OPTIONAL_PROTOCOL_CLAIMS = ("azp", "auth_time", "sid")

# Discovery fields naming an endpoint the dev provider serves, by the handler's role.
ENDPOINT_ROLES = (
    "authorization_endpoint",
    "token_endpoint",
    "userinfo_endpoint",
    "jwks_uri",
    "end_session_endpoint",
    "introspection_endpoint",
)

Handler = Callable[..., Any]


def _strip_comments(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_comments(v) for k, v in value.items() if k != COMMENT_KEY}
    if isinstance(value, list):
        return [_strip_comments(item) for item in value]
    return value


def rewrite_url(url: str, origin: str) -> str:
    """`url` moved onto `origin`, path and query kept: how every real host is replayed."""
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    return origin.rstrip("/") + parts.path + query


def _rewrite_all(value: Any, origin: str) -> Any:
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return rewrite_url(value, origin)
    if isinstance(value, dict):
        return {k: _rewrite_all(v, origin) for k, v in value.items()}
    if isinstance(value, list):
        return [_rewrite_all(item, origin) for item in value]
    return value


@dataclass(frozen=True)
class ProviderShape:
    """One provider's documented behaviour, replayed by `DevProvider(shape=...)`."""

    name: str
    discovery: Mapping[str, Any] | None  # None: plain OAuth 2.0 (GitHub), no discovery
    id_token_claims: Mapping[str, Any]  # recorded ID token payload ({} without ID tokens)
    userinfo: Mapping[str, Any]  # recorded userinfo body (GitHub: GET /user)
    discovery_url: str | None = None  # where the document is published, if not issuer + suffix
    endpoints: Mapping[str, str] = field(default_factory=dict)  # without discovery: role -> URL
    api: Mapping[tuple[str, str], Any] = field(default_factory=dict)  # (METHOD, URL) -> JSON
    claims_by_scope: Mapping[str, str] = field(default_factory=dict)  # claim -> scope it needs
    refresh_tokens: bool = True  # False: never a refresh token (GitHub OAuth apps)
    refresh_requires_scope: str | None = None  # e.g. offline_access
    refresh_requires_params: Mapping[str, str] = field(default_factory=dict)  # access_type=offline
    rotate_refresh_tokens: bool = True
    token_type: str = "Bearer"  # noqa: S105 - a token type name, not a secret
    access_token_expires: bool = True  # False: no expires_in, opaque token (GitHub OAuth apps)
    access_token_prefix: str | None = None  # opaque access tokens, e.g. gho_
    audience_param: bool = False  # an `audience` authorize parameter sets the access token aud
    extra_token_response: Mapping[str, Any] = field(default_factory=dict)
    token_errors_with_200: bool = False  # GitHub: token endpoint errors come with HTTP 200

    # -- what the shape is --------------------------------------------------------------------

    @property
    def openid(self) -> bool:
        """True when the provider issues ID tokens (it has a discovery document)."""
        return self.discovery is not None

    @property
    def user(self) -> dict[str, Any]:
        """The recorded user: ID token claims without per-token ones (or the userinfo body)."""
        source = self.id_token_claims if self.openid else self.userinfo
        user = {k: v for k, v in source.items() if k not in _PER_TOKEN_CLAIMS}
        if "sub" not in user:  # the dev provider keys sessions and tokens by sub (GitHub: id)
            user["sub"] = str(user.get("id", user.get("login", "")))
        return user

    @property
    def recorded_issuer(self) -> str | None:
        if self.discovery is None:
            return None
        issuer = self.discovery.get("issuer")
        return issuer if isinstance(issuer, str) else None

    def issuer_template(self, origin: str) -> str | None:
        """The replayed discovery issuer (may hold `{tenantid}`), or None without discovery."""
        recorded = self.recorded_issuer
        return None if recorded is None else rewrite_url(recorded, origin)

    def configured_issuer(self, origin: str) -> str | None:
        """What a relying party configures as its issuer: the discovered one, or (multi-tenant)
        the URL the document is published under."""
        template = self.issuer_template(origin)
        if template is None or TENANT_PLACEHOLDER not in template:
            return template
        assert self.discovery_url is not None  # load_shape requires it for a template issuer
        return rewrite_url(self.discovery_url, origin).removesuffix(WELL_KNOWN_SUFFIX)

    def token_issuer(self, origin: str, user: Mapping[str, Any]) -> str:
        """The `iss` of an ID token for `user`: the issuer, `{tenantid}` filled from `tid`."""
        template = self.issuer_template(origin)
        if template is None:
            return origin
        return template.replace(TENANT_PLACEHOLDER, str(user.get("tid", "")))

    def endpoint(self, role: str, origin: str) -> str | None:
        """The replayed URL of an endpoint (`token_endpoint`, ...), or None when absent."""
        source = self.discovery if self.discovery is not None else self.endpoints
        url = source.get(role)
        return rewrite_url(url, origin) if isinstance(url, str) else None

    @property
    def discovery_path(self) -> str | None:
        if self.discovery is None:
            return None
        if self.discovery_url is not None:
            return urlsplit(self.discovery_url).path
        return urlsplit(self.recorded_issuer or "").path.rstrip("/") + WELL_KNOWN_SUFFIX

    def build_discovery(self, origin: str) -> dict[str, Any]:
        assert self.discovery is not None
        document: dict[str, Any] = _rewrite_all(dict(self.discovery), origin)
        return document

    @property
    def iss_parameter(self) -> bool:
        """Whether authorization responses carry `iss` (RFC 9207), as the document says."""
        return bool(
            self.discovery and self.discovery.get("authorization_response_iss_parameter_supported")
        )

    # -- what the provider releases -----------------------------------------------------------

    def release(self, user: Mapping[str, Any], scopes: frozenset[str]) -> dict[str, Any]:
        """The user's claims the granted scopes release (claims without a scope always)."""
        return {
            name: value
            for name, value in user.items()
            if self.claims_by_scope.get(name) is None or self.claims_by_scope[name] in scopes
        }

    def build_id_token_claims(
        self, base: Mapping[str, Any], user: Mapping[str, Any], scopes: frozenset[str], origin: str
    ) -> dict[str, Any]:
        """The dev provider's ID token claims (`base`, faults applied) in this shape."""
        claims = {k: v for k, v in base.items() if k in _PER_TOKEN_CLAIMS}
        for name in _OPTIONAL_PROTOCOL_CLAIMS:
            if name not in self.id_token_claims:
                claims.pop(name, None)
        if "nbf" in self.id_token_claims:
            claims["nbf"] = base["iat"]
        claims.update(self.release(user, scopes))
        if base.get("iss") == origin:  # not a wrong-issuer fault: the shape's issuer
            claims["iss"] = self.token_issuer(origin, user)
        return claims

    def build_userinfo(self, user: Mapping[str, Any], scopes: frozenset[str]) -> dict[str, Any]:
        """The recorded userinfo body, each field the signed-in user's where they have it; a
        field the ID token recording has but the user lacks is left out (a test removed it)."""
        released = self.release(user, scopes)
        body: dict[str, Any] = {}
        for name, recorded in self.userinfo.items():
            if self.claims_by_scope.get(name) is not None and name not in released:
                continue
            if name in user:
                body[name] = user[name]
            elif self.openid and name not in self.id_token_claims:
                body[name] = recorded  # a userinfo-only field (given_name, locale, ...)
        return body

    def issues_refresh_token(self, scopes: frozenset[str], params: Mapping[str, str]) -> bool:
        if not self.refresh_tokens:
            return False
        if self.refresh_requires_scope is not None and self.refresh_requires_scope not in scopes:
            return False
        return all(params.get(k) == v for k, v in self.refresh_requires_params.items())

    def access_token_audience(self, params: Mapping[str, str], origin: str) -> list[str] | None:
        """Auth0: with `audience=API`, the access token is for that API (and userinfo)."""
        audience = params.get("audience")
        if not self.audience_param or not audience:
            return None
        userinfo = self.endpoint("userinfo_endpoint", origin)
        return [audience, *([userinfo] if userinfo else [])]

    def build_token_response(self, body: dict[str, Any]) -> dict[str, Any]:
        """The dev provider's token response in this shape (no ID token for plain OAuth 2.0)."""
        shaped = dict(body)
        if not self.openid:
            shaped.pop("id_token", None)
        if not self.access_token_expires:
            shaped.pop("expires_in", None)
        shaped["token_type"] = self.token_type
        shaped["access_token"] = self.wrap_access_token(shaped["access_token"])
        shaped.update(self.extra_token_response)
        return shaped

    def wrap_access_token(self, token: str) -> str:
        """An opaque-looking access token (`gho_...`) when the provider issues those."""
        if self.access_token_prefix is None:
            return token
        return self.access_token_prefix + base64.urlsafe_b64encode(token.encode()).decode()

    def unwrap_access_token(self, token: str) -> str:
        if self.access_token_prefix is None or not token.startswith(self.access_token_prefix):
            return token
        try:
            return base64.urlsafe_b64decode(token[len(self.access_token_prefix) :]).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""

    # -- where it is served -------------------------------------------------------------------

    def routes(self) -> list[tuple[str, str]]:
        """(path, role) for each endpoint and the discovery document; roles as in discovery."""
        found: list[tuple[str, str]] = []
        if self.discovery_path is not None:
            found.append((self.discovery_path, "discovery"))
        source = self.discovery if self.discovery is not None else self.endpoints
        for role in ENDPOINT_ROLES:
            url = source.get(role)
            if isinstance(url, str):
                found.append((urlsplit(url).path, role))
        return found

    def new_routes(self, taken: Mapping[str, str]) -> list[tuple[str, str]]:
        """The shape's (path, role) pairs not already served by `taken` (path -> role);
        ValueError when a path would need two roles."""
        served = dict(taken)
        found: list[tuple[str, str]] = []
        for path, role in self.routes():
            if path in served:
                if served[path] != role:
                    raise ValueError(f"shape {self.name}: {path} is {role} and {served[path]}")
                continue
            served[path] = role
            found.append((path, role))
        return found

    def shaped_token_handler(self, handler: Handler) -> Handler:
        """The token endpoint handler, answering errors with HTTP 200 where the provider does."""
        if not self.token_errors_with_200:
            return handler

        async def token(request: Any) -> Any:
            response = await handler(request)
            if response.status == 400:  # an OAuth error body: keep it, say 200 like GitHub
                response.set_status(200)
            return response

        return token

    def api_routes(self) -> list[tuple[str, str, Any]]:
        """(method, path, JSON body) of the API answers the shape replays."""
        return [(method, urlsplit(url).path, body) for (method, url), body in self.api.items()]


def _read_json(path: Path) -> Any:
    return _strip_comments(json.loads(path.read_text(encoding="utf-8")))


def load_shape(directory: str | Path) -> ProviderShape:
    """A shape from a fixture directory: `shape.json` (name, behaviour, API answers by file),
    `discovery.json` (absent: plain OAuth 2.0), `id_token_claims.json`, `userinfo.json`."""
    root = Path(directory)
    spec: dict[str, Any] = _read_json(root / "shape.json")
    discovery_file = root / "discovery.json"
    discovery = _read_json(discovery_file) if discovery_file.exists() else None
    id_file = root / "id_token_claims.json"
    id_claims = _read_json(id_file) if id_file.exists() else {}
    api = {
        (key.split(" ", 1)[0], key.split(" ", 1)[1]): _read_json(root / name)
        for key, name in spec.pop("api", {}).items()
    }
    shape = ProviderShape(
        discovery=discovery,
        id_token_claims=id_claims,
        userinfo=_read_json(root / "userinfo.json"),
        api=api,
        **spec,
    )
    issuer = shape.recorded_issuer
    if issuer is not None and TENANT_PLACEHOLDER in issuer and shape.discovery_url is None:
        raise ValueError(f"{root}: a {TENANT_PLACEHOLDER} issuer needs discovery_url")
    if discovery is None and not shape.endpoints:
        raise ValueError(f"{root}: without discovery.json, shape.json lists endpoints")
    return shape
