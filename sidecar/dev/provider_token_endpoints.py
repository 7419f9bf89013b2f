"""Token-holding endpoints of the development OpenID provider: token, userinfo, introspect.

`TokenEndpoints` serves the back-channel endpoints of a `DevProvider`: the token endpoint
(client authentication, authorization_code with PKCE S256, refresh_token with optional one-time
rotation, and the token-endpoint faults: delay, hold, 500, dropped connection, invalid_grant),
userinfo (Bearer access token; the sub-mismatch fault) and introspection (RFC 7662).
"""

from __future__ import annotations

import asyncio
import hmac
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from sidecar.dev.provider_clients import ClientAuthError, DevClient, authenticate_client
from sidecar.dev.provider_grants import BrowserSession, Grant
from sidecar.dev.provider_tokens import (
    build_access_token_claims,
    build_id_token_claims,
    pkce_s256,
    read_own_token,
    release_user_claims,
    sign_token,
)

if TYPE_CHECKING:
    from sidecar.dev.provider import DevProvider

TOKEN_PATH = "/token"  # noqa: S105 - a URL path, not a secret
USERINFO_PATH = "/userinfo"
INTROSPECT_PATH = "/introspect"
PKCE_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class TokenEndpoints:
    """The token, userinfo and introspection handlers of one provider."""

    def __init__(self, provider: DevProvider) -> None:
        self._p = provider
        self._seen_jtis: dict[str, float] = {}  # private_key_jwt assertion ids until they expire
        self._opaque: dict[str, str] = {}  # opaque access token -> the JWT it stands for

    async def token(self, request: web.Request) -> web.StreamResponse:
        self._p.counters.token_requests += 1
        faults = self._p.faults
        if faults.token_hold is not None:
            await faults.token_hold.wait()
        if faults.token_delay_seconds > 0:
            await asyncio.sleep(faults.token_delay_seconds)
        if faults.token_drop_connection:
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
        if faults.token_status_500:
            return web.Response(status=500, text="internal error (dev provider fault)")
        posted = await request.post()
        if any(len(posted.getall(name)) > 1 for name in posted):
            return _oauth_error(400, "invalid_request", "repeated parameter")
        form = {k: v for k, v in posted.items() if isinstance(v, str)}
        try:
            client = authenticate_client(
                authorization=request.headers.get("Authorization"),
                form=form,
                clients=self._p.clients,
                audiences=[self._p.url(TOKEN_PATH), self._p.issuer],
                now=self._p.clock(),
                seen_jtis=self._seen_jtis,
            )
        except ClientAuthError as exc:
            challenge = {"WWW-Authenticate": 'Basic realm="dev"'} if exc.basic_challenge else {}
            return _oauth_error(401, "invalid_client", exc.description, challenge)
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            return self._code_grant(client, form)
        if grant_type == "refresh_token":
            return self._refresh_grant(client, form)
        return _oauth_error(
            400, "unsupported_grant_type", "use authorization_code or refresh_token"
        )

    def _code_grant(self, client: DevClient, form: dict[str, str]) -> web.Response:
        pending = self._p.grants.take_code(form.get("code", ""), now=self._p.clock())
        if pending is None or pending.grant.client_id != client.client_id:
            return _oauth_error(400, "invalid_grant", "code is unknown, used, expired or not yours")
        if form.get("redirect_uri") != pending.redirect_uri:
            return _oauth_error(400, "invalid_grant", "redirect_uri differs from authorization")
        verifier = form.get("code_verifier")
        if pending.code_challenge is not None:
            if not verifier or not PKCE_VERIFIER.fullmatch(verifier):
                return _oauth_error(400, "invalid_grant", "code_verifier missing or malformed")
            if not hmac.compare_digest(pkce_s256(verifier), pending.code_challenge):
                return _oauth_error(400, "invalid_grant", "PKCE verification failed")
        elif verifier is not None:
            return _oauth_error(400, "invalid_grant", "code_verifier without code_challenge")
        self._p.counters.code_exchanges += 1
        return self._token_response(pending.grant, issue_refresh=self._p.issue_refresh_tokens)

    def _refresh_grant(self, client: DevClient, form: dict[str, str]) -> web.Response:
        token = form.get("refresh_token", "")
        peek = self._p.grants.refresh_grant(token)
        if (
            self._p.faults.refresh_invalid_grant
            or peek is None
            or peek.client_id != client.client_id
        ):
            return _oauth_error(400, "invalid_grant", "refresh token is unknown, used or revoked")
        grant = self._p.grants.take_refresh_token(token, rotate=self._p.rotate_refresh_tokens)
        assert grant is not None
        requested = form.get("scope")
        if requested is not None:
            narrowed = frozenset(requested.split())
            if not narrowed <= grant.scopes:
                return _oauth_error(400, "invalid_scope", "scope exceeds the original grant")
            grant = Grant(grant.client_id, grant.session, narrowed, grant.nonce, grant.params)
        self._p.counters.refreshes += 1
        return self._token_response(grant, issue_refresh=self._p.rotate_refresh_tokens)

    def _token_response(self, grant: Grant, *, issue_refresh: bool) -> web.Response:
        now = self._p.clock()
        session = grant.session
        scope = " ".join(sorted(grant.scopes))
        access_claims = build_access_token_claims(
            user=session.user,
            scope=scope,
            issuer=self._p.issuer,
            client_id=grant.client_id,
            sid=session.sid,
            jti=self._p.grants.new_id(),
            now=now,
            ttl_seconds=self._p.access_token_ttl,
        )
        shape = self._p.shape
        if shape is not None:
            audience = shape.access_token_audience(grant.params, self._p.issuer)
            if audience is not None:
                access_claims["aud"] = audience
            issue_refresh = issue_refresh and shape.issues_refresh_token(grant.scopes, grant.params)
        id_claims = build_id_token_claims(
            user=session.user,
            scopes=grant.scopes,
            issuer=self._p.issuer,
            client_id=grant.client_id,
            nonce=grant.nonce,
            sid=session.sid,
            auth_time=session.auth_time,
            now=now,
            ttl_seconds=self._p.id_token_ttl,
            faults=self._p.faults,
        )
        if shape is not None:
            id_claims = shape.build_id_token_claims(
                id_claims, session.user, grant.scopes, self._p.issuer
            )
        body: dict[str, Any] = {
            "access_token": sign_token(access_claims, self._p.keys),
            "token_type": "Bearer",
            "expires_in": self._p.access_token_ttl,
            "id_token": sign_token(id_claims, self._p.keys, self._p.faults),
            "scope": scope,
        }
        if issue_refresh:
            body["refresh_token"] = self._p.grants.issue_refresh_token(grant)
        if shape is not None:
            body = shape.build_token_response(body)
        if self._p.opaque_access_tokens:  # the same grant behind a reference token
            opaque = self._p.grants.new_id()
            self._opaque[opaque] = body["access_token"]
            body["access_token"] = opaque
        return web.json_response(body, headers=NO_STORE)

    def _bearer(self, request: web.Request) -> tuple[dict[str, Any], BrowserSession] | None:
        """The access token's claims and provider session, if the token is valid."""
        authorization = request.headers.get("Authorization", "")
        token = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
        if self._p.shape is not None:
            token = self._p.shape.unwrap_access_token(token)
        token = self._opaque.get(token, token)
        claims = read_own_token(token, self._p.keys, issuer=self._p.issuer, now=self._p.clock())
        session = self._p.grants.session(claims.get("sid")) if claims else None
        if claims is None or session is None:
            return None
        return claims, session

    def api_answer(self, body: Any) -> Callable[[web.Request], Awaitable[web.Response]]:
        """A handler answering `body` to a valid access token (a shape's GitHub / Graph API)."""

        async def answer(request: web.Request) -> web.Response:
            self._p.counters.api_calls += 1
            if self._bearer(request) is None:
                return web.json_response({"message": "Bad credentials"}, status=401)
            return web.json_response(body)

        return answer

    async def userinfo(self, request: web.Request) -> web.Response:
        self._p.counters.userinfo += 1
        found = self._bearer(request)
        if found is None:
            challenge = 'Bearer error="invalid_token"'
            return web.json_response(
                {"error": "invalid_token"}, status=401, headers={"WWW-Authenticate": challenge}
            )
        claims, session = found
        scopes = frozenset(str(claims["scope"]).split())
        if self._p.shape is not None:
            body = self._p.shape.build_userinfo(session.user, scopes)
        else:
            body = release_user_claims(session.user, scopes)
        if self._p.faults.userinfo_sub_mismatch:
            body["sub"] = f"{body['sub']}-someone-else"
        return web.json_response(body, headers=NO_STORE)

    async def introspect(self, request: web.Request) -> web.Response:
        self._p.counters.introspect += 1
        posted = await request.post()
        form = {k: v for k, v in posted.items() if isinstance(v, str)}
        try:
            client = authenticate_client(
                authorization=request.headers.get("Authorization"),
                form=form,
                clients=self._p.clients,
                audiences=[self._p.url(INTROSPECT_PATH), self._p.url(TOKEN_PATH), self._p.issuer],
                now=self._p.clock(),
                seen_jtis=self._seen_jtis,
            )
        except ClientAuthError as exc:
            return _oauth_error(401, "invalid_client", exc.description)
        token = form.get("token", "")
        token = self._opaque.get(token, token)
        claims = read_own_token(token, self._p.keys, issuer=self._p.issuer, now=self._p.clock())
        if claims is not None and self._p.grants.session(claims.get("sid")) is not None:
            return web.json_response({"active": True, "token_type": "Bearer", **claims})
        grant = self._p.grants.refresh_grant(token)
        if grant is not None and grant.client_id == client.client_id:
            return web.json_response(
                {
                    "active": True,
                    "token_type": "refresh_token",
                    "client_id": grant.client_id,
                    "sub": grant.session.user["sub"],
                    "scope": " ".join(sorted(grant.scopes)),
                }
            )
        return web.json_response({"active": False})


def _oauth_error(
    status: int, error: str, description: str, headers: Mapping[str, str] | None = None
) -> web.Response:
    body = {"error": error, "error_description": description}
    return web.json_response(body, status=status, headers={**NO_STORE, **(headers or {})})
