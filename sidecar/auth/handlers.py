"""Sidecar's own sign-in endpoints under `auth.prefix`: start, callback, sign_out, userinfo.

- `start?rd=`: begin a sign-in that lands on the validated `rd` (default `/`).
- `callback`: finish it. The attempt is found by `state` in this browser's attempt cookies; a
  missing, expired, used or foreign state, a provider `error=`, an `iss` mismatch and every failed
  token check give a clear page with a "sign in again" link and create no session — except that a
  stale callback while a valid session exists just lands the user on `/`.
- `sign_out`: clears every sidecar cookie and, when configured, ends the provider session too
  (RP-initiated logout). Only a same-origin POST, or a GET the browser marks as same-origin or
  user-typed (`Sec-Fetch-Site`), signs out; anything else gets a confirmation page whose button
  posts the form, so no other site can sign a user out.
- `userinfo`: the signed-in identity as JSON, or 401 JSON.
"""

from __future__ import annotations

from urllib.parse import urlencode

from aiohttp import web

from sidecar import keys
from sidecar.auth.gate import WWW_AUTHENTICATE, resolve_session
from sidecar.auth.redirects import check_redirect
from sidecar.auth.services import AuthServices
from sidecar.auth.sign_in import NO_STORE, begin_sign_in, complete_sign_in, log_event
from sidecar.errors import (
    LoginError,
    NotAuthenticatedError,
    ProviderUnavailableError,
    SessionStoreUnavailableError,
)
from sidecar.oidc.flow import build_end_session_url, parse_callback
from sidecar.pages import render_page, status_title
from sidecar.session.attempts import LoginAttempt, take_attempt
from sidecar.session.cookies import build_clear_cookies
from sidecar.session.model import Session

SIGN_IN_FAILED_TEMPLATE = "sign_in_failed.html"
SIGN_OUT_TEMPLATE = "sign_out.html"
ATTEMPT_GONE_MESSAGE = "This sign-in link has expired or was already used. Please sign in again."
_SAME_ORIGIN_SITES = frozenset({"same-origin", "none"})


