"""API and machine clients at the gate: the credential in `Authorization`, instead of a cookie.

`ApiClients.authenticate(request, route)` looks at the request's `Authorization` header once:
- `Bearer <token>` on a route that accepts bearer tokens (the route's `bearer:`, else
  `api.bearer.enabled`) is checked by `sidecar.auth.bearer`; on any other route the header is
  ignored and the request is treated as any other without a session (programs get 401).
- `Basic <user:password>` is checked against the htpasswd users (`sidecar.auth.htpasswd`) when
  they are configured, on every route that needs sign-in.
A valid credential gives an `ApiClient` (identity, how it was established, whether the header
goes on upstream); the gate then applies the route's policy exactly as for a session. A credential
that fails is answered here and now with 401 JSON — `WWW-Authenticate: Bearer error="invalid_token"`
(RFC 6750) or a `Basic` challenge — never with a sign-in redirect and never by falling back to a
cookie: whoever sent it is a program. Several `Authorization` headers are refused the same way.

Upstream, a Basic header is always removed (the password is sidecar's, not the backend's); a
bearer token is passed on unless `api.bearer.pass_authorization: false` (the backend is the
token's audience and may check it itself, as with oauth2-proxy). Identity headers built from the
token's claims are added in both cases.

`is_cors_preflight` recognises a CORS preflight (`OPTIONS` with `Origin` and
`Access-Control-Request-Method`), which routes with `cors_preflight: true` let through unsigned.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from aiohttp import web
from joserfc.jwk import KeySet

from sidecar import keys
from sidecar.auth.bearer import BearerVerifier, build_trusted_issuers, parse_bearer
from sidecar.auth.htpasswd import HtpasswdUsers, parse_basic_credentials
from sidecar.auth.introspection import Introspector
from sidecar.auth.issuers import IssuerKeys
from sidecar.config.model import SidecarConfig
from sidecar.errors import InvalidTokenError, ProviderUnavailableError
from sidecar.routing import Route
from sidecar.session.model import Identity

if TYPE_CHECKING:
    from sidecar.auth.services import AuthServices

log = logging.getLogger(__name__)

BEARER_INVALID = 'Bearer realm="sidecar", error="invalid_token"'
BEARER_INSUFFICIENT = 'Bearer realm="sidecar", error="insufficient_scope"'
BASIC_CHALLENGE = 'Basic realm="sidecar", charset="UTF-8"'
AUTHORIZATION = "authorization"
_NO_STORE = ("Cache-Control", "no-store")
_ERROR_CLASSES: dict[int, type[web.HTTPException]] = {
    401: web.HTTPUnauthorized,
    403: web.HTTPForbidden,
}


@dataclass(frozen=True)
class ApiClient:
    """A program that authenticated with its own credential."""

    identity: Identity
    via: Literal["bearer", "basic"]
    access_token: str | None = None
    drop_authorization: bool = False


def is_cors_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """A CORS preflight (Fetch standard): OPTIONS with Origin and Access-Control-Request-Method."""
    return (
        method == "OPTIONS" and "Origin" in headers and "Access-Control-Request-Method" in headers
    )


def json_error(
    request: web.Request,
    status: int,
    code: str,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
) -> web.HTTPException:
    """The error as JSON whatever the client asked for (`{"error", "message", "request_id"}`,
    as `sidecar.error_adapter` answers), for answers that must never be a page or a redirect."""
    body = {"error": code, "message": message, "request_id": request.get(keys.REQUEST_ID, "")}
    error_class = {401: web.HTTPUnauthorized, 403: web.HTTPForbidden}.get(
        status, web.HTTPBadRequest
    )
    return error_class(
        text=json.dumps(body),
        content_type="application/json",
        headers=[*headers, _NO_STORE],
    )


class ApiClients:
    """The credentials programs may present, built once; `bearer` is set when the app starts
    (its key caches need the running loop)."""

    def __init__(
        self,
        config: SidecarConfig,
        *,
        htpasswd: HtpasswdUsers | None,
        bearer: BearerVerifier | None = None,
    ) -> None:
        self._bearer_default = config.api.bearer.enabled
        self._pass_bearer = config.api.bearer.pass_authorization
        self._bearer_anywhere = config.bearer_anywhere
        self.htpasswd = htpasswd
        self.bearer = bearer

    def bearer_on(self, route: Route) -> bool:
        """Whether `route` accepts bearer tokens."""
        return route.bearer if route.bearer is not None else self._bearer_default

    async def authenticate(self, request: web.Request, route: Route) -> ApiClient | None:
        """The program's identity from its `Authorization` header; None when the header is absent
        or not a credential this route takes (then the session decides). Raises the 401."""
        values = request.headers.getall("Authorization", ())
        if not values:
            return None
        scheme = values[0].lstrip().partition(" ")[0].lower()
        if scheme == "bearer" and self._bearer_anywhere and self.bearer_on(route):
            if len(values) > 1:
                raise self._refused(request, "authorization-repeated", BEARER_INVALID)
            return await self._bearer(request, values[0])
        if scheme == "basic" and self.htpasswd is not None:
            if len(values) > 1:
                raise self._refused(request, "authorization-repeated", BASIC_CHALLENGE)
            return await self._basic(request, self.htpasswd, values[0])
        return None

    async def _bearer(self, request: web.Request, value: str) -> ApiClient:
        token = parse_bearer(value)
        if token is None:
            raise self._refused(request, "bearer-malformed", BEARER_INVALID)
        if self.bearer is None:  # only before the app has started
            raise ProviderUnavailableError(reason="bearer verification not started")
        try:
            identity = await self.bearer.identity(token)
        except InvalidTokenError as exc:
            raise self._refused(request, "bearer-invalid", BEARER_INVALID, exc.reason) from None
        return ApiClient(identity, "bearer", token, drop_authorization=not self._pass_bearer)

    async def _basic(self, request: web.Request, users: HtpasswdUsers, value: str) -> ApiClient:
        credentials = parse_basic_credentials(value)
        if credentials is None:
            raise self._refused(request, "basic-malformed", BASIC_CHALLENGE)
        identity = await users.verify(*credentials)
        if identity is None:
            raise self._refused(request, "basic-invalid", BASIC_CHALLENGE)
        return ApiClient(identity, "basic", None, drop_authorization=True)

    @staticmethod
    def _refused(
        request: web.Request, reason: str, challenge: str, detail: str = ""
    ) -> web.HTTPException:
        fields = request[keys.ACCESS_LOG_FIELDS]
        fields.update(decision="deny", reasons=f"{reason},user-unauthenticated")
        fields["error"] = InvalidTokenError.code
        # The detail names the failed check (exp, aud, signature, ...); never the token itself.
        log.info("credential refused: %s%s", reason, f": {detail[:200]}" if detail else "")
        return json_error(
            request,
            401,
            InvalidTokenError.code,
            InvalidTokenError.message,
            [("WWW-Authenticate", challenge)],
        )


def insufficient(request: web.Request, client: ApiClient) -> web.HTTPException:
    """The 403 for a program whose identity the route's policy denies (JSON, RFC 6750 3.1)."""
    challenge = [("WWW-Authenticate", BEARER_INSUFFICIENT)] if client.via == "bearer" else []
    return json_error(
        request,
        403,
        "forbidden",
        "The credential is valid, but not allowed here.",
        challenge,
    )


