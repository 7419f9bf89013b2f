"""One sign-in, start to finish: off to the provider, then its answer turned into a session.

`begin_sign_in` (used by `/oauth2/start` and by the gate for an unauthenticated browser) creates an
attempt (state, nonce, PKCE verifier, where to land), stores it in its own encrypted cookie and
redirects to the provider. `complete_sign_in` redeems the code with the attempt's verifier,
validates the ID token with the attempt's nonce, reads userinfo (whose `sub` must match) and builds
the new `Session`. Sign-in events go to the `sidecar.auth` log with a reason code, and are
counted in the app's metrics; tokens, codes, state and cookies never do.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from aiohttp import web

from sidecar import keys
from sidecar.auth.provider_claims import complete_claims
from sidecar.auth.services import AuthServices
from sidecar.oidc.flow import Callback, build_authorization_url, new_attempt
from sidecar.oidc.tokens import access_token_expiry, build_identity, check_userinfo_subject
from sidecar.session.attempts import LoginAttempt, build_attempt_cookie
from sidecar.session.model import Session, Tokens

log = logging.getLogger("sidecar.auth")

NO_STORE = ("Cache-Control", "no-store")
SESSION_ID_BYTES = 18

# Claims about the token rather than the user: not worth a byte of cookie.
_PROTOCOL_CLAIMS = frozenset(
    {"aud", "azp", "exp", "iat", "nbf", "jti", "nonce", "at_hash", "c_hash", "auth_time"}
)  # acr stays: how the user authenticated is for headers and policies (ForgeRock, Keycloak)


def log_event(request: web.Request, event: str, **fields: str) -> None:
    """A sign-in event line (`sign_in_started`, `sign_in_completed`, `sign_in_failed`, ...)."""
    extra = {"event": event, "request_id": request.get(keys.REQUEST_ID, ""), **fields}
    metrics = request.config_dict.get(keys.METRICS)
    if metrics is not None:
        metrics.sign_in_event(event, fields.get("reason"))
    level = logging.WARNING if event.endswith("failed") else logging.INFO
    log.log(level, "%s", event.replace("_", " "), extra=extra)


def begin_sign_in(request: web.Request, services: AuthServices, redirect_to: str) -> web.HTTPFound:
    """The redirect to the provider for a new attempt landing on `redirect_to` (already checked).

    Raises `ProviderUnavailableError` (a 503 page) while the provider is not ready.
    """
    metadata = services.require_directory().metadata()
    origin = services.origin(request)
    now = services.clock()
    attempt = new_attempt(redirect_to, now=now, token_bytes=services.token_bytes)
    set_cookies = build_attempt_cookie(
        services.codec,
        services.policy,
        attempt,
        request.cookies,
        now=now,
        max_attempts=services.session.max_login_attempts,
        timeout=services.session.login_timeout_seconds,
    )
    url = build_authorization_url(
        metadata, services.provider, attempt, services.redirect_uri(origin)
    )
    log_event(request, "sign_in_started")
    headers = [NO_STORE, *(("Set-Cookie", value) for value in set_cookies)]
    return web.HTTPFound(url, headers=headers)


def merge_claims(id_claims: dict[str, Any], userinfo: dict[str, Any]) -> dict[str, Any]:
    """ID token claims updated with userinfo (never its sub or iss over the ID token's); protocol
    claims dropped. Without an ID token (plain OAuth 2.0) userinfo is the whole identity."""
    merged = dict(id_claims)
    for name, value in userinfo.items():
        if name not in ("sub", "iss") or name not in merged:
            merged[name] = value
    return {name: value for name, value in merged.items() if name not in _PROTOCOL_CLAIMS}


def new_session_id(services: AuthServices) -> str:
    raw = services.token_bytes(SESSION_ID_BYTES)
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


async def complete_sign_in(
    services: AuthServices, attempt: LoginAttempt, callback: Callback, redirect_uri: str
) -> Session:
    """Redeem the callback's code for this attempt and build the signed-in session.

    Raises `LoginError` (its subclass `IdTokenError` for the ID token) when the provider's answer
    cannot be trusted, `ProviderUnavailableError` when the provider cannot be reached.
    """
    client = services.require_client()
    provider = services.provider
    response = await client.exchange_code(callback.code, attempt.code_verifier, redirect_uri)
    id_claims: dict[str, Any] = {}
    if provider.is_oidc and response.id_token is not None:
        id_claims = await services.validate_id_token(response.id_token, nonce=attempt.nonce)
    userinfo: dict[str, Any] = {}
    metadata = services.require_directory().metadata()
    if (provider.use_userinfo or not provider.is_oidc) and metadata.userinfo_endpoint:
        userinfo = await client.userinfo(response.access_token)
        if provider.is_oidc:
            check_userinfo_subject(id_claims, userinfo)
    claims = merge_claims(id_claims, userinfo)
    claims = await complete_claims(services, id_claims, claims, response.access_token)
    identity = build_identity(claims, provider.claims)
    now = services.clock()
    sid = id_claims.get("sid")
    return Session(
        id=new_session_id(services),
        identity=identity,
        tokens=Tokens(
            access_token=response.access_token,
            refresh_token=response.refresh_token,
            id_token=response.id_token,
            expires_at=access_token_expiry(response, now),
        ),
        created_at=now,
        expires_at=now + services.session.lifetime_seconds,
        last_seen_at=now,
        provider_sid=sid if isinstance(sid, str) else None,
    )
