"""The development OpenID provider (NOT FOR PRODUCTION): aiohttp endpoints over an in-memory state.

`DevProvider` serves discovery, JWKS, authorize (a sign-in form that accepts any name, or
`auto_login` claims for tests), token (authorization_code with PKCE S256, refresh_token with
optional one-time rotation, strict client authentication), userinfo, end_session and introspect.
It powers `sidecar demo` / `sidecar dev-provider` and is sidecar's fake provider in tests: flip
knobs on `provider.faults` between requests to make it misbehave and read `provider.counters`.
Tokens are built in `provider_tokens`, state lives in `provider_grants`, pages in `provider_pages`.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from aiohttp import web

from sidecar.dev import provider_pages
from sidecar.dev.faults import Counters, Faults
from sidecar.dev.keys import SigningKeys
from sidecar.dev.provider_clients import DevClient
from sidecar.dev.provider_grants import BrowserSession, Grant, GrantStore
from sidecar.dev.provider_token_endpoints import (
    INTROSPECT_PATH,
    NO_STORE,
    PKCE_VERIFIER,
    TOKEN_PATH,
    USERINFO_PATH,
    TokenEndpoints,
)
from sidecar.dev.provider_tokens import WRONG_ISSUER, build_user, read_own_token
from sidecar.dev.shapes import ProviderShape
from sidecar.oidc.entra import read_unverified_claims

log = logging.getLogger("sidecar.dev.provider")

SESSION_COOKIE = "_devprovider_session"
DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/jwks"
AUTHORIZE_PATH = "/authorize"
END_SESSION_PATH = "/end_session"
NOT_FOR_PRODUCTION = "development OpenID provider - NOT FOR PRODUCTION"
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

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this provider (mount at the issuer's origin)."""
        log.warning("%s: it signs in anyone, with no password", NOT_FOR_PRODUCTION)
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(DISCOVERY_PATH, self._discovery)
        app.router.add_get(JWKS_PATH, self._jwks)
        app.router.add_route("GET", AUTHORIZE_PATH, self._authorize)
        app.router.add_route("POST", AUTHORIZE_PATH, self._authorize)
        app.router.add_post(TOKEN_PATH, self._tokens.token)
        app.router.add_route("GET", USERINFO_PATH, self._tokens.userinfo)
        app.router.add_route("POST", USERINFO_PATH, self._tokens.userinfo)
        app.router.add_route("GET", END_SESSION_PATH, self._end_session)
        app.router.add_route("POST", END_SESSION_PATH, self._end_session)
        app.router.add_post(INTROSPECT_PATH, self._tokens.introspect)
        if self.shape is not None:
            self._add_shape_routes(app, self.shape)
        return app

    def _add_shape_routes(self, app: web.Application, shape: ProviderShape) -> None:
        """Serve the shape's endpoint paths (and API answers) with the same handlers."""
        handlers: dict[str, tuple[Callable[[web.Request], Any], tuple[str, ...]]] = {
            "discovery": (self._discovery, ("GET",)),
            "jwks_uri": (self._jwks, ("GET",)),
            "authorization_endpoint": (self._authorize, ("GET", "POST")),
            "token_endpoint": (self._tokens.token, ("POST",)),
            "userinfo_endpoint": (self._tokens.userinfo, ("GET", "POST")),
            "end_session_endpoint": (self._end_session, ("GET", "POST")),
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

    def _redirect_back(self, redirect_uri: str, state: str | None, **values: str) -> web.Response:
        """Authorization response to the client, with `iss` (RFC 9207)."""
        query = dict(values)
        if state is not None:
            query["state"] = state
        issuer: str | None = self.issuer
        if self.shape is not None:  # RFC 9207 iss only where the shape's document says so
            issuer = self.shape.configured_issuer(self.issuer) if self.shape.iss_parameter else None
        if issuer is not None:
            query["iss"] = WRONG_ISSUER if self.faults.callback_wrong_issuer else issuer
        separator = "&" if "?" in redirect_uri else "?"
        return _redirect(redirect_uri + separator + urlencode(query))

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

    async def _authorize(self, request: web.Request) -> web.Response:
        self.counters.authorize += 1
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        client = self.clients.get(params.get("client_id", ""))
        if client is None:
            return _page(400, "Unknown client", "The client_id is not registered here.")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _page(400, "Bad redirect_uri", "redirect_uri is not registered for the client.")
        state = params.get("state")
        scopes = frozenset(params.get("scope", "").split())
        challenge = params.get("code_challenge")
        if params.get("response_type") != "code":
            return self._redirect_back(redirect_uri, state, error="unsupported_response_type")
        if "openid" not in scopes and (self.shape is None or self.shape.openid):
            error = "invalid_scope"
            return self._redirect_back(
                redirect_uri, state, error=error, error_description="no openid"
            )
        if challenge is not None and (
            params.get("code_challenge_method") != "S256" or not PKCE_VERIFIER.fullmatch(challenge)
        ):
            description = "only code_challenge_method=S256 with a valid challenge is accepted"
            return self._redirect_back(
                redirect_uri, state, error="invalid_request", error_description=description
            )
        if challenge is None and (self.require_pkce or client.auth_method == "none"):
            description = "PKCE (code_challenge, S256) is required"
            return self._redirect_back(
                redirect_uri, state, error="invalid_request", error_description=description
            )
        if self.faults.authorize_error:
            return self._redirect_back(
                redirect_uri,
                state,
                error=self.faults.authorize_error,
                error_description="dev provider fault",
            )
        session = self._session_for(request, params)
        if session is None:
            if "none" in params.get("prompt", "").split():
                return self._redirect_back(redirect_uri, state, error="login_required")
            form = provider_pages.render_login_form(
                action=AUTHORIZE_PATH,
                client_id=client.client_id,
                request_params={k: v for k, v in params.items() if k in _FORWARDED_PARAMS},
                default_name=params.get("login_hint", ""),
            )
            return web.Response(text=form, content_type="text/html", headers=NO_STORE)
        grant = Grant(client.client_id, session, scopes, params.get("nonce"), params=params)
        code = self.grants.issue_code(
            grant, redirect_uri=redirect_uri, code_challenge=challenge, now=self.clock()
        )
        response = self._redirect_back(redirect_uri, state, code=code)
        response.set_cookie(
            SESSION_COOKIE,
            session.sid,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self.issuer.startswith("https:"),
        )
        return response

    def _session_for(self, request: web.Request, params: dict[str, str]) -> BrowserSession | None:
        """The provider session to authorize with: a form post, the cookie's, or auto login."""
        now = self.clock()
        if request.method == "POST" and params.get("username", "").strip():
            user = build_user(
                {
                    "sub": params["username"].strip(),
                    "email": params.get("email", "").strip(),
                    "groups": [g.strip() for g in params.get("groups", "").split(",") if g.strip()],
                }
            )
            return self._signed_in(user, now)
        existing = self.grants.session(request.cookies.get(SESSION_COOKIE))
        max_age = params.get("max_age", "")
        too_old = (
            max_age.isdigit() and existing is not None and now - existing.auth_time > int(max_age)
        )
        if existing is not None and "login" not in params.get("prompt", "").split() and not too_old:
            return existing
        if self.auto_login is not None:
            # A shape's user is exactly the recorded claims, without the dev provider's defaults.
            user = dict(self.auto_login) if self.shape is not None else build_user(self.auto_login)
            return self._signed_in(user, now)
        return None

    def _signed_in(self, user: dict[str, Any], now: float) -> BrowserSession:
        self.counters.logins += 1
        log.info("%s: signed in %s", NOT_FOR_PRODUCTION, user["sub"])
        return self.grants.start_session(user, now=now)

    async def _end_session(self, request: web.Request) -> web.Response:
        self.counters.end_session += 1
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        hint = params.get("id_token_hint")
        hint_claims = None
        if hint:
            now = self.clock()
            issuer = self.issuer
            if self.shape is not None:  # the hint carries the shape's issuer, maybe per tenant
                issuer = self.shape.token_issuer(self.issuer, read_unverified_claims(hint))
            hint_claims = read_own_token(
                hint, self.keys, issuer=issuer, now=now, check_expiry=False
            )
            if hint_claims is None:
                return _page(400, "Bad id_token_hint", "The id_token_hint was not issued here.")
        client_id = params.get("client_id")
        if hint_claims is not None:
            aud = hint_claims.get("aud")
            hinted = str(hint_claims.get("azp") or (aud[0] if isinstance(aud, list) else aud))
            if client_id is not None and client_id != hinted:
                return _page(400, "Bad client_id", "client_id does not match the id_token_hint.")
            client_id = hinted
        target = params.get("post_logout_redirect_uri")
        if target is not None:
            client = self.clients.get(client_id or "")
            if client is None:
                message = "post_logout_redirect_uri needs an id_token_hint or client_id."
                return _page(400, "Unknown client", message)
            if target not in client.post_logout_redirect_uris:
                message = "post_logout_redirect_uri is not registered for this client."
                return _page(400, "Bad post_logout_redirect_uri", message)
        for sid in (request.cookies.get(SESSION_COOKIE), (hint_claims or {}).get("sid")):
            if isinstance(sid, str) and sid:
                self.grants.end_session(sid)
        if target is not None:
            state = params.get("state")
            suffix = (
                ""
                if state is None
                else ("&" if "?" in target else "?") + urlencode({"state": state})
            )
            response = _redirect(target + suffix)
        else:
            response = web.Response(
                text=provider_pages.render_signed_out(), content_type="text/html"
            )
        response.del_cookie(SESSION_COOKIE, path="/")
        return response


_FORWARDED_PARAMS = frozenset(
    {
        *("client_id", "redirect_uri", "response_type", "scope", "state", "nonce"),
        *("code_challenge", "code_challenge_method", "login_hint", "max_age"),
    }
)


def _redirect(location: str) -> web.Response:
    return web.Response(status=302, headers={"Location": location, **NO_STORE})


def _page(status: int, title: str, message: str) -> web.Response:
    text = provider_pages.render_error(title, message)
    return web.Response(status=status, text=text, content_type="text/html")