def _bearer_context(
    clients: ApiClients, services: AuthServices
) -> Callable[[web.Application], AsyncIterator[None]]:
    """Build the bearer verifier inside the running app: its HTTP client (for trusted issuers'
    keys) and caches live as long as the app; issuers' keys start loading in the background."""
    config = services.config
    bearer = config.api.bearer
    provider = services.provider

    async def provider_keys(kid: str | None) -> KeySet:
        return await services.require_directory().key_set(kid)

    def provider_template() -> str | None:  # Entra multi-tenant: known once discovered
        return services.require_directory().metadata().issuer_template

    async def ask(token: str) -> Mapping[str, Any]:
        endpoint = bearer.introspection.endpoint
        if endpoint is None:
            endpoint = services.require_directory().metadata().introspection_endpoint
        if endpoint is None:
            raise ProviderUnavailableError(
                reason="the provider has no introspection_endpoint; "
                "set api.bearer.introspection.endpoint"
            )
        return await services.require_client().introspect(token, endpoint=endpoint)

    async def context(app: web.Application) -> AsyncIterator[None]:
        http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        issuer_keys = [
            IssuerKeys(extra, http, clock=services.clock) for extra in bearer.trusted_issuers
        ]
        prefetches = [asyncio.create_task(keys_.prefetch()) for keys_ in issuer_keys]
        introspector = None
        if bearer.introspection.enabled:
            introspector = Introspector(
                ask,
                issuer=lambda: provider.issuer,
                audiences=bearer.audiences,
                cache_seconds=bearer.introspection.cache_seconds,
                cache_max_entries=bearer.introspection.cache_max_entries,
                leeway=provider.clock_skew_seconds,
                clock=services.clock,
            )
        clients.bearer = BearerVerifier(
            bearer,
            issuers=build_trusted_issuers(
                bearer,
                provider_issuer=provider.issuer,
                provider_keys=provider_keys,
                provider_claims=provider.claims,
                issuer_keys=issuer_keys,
                provider_template=provider_template,
                entra=provider.entra,
            ),
            introspector=introspector,
            provider_claims=provider.claims,
            leeway=provider.clock_skew_seconds,
            clock=services.clock,
        )
        try:
            yield
        finally:
            clients.bearer = None
            for task in prefetches:
                task.cancel()
            await asyncio.gather(*prefetches, return_exceptions=True)
            await http.close()

    return context


def setup_api_clients(app: web.Application, services: AuthServices) -> ApiClients | None:
    """The credentials programs may use, per `api` (None when neither bearer tokens nor htpasswd
    users are configured); the bearer verifier is built when the app starts."""
    config = services.config
    api = config.api
    if not config.bearer_anywhere and api.htpasswd is None:
        return None
    htpasswd = None
    if api.htpasswd is not None:
        htpasswd = HtpasswdUsers.from_text(
            api.htpasswd.get_secret_value(), api.htpasswd_groups, clock=services.clock
        )
    clients = ApiClients(config, htpasswd=htpasswd)
    if config.bearer_anywhere:
        app.cleanup_ctx.append(_bearer_context(clients, services))
    return clients
