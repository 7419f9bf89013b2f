"""Forward-auth: `<prefix>/auth` answers an ingress that asks "may this request pass, and as whom?".

nginx `auth_request` and Traefik `ForwardAuth` send sidecar a copy of each request's headers;
sidecar answers `202 Accepted` with the identity in `X-Auth-Request-User`, `-Email`, `-Groups`,
`-Preferred-Username` (and `-Access-Token` with `headers.access_token`), `401` when nobody is
signed in, `403` when the route's policy denies the user. The session is loaded and refreshed
exactly as the gate does (`sidecar.auth.gate.resolve_session`); a refreshed or cleared session
comes back as `Set-Cookie` (and, since nginx passes on only one `Set-Cookie` of a subrequest, also
numbered as `X-Auth-Request-Set-Cookie-1`, `-2`, ...).

A program's own credential (a bearer token on a route that takes them, an htpasswd user's Basic
credentials) is checked as at the gate (`sidecar.auth.api_clients`): 202 with its identity, 403
when the policy denies it, 401 JSON when it is invalid. With `identity_assertion`, the 202 also
carries the signed identity assertion (`X-Sidecar-Assertion`) for the ingress to pass on.

Which request is asked about: its method, scheme, host and URI come from `X-Forwarded-Method` /
`-Proto` / `-Host` / `-Uri` (Traefik) or `X-Original-Method` and `X-Original-URL` (nginx
convention, a full URL or a path), believed only when the direct peer is in
`server.trusted_proxies`; when both conventions are present they must agree (a client may have
added the one its proxy does not set). The route (`sidecar.routing`) and policy (`sidecar.policy`)
are those of that original request. When no trusted proxy named it, sidecar cannot tell which
route applies: with no `routes` configured every path has the same rule (sign-in) and it is
applied; otherwise the answer is `403` (reason `original-request-unknown`), never a guess such as
`/` that a public rule could turn into a pass. A malformed, contradictory or ambiguous original
request (see `RouteTable.resolve`) is refused with 403 too: nginx treats any status but 2xx, 401 and
403 from the subrequest as an internal error.

A browser's `401` carries `X-Auth-Request-Sign-In`: `<prefix>/start?rd=<original URL>`,
URL-encoded by sidecar (nginx cannot escape), which the nginx example redirects to, and the "Sign
in" page as its body (Traefik shows it as is). Programs (`gate.is_api_request`, judged with the
original method) get JSON and no sign-in URL, so the nginx example answers them 401.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from aiohttp import web

from sidecar import keys
from sidecar.auth.api_clients import ApiClient, insufficient
from sidecar.auth.gate import WWW_AUTHENTICATE, forbidden, is_api_request, resolve_session
from sidecar.auth.identity_headers import build_auth_request_headers
from sidecar.auth.origin import build_origin
from sidecar.auth.redirects import check_redirect
from sidecar.auth.services import AuthServices
from sidecar.auth.sign_in import NO_STORE
from sidecar.endpoints import X_AUTH_REQUEST_SET_COOKIE, X_AUTH_REQUEST_SIGN_IN
from sidecar.errors import ForbiddenError, NotAuthenticatedError
from sidecar.pages import SIGN_IN_TEMPLATE, render_page
from sidecar.policy import decide
from sidecar.routing import Route, RouteTable
from sidecar.session.model import Identity, Session, Tokens

_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
_ABSOLUTE_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.DOTALL
)
_ORIGINAL_HEADERS = (
    "X-Forwarded-Method",
    "X-Forwarded-Uri",
    "X-Original-Method",
    "X-Original-URL",
)


@dataclass(frozen=True)
class OriginalRequest:
    """The request an ingress asks about: method, `scheme://host[:port]` and the raw URI."""

    method: str
    origin: str
    uri: str

    @property
    def host(self) -> str:
        return self.origin.partition("://")[2]

    @property
    def url(self) -> str:
        return self.origin + self.uri


class OriginalRequestError(ValueError):
    """A trusted proxy named the original request in a form sidecar will not read."""


def _first(value: str | None) -> str | None:
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def _check_uri(uri: str) -> str:
    if not uri.startswith("/") or not all(" " < char < "\x7f" for char in uri):
        raise OriginalRequestError("original URI must be a path of printable ASCII")
    return uri


def _origin(scheme: str, host: str) -> str:
    origin = build_origin(public_url=None, scheme=scheme, host=host)
    if origin is None:
        raise OriginalRequestError("original scheme or host is not usable")
    return origin


def _method(headers: Mapping[str, str]) -> str:
    named = {
        value.upper()
        for value in (headers.get("X-Forwarded-Method"), headers.get("X-Original-Method"))
        if value is not None
    }
    if len(named) > 1:
        raise OriginalRequestError("X-Forwarded-Method and X-Original-Method disagree")
    method = named.pop() if named else "GET"
    if not _METHOD.fullmatch(method):
        raise OriginalRequestError("original method is not an HTTP method token")
    return method


def parse_original_request(
    headers: Mapping[str, str], *, scheme: str, host: str
) -> OriginalRequest | None:
    """The original request named by a trusted proxy's headers, or None when they name none.

    `headers` are looked up case-insensitively. Traefik's reading: `X-Forwarded-Uri` with
    `X-Forwarded-Proto` / `-Host` (else `scheme` and `host`, the forward-auth request's own).
    nginx's: `X-Original-URL`, a full URL (its scheme and host are the original's) or a path (then
    as Traefik's). The method is `X-Forwarded-Method` or `X-Original-Method`, else GET. When both
    readings are present they must name the same request, and both method headers the same
    method: a proxy sets one convention, so a disagreement means the client supplied the other,
    and is refused rather than resolved. Raises `OriginalRequestError` for that and for a
    malformed method, URI or host. Pure: no I/O.
    """
    forwarded_uri = headers.get("X-Forwarded-Uri")
    original_url = headers.get("X-Original-URL")
    if forwarded_uri is None and original_url is None:
        return None
    method = _method(headers)
    scheme = _first(headers.get("X-Forwarded-Proto")) or scheme
    host = _first(headers.get("X-Forwarded-Host")) or host
    readings: set[tuple[str, str]] = set()
    if forwarded_uri is not None:
        readings.add((_origin(scheme, host), _check_uri(forwarded_uri)))
    if original_url is not None:
        absolute = _ABSOLUTE_URL.fullmatch(original_url)
        if absolute is None:
            readings.add((_origin(scheme, host), _check_uri(original_url)))
        else:
            rest = absolute.group("rest")
            origin = _origin(absolute.group("scheme"), absolute.group("authority"))
            readings.add((origin, _check_uri(rest if rest.startswith("/") else "/" + rest)))
    if len(readings) > 1:
        raise OriginalRequestError("X-Forwarded-Uri and X-Original-URL disagree")
    origin, uri = readings.pop()
    return OriginalRequest(method, origin, uri)


@dataclass(frozen=True)
class RouteChoice:
    """The route the original request matched, or None and why it could not be chosen."""

    route: Route | None
    reason: str = ""


def choose_route(routes: RouteTable, original: OriginalRequest | None) -> RouteChoice:
    """The route whose rule answers for `original` (None: not known from a trusted proxy).

    Unknown: the default route when no routes are configured (every path has its rule), else
    no route (`original-request-unknown`). An ambiguous path gives no route (`path-ambiguous`).
    Pure: no I/O.
    """
    if original is None:
        if routes.routes:
            return RouteChoice(None, "original-request-unknown")
        return RouteChoice(routes.default)
    route = routes.resolve(original.method, original.host, original.uri)
    if route is None:
        return RouteChoice(None, "path-ambiguous")
    return RouteChoice(route)


def _log_fields(session: Session | None, decision: str, reasons: tuple[str, ...]) -> dict[str, str]:
    fields = {"decision": decision, "reasons": ",".join(reasons)}
    if session is not None:
        identity = session.identity
        fields.update(user=identity.user, sub=identity.sub)
        if identity.email:
            fields["email"] = identity.email
    return fields


def _cookie_headers(set_cookies: tuple[str, ...]) -> list[tuple[str, str]]:
    """Each Set-Cookie twice: as itself, and numbered for proxies that pass on only one."""
    numbered = [
        (f"{X_AUTH_REQUEST_SET_COOKIE}-{index}", value)
        for index, value in enumerate(set_cookies, start=1)
    ]
    return [*(("Set-Cookie", value) for value in set_cookies), *numbered]


class ForwardAuth:
    """The `<prefix>/auth` handler, bound to the app's `AuthServices` and compiled routes."""

    def __init__(self, services: AuthServices, routes: RouteTable) -> None:
        self.services = services
        self.routes = routes

    def original_request(self, request: web.Request) -> tuple[OriginalRequest | None, str]:
        """The original request if a trusted proxy named it, and a reason when it did not."""
        named = any(name in request.headers for name in _ORIGINAL_HEADERS)
        if not self.services.header_plan.is_trusted(request.remote):
            return None, "original-request-untrusted" if named else ""
        try:
            original = parse_original_request(
                request.headers, scheme=request.scheme, host=request.host
            )
        except OriginalRequestError:
            return None, "original-request-invalid"
        return original, ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fields = request[keys.ACCESS_LOG_FIELDS]
        original, untrusted = self.original_request(request)
        choice = choose_route(self.routes, original)
        if untrusted == "original-request-invalid" or choice.route is None:
            reasons = tuple(reason for reason in (untrusted, choice.reason) if reason)
            fields.update(route="forward-auth", **_log_fields(None, "deny", reasons))
            raise ForbiddenError(headers=[NO_STORE], reason=",".join(reasons))
        route = choice.route
        fields["route"] = route.name
        ignored = (untrusted,) if untrusted else ()  # logged: a proxy missing from trusted_proxies
        if route.access == "public":
            public = decide(route, None, authenticated_via="session")
            fields.update(_log_fields(None, public.outcome, (*ignored, *public.reasons)))
            return web.Response(status=202, headers=[NO_STORE])
        api = self.services.api_clients  # a program's own credential, as at the gate
        client = await api.authenticate(request, route) if api is not None else None
        if client is not None:
            return self.admit_api_client(request, route, client, original, ignored)
        resolution = await resolve_session(request, self.services)
        session = resolution.session
        cookies = _cookie_headers(resolution.set_cookies)
        if session is None:
            reasons = (*ignored, *resolution.reasons, "user-unauthenticated")
            fields.update(_log_fields(None, "unauthenticated", reasons))
            return self.sign_in_required(request, original, cookies)
        decision = decide(route, session.identity, authenticated_via="session")
        reasons = (*ignored, *resolution.reasons, *decision.reasons)
        if not decision.allowed:
            fields.update(_log_fields(session, "forbidden", reasons))
            raise forbidden(request, self.services, session, resolution.set_cookies)
        fields.update(_log_fields(session, "allow", reasons))
        identity = build_auth_request_headers(
            session.identity, session.tokens, self.services.config.headers
        )
        assertion = self.assertion(request, route, session.identity, original)
        return web.Response(status=202, headers=[*identity, *assertion, *cookies, NO_STORE])

    def assertion(
        self,
        request: web.Request,
        route: Route,
        identity: Identity,
        original: OriginalRequest | None,
    ) -> list[tuple[str, str]]:
        """The signed identity assertion for the ingress to pass on (nginx: `auth_request_set`),
        when the route asks for one; its audience is the original request's origin (the app the
        ingress protects), unless `identity_assertion.audience` is set."""
        signer = self.services.assertions
        if signer is None:
            return []
        issuer = self.services.origin(request)
        audience = original.origin if original is not None else issuer
        return signer.headers_for(
            identity, wanted=route.identity_assertion, issuer=issuer, audience=audience
        )

    def admit_api_client(
        self,
        request: web.Request,
        route: Route,
        client: ApiClient,
        original: OriginalRequest | None,
        ignored: tuple[str, ...],
    ) -> web.Response:
        """202 with the identity of a program's valid bearer token or htpasswd credential when
        the route's policy allows it, else 403 JSON (see `sidecar.auth.api_clients`)."""
        identity = client.identity
        decision = decide(route, identity, authenticated_via=client.via)
        outcome = "allow" if decision.allowed else "forbidden"
        fields = _log_fields(None, outcome, (*ignored, *decision.reasons))
        fields.update(user=identity.user, sub=identity.sub)
        request[keys.ACCESS_LOG_FIELDS].update(fields)
        if not decision.allowed:
            raise insufficient(request, client)
        tokens = Tokens(access_token=client.access_token) if client.access_token else None
        headers = build_auth_request_headers(identity, tokens, self.services.config.headers)
        assertion = self.assertion(request, route, identity, original)
        return web.Response(status=202, headers=[*headers, *assertion, NO_STORE])

    def sign_in_url(self, request: web.Request, original: OriginalRequest | None) -> str:
        """`<prefix>/start?rd=<original URL>`; without a safe original URL, `rd=/`."""
        services = self.services
        target = None
        if original is not None:
            target = check_redirect(
                original.url,
                origin=services.origin(request),
                allowed_domains=services.config.auth.allowed_redirect_domains,
            )
        return services.endpoints.start + "?" + urlencode({"rd": target or "/"})

    def sign_in_required(
        self,
        request: web.Request,
        original: OriginalRequest | None,
        cookies: list[tuple[str, str]],
    ) -> web.Response:
        """The 401: JSON for programs; for browsers the "Sign in" page, and the sign-in URL in
        `X-Auth-Request-Sign-In` for proxies that redirect on 401 (nginx). Programs get no
        sign-in URL: a redirect to a login page is no answer for them."""
        headers = [*cookies, NO_STORE, WWW_AUTHENTICATE]
        method = original.method if original is not None else request.method
        if is_api_request(request, method=method):
            error = NotAuthenticatedError()
            body = {
                "error": error.code,
                "message": error.message,
                "request_id": request.get(keys.REQUEST_ID, ""),
            }
            response = web.json_response(body, status=401)
            response.headers.extend(headers)
            return response
        start_url = self.sign_in_url(request, original)
        headers.append((X_AUTH_REQUEST_SIGN_IN, start_url))
        config = self.services.config.auth
        page = render_page(
            SIGN_IN_TEMPLATE,
            templates_dir=config.templates_dir,
            provider_name=config.provider_name,
            start_url=start_url,
        )
        return web.Response(status=401, text=page, content_type="text/html", headers=headers)


def add_forward_auth_route(app: web.Application, services: AuthServices) -> None:
    """Register `<prefix>/auth` for every method (the original one may be passed on as is); the
    routes are compiled once here."""
    handler = ForwardAuth(services, RouteTable.from_config(services.config))
    app.router.add_route("*", services.endpoints.auth, handler.handle)
