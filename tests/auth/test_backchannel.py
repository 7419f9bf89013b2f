"""Back-channel logout: the provider's logout token ends the matching sessions, in cookie mode
(revocation list) and Redis mode (deleted), on every replica; any token that fails a check of
the spec is refused with 400 and ends nothing. Tokens are minted here with the dev provider's
own signing key, as the provider would."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from joserfc import jwt
from joserfc.jwk import RSAKey
from support.claims import logout_claims, with_changes
from support.redis_server import RedisServer

from sidecar.auth.backchannel import (
    LOGOUT_EVENT,
    MAX_TOKEN_AGE_SECONDS,
    LogoutTokenError,
    check_logout_claims,
)
from sidecar.config.model import EntraConfig

from .conftest import (
    CLIENT_ID,
    Browser,
    ServerFactory,
    Stack,
    StackFactory,
    add_replica,
)

ENDPOINT = "/oauth2/backchannel_logout"


def logout_token(stack: Stack, *, key: RSAKey | None = None, **changes: Any) -> str:
    """A logout token as the provider would send it; `changes` set (None: remove) claims."""
    claims = logout_claims(stack.provider.issuer, CLIENT_ID, int(stack.clock()), **changes)
    signing_key = key or stack.provider.keys.current
    header = {"alg": "RS256", "kid": stack.provider.keys.current_kid, "typ": "logout+jwt"}
    return jwt.encode(header, claims, signing_key)


async def post_logout(url: str, token: str | None) -> tuple[int, dict[str, str], Any]:
    data = {} if token is None else {"logout_token": token}
    async with (
        aiohttp.ClientSession() as http,
        http.post(url, data=data) as response,
    ):
        body = await response.json() if response.status == 400 else await response.text()
        return response.status, dict(response.headers), body


async def signed_in(stack: Stack) -> tuple[Browser, str]:
    """A signed-in browser and its session's provider sid."""
    browser = await stack.browser()
    await stack.sign_in(browser)
    session = await stack.services.store.load(browser.cookies(), now=stack.clock())
    assert session is not None and session.provider_sid
    return browser, session.provider_sid


async def still_signed_in(stack: Stack, browser: Browser, server: TestServer | None = None) -> bool:
    url = str((server or stack.sidecar).make_url("/whoami"))
    hop = await browser.request("GET", url)
    return hop.status == 200


async def test_logout_by_sid_ends_that_session_only(make_stack: StackFactory) -> None:
    stack = await make_stack()
    (first, sid), (second, _other_sid) = await signed_in(stack), await signed_in(stack)
    status, headers, _ = await post_logout(stack.url(ENDPOINT), logout_token(stack, sid=sid))
    assert status == 200
    assert headers["Cache-Control"] == "no-store"
    assert not await still_signed_in(stack, first)
    assert await still_signed_in(stack, second)


async def test_logout_by_sub_ends_every_session_of_the_user(make_stack: StackFactory) -> None:
    stack = await make_stack()
    (first, _), (second, _) = await signed_in(stack), await signed_in(stack)
    status, _, _ = await post_logout(stack.url(ENDPOINT), logout_token(stack))
    assert status == 200
    assert not await still_signed_in(stack, first)
    assert not await still_signed_in(stack, second)


