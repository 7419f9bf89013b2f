"""OpenID Connect Back-Channel Logout 1.0: the provider tells sidecar which sessions are over.

`POST <prefix>/backchannel_logout` with the form field `logout_token`, sent by the provider's server
(never a browser). The token is checked (section 2.6 of the spec): a compact JWS signed by the
provider with an allowed asymmetric algorithm (its JWKS re-fetched once for an unknown `kid`), `iss`
the provider (for a multi-tenant Entra provider, its issuer template filled with the token's own
`tid`, an allowed tenant: `sidecar.oidc.entra.expected_issuer`, as at sign-in), `aud` this client,
`iat` not in the future and not older than `MAX_TOKEN_AGE_SECONDS` (and `exp`, when present, not
passed), `events` holding the back-channel-logout event as an object, no `nonce` (so an ID token can
never pass for one), `sid` and/or `sub`, and a `jti` not seen before (remembered until the token
could no longer be accepted). Then the matching sessions end: deleted from Redis in redis mode,
revoked through the revocation list in cookie mode (`sidecar.session.revocation`). Answers: 200 with
`Cache-Control: no-store`; 400 with a JSON `{"error": "invalid_request", ...}` naming the failed
check for a token that does not pass; 503 when the provider's keys or the session store cannot be
reached (the provider may retry). `check_logout_claims` is the pure claims check.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from sidecar import keys
from sidecar.auth.services import AuthServices
from sidecar.config.model import EntraConfig
from sidecar.errors import IdTokenError
from sidecar.oidc.entra import expected_issuer
from sidecar.oidc.tokens import token_kid, verify_signature
from sidecar.session.revocation import ReplayGuard

log = logging.getLogger("sidecar.auth")

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
MAX_TOKEN_AGE_SECONDS = 600
"""A logout token issued longer ago than this is refused (and jtis are kept no longer)."""
MAX_FORM_BYTES = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store"}


class LogoutTokenError(ValueError):
    """The logout token failed a check; the message names which (no token content)."""


@dataclass(frozen=True)
class LogoutRequest:
    """What a valid logout token asks for, and until when its `jti` must be remembered."""

    sid: str | None
    sub: str | None
    jti: str
    remember_until: float


class SessionEnder(Protocol):
    """A store that can end sessions by provider session and/or user."""

    async def end_sessions(self, *, sid: str | None, sub: str | None, now: float) -> int: ...


def _audiences(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise LogoutTokenError("aud: not a string or a list of strings")


def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise LogoutTokenError(f"{name}: not a number")
    return float(value)


def _optional_text(claims: Mapping[str, Any], name: str) -> str | None:
    value = claims.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise LogoutTokenError(f"{name}: not a non-empty string")
    return value


def check_logout_claims(
    claims: Mapping[str, Any],
    *,
    issuer: str,
    client_id: str,
    now: float,
    leeway: float,
    issuer_template: str | None = None,
    entra: EntraConfig | None = None,
) -> LogoutRequest:
    """The logout request in verified `claims`, or `LogoutTokenError` (spec section 2.6).
    With `issuer_template` (a multi-tenant provider) the `iss` must be the template filled with
    the token's `tid`, a tenant `entra` allows, instead of `issuer`."""
    if issuer_template is not None:
        try:
            issuer = expected_issuer(issuer_template, claims, entra)
        except IdTokenError as exc:  # tid missing, malformed or not an allowed tenant
            raise LogoutTokenError(exc.reason) from exc
    if claims.get("iss") != issuer:
        raise LogoutTokenError("iss: not the provider")
    if client_id not in _audiences(claims.get("aud")):
        raise LogoutTokenError("aud: not this client")
    iat = _number(claims, "iat")
    if iat is None:
        raise LogoutTokenError("iat: missing")
    if iat > now + leeway:
        raise LogoutTokenError("iat: in the future")
    if iat < now - MAX_TOKEN_AGE_SECONDS - leeway:
        raise LogoutTokenError("iat: too old")
    exp = _number(claims, "exp")
    if exp is not None and exp < now - leeway:
        raise LogoutTokenError("exp: expired")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(LOGOUT_EVENT), dict):
        raise LogoutTokenError("events: no back-channel logout event")
    if "nonce" in claims:
        raise LogoutTokenError("nonce: must not be present in a logout token")
    sid = _optional_text(claims, "sid")
    sub = _optional_text(claims, "sub")
    if sid is None and sub is None:
        raise LogoutTokenError("sid/sub: neither present")
    jti = _optional_text(claims, "jti")
    if jti is None:
        raise LogoutTokenError("jti: missing")
    remember_until = max(exp or 0.0, iat + MAX_TOKEN_AGE_SECONDS) + leeway
    return LogoutRequest(sid=sid, sub=sub, jti=jti, remember_until=remember_until)


