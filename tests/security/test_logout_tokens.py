"""Back-channel logout tokens under attack (OpenID Connect Back-Channel Logout 1.0, 2.6).

`POST /oauth2/backchannel_logout` is reachable by anyone who reaches sidecar, so a forged logout
token is a way to sign victims out (or, if the checks were loose, to probe them). Each case posts
what an attacker can make — `alg: none`, HS256 keyed with the provider's public key, a key not in
the JWKS, an unknown or absent kid, an ID token, a replay, each claim check broken — and asserts
400, that the victim is still signed in, and that an unknown kid costs at most one JWKS fetch.
Claim-by-claim checks beyond these live in tests/auth/test_backchannel.py.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from typing import Any

import aiohttp
import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from support.claims import LOGOUT_EVENT, logout_claims

from .conftest import CLIENT_ID, Browser, Stack, StackFactory

ENDPOINT = "/oauth2/backchannel_logout"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(stack: Stack, **changes: Any) -> dict[str, Any]:
    return logout_claims(stack.provider.issuer, CLIENT_ID, int(stack.clock()), **changes)


def signed(
    stack: Stack,
    claims: dict[str, Any],
    *,
    key: RSAKey | None = None,
    header: dict[str, Any] | None = None,
) -> str:
    head = header or {"alg": "RS256", "kid": stack.provider.keys.current_kid, "typ": "logout+jwt"}
    return jwt.encode(head, claims, key or stack.provider.keys.current)


def alg_none(stack: Stack, claims: dict[str, Any]) -> str:
    head = {"alg": "none", "kid": stack.provider.keys.current_kid, "typ": "logout+jwt"}
    return _b64(json.dumps(head).encode()) + "." + _b64(json.dumps(claims).encode()) + "."


def hs256_public_key(stack: Stack, claims: dict[str, Any]) -> str:
    head = {"alg": "HS256", "kid": stack.provider.keys.current_kid, "typ": "logout+jwt"}
    signing_input = _b64(json.dumps(head).encode()) + "." + _b64(json.dumps(claims).encode())
    mac = hmac.new(stack.provider.keys.public_pem(), signing_input.encode(), hashlib.sha256)
    return signing_input + "." + _b64(mac.digest())


async def post(stack: Stack, data: dict[str, str]) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.post(stack.url(ENDPOINT), data=data) as r:
        return r.status, await r.text()


async def signed_in(stack: Stack) -> Browser:
    browser = await stack.browser()
    await stack.sign_in(browser)
    return browser


async def still_signed_in(stack: Stack, browser: Browser) -> bool:
    return (await browser.request("GET", stack.url("/whoami"))).status == 200


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


FORGERIES = [
    pytest.param(lambda s: alg_none(s, _claims(s)), id="alg-none"),
    pytest.param(lambda s: hs256_public_key(s, _claims(s)), id="hs256-keyed-with-the-public-key"),
    pytest.param(lambda s: signed(s, _claims(s), key=s.provider.keys.impostor), id="bad-signature"),
    pytest.param(
        lambda s: signed(
            s,
            _claims(s),
            key=s.provider.keys.impostor,
            header={"alg": "RS256", "kid": s.provider.keys.impostor.kid},
        ),
        id="unknown-kid",
    ),
    pytest.param(
        lambda s: signed(s, _claims(s), key=s.provider.keys.impostor, header={"alg": "RS256"}),
        id="no-kid-wrong-key",
    ),
    pytest.param(lambda s: signed(s, _claims(s, iss="https://evil.example")), id="iss"),
    pytest.param(lambda s: signed(s, _claims(s, aud="another-client")), id="aud"),
    pytest.param(lambda s: signed(s, _claims(s, iat=None)), id="iat-absent"),
    pytest.param(lambda s: signed(s, _claims(s, iat=int(s.clock()) + 3600)), id="iat-future"),
    pytest.param(lambda s: signed(s, _claims(s, iat=int(s.clock()) - 86400)), id="iat-stale"),
    pytest.param(lambda s: signed(s, _claims(s, exp=int(s.clock()) - 600)), id="exp-passed"),
    pytest.param(lambda s: signed(s, _claims(s, events=None)), id="events-absent"),
    pytest.param(lambda s: signed(s, _claims(s, events={LOGOUT_EVENT: "x"})), id="events-wrong"),
    pytest.param(lambda s: signed(s, _claims(s, nonce="abc")), id="nonce-present"),
    pytest.param(lambda s: signed(s, _claims(s, sub=None)), id="no-sid-no-sub"),
    pytest.param(lambda s: signed(s, _claims(s, jti=None)), id="jti-absent"),
    pytest.param(lambda s: "x" * 70000, id="oversized"),
    pytest.param(lambda s: "a.b.c.d.e", id="jwe-shaped-garbage"),
    pytest.param(lambda s: "", id="empty"),
]


@pytest.mark.parametrize("forge", FORGERIES)
async def test_forged_logout_token_is_refused_and_ends_nothing(stack: Stack, forge: Any) -> None:
    browser = await signed_in(stack)
    status, _ = await post(stack, {"logout_token": forge(stack)})
    assert status in (400, 413)
    assert await still_signed_in(stack, browser)


async def test_an_id_token_is_not_a_logout_token(stack: Stack) -> None:
    browser = await signed_in(stack)
    session = await stack.services.store.load(browser.cookies(), now=stack.clock())
    assert session is not None and session.tokens.id_token
    status, _ = await post(stack, {"logout_token": session.tokens.id_token})
    assert status == 400
    assert await still_signed_in(stack, browser)


async def test_unknown_kids_cost_at_most_one_jwks_fetch(stack: Stack) -> None:
    before = stack.provider.counters.jwks
    for _ in range(10):
        header = {"alg": "RS256", "kid": f"kid-{uuid.uuid4()}"}
        token = signed(stack, _claims(stack), key=stack.provider.keys.impostor, header=header)
        assert (await post(stack, {"logout_token": token}))[0] in (400, 503)
    assert stack.provider.counters.jwks - before <= 1


async def test_valid_logout_token_ends_the_session_once_and_replay_is_refused(
    stack: Stack,
) -> None:
    """Control: the provider's genuine token works, once."""
    browser = await signed_in(stack)
    token = signed(stack, _claims(stack))
    assert (await post(stack, {"logout_token": token}))[0] == 200
    assert not await still_signed_in(stack, browser)
    assert (await post(stack, {"logout_token": token}))[0] == 400


async def test_logout_token_in_the_query_or_a_get_is_refused(stack: Stack) -> None:
    browser = await signed_in(stack)
    token = signed(stack, _claims(stack))
    async with aiohttp.ClientSession() as http:
        async with http.get(stack.url(ENDPOINT), params={"logout_token": token}) as response:
            assert response.status == 405
        async with http.post(stack.url(ENDPOINT), params={"logout_token": token}) as response:
            assert response.status == 400
    assert await still_signed_in(stack, browser)
