"""The development OpenID provider (NOT FOR PRODUCTION): aiohttp endpoints over an in-memory state.

`DevProvider` serves discovery, JWKS, authorize (a sign-in form that accepts any name, or
`auto_login` claims for tests), token (authorization_code with PKCE S256, refresh_token with
optional one-time rotation, strict client authentication), userinfo, end_session and introspect.
It powers `sidecar demo` / `sidecar dev-provider` and is sidecar's fake provider in tests: flip
knobs on `provider.faults` between requests to make it misbehave and read `provider.counters`.
Tests also mint what a provider hands out elsewhere: `mint_access_token` (a JWT for an API, as
its clients send it) and `mint_logout_token` (a back-channel logout token), in the shape's issuer.
The browser-facing endpoints (authorize, end_session) are in `provider_browser_endpoints`, the
back-channel ones (token, userinfo, introspect) in `provider_token_endpoints`; tokens are built in
`provider_tokens`, state lives in `provider_grants`, pages in `provider_pages`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from sidecar.dev.faults import Counters, Faults
from sidecar.dev.keys import SigningKeys
from sidecar.dev.provider_browser_endpoints import (
    AUTHORIZE_PATH,
    END_SESSION_PATH,
    BrowserEndpoints,
)
from sidecar.dev.provider_clients import DevClient
from sidecar.dev.provider_grants import GrantStore
from sidecar.dev.provider_pages import NOT_FOR_PRODUCTION
from sidecar.dev.provider_token_endpoints import (
    INTROSPECT_PATH,
    TOKEN_PATH,
    USERINFO_PATH,
    TokenEndpoints,
)
from sidecar.dev.provider_tokens import (
    WRONG_ISSUER,
    build_api_access_token_claims,
    build_logout_token_claims,
    sign_token,
)
from sidecar.dev.shapes import ProviderShape

log = logging.getLogger("sidecar.dev.provider")

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
_AUTH_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]


class DevProvider:
    """An honest little OpenID provider whose `faults` make it dishonest on request.

    Standalone: `issuer = await provider.start("127.0.0.1", 0)` binds a free port and fixes the
    issuer; `await provider.stop()`. In pytest: `server = await aiohttp_server(provider.app())`,
    then `provider.issuer = str(server.make_url(""))` (without it, the first request's origin is
    taken). Register clients whose URLs are known only later with `add_client`.
    """

    def __init__(
        self,
        issuer: str | None = None,
        clients: Sequence[DevClient] = (),
        *,
        clock: Callable[[], float] = time.time,
        access_token_ttl: int = 300,
        id_token_ttl: int = 300,
        rotate_refresh_tokens: bool = True,
        issue_refresh_tokens: bool = True,
        require_pkce: bool = True,
        auto_login: Mapping[str, Any] | None = None,
        token_urlsafe: Callable[[int], str] = secrets.token_urlsafe,
        shape: ProviderShape | None = None,
        opaque_access_tokens: bool = False,
    ) -> None:
        self._issuer: str | None = None
        if issuer:
            self.issuer = issuer
        self.clients: dict[str, DevClient] = {client.client_id: client for client in clients}
        self.clock = clock
        self.access_token_ttl = access_token_ttl
        self.id_token_ttl = id_token_ttl
        self.rotate_refresh_tokens = rotate_refresh_tokens
        self.issue_refresh_tokens = issue_refresh_tokens
        self.require_pkce = require_pkce
        self.auto_login: dict[str, Any] | None = dict(auto_login) if auto_login else None
        # A real provider's documented shape to replay (sidecar.dev.shapes); None: our own.
        self.shape = shape
        # Opaque (reference) access tokens, valid at userinfo and introspection, instead of JWTs.
        self.opaque_access_tokens = opaque_access_tokens
        if shape is not None:
            self.rotate_refresh_tokens = shape.rotate_refresh_tokens
        self.faults = Faults()
        self.counters = Counters()
        self.keys = SigningKeys()
        self.grants = GrantStore(token_urlsafe)
        self._tokens = TokenEndpoints(self)
        self._browser = BrowserEndpoints(self)
        self._runner: web.AppRunner | None = None

    # -- set-up ------------------------------------------------------------------------------

    @property
    def issuer(self) -> str:
        if self._issuer is None:
            raise RuntimeError("issuer is not known yet: call start() or set provider.issuer")
        return self._issuer

    @issuer.setter
    def issuer(self, value: str) -> None:
        parts = urlsplit(value.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            raise ValueError("the dev provider's issuer is an origin: http(s)://host[:port]")
        self._issuer = value.rstrip("/")

    def add_client(self, client: DevClient) -> None:
        """Register a client, replacing one with the same id (e.g. once sidecar's port is known)."""
        self.clients[client.client_id] = client

    def rotate_keys(self) -> str:
        """Sign with a new key from now on; the JWKS drops the old one. Returns the new kid."""
        return self.keys.rotate()

    def url(self, path: str) -> str:
        return self.issuer + path

    # -- tokens a test hands to sidecar itself -------------------------------------------------

    def token_issuer(self, user: Mapping[str, Any]) -> str:
        """The `iss` of this provider's tokens for `user`: the shape's issuer (a multi-tenant
        `{tenantid}` filled from the user's `tid`), else the issuer."""
        return self.shape.token_issuer(self.issuer, user) if self.shape else self.issuer

    def mint_access_token(
        self,
        audience: str,
        *,
        user: Mapping[str, Any] | None = None,
        client_id: str = "dev-api-client",
        scope: str = "",
        changes: Mapping[str, Any] | None = None,
    ) -> str:
        """A JWT access token for the API `audience`, signed with the current key, as a client
        obtains one to call that API: `user` (default: the `auto_login` user) with this
        provider's (or shape's) issuer. `changes` set claims (None: remove), to misbehave."""
        user = self._token_user(user)
        claims = build_api_access_token_claims(
            user=user,
            issuer=self.token_issuer(user),
            audience=audience,
            client_id=client_id,
            scope=scope,
            jti=self.grants.new_id(),
            now=self.clock(),
            ttl_seconds=self.access_token_ttl,
        )
        return sign_token(_changed(claims, changes), self.keys, typ="at+jwt")

    def mint_logout_token(
        self,
        client_id: str,
        *,
        user: Mapping[str, Any] | None = None,
        sid: str | None = None,
        changes: Mapping[str, Any] | None = None,
    ) -> str:
        """A back-channel logout token for `client_id` (what the provider POSTs to its
        `backchannel_logout_uri`): every session of `user` (default: the `auto_login` user), or
        only provider session `sid`. A shape's tokens carry its issuer, tenant filled in."""
        user = self._token_user(user)
        claims = build_logout_token_claims(
            issuer=self.token_issuer(user),
            client_id=client_id,
            sub=None if sid is not None else str(user["sub"]),
            sid=sid,
            jti=self.grants.new_id(),
            now=self.clock(),
        )
        if self.shape is not None and "tid" in user:
            claims["tid"] = user["tid"]  # Entra: every token names its tenant
        return sign_token(_changed(claims, changes), self.keys, typ="logout+jwt")

    def _token_user(self, user: Mapping[str, Any] | None) -> dict[str, Any]:
        chosen = dict(user if user is not None else self.auto_login or {})
        if "sub" not in chosen:
            raise ValueError("a minted token needs a user with sub (or auto_login)")
        return chosen

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this provider (mount at the issuer's origin)."""
        log.warning("%s: it signs in anyone, with no password", NOT_FOR_PRODUCTION)
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(DISCOVERY_PATH, self._discovery)
        app.router.add_get(JWKS_PATH, self._jwks)
        app.router.add_route("GET", AUTHORIZE_PATH, self._browser.authorize)
        app.router.add_route("POST", AUTHORIZE_PATH, self._browser.authorize)
        app.router.add_post(TOKEN_PATH, self._tokens.token)
        app.router.add_route("GET", USERINFO_PATH, self._tokens.userinfo)
        app.router.add_route("POST", USERINFO_PATH, self._tokens.userinfo)
        app.router.add_route("GET", END_SESSION_PATH, self._browser.end_session)
        app.router.add_route("POST", END_SESSION_PATH, self._browser.end_session)
        app.router.add_post(INTROSPECT_PATH, self._tokens.introspect)
        if self.shape is not None:
            self._add_shape_routes(app, self.shape)
        return app

    def _add_shape_routes(self, app: web.Application, shape: ProviderShape) -> None:
        """Serve the shape's endpoint paths (and API answers) with the same handlers."""
        handlers: dict[str, tuple[Callable[[web.Request], Any], tuple[str, ...]]] = {
            "discovery": (self._discovery, ("GET",)),
            "jwks_uri": (self._jwks, ("GET",)),
            "authorization_endpoint": (self._browser.authorize, ("GET", "POST")),
            "token_endpoint": (self._tokens.token, ("POST",)),
            "userinfo_endpoint": (self._tokens.userinfo, ("GET", "POST")),
            "end_session_endpoint": (self._browser.end_session, ("GET", "POST")),
            "introspection_endpoint": (self._tokens.introspect, ("POST",)),
        }
        taken = {
            DISCOVERY_PATH: "discovery",
            JWKS_PATH: "jwks_uri",
            AUTHORIZE_PATH: "authorization_endpoint",
            TOKEN_PATH: "token_endpoint",
            USERINFO_PATH: "userinfo_endpoint",
            END_SESSION_PATH: "end_session_endpoint",
            INTROSPECT_PATH: "introspection_endpoint",
        }
        for path, role in shape.new_routes(taken):
            handler, methods = handlers[role]
            if role == "token_endpoint":
                handler = shape.shaped_token_handler(handler)
            for method in methods:
                app.router.add_route(method, path, handler)
        for method, path, body in shape.api_routes():
            app.router.add_route(method, path, self._tokens.api_answer(body))

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Listen on host:port (0 = any free port); fix the issuer if unset; return the issuer."""
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound = self._runner.addresses[0][1]
        if self._issuer is None:
            shown = f"[{host}]" if ":" in host else host
            self.issuer = f"http://{shown}:{bound}"
        log.warning("%s: listening at %s", NOT_FOR_PRODUCTION, self.issuer)
        return self.issuer

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing ------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if self._issuer is None:  # served by a test server that never told us its URL
            self.issuer = str(request.url.origin())
        if self.faults.down:
            response: web.StreamResponse = web.json_response(
                {"error": "temporarily_unavailable", "error_description": "provider is down"},
                status=503,
            )
        else:
            response = await handler(request)
        response.headers["X-Dev-Provider"] = "NOT FOR PRODUCTION"
        return response

    # -- endpoints -----------------------------------------------------------------------------

    async def _discovery(self, request: web.Request) -> web.Response:
        self.counters.discovery += 1
        if self.shape is not None and self.shape.discovery is not None:
            document = self.shape.build_discovery(self.issuer)
            if self.faults.discovery_wrong_issuer:
                document["issuer"] = WRONG_ISSUER
            return web.json_response(document)
        issuer = WRONG_ISSUER if self.faults.discovery_wrong_issuer else self.issuer
        return web.json_response(
            {
                "issuer": issuer,
                "authorization_endpoint": self.url(AUTHORIZE_PATH),
                "token_endpoint": self.url(TOKEN_PATH),
                "userinfo_endpoint": self.url(USERINFO_PATH),
                "jwks_uri": self.url(JWKS_PATH),
                "end_session_endpoint": self.url(END_SESSION_PATH),
                "introspection_endpoint": self.url(INTROSPECT_PATH),
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "grant_types_supported": ["authorization_code", "refresh_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "scopes_supported": ["openid", "profile", "email", "groups", "offline_access"],
                "claims_supported": [
                    *("sub", "iss", "aud", "exp", "iat", "auth_time", "nonce", "azp", "sid"),
                    *("name", "preferred_username", "email", "email_verified", "groups"),
                ],
                "token_endpoint_auth_methods_supported": _AUTH_METHODS,
                "token_endpoint_auth_signing_alg_values_supported": ["RS256", "PS256", "ES256"],
                "code_challenge_methods_supported": ["S256"],
                "authorization_response_iss_parameter_supported": True,
                "dev_provider_warning": NOT_FOR_PRODUCTION,
            }
        )

    async def _jwks(self, request: web.Request) -> web.Response:
        self.counters.jwks += 1
        return web.json_response(self.keys.public_jwks(extra_key=self.faults.publish_extra_key))


def _changed(claims: dict[str, Any], changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """`claims` with `changes` applied: a value sets the claim, None removes it."""
    for name, value in (changes or {}).items():
        if value is None:
            claims.pop(name, None)
        else:
            claims[name] = value
    return claims