def _invalid(description: str) -> web.Response:
    return web.json_response(
        {"error": "invalid_request", "error_description": description},
        status=400,
        headers=_NO_STORE,
    )


class BackchannelLogout:
    """The endpoint, bound to the services, the store that ends sessions and the jti memory."""

    def __init__(self, services: AuthServices, ender: SessionEnder, replays: ReplayGuard) -> None:
        self.services = services
        self.ender = ender
        self.replays = replays

    async def _verified_claims(self, token: str) -> dict[str, Any]:
        services = self.services
        directory = services.require_directory()  # ProviderUnavailableError: 503
        keys_ = await directory.key_set(token_kid(token))
        try:
            return verify_signature(
                token, keys=keys_, algorithms=services.provider.id_token_algorithms
            )
        except IdTokenError as exc:  # bad signature, alg, format; a kid unknown even after re-fetch
            raise LogoutTokenError(exc.reason) from exc

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            raise web.HTTPMethodNotAllowed(request.method, ["POST"])
        fields = request[keys.ACCESS_LOG_FIELDS]
        fields["route"] = "backchannel-logout"
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return _invalid("request too large")
        form = await request.post()
        token = form.get("logout_token")
        if not isinstance(token, str) or not token:
            fields.update(decision="deny", reasons="logout-token-missing")
            return _invalid("logout_token is missing")
        services = self.services
        now = services.clock()
        try:
            claims = await self._verified_claims(token)
            metadata = services.require_directory().metadata()
            logout = check_logout_claims(
                claims,
                issuer=metadata.issuer or services.provider.issuer or "",
                client_id=services.provider.client_id,
                now=now,
                leeway=services.provider.clock_skew_seconds,
                issuer_template=metadata.issuer_template,
                entra=services.provider.entra,
            )
        except (LogoutTokenError, IdTokenError) as exc:
            reason = str(exc) if isinstance(exc, LogoutTokenError) else exc.reason
            log.warning(
                "back-channel logout refused: %s", reason, extra={"event": "logout_refused"}
            )
            fields.update(decision="deny", reasons="logout-token-invalid")
            return _invalid(f"logout_token rejected ({reason.split(':')[0]})")
        if not await self.replays.first_use(logout.jti, now=now, until=logout.remember_until):
            fields.update(decision="deny", reasons="logout-token-replayed")
            return _invalid("logout_token rejected (jti already used)")
        ended = await self.ender.end_sessions(sid=logout.sid, sub=logout.sub, now=now)
        log.info(
            "back-channel logout",
            extra={
                "event": "backchannel_logout",
                "sub": logout.sub or "",
                "by_sid": logout.sid is not None,
                "sessions_deleted": ended,
            },
        )
        fields.update(decision="signed-out", reasons="backchannel-logout")
        if logout.sub:
            fields["sub"] = logout.sub
        return web.Response(status=200, headers=_NO_STORE)


def add_backchannel_route(
    app: web.Application, services: AuthServices, ender: SessionEnder, replays: ReplayGuard
) -> None:
    """Register `<prefix>/backchannel_logout`."""
    endpoint = BackchannelLogout(services, ender, replays)
    app.router.add_route("*", services.endpoints.backchannel_logout, endpoint.handle)
