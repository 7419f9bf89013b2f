"""The development provider's browser-facing endpoints: authorize (the sign-in form, any name, or
`auto_login`; codes for PKCE S256) and end_session (RP-initiated logout with `id_token_hint`,
`post_logout_redirect_uri` and `state`), over the provider's in-memory sessions and grants.
Authorization responses carry `iss` (RFC 9207) as the provider or its shape says.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from sidecar.dev import provider_pages
from sidecar.dev.provider_grants import BrowserSession, Grant
from sidecar.dev.provider_pages import NOT_FOR_PRODUCTION
from sidecar.dev.provider_token_endpoints import NO_STORE, PKCE_VERIFIER
from sidecar.dev.provider_tokens import WRONG_ISSUER, build_user, read_own_token
from sidecar.oidc.entra import read_unverified_claims

if TYPE_CHECKING:
    from sidecar.dev.provider import DevProvider

log = logging.getLogger("sidecar.dev.provider")

SESSION_COOKIE = "_devprovider_session"
AUTHORIZE_PATH = "/authorize"
END_SESSION_PATH = "/end_session"


class BrowserEndpoints:
    """The authorize and end_session handlers of one provider."""

    def __init__(self, provider: DevProvider) -> None:
        self._p = provider

    def redirect_back(self, redirect_uri: str, state: str | None, **values: str) -> web.Response:
        """Authorization response to the client, with `iss` (RFC 9207)."""
        query = dict(values)
        if state is not None:
            query["state"] = state
        issuer: str | None = self._p.issuer
        shape = self._p.shape
        if shape is not None:  # RFC 9207 iss only where the shape's document says so
            issuer = shape.configured_issuer(self._p.issuer) if shape.iss_parameter else None
        if issuer is not None:
            query["iss"] = WRONG_ISSUER if self._p.faults.callback_wrong_issuer else issuer
        separator = "&" if "?" in redirect_uri else "?"
        return _redirect(redirect_uri + separator + urlencode(query))

    async def authorize(self, request: web.Request) -> web.Response:
        self._p.counters.authorize += 1
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        client = self._p.clients.get(params.get("client_id", ""))
        if client is None:
            return _page(400, "Unknown client", "The client_id is not registered here.")
        redirect_uri = params.get("redirect_uri", "")
        if redirect_uri not in client.redirect_uris:
            return _page(400, "Bad redirect_uri", "redirect_uri is not registered for the client.")
        state = params.get("state")
        scopes = frozenset(params.get("scope", "").split())
        challenge = params.get("code_challenge")
        if params.get("response_type") != "code":
            return self.redirect_back(redirect_uri, state, error="unsupported_response_type")
        if "openid" not in scopes and (self._p.shape is None or self._p.shape.openid):
            error = "invalid_scope"
            return self.redirect_back(
                redirect_uri, state, error=error, error_description="no openid"
            )
        if challenge is not None and (
            params.get("code_challenge_method") != "S256" or not PKCE_VERIFIER.fullmatch(challenge)
        ):
            description = "only code_challenge_method=S256 with a valid challenge is accepted"
            return self.redirect_back(
                redirect_uri, state, error="invalid_request", error_description=description
            )
        if challenge is None and (self._p.require_pkce or client.auth_method == "none"):
            description = "PKCE (code_challenge, S256) is required"
            return self.redirect_back(
                redirect_uri, state, error="invalid_request", error_description=description
            )
        if self._p.faults.authorize_error:
            return self.redirect_back(
                redirect_uri,
                state,
                error=self._p.faults.authorize_error,
                error_description="dev provider fault",
            )
        session = self._session_for(request, params)
        if session is None:
            if "none" in params.get("prompt", "").split():
                return self.redirect_back(redirect_uri, state, error="login_required")
            form = provider_pages.render_login_form(
                action=AUTHORIZE_PATH,
                client_id=client.client_id,
                request_params={k: v for k, v in params.items() if k in _FORWARDED_PARAMS},
                default_name=params.get("login_hint", ""),
            )
            return web.Response(text=form, content_type="text/html", headers=NO_STORE)
        grant = Grant(client.client_id, session, scopes, params.get("nonce"), params=params)
        code = self._p.grants.issue_code(
            grant, redirect_uri=redirect_uri, code_challenge=challenge, now=self._p.clock()
        )
        response = self.redirect_back(redirect_uri, state, code=code)
        response.set_cookie(
            SESSION_COOKIE,
            session.sid,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=self._p.issuer.startswith("https:"),
        )
        return response

    def _session_for(self, request: web.Request, params: dict[str, str]) -> BrowserSession | None:
        """The provider session to authorize with: a form post, the cookie's, or auto login."""
        now = self._p.clock()
        if request.method == "POST" and params.get("username", "").strip():
            user = build_user(
                {
                    "sub": params["username"].strip(),
                    "email": params.get("email", "").strip(),
                    "groups": [g.strip() for g in params.get("groups", "").split(",") if g.strip()],
                }
            )
            return self._signed_in(user, now)
        existing = self._p.grants.session(request.cookies.get(SESSION_COOKIE))
        max_age = params.get("max_age", "")
        too_old = (
            max_age.isdigit() and existing is not None and now - existing.auth_time > int(max_age)
        )
        if existing is not None and "login" not in params.get("prompt", "").split() and not too_old:
            return existing
        if self._p.auto_login is not None:
            # A shape's user is exactly the recorded claims, without the dev provider's defaults.
            auto = self._p.auto_login
            user = dict(auto) if self._p.shape is not None else build_user(auto)
            return self._signed_in(user, now)
        return None

    def _signed_in(self, user: dict[str, Any], now: float) -> BrowserSession:
        self._p.counters.logins += 1
        log.info("%s: signed in %s", NOT_FOR_PRODUCTION, user["sub"])
        return self._p.grants.start_session(user, now=now)

    async def end_session(self, request: web.Request) -> web.Response:
        self._p.counters.end_session += 1
        params = dict(request.query)
        if request.method == "POST":
            params.update({k: v for k, v in (await request.post()).items() if isinstance(v, str)})
        hint = params.get("id_token_hint")
        hint_claims = None
        if hint:
            now = self._p.clock()
            issuer = self._p.issuer
            if self._p.shape is not None:  # the hint carries the shape's issuer, maybe per tenant
                issuer = self._p.shape.token_issuer(self._p.issuer, read_unverified_claims(hint))
            hint_claims = read_own_token(
                hint, self._p.keys, issuer=issuer, now=now, check_expiry=False
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
            client = self._p.clients.get(client_id or "")
            if client is None:
                message = "post_logout_redirect_uri needs an id_token_hint or client_id."
                return _page(400, "Unknown client", message)
            if target not in client.post_logout_redirect_uris:
                message = "post_logout_redirect_uri is not registered for this client."
                return _page(400, "Bad post_logout_redirect_uri", message)
        for sid in (request.cookies.get(SESSION_COOKIE), (hint_claims or {}).get("sid")):
            if isinstance(sid, str) and sid:
                self._p.grants.end_session(sid)
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
