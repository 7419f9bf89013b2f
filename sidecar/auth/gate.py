"""The auth gate: who is this request, and may it pass to the backend?

Per request, first the route (`sidecar.routing`): the path is normalised as the backend will see
it (an ambiguous one is refused with 400) and matched against the compiled `routes`; a public
route passes at once, without looking at cookies; so does a CORS preflight on a route with
`cors_preflight: true`. A program's own credential (`Authorization: Bearer` on a route that takes
bearer tokens, `Basic` for htpasswd users; see `sidecar.auth.api_clients`) is checked next and,
when present, decides alone: valid, the route's policy applies to its identity; invalid, 401 JSON,
never a sign-in redirect. Otherwise: cookies → `store.load` →
`Session | None` → refresh when due (one refresh per session, see `sidecar.auth.refresh`) →
identity headers. A request without a usable session is
stopped: a browser's GET/HEAD is sent to sign in (straight to the provider, or to the sign-in page
when `auth.sign_in_page`), landing afterwards on the URL it asked for; API clients (see
`pages.wants_json`) and every other method get `401` with `WWW-Authenticate`. A refresh the
provider rejects ends the session; a provider outage keeps it while its access token is still
valid. A signed-in user is then checked against the route's policy (`sidecar.policy.decide`);
one it denies gets a 403 page naming the account and offering sign-out (JSON for programs).
The decision, the route and the reasons go to the access log with the user's sub and email.
Identity headers, and the signed identity assertion where the route (or the default) asks for it
(`sidecar.assertion`), are returned for the one upstream header builder to add.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from urllib.parse import urlencode

from aiohttp import web

from sidecar import keys
from sidecar.auth.api_clients import ApiClient, insufficient, is_cors_preflight
from sidecar.auth.identity_headers import IdentityHeaderCache, build_identity_headers
from sidecar.auth.redirects import check_redirect
from sidecar.auth.refresh import needs_refresh, still_usable
from sidecar.auth.services import AuthServices
from sidecar.auth.sign_in import NO_STORE, begin_sign_in, log_event
from sidecar.errors import (
    BadRequestError,
    ForbiddenError,
    NotAuthenticatedError,
    ProviderUnavailableError,
    RefreshRejectedError,
)
from sidecar.gating import Gate, GateResult, request_cookies
from sidecar.pages import SIGN_IN_TEMPLATE, render_page, wants_json
from sidecar.policy import decide
from sidecar.routing import Route, RouteTable
from sidecar.session.cookies import CookiePolicy
from sidecar.session.model import Identity, Session, Tokens

WWW_AUTHENTICATE = ("WWW-Authenticate", 'Bearer realm="sidecar"')
_IDLE_TOUCH_FRACTION = 10  # re-save last_seen_at after a tenth of the idle timeout


@dataclass(frozen=True)
class Resolution:
    """The session a request carries after refresh, the Set-Cookie values to send, and why."""

    session: Session | None
    set_cookies: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


def _has_session_cookie(policy: CookiePolicy, cookies: Mapping[str, str]) -> bool:
    return any(policy.chunk_index(name) is not None for name in cookies)


def _needs_touch(services: AuthServices, session: Session, now: float) -> bool:
    idle = services.session.idle_timeout_seconds
    if idle is None:
        return False
    return now - session.last_seen_at >= max(1.0, idle / _IDLE_TOUCH_FRACTION)


async def resolve_session(request: web.Request, services: AuthServices) -> Resolution:
    """The request's session, refreshed when due. Raises `ProviderUnavailableError` only when a
    refresh is overdue, the provider cannot be reached and the access token has really expired."""
    now = services.clock()
    read = request_cookies(request)
    if read.duplicated:
        # Cookie tossing: ours and a planted one under the same name. Use neither, clear
        # nothing (clearing ours would leave only the planted one).
        return Resolution(None, (), ("session-cookie-duplicated",))
    cookies = read.own if read.own is not None else request.cookies
    store = services.store
    session = await store.load(cookies, now=now)
    if session is None:
        if _has_session_cookie(services.policy, cookies):
            cleared = await store.clear(cookies, now=now)
            return Resolution(None, tuple(cleared), ("session-invalid",))
        return Resolution(None, (), ("no-session",))
    margin = services.session.refresh_margin_seconds
    if needs_refresh(session, now=now, margin=margin):
        try:
            refreshed = await services.coordinator.refresh(session)
        except RefreshRejectedError as exc:
            log_event(request, "refresh_failed", reason=exc.code, sub=session.identity.sub)
            cleared = await store.clear(cookies, now=now)
            return Resolution(None, tuple(cleared), ("refresh-rejected",))
        except ProviderUnavailableError:
            if not still_usable(session, now=now):
                raise
            return Resolution(session, (), ("session-valid", "refresh-deferred"))
        session = replace(refreshed, last_seen_at=now)
        saved = await store.save(session, cookies, now=now)
        return Resolution(session, tuple(saved), ("refreshed",))
    if _needs_touch(services, session, now):
        session = replace(session, last_seen_at=now)
        saved = await store.save(session, cookies, now=now)
        return Resolution(session, tuple(saved), ("session-valid",))
    return Resolution(session, (), ("session-valid",))


_NAVIGATION_MODES = frozenset({"navigate", "nested-navigate"})


def is_api_request(request: web.Request, *, method: str | None = None) -> bool:
    """Clients that cannot follow a sign-in redirect: programs, every method but GET/HEAD, and
    a browser's own background fetches (`Sec-Fetch-Mode` other than navigate), which could only
    pile up sign-in attempts without ever reaching the provider's page. `method` replaces the
    request's own (forward-auth asks about another request's method)."""
    method = method or request.method
    if method not in ("GET", "HEAD") or wants_json(request.headers, method):
        return True
    if request.headers.get("Authorization", "")[:7].lower() == "bearer ":
        return True  # browsers never send a bearer token on their own: this is a program
    mode = request.headers.get("Sec-Fetch-Mode")
    return mode is not None and mode.lower() not in _NAVIGATION_MODES


def sign_in_required(
    request: web.Request, services: AuthServices, resolution: Resolution
) -> Exception:
    """What to raise for a request without a session: 401, the sign-in page, or the redirect."""
    set_cookies = [("Set-Cookie", value) for value in resolution.set_cookies]
    if is_api_request(request):
        return NotAuthenticatedError(headers=[*set_cookies, WWW_AUTHENTICATE])
    origin = services.origin(request)
    target = (
        check_redirect(
            request.raw_path,
            origin=origin,
            allowed_domains=services.config.auth.allowed_redirect_domains,
        )
        or "/"
    )
    if services.config.auth.sign_in_page:
        start_url = services.endpoints.start + "?" + urlencode({"rd": target})
        page = render_page(
            SIGN_IN_TEMPLATE,
            templates_dir=services.config.auth.templates_dir,
            provider_name=services.config.auth.provider_name,
            start_url=start_url,
        )
        return web.HTTPUnauthorized(
            text=page,
            content_type="text/html",
            headers=[*set_cookies, NO_STORE, WWW_AUTHENTICATE],
        )
    redirect = begin_sign_in(request, services, target)
    for name, value in set_cookies:
        redirect.headers.add(name, value)
    return redirect


def _log_fields(session: Session | None, decision: str, reasons: tuple[str, ...]) -> dict[str, str]:
    fields = {"decision": decision, "reasons": ",".join(reasons)}
    if session is not None:
        identity = session.identity
        fields["user"] = identity.user
        fields["sub"] = identity.sub
        if identity.email:
            fields["email"] = identity.email
    return fields


FORBIDDEN_TEMPLATE = "forbidden.html"


def forbidden(
    request: web.Request, services: AuthServices, session: Session, set_cookies: tuple[str, ...]
) -> Exception:
    """The 403 for a signed-in user the route's policy denies: a page saying who they are signed
    in as and how to sign out, or JSON for programs. The reasons stay in the log."""
    cookies = [("Set-Cookie", value) for value in set_cookies]
    if wants_json(request.headers, request.method):
        return ForbiddenError(headers=cookies)
    identity = session.identity
    page = render_page(
        FORBIDDEN_TEMPLATE,
        templates_dir=services.config.auth.templates_dir,
        signed_in_as=identity.email or identity.username or identity.user,
        sign_out_url=services.endpoints.sign_out,
        home_url="/",
        request_id=request.get(keys.REQUEST_ID, "") or "-",
    )
    return web.HTTPForbidden(text=page, content_type="text/html", headers=[*cookies, NO_STORE])


def match_route(request: web.Request, routes: RouteTable) -> Route:
    """The route for this request, matched on the path as the backend will see it; a path that
    cannot be read unambiguously (see `sidecar.routing`) is refused with 400."""
    route = routes.resolve(request.method, request.host, request.raw_path)
    if route is None:
        request[keys.ACCESS_LOG_FIELDS].update(decision="deny", reasons="path-ambiguous")
        raise BadRequestError(code="path_refused", reason="ambiguous request path")
    return route


def make_gate(services: AuthServices) -> Gate:
    """The gate `create_app` calls before forwarding any request that is not sidecar's own."""
    headers_config = services.config.headers
    session_headers = IdentityHeaderCache(headers_config)  # built once per session, not request
    routes = RouteTable.from_config(services.config)

    signer = services.assertions

    def _assertion(request: web.Request, route: Route, identity: Identity) -> list[tuple[str, str]]:
        """The signed identity assertion header, when the route (or the default) asks for one;
        its audience is the upstream this request goes to."""
        if signer is None:
            return []
        upstream = request.app[keys.FORWARDER].select(request.path).url
        return signer.headers_for(
            identity,
            wanted=route.identity_assertion,
            issuer=services.origin(request),
            audience=upstream,
        )

    def _admit_api_client(request: web.Request, route: Route, client: ApiClient) -> GateResult:
        """A program that authenticated with its own credential: the route's policy, then its
        identity headers (see `sidecar.auth.api_clients`)."""
        identity = client.identity
        decision = decide(route, identity, authenticated_via=client.via)
        fields = _log_fields(None, "allow" if decision.allowed else "forbidden", decision.reasons)
        fields.update(user=identity.user, sub=identity.sub)
        if identity.email:
            fields["email"] = identity.email
        if not decision.allowed:
            request[keys.ACCESS_LOG_FIELDS].update(fields)
            raise insufficient(request, client)
        tokens = Tokens(access_token=client.access_token) if client.access_token else None
        return GateResult(
            identity_headers=[
                *build_identity_headers(identity, tokens, headers_config),
                *_assertion(request, route, identity),
            ],
            drop_request_headers=frozenset({"authorization"})
            if client.drop_authorization
            else frozenset(),
            log_fields=fields,
        )

    async def gate(request: web.Request) -> GateResult:
        route = match_route(request, routes)
        request[keys.ACCESS_LOG_FIELDS]["route"] = route.name
        if route.access == "public":
            public = decide(route, None, authenticated_via="session")
            return GateResult(log_fields=_log_fields(None, public.outcome, public.reasons))
        if route.cors_preflight and is_cors_preflight(request.method, request.headers):
            return GateResult(log_fields={"decision": "allow", "reasons": "cors-preflight"})
        api = services.api_clients
        client = await api.authenticate(request, route) if api is not None else None
        if client is not None:
            return _admit_api_client(request, route, client)
        resolution = await resolve_session(request, services)
        session = resolution.session
        if session is None:
            decision_name = "deny" if is_api_request(request) else "sign-in"
            reasons = (*resolution.reasons, "user-unauthenticated")
            request[keys.ACCESS_LOG_FIELDS].update(_log_fields(None, decision_name, reasons))
            raise sign_in_required(request, services, resolution)
        decision = decide(route, session.identity, authenticated_via="session")
        reasons = (*resolution.reasons, *decision.reasons)
        if not decision.allowed:
            request[keys.ACCESS_LOG_FIELDS].update(_log_fields(session, "forbidden", reasons))
            raise forbidden(request, services, session, resolution.set_cookies)
        return GateResult(
            identity_headers=[
                *session_headers.headers(session.identity, session.tokens),
                *_assertion(request, route, session.identity),
            ],
            response_headers=[("Set-Cookie", value) for value in resolution.set_cookies],
            log_fields=_log_fields(session, "allow", reasons),
        )

    return gate