async def test_signing_in_again_after_a_logout_by_sub_works(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser, _ = await signed_in(stack)
    await post_logout(stack.url(ENDPOINT), logout_token(stack))
    stack.clock.advance(1)
    await stack.sign_in(browser)
    assert await still_signed_in(stack, browser)


async def test_logout_of_another_user_ends_nothing_here(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser, _ = await signed_in(stack)
    token = logout_token(stack, sub="bob")
    assert (await post_logout(stack.url(ENDPOINT), token))[0] == 200
    assert await still_signed_in(stack, browser)


def impostor(stack: Stack) -> RSAKey:
    return stack.provider.keys.impostor


BAD_TOKENS: list[tuple[str, dict[str, Any]]] = [
    ("iss", {"iss": "https://evil.example"}),
    ("aud", {"aud": "another-client"}),
    ("iat", {"iat": 10**10}),
    ("iat", {"iat": 1}),
    ("iat", {"iat": None}),
    ("exp", {"exp": 1}),
    ("events", {"events": None}),
    ("events", {"events": {"http://example.com/other": {}}}),
    ("events", {"events": {LOGOUT_EVENT: "yes"}}),
    ("nonce", {"nonce": "n-0S6_WzA2Mj"}),
    ("sid/sub", {"sub": None}),
    ("jti", {"jti": None}),
]


@pytest.mark.parametrize(("check", "changes"), BAD_TOKENS)
async def test_tokens_failing_a_check_are_refused_and_end_nothing(
    make_stack: StackFactory, check: str, changes: dict[str, Any]
) -> None:
    stack = await make_stack()
    browser, _ = await signed_in(stack)
    status, headers, body = await post_logout(stack.url(ENDPOINT), logout_token(stack, **changes))
    assert status == 400
    assert body["error"] == "invalid_request"
    assert check.split("/")[0] in body["error_description"]
    assert headers["Cache-Control"] == "no-store"
    assert await still_signed_in(stack, browser)


async def test_token_signed_by_another_key_is_refused(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser, _ = await signed_in(stack)
    token = logout_token(stack, key=impostor(stack))
    status, _, body = await post_logout(stack.url(ENDPOINT), token)
    assert status == 400 and body["error"] == "invalid_request"
    assert await still_signed_in(stack, browser)


@pytest.mark.parametrize("token", [None, "", "not.a.jwt", "a" * 100])
async def test_missing_or_garbage_token_is_refused(
    make_stack: StackFactory, token: str | None
) -> None:
    stack = await make_stack()
    status, _, body = await post_logout(stack.url(ENDPOINT), token)
    assert status == 400 and body["error"] == "invalid_request"


async def test_an_id_token_is_not_a_logout_token(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser, _ = await signed_in(stack)
    session = await stack.services.store.load(browser.cookies(), now=stack.clock())
    assert session is not None and session.tokens.id_token
    status, _, _ = await post_logout(stack.url(ENDPOINT), session.tokens.id_token)
    assert status == 400
    assert await still_signed_in(stack, browser)


async def test_a_replayed_token_is_refused(make_stack: StackFactory) -> None:
    stack = await make_stack()
    token = logout_token(stack, sub="bob")
    assert (await post_logout(stack.url(ENDPOINT), token))[0] == 200
    status, _, body = await post_logout(stack.url(ENDPOINT), token)
    assert status == 400 and "jti" in body["error_description"]


async def test_only_post_is_accepted(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hop = await browser.request("GET", stack.url(ENDPOINT))
    assert hop.status == 405


def test_claims_check_accepts_a_token_without_exp_within_the_max_age() -> None:
    claims = {
        "iss": "https://op",
        "aud": ["other", CLIENT_ID],
        "iat": 1000,
        "jti": "j",
        "sid": "s",
        "events": {LOGOUT_EVENT: {}},
    }
    request = check_logout_claims(
        claims, issuer="https://op", client_id=CLIENT_ID, now=1000 + 60, leeway=0
    )
    assert (request.sid, request.sub, request.jti) == ("s", None, "j")
    assert request.remember_until == 1000 + MAX_TOKEN_AGE_SECONDS
    with pytest.raises(LogoutTokenError):
        check_logout_claims(
            claims,
            issuer="https://op",
            client_id=CLIENT_ID,
            now=1000 + MAX_TOKEN_AGE_SECONDS + 1,
            leeway=0,
        )


# -- a multi-tenant Entra provider: iss is the issuer template filled with the token's tid --------

TEMPLATE = "https://login.microsoftonline.com/{tenantid}/v2.0"
COMMON = "https://login.microsoftonline.com/organizations/v2.0"  # what the config names
TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"
OTHER_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"


def tenant_claims(tenant: str = TENANT, **changes: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "iss": TEMPLATE.replace("{tenantid}", tenant),
        "tid": tenant,
        "aud": CLIENT_ID,
        "iat": 1000,
        "jti": "j",
        "sub": "alice",
        "events": {LOGOUT_EVENT: {}},
    }
    return with_changes(claims, changes)


def check_multi_tenant(
    claims: dict[str, Any], allowed: tuple[str, ...] = (TENANT,), template: str | None = TEMPLATE
) -> str | None:
    """The sub of the logout request, as the endpoint checks it for this provider."""
    return check_logout_claims(
        claims,
        issuer=COMMON,
        client_id=CLIENT_ID,
        now=1000,
        leeway=0,
        issuer_template=template,
        entra=EntraConfig(allowed_tenants=allowed),
    ).sub


def test_multi_tenant_logout_token_of_an_allowed_tenant_is_accepted() -> None:
    assert check_multi_tenant(tenant_claims()) == "alice"
    assert check_multi_tenant(tenant_claims(OTHER_TENANT), allowed=("any",)) == "alice"


MULTI_TENANT_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "tenant not allowed": (tenant_claims(OTHER_TENANT), "tid: tenant"),
    "tid missing": (tenant_claims(tid=None), "tid: missing"),
    "tid malformed": (tenant_claims(tid="contoso"), "tid: missing"),
    "iss of another tenant than tid": (
        tenant_claims(iss=TEMPLATE.replace("{tenantid}", OTHER_TENANT)),
        "iss",
    ),
    "iss the configured common issuer": (tenant_claims(iss=COMMON), "iss"),
    "iss not the template at all": (tenant_claims(iss="https://evil.example"), "iss"),
}


@pytest.mark.parametrize(
    ("claims", "reason"), MULTI_TENANT_REFUSED.values(), ids=MULTI_TENANT_REFUSED.keys()
)
def test_multi_tenant_logout_token_refused(claims: dict[str, Any], reason: str) -> None:
    with pytest.raises(LogoutTokenError, match=f"^{reason}"):
        check_multi_tenant(claims)


def test_single_tenant_logout_token_keeps_the_exact_issuer() -> None:
    assert check_multi_tenant(tenant_claims(iss=COMMON), template=None) == "alice"
    with pytest.raises(LogoutTokenError, match=r"^iss"):
        check_multi_tenant(tenant_claims(), template=None)


# -- with Redis ------------------------------------------------------------------------------


def redis_session(server: RedisServer, store: str) -> dict[str, Any]:
    return {"store": store, "redis": {"url": server.url}}


async def test_redis_mode_logout_deletes_the_session_on_every_replica(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(session=redis_session(redis_server, "redis"))
    replica = await add_replica(stack, aiohttp_server)
    browser, sid = await signed_in(stack)
    assert await still_signed_in(stack, browser, replica)
    status, _, _ = await post_logout(str(replica.make_url(ENDPOINT)), logout_token(stack, sid=sid))
    assert status == 200
    assert not await still_signed_in(stack, browser)
    assert not await still_signed_in(stack, browser, replica)


async def test_cookie_mode_revocation_reaches_the_other_replica_within_the_sync_interval(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(session=redis_session(redis_server, "cookie"))
    replica = await add_replica(stack, aiohttp_server)
    browser, _ = await signed_in(stack)
    assert await still_signed_in(stack, browser, replica)
    status, _, _ = await post_logout(stack.url(ENDPOINT), logout_token(stack))
    assert status == 200
    assert not await still_signed_in(stack, browser)  # the replica that got it: at once
    stack.clock.advance(2)  # the other one re-reads the list every 2 seconds
    assert not await still_signed_in(stack, browser, replica)


async def test_a_token_replayed_to_another_replica_is_refused(
    make_stack: StackFactory, aiohttp_server: ServerFactory, redis_server: RedisServer
) -> None:
    stack = await make_stack(session=redis_session(redis_server, "cookie"))
    replica = await add_replica(stack, aiohttp_server)
    token = logout_token(stack, sub="bob")
    assert (await post_logout(stack.url(ENDPOINT), token))[0] == 200
    assert (await post_logout(str(replica.make_url(ENDPOINT)), token))[0] == 400
