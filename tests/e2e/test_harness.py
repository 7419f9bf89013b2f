"""The e2e harness itself: the real provider does what sidecar's end-to-end tests rely on.

A tiny relying party (an aiohttp app on 127.0.0.1, written here with no sidecar code) sends
Chromium to oidc-provider with authorization code + PKCE; the browser signs in on the provider's
own forms; the test exchanges the code and checks the ID token (email, groups), refresh token
rotation, the per-client access token lifetime and RP-initiated logout. If these fail, the
sidecar e2e tests cannot mean anything.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from aiohttp import web
from harness import (
    ClientCredentials,
    RunningProvider,
    Servers,
    confirm_sign_out_at_provider,
    shows_provider_login_form,
    sign_in_at_provider,
)
from joserfc import jwt
from joserfc.jwk import KeySet

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

SCOPE = "openid email profile groups"


@dataclass
class Attempt:
    nonce: str
    code_verifier: str


@dataclass
class RelyingParty:
    """A minimal OpenID client: /login redirects to the provider, /callback records the answer."""

    metadata: dict[str, Any]
    client: ClientCredentials
    url: str
    attempts: dict[str, Attempt] = field(default_factory=dict)
    callbacks: list[dict[str, str]] = field(default_factory=list)

    @property
    def redirect_uri(self) -> str:
        return f"{self.url}/callback"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/login", self.login)
        app.router.add_get("/callback", self.callback)
        app.router.add_get("/signed-out", self.signed_out)
        return app

    async def login(self, request: web.Request) -> web.Response:
        del request
        state = secrets.token_urlsafe(16)
        attempt = Attempt(nonce=secrets.token_urlsafe(16), code_verifier=secrets.token_urlsafe(48))
        self.attempts[state] = attempt
        challenge = base64.urlsafe_b64encode(
            hashlib.sha256(attempt.code_verifier.encode()).digest()
        ).rstrip(b"=")
        query = urlencode(
            {
                "response_type": "code",
                "client_id": self.client.client_id,
                "redirect_uri": self.redirect_uri,
                "scope": SCOPE,
                "state": state,
                "nonce": attempt.nonce,
                "code_challenge": challenge.decode(),
                "code_challenge_method": "S256",
            }
        )
        raise web.HTTPFound(f"{self.metadata['authorization_endpoint']}?{query}")

    async def callback(self, request: web.Request) -> web.Response:
        self.callbacks.append(dict(request.query))
        return web.Response(text="callback received")

    async def signed_out(self, request: web.Request) -> web.Response:
        del request
        return web.Response(text="signed out at the client")

    async def token_request(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        # client_secret_basic (RFC 6749 2.3.1): both parts form-urlencoded, then Basic.
        pair = f"{quote(self.client.client_id)}:{quote(self.client.client_secret)}"
        headers = {"Authorization": f"Basic {base64.b64encode(pair.encode()).decode()}"}
        async with (
            aiohttp.ClientSession() as http,
            http.post(self.metadata["token_endpoint"], data=form, headers=headers) as response,
        ):
            body: dict[str, Any] = await response.json()
            return response.status, body

    async def redeem_last_callback(self) -> tuple[dict[str, Any], Attempt]:
        callback = self.callbacks[-1]
        assert "error" not in callback, callback
        assert callback["iss"] == self.metadata["issuer"]
        attempt = self.attempts.pop(callback["state"])
        status, tokens = await self.token_request(
            {
                "grant_type": "authorization_code",
                "code": callback["code"],
                "redirect_uri": self.redirect_uri,
                "code_verifier": attempt.code_verifier,
            }
        )
        assert status == 200, tokens
        return tokens, attempt

    async def refresh(self, refresh_token: str) -> tuple[int, dict[str, Any]]:
        return await self.token_request(
            {"grant_type": "refresh_token", "refresh_token": refresh_token}
        )

    async def validated_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as http,
            http.get(self.metadata["jwks_uri"]) as response,
        ):
            keys = KeySet.import_key_set(await response.json())
        token = jwt.decode(id_token, keys, algorithms=["RS256"])
        jwt.JWTClaimsRegistry(
            iss={"essential": True, "value": self.metadata["issuer"]},
            aud={"essential": True, "value": self.client.client_id},
            nonce={"essential": True, "value": nonce},
            exp={"essential": True},
        ).validate(token.claims)
        return dict(token.claims)


async def start_relying_party(
    provider: RunningProvider, servers: Servers, *, access_token_ttl: int | None = None
) -> RelyingParty:
    sock, url = servers.reserve()
    client = await provider.register_client(
        [f"{url}/callback"],
        post_logout_redirect_uris=[f"{url}/signed-out"],
        access_token_ttl=access_token_ttl,
    )
    relying_party = RelyingParty(await provider.metadata(), client, url)
    await servers.serve(relying_party.app(), sock=sock)
    return relying_party


async def sign_in(page: Page, relying_party: RelyingParty, login: str) -> None:
    await page.goto(f"{relying_party.url}/login")
    await sign_in_at_provider(page, login)
    assert page.url.startswith(relying_party.redirect_uri)
    assert await page.text_content("body") == "callback received"


async def test_browser_sign_in_gives_id_token_with_email_and_groups(
    oidc_provider: RunningProvider, servers: Servers, page: Page
) -> None:
    relying_party = await start_relying_party(oidc_provider, servers)

    await page.goto(f"{relying_party.url}/login")
    assert await shows_provider_login_form(page)
    await sign_in_at_provider(page, "admin-alice")
    assert page.url.startswith(relying_party.redirect_uri)
    tokens, attempt = await relying_party.redeem_last_callback()

    claims = await relying_party.validated_id_token(tokens["id_token"], attempt.nonce)
    assert claims["sub"] == "admin-alice"
    assert claims["email"] == "admin-alice@example.com"
    assert claims["email_verified"] is True
    assert claims["preferred_username"] == "admin-alice"
    assert claims["groups"] == ["staff", "admins"]
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 3600
    assert tokens["refresh_token"]


async def test_plain_user_is_staff_only_and_userinfo_agrees(
    oidc_provider: RunningProvider, servers: Servers, page: Page
) -> None:
    relying_party = await start_relying_party(oidc_provider, servers)

    await sign_in(page, relying_party, "bob")
    tokens, attempt = await relying_party.redeem_last_callback()

    claims = await relying_party.validated_id_token(tokens["id_token"], attempt.nonce)
    assert claims["groups"] == ["staff"]
    headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    async with (
        aiohttp.ClientSession() as http,
        http.get(relying_party.metadata["userinfo_endpoint"], headers=headers) as response,
    ):
        userinfo = await response.json()
    assert userinfo["sub"] == "bob"
    assert userinfo["email"] == "bob@example.com"
    assert userinfo["groups"] == ["staff"]


async def test_refresh_rotates_and_reuse_of_old_refresh_token_fails(
    oidc_provider: RunningProvider, servers: Servers, page: Page
) -> None:
    relying_party = await start_relying_party(oidc_provider, servers, access_token_ttl=2)
    await sign_in(page, relying_party, "carol")
    tokens, _ = await relying_party.redeem_last_callback()
    assert tokens["expires_in"] == 2
    first_refresh_token = tokens["refresh_token"]

    status, refreshed = await relying_party.refresh(first_refresh_token)
    assert status == 200, refreshed
    assert refreshed["expires_in"] == 2
    assert refreshed["access_token"] != tokens["access_token"]
    assert refreshed["refresh_token"] != first_refresh_token

    status, reused = await relying_party.refresh(first_refresh_token)
    assert status == 400
    assert reused["error"] == "invalid_grant"
    # oidc-provider treats reuse of a rotated refresh token as theft and revokes the whole grant:
    # the newest refresh token is dead too. This is why sidecar refreshes once per session.
    status, after_reuse = await relying_party.refresh(refreshed["refresh_token"])
    assert status == 400
    assert after_reuse["error"] == "invalid_grant"


async def test_rp_initiated_logout_ends_the_provider_session(
    oidc_provider: RunningProvider, servers: Servers, page: Page
) -> None:
    relying_party = await start_relying_party(oidc_provider, servers)
    await sign_in(page, relying_party, "dave")
    tokens, _ = await relying_party.redeem_last_callback()

    # While the provider session lasts, signing in again needs no form at all.
    await page.goto(f"{relying_party.url}/login")
    assert page.url.startswith(relying_party.redirect_uri)

    query = urlencode(
        {
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": f"{relying_party.url}/signed-out",
        }
    )
    await page.goto(f"{relying_party.metadata['end_session_endpoint']}?{query}")
    await confirm_sign_out_at_provider(page)
    assert page.url == f"{relying_party.url}/signed-out"

    await page.goto(f"{relying_party.url}/login")
    assert await shows_provider_login_form(page)
    status, refreshed = await relying_party.refresh(tokens["refresh_token"])
    assert status == 400
    assert refreshed["error"] == "invalid_grant"