class AuthHandlers:
    """The request handlers, bound to the app's `AuthServices`."""

    def __init__(self, services: AuthServices) -> None:
        self.services = services

    # -- helpers ------------------------------------------------------------------------------

    def _target(self, candidate: str | None, origin: str) -> str | None:
        if not candidate:
            return None
        return check_redirect(
            candidate,
            origin=origin,
            allowed_domains=self.services.config.auth.allowed_redirect_domains,
        )

    def _failure_page(
        self,
        request: web.Request,
        *,
        status: int,
        code: str,
        message: str,
        set_cookies: list[str],
    ) -> web.Response:
        start_url = self.services.endpoints.start + "?" + urlencode({"rd": "/"})
        page = render_page(
            SIGN_IN_FAILED_TEMPLATE,
            templates_dir=self.services.config.auth.templates_dir,
            status=status,
            title=status_title(status) if status >= 500 else "Sign-in could not be completed",
            code=code,
            message=message,
            request_id=request.get(keys.REQUEST_ID, "") or "-",
            sign_in_url=start_url,
            home_url="/",
        )
        response = web.Response(status=status, text=page, content_type="text/html")
        response.headers[NO_STORE[0]] = NO_STORE[1]
        for value in set_cookies:
            response.headers.add("Set-Cookie", value)
        return response

    # -- start ------------------------------------------------------------------------------

    async def start(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        request[keys.ACCESS_LOG_FIELDS]["route"] = "sign-in-start"
        origin = self.services.origin(request)
        target = self._target(request.query.get("rd"), origin) or "/"
        raise begin_sign_in(request, self.services, target)

    # -- callback -----------------------------------------------------------------------------

    async def callback(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        services = self.services
        fields = request[keys.ACCESS_LOG_FIELDS]
        fields["route"] = "sign-in-callback"
        now = services.clock()
        origin = services.origin(request)
        query = request.query
        state = query.get("state")
        attempt: LoginAttempt | None = None
        delete_attempt: list[str] = []
        if state:
            attempt, delete_attempt = take_attempt(
                services.codec,
                services.policy,
                state,
                request.cookies,
                now=now,
                timeout=services.session.login_timeout_seconds,
            )
        try:
            metadata = services.require_directory().metadata()
            callback = parse_callback(
                query,
                expected_issuer=metadata.issuer,
                iss_required=metadata.authorization_response_iss_parameter_supported,
            )
            if attempt is None:
                existing = await services.store.load(request.cookies, now=now)
                if existing is not None:
                    log_event(request, "sign_in_skipped", reason="attempt_unknown_session_exists")
                    fields["decision"] = "already-signed-in"
                    return _redirect("/", delete_attempt)
                raise LoginError(ATTEMPT_GONE_MESSAGE, code="attempt_unknown")
            redirect_uri = services.redirect_uri(origin)
            session = await complete_sign_in(services, attempt, callback, redirect_uri)
        except (LoginError, ProviderUnavailableError) as exc:
            log_event(request, "sign_in_failed", reason=exc.code, detail=exc.reason)
            fields.update(decision="sign-in-failed", reasons=exc.code)
            return self._failure_page(
                request,
                status=exc.status,
                code=exc.code,
                message=exc.message,
                set_cookies=delete_attempt,
            )
        saved = await services.store.save(session, request.cookies, now=now)
        set_cookies = [*delete_attempt, *saved]
        identity = session.identity
        log_event(request, "sign_in_completed", sub=identity.sub, user=identity.user)
        fields.update(decision="signed-in", sub=identity.sub, user=identity.user)
        if identity.email:
            fields["email"] = identity.email
        target = self._target(attempt.redirect_to, origin) or "/"
        return _redirect(target, set_cookies)

    # -- sign out -----------------------------------------------------------------------------

    def _sign_out_allowed(self, request: web.Request, origin: str) -> bool:
        site = request.headers.get("Sec-Fetch-Site")
        if site is not None:
            return site.lower() in _SAME_ORIGIN_SITES
        if request.method == "POST":
            sent_origin = request.headers.get("Origin")
            return sent_origin is None or sent_origin.lower() == origin.lower()
        return False  # a GET without fetch metadata cannot prove it was meant

    async def sign_out(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD", "POST"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD", "POST"])
        services = self.services
        request[keys.ACCESS_LOG_FIELDS]["route"] = "sign-out"
        origin = services.origin(request)
        rd = request.query.get("rd")
        if request.method == "POST":
            form = await request.post()
            posted = form.get("rd")
            if isinstance(posted, str) and posted:
                rd = posted
        target = (
            self._target(rd, origin)
            or self._target(services.config.auth.post_logout_redirect, origin)
            or "/"
        )
        if not self._sign_out_allowed(request, origin):
            return self._confirmation_page(target)
        return await self._signed_out(request, origin, target)

    def _confirmation_page(self, target: str) -> web.Response:
        config = self.services.config.auth
        page = render_page(
            SIGN_OUT_TEMPLATE,
            templates_dir=config.templates_dir,
            provider_name=config.provider_name,
            action_url=self.services.endpoints.sign_out,
            rd=target,
            home_url="/",
        )
        response = web.Response(text=page, content_type="text/html")
        response.headers[NO_STORE[0]] = NO_STORE[1]
        # Its button signs out: no other site may show it in a frame and trick a click on it.
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Content-Security-Policy"] = "frame-ancestors 'none'"
        return response

    async def _signed_out(self, request: web.Request, origin: str, target: str) -> web.Response:
        services = self.services
        now = services.clock()
        session: Session | None = None
        try:
            session = await services.store.load(request.cookies, now=now)
            await services.store.clear(request.cookies, now=now)  # server-side stores end it here
        except SessionStoreUnavailableError as exc:
            # Redis is down: the browser still forgets the session (and learns where to go).
            log_event(request, "sign_out_store_failed", reason=exc.code)
        set_cookies = build_clear_cookies(services.policy, request.cookies.keys())
        location = target
        directory = services.directory
        if services.config.auth.provider_logout and directory is not None and directory.ready:
            absolute = target if target.startswith(("http://", "https://")) else origin + target
            end_session = build_end_session_url(
                directory.metadata(),
                session.tokens.id_token if session is not None else None,
                absolute,
                client_id=services.provider.client_id,
            )
            if end_session is not None:
                location = end_session
        fields = request[keys.ACCESS_LOG_FIELDS]
        fields["decision"] = "signed-out"
        if session is not None:
            fields.update(sub=session.identity.sub, user=session.identity.user)
            log_event(request, "signed_out", sub=session.identity.sub)
        status = 303 if request.method == "POST" else 302
        return _redirect(location, set_cookies, status=status)

    # -- userinfo -----------------------------------------------------------------------------

    async def userinfo(self, request: web.Request) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            raise web.HTTPMethodNotAllowed(request.method, ["GET", "HEAD"])
        request[keys.ACCESS_LOG_FIELDS]["route"] = "userinfo"
        resolution = await resolve_session(request, self.services)
        session = resolution.session
        if session is None:
            error = NotAuthenticatedError()
            response = web.json_response(
                {
                    "error": error.code,
                    "message": error.message,
                    "request_id": request.get(keys.REQUEST_ID, ""),
                },
                status=401,
            )
            response.headers[WWW_AUTHENTICATE[0]] = WWW_AUTHENTICATE[1]
        else:
            identity = session.identity
            response = web.json_response(
                {
                    "user": identity.user,
                    "email": identity.email,
                    "groups": list(identity.groups),
                    "preferred_username": identity.username,
                }
            )
            request[keys.ACCESS_LOG_FIELDS].update(sub=identity.sub, user=identity.user)
        response.headers[NO_STORE[0]] = NO_STORE[1]
        for value in resolution.set_cookies:
            response.headers.add("Set-Cookie", value)
        return response


def _redirect(location: str, set_cookies: list[str], *, status: int = 302) -> web.Response:
    response = web.Response(status=status, headers={"Location": location})
    response.headers[NO_STORE[0]] = NO_STORE[1]
    for value in set_cookies:
        response.headers.add("Set-Cookie", value)
    return response


def add_routes(app: web.Application, services: AuthServices) -> None:
    """Register start, callback, sign_out and userinfo under the configured prefix."""
    handlers = AuthHandlers(services)
    endpoints = services.endpoints
    app.router.add_route("*", endpoints.start, handlers.start)
    app.router.add_route("*", endpoints.callback, handlers.callback)
    app.router.add_route("*", endpoints.sign_out, handlers.sign_out)
    app.router.add_route("*", endpoints.userinfo, handlers.userinfo)
