"""The development OpenID provider driven by a plain aiohttp client, as a relying party would."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote_plus, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from joserfc import jwk, jwt
from joserfc.errors import BadSignatureError, JoseError

from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_browser_endpoints import SESSION_COOKIE
from sidecar.dev.provider_clients import ASSERTION_TYPE, DevClient
from sidecar.dev.shapes import load_shape

REDIRECT_URI = "http://rp.test/oauth2/callback"
LOGOUT_URI = "http://rp.test/signed-out"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"  # RFC 7636 Appendix B
CLIENT = DevClient(
    "app",
    "app-secret",
    redirect_uris=[REDIRECT_URI],
    post_logout_redirect_uris=[LOGOUT_URI],
)
ALICE = {"sub": "alice", "email": "alice@example.org", "groups": ["admins", "users"]}

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def basic(client_id: str, secret: str) -> dict[str, str]:
    """RFC 6749 2.3.1 client_secret_basic: form-urlencode both parts, then base64."""
    raw = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def provider(clock: Clock) -> DevProvider:
    return DevProvider(clients=[CLIENT], clock=clock, auto_login=ALICE)


@pytest.fixture
async def client(provider: DevProvider, aiohttp_client: MakeClient) -> TestClient[Any, Any]:
    test_client = await aiohttp_client(provider.app())
    provider.issuer = str(test_client.make_url("/"))
    return test_client


def query_of(response: aiohttp.ClientResponse) -> dict[str, str]:
    location = response.headers["Location"]
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


async def authorize(client: TestClient[Any, Any], **overrides: str) -> aiohttp.ClientResponse:
    params = {
        "response_type": "code",
        "client_id": "app",
        "redirect_uri": REDIRECT_URI,
        "scope": "openid email profile",
        "state": "state-1",
        "nonce": "nonce-1",
        "code_challenge": s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    params.update(overrides)
    params = {k: v for k, v in params.items() if v != ""}
    return await client.get("/authorize", params=params, allow_redirects=False)


async def exchange(
    client: TestClient[Any, Any], code: str, verifier: str = VERIFIER
) -> aiohttp.ClientResponse:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": verifier,
    }
    return await client.post("/token", data=form, headers=basic("app", "app-secret"))


async def sign_in(client: TestClient[Any, Any]) -> dict[str, Any]:
    response = await authorize(client)
    assert response.status == 302
    token_response = await exchange(client, query_of(response)["code"])
    assert token_response.status == 200
    body: dict[str, Any] = await token_response.json()
    return body


async def refresh(client: TestClient[Any, Any], refresh_token: str) -> aiohttp.ClientResponse:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    return await client.post("/token", data=form, headers=basic("app", "app-secret"))


async def verify(client: TestClient[Any, Any], token: str) -> jwt.Token:
    """Verify a token the way a relying party should: JWKS key, RS256 only."""
    jwks = await (await client.get("/jwks")).json()
    return jwt.decode(token, jwk.KeySet.import_key_set(jwks), algorithms=["RS256"])


def header_of(token: str) -> dict[str, Any]:
    segment = token.split(".")[0]
    header: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    )
    return header


# -- the honest provider ---------------------------------------------------------------------


async def test_discovery_names_endpoints_under_the_issuer(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    response = await client.get("/.well-known/openid-configuration")
    meta = await response.json()
    assert meta["issuer"] == provider.issuer
    assert meta["token_endpoint"] == provider.issuer + "/token"
    assert meta["end_session_endpoint"] == provider.issuer + "/end_session"
    assert meta["code_challenge_methods_supported"] == ["S256"]
    assert meta["authorization_response_iss_parameter_supported"] is True
    assert "NOT FOR PRODUCTION" in meta["dev_provider_warning"]
    assert response.headers["X-Dev-Provider"] == "NOT FOR PRODUCTION"


async def test_code_flow_with_pkce_issues_an_id_token_that_verifies(
    client: TestClient[Any, Any], provider: DevProvider, clock: Clock
) -> None:
    response = await authorize(client)
    callback = query_of(response)
    assert response.headers["Location"].startswith(REDIRECT_URI + "?")
    assert callback["state"] == "state-1"
    assert callback["iss"] == provider.issuer
    tokens = await (await exchange(client, callback["code"])).json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    claims = (await verify(client, tokens["id_token"])).claims
    jwt.JWTClaimsRegistry(now=int(clock.now), iss={"value": provider.issuer}).validate(claims)
    assert claims["aud"] == "app"
    assert claims["azp"] == "app"
    assert claims["nonce"] == "nonce-1"
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.org"
    assert claims["email_verified"] is True
    assert claims["preferred_username"] == "alice"
    assert claims["groups"] == ["admins", "users"]
    assert claims["auth_time"] == int(clock.now)
    assert claims["sid"]
    assert provider.counters.code_exchanges == 1


async def test_code_exchange_refuses_a_wrong_pkce_verifier(client: TestClient[Any, Any]) -> None:
    code = query_of(await authorize(client))["code"]
    response = await exchange(client, code, verifier="x" * 43)
    assert response.status == 400
    assert (await response.json())["error"] == "invalid_grant"


async def test_code_can_be_used_only_once(client: TestClient[Any, Any]) -> None:
    code = query_of(await authorize(client))["code"]
    assert (await exchange(client, code)).status == 200
    second = await exchange(client, code)
    assert (await second.json())["error"] == "invalid_grant"


async def test_authorize_refuses_plain_pkce_and_missing_pkce(
    client: TestClient[Any, Any],
) -> None:
    plain = query_of(await authorize(client, code_challenge_method="plain"))
    assert plain["error"] == "invalid_request"
    missing = query_of(await authorize(client, code_challenge="", code_challenge_method=""))
    assert missing["error"] == "invalid_request"
    assert missing["state"] == "state-1"


async def test_authorize_shows_an_error_page_for_an_unregistered_redirect_uri(
    client: TestClient[Any, Any],
) -> None:
    response = await authorize(client, redirect_uri="https://evil.test/cb")
    assert response.status == 400
    assert "Location" not in response.headers
    assert "redirect_uri" in await response.text()


async def test_token_endpoint_refuses_wrong_secret_and_wrong_method(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    code = query_of(await authorize(client))["code"]
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI}
    wrong = await client.post("/token", data=form, headers=basic("app", "nope"))
    assert wrong.status == 401
    assert (await wrong.json())["error"] == "invalid_client"
    assert wrong.headers["WWW-Authenticate"].startswith("Basic")
    posted = await client.post(
        "/token", data={**form, "client_id": "app", "client_secret": "app-secret"}
    )
    assert posted.status == 401
    assert "client_secret_basic" in (await posted.json())["error_description"]


async def test_client_secret_post_is_accepted_for_a_client_registered_for_it(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.add_client(
        DevClient(
            "poster", "s3cret", redirect_uris=[REDIRECT_URI], auth_method="client_secret_post"
        )
    )
    code = query_of(await authorize(client, client_id="poster"))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        "client_id": "poster",
        "client_secret": "s3cret",
    }
    response = await client.post("/token", data=form)
    assert response.status == 200
    assert (await verify(client, (await response.json())["id_token"])).claims["aud"] == "poster"


async def test_private_key_jwt_is_verified_and_its_jti_is_one_time(
    client: TestClient[Any, Any], provider: DevProvider, clock: Clock
) -> None:
    key = jwk.RSAKey.generate_key(2048, auto_kid=True)
    provider.add_client(
        DevClient(
            "signer",
            redirect_uris=[REDIRECT_URI],
            auth_method="private_key_jwt",
            jwks={"keys": [key.as_dict(private=False)]},
        )
    )
    assertion = jwt.encode(
        {"alg": "RS256", "kid": key.kid},
        {
            "iss": "signer",
            "sub": "signer",
            "aud": provider.issuer + "/token",
            "jti": "assertion-1",
            "exp": int(clock.now) + 60,
        },
        key,
    )

    async def redeem() -> aiohttp.ClientResponse:
        code = query_of(await authorize(client, client_id="signer"))["code"]
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": REDIRECT_URI,
            "code_verifier": VERIFIER,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion,
        }
        return await client.post("/token", data=form)

    assert (await redeem()).status == 200
    replay = await redeem()
    assert replay.status == 401
    assert "jti" in (await replay.json())["error_description"]


async def test_private_key_jwt_signed_by_another_key_is_refused(
    client: TestClient[Any, Any], provider: DevProvider, clock: Clock
) -> None:
    registered = jwk.RSAKey.generate_key(2048, auto_kid=True)
    other = jwk.RSAKey.generate_key(2048, auto_kid=True)
    provider.add_client(
        DevClient(
            "signer",
            redirect_uris=[REDIRECT_URI],
            auth_method="private_key_jwt",
            jwks={"keys": [registered.as_dict(private=False)]},
        )
    )
    claims = {
        "iss": "signer",
        "sub": "signer",
        "aud": provider.issuer,
        "jti": "j",
        "exp": int(clock.now) + 60,
    }
    form = {
        "grant_type": "authorization_code",
        "code": query_of(await authorize(client, client_id="signer"))["code"],
        "redirect_uri": REDIRECT_URI,
        "code_verifier": VERIFIER,
        "client_assertion_type": ASSERTION_TYPE,
        "client_assertion": jwt.encode({"alg": "RS256", "kid": registered.kid}, claims, other),
    }
    response = await client.post("/token", data=form)
    assert response.status == 401
    assert (await response.json())["error"] == "invalid_client"


async def test_refresh_rotates_and_a_reused_refresh_token_is_invalid_grant(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    first = (await sign_in(client))["refresh_token"]
    response = await refresh(client, first)
    assert response.status == 200
    renewed = await response.json()
    assert renewed["refresh_token"] != first
    assert (await verify(client, renewed["id_token"])).claims["sub"] == "alice"
    reused = await refresh(client, first)
    assert reused.status == 400
    assert (await reused.json())["error"] == "invalid_grant"
    assert (await refresh(client, renewed["refresh_token"])).status == 200
    assert provider.counters.refreshes == 2
    assert provider.counters.token_requests == 4


async def test_refresh_without_rotation_keeps_the_refresh_token_usable(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.rotate_refresh_tokens = False
    token = (await sign_in(client))["refresh_token"]
    for _ in range(2):
        response = await refresh(client, token)
        assert response.status == 200
        assert "refresh_token" not in await response.json()


async def test_userinfo_answers_for_a_live_access_token_only(
    client: TestClient[Any, Any], provider: DevProvider, clock: Clock
) -> None:
    provider.access_token_ttl = 5
    access = (await sign_in(client))["access_token"]
    bearer = {"Authorization": f"Bearer {access}"}
    info = await (await client.get("/userinfo", headers=bearer)).json()
    assert info == {
        "sub": "alice",
        "name": "alice",
        "preferred_username": "alice",
        "email": "alice@example.org",
        "email_verified": True,
        "groups": ["admins", "users"],
    }
    clock.now += 6
    expired = await client.get("/userinfo", headers=bearer)
    assert expired.status == 401
    assert 'error="invalid_token"' in expired.headers["WWW-Authenticate"]


async def test_introspection_reports_access_and_refresh_tokens(
    client: TestClient[Any, Any],
) -> None:
    tokens = await sign_in(client)
    auth = basic("app", "app-secret")
    access = await (
        await client.post("/introspect", data={"token": tokens["access_token"]}, headers=auth)
    ).json()
    assert access["active"] is True
    assert access["sub"] == "alice"
    rt = await (
        await client.post("/introspect", data={"token": tokens["refresh_token"]}, headers=auth)
    ).json()
    assert rt["active"] is True
    junk = await (await client.post("/introspect", data={"token": "junk"}, headers=auth)).json()
    assert junk == {"active": False}


async def test_opaque_access_tokens_work_at_userinfo_and_introspection(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.opaque_access_tokens = True
    access = (await sign_in(client))["access_token"]
    assert access.count(".") != 2  # a reference, not a JWT
    info = await client.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
    assert (await info.json())["sub"] == "alice"
    auth = basic("app", "app-secret")
    answer = await (await client.post("/introspect", data={"token": access}, headers=auth)).json()
    assert (answer["active"], answer["token_type"], answer["sub"]) == (True, "Bearer", "alice")
    assert answer["aud"] == provider.issuer


# -- sign-in form and provider session -------------------------------------------------------


async def test_login_form_renders_escaped_and_its_post_completes_the_request(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.auto_login = None
    form_page = await authorize(client, state='"><script>alert(1)</script>')
    assert form_page.status == 200
    page = await form_page.text()
    assert "NOT FOR PRODUCTION" in page
    assert "<script>alert(1)" not in page
    assert "&quot;&gt;&lt;script&gt;" in page
    posted = await client.post(
        "/authorize",
        data={
            "response_type": "code",
            "client_id": "app",
            "redirect_uri": REDIRECT_URI,
            "scope": "openid email profile groups",
            "state": "s",
            "nonce": "n",
            "code_challenge": s256(VERIFIER),
            "code_challenge_method": "S256",
            "username": "Bob Builder",
            "email": "",
            "groups": "builders, dev ,",
        },
        allow_redirects=False,
    )
    assert posted.status == 302
    assert SESSION_COOKIE in posted.cookies
    tokens = await (await exchange(client, query_of(posted)["code"])).json()
    claims = (await verify(client, tokens["id_token"])).claims
    assert claims["sub"] == "Bob Builder"
    assert claims["email"] == "bob.builder@example.com"
    assert claims["groups"] == ["builders", "dev"]
    again = await authorize(client)
    assert again.status == 302, "the provider session cookie skips the form"
    assert provider.counters.logins == 1


async def test_prompt_none_without_a_session_is_login_required(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.auto_login = None
    callback = query_of(await authorize(client, prompt="none"))
    assert callback["error"] == "login_required"


async def test_end_session_redirects_with_state_and_ends_the_provider_session(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    tokens = await sign_in(client)
    response = await client.get(
        "/end_session",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": LOGOUT_URI,
            "state": "bye-1",
        },
        allow_redirects=False,
    )
    assert response.status == 302
    assert response.headers["Location"] == LOGOUT_URI + "?state=bye-1"
    assert response.cookies[SESSION_COOKIE].value == ""
    assert (await refresh(client, tokens["refresh_token"])).status == 400
    provider.auto_login = None
    assert (await authorize(client)).status == 200, "the sign-in form is back"


async def test_end_session_refuses_an_unregistered_post_logout_redirect_uri(
    client: TestClient[Any, Any],
) -> None:
    tokens = await sign_in(client)
    response = await client.get(
        "/end_session",
        params={
            "id_token_hint": tokens["id_token"],
            "post_logout_redirect_uri": "https://evil.test/",
        },
        allow_redirects=False,
    )
    assert response.status == 400
    assert "Location" not in response.headers
    assert (await refresh(client, tokens["refresh_token"])).status == 200, "session not ended"


async def test_end_session_without_a_redirect_shows_a_signed_out_page(
    client: TestClient[Any, Any],
) -> None:
    await sign_in(client)
    response = await client.get("/end_session")
    assert response.status == 200
    assert "Signed out" in await response.text()


# -- faults ----------------------------------------------------------------------------------


async def test_alg_none_fault_yields_an_unsigned_token_that_fails_verification(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.faults.alg_none = True
    token = (await sign_in(client))["id_token"]
    assert header_of(token)["alg"] == "none"
    assert token.endswith(".")
    with pytest.raises(JoseError):
        await verify(client, token)


async def test_wrong_key_fault_fails_signature_verification(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.faults.sign_with_wrong_key = True
    token = (await sign_in(client))["id_token"]
    assert header_of(token)["kid"] == provider.keys.current_kid
    with pytest.raises(BadSignatureError):
        await verify(client, token)


async def test_hs256_fault_is_an_hmac_keyed_with_the_public_key_pem(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.faults.hs256_with_public_key = True
    token = (await sign_in(client))["id_token"]
    assert header_of(token)["alg"] == "HS256"
    signing_input, _, signature = token.rpartition(".")
    mac = hmac.new(provider.keys.public_pem(), signing_input.encode(), hashlib.sha256).digest()
    assert base64.urlsafe_b64encode(mac).rstrip(b"=").decode() == signature
    with pytest.raises(JoseError):
        await verify(client, token)


async def test_unknown_kid_and_no_kid_faults(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    jwks = await (await client.get("/jwks")).json()
    published = {key["kid"] for key in jwks["keys"]}
    provider.faults.unknown_kid = True
    assert header_of((await sign_in(client))["id_token"])["kid"] not in published
    provider.faults.reset()
    provider.faults.no_kid = True
    token = (await sign_in(client))["id_token"]
    assert "kid" not in header_of(token)
    assert (await verify(client, token)).claims["sub"] == "alice"


async def test_rotating_keys_publishes_only_the_new_kid(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    old_kid = provider.keys.current_kid
    old_token = (await sign_in(client))["id_token"]
    new_kid = provider.rotate_keys()
    jwks = await (await client.get("/jwks")).json()
    assert [key["kid"] for key in jwks["keys"]] == [new_kid]
    assert new_kid != old_kid
    new_token = (await sign_in(client))["id_token"]
    assert header_of(new_token)["kid"] == new_kid
    await verify(client, new_token)
    with pytest.raises(JoseError):
        await verify(client, old_token)
    assert provider.counters.jwks == 3


@pytest.mark.parametrize(
    ("knob", "check"),
    [
        ("wrong_issuer", lambda c, now: c["iss"] == "https://wrong-issuer.invalid"),
        ("wrong_audience", lambda c, now: c["aud"] == "some-other-client"),
        (
            "extra_audience",
            lambda c, now: c["aud"] == ["app", "some-other-client"] and "azp" not in c,
        ),
        ("wrong_azp", lambda c, now: c["azp"] == "some-other-client"),
        ("wrong_nonce", lambda c, now: c["nonce"] != "nonce-1"),
        ("missing_nonce", lambda c, now: "nonce" not in c),
        ("expired", lambda c, now: c["exp"] < now),
        ("issued_in_future", lambda c, now: c["iat"] > now + 60),
    ],
)
async def test_claim_faults_change_the_signed_id_token(
    client: TestClient[Any, Any],
    provider: DevProvider,
    clock: Clock,
    knob: str,
    check: Callable[[dict[str, Any], float], bool],
) -> None:
    setattr(provider.faults, knob, True)
    claims = (await verify(client, (await sign_in(client))["id_token"])).claims
    assert check(claims, clock.now)


async def test_userinfo_sub_mismatch_fault(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.faults.userinfo_sub_mismatch = True
    access = (await sign_in(client))["access_token"]
    info = await (
        await client.get("/userinfo", headers={"Authorization": f"Bearer {access}"})
    ).json()
    assert info["sub"] != "alice"


async def test_authorize_error_and_callback_issuer_faults(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.faults.authorize_error = "access_denied"
    denied = query_of(await authorize(client))
    assert denied["error"] == "access_denied"
    assert denied["state"] == "state-1"
    assert "code" not in denied
    provider.faults.reset()
    provider.faults.callback_wrong_issuer = True
    callback = query_of(await authorize(client))
    assert callback["iss"] != provider.issuer
    assert "code" in callback


async def test_token_endpoint_500_and_refresh_invalid_grant_faults(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    tokens = await sign_in(client)
    provider.faults.token_status_500 = True
    assert (await refresh(client, tokens["refresh_token"])).status == 500
    provider.faults.reset()
    provider.faults.refresh_invalid_grant = True
    rejected = await refresh(client, tokens["refresh_token"])
    assert (await rejected.json())["error"] == "invalid_grant"
    provider.faults.reset()
    assert (await refresh(client, tokens["refresh_token"])).status == 200


async def test_token_endpoint_drops_the_connection(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    code = query_of(await authorize(client))["code"]
    provider.faults.token_drop_connection = True
    with pytest.raises(aiohttp.ClientConnectionError):
        await exchange(client, code)


async def test_token_hold_keeps_requests_waiting_until_released(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    code = query_of(await authorize(client))["code"]
    hold = asyncio.Event()
    provider.faults.token_hold = hold
    pending = asyncio.create_task(exchange(client, code))
    while provider.counters.token_requests == 0:
        await asyncio.sleep(0)
    assert not pending.done()
    hold.set()
    assert (await pending).status == 200


async def test_discovery_faults_wrong_issuer_and_provider_down(
    client: TestClient[Any, Any], provider: DevProvider
) -> None:
    provider.faults.discovery_wrong_issuer = True
    meta = await (await client.get("/.well-known/openid-configuration")).json()
    assert meta["issuer"] != provider.issuer
    provider.faults.reset()
    provider.faults.down = True
    assert (await client.get("/.well-known/openid-configuration")).status == 503
    assert (await client.get("/jwks")).status == 503
    provider.faults.down = False
    assert (await client.get("/jwks")).status == 200


async def test_start_binds_a_free_port_and_fixes_the_issuer() -> None:
    provider = DevProvider(clients=[CLIENT])
    issuer = await provider.start("127.0.0.1", 0)
    try:
        assert issuer.startswith("http://127.0.0.1:")
        assert not issuer.endswith(":0")
        async with (
            aiohttp.ClientSession() as session,
            session.get(issuer + "/.well-known/openid-configuration") as response,
        ):
            assert (await response.json())["issuer"] == issuer
    finally:
        await provider.stop()


def test_issuer_must_be_an_origin() -> None:
    with pytest.raises(ValueError, match="origin"):
        DevProvider("http://127.0.0.1:9000/realms/x")
    assert DevProvider("http://127.0.0.1:9000/").issuer == "http://127.0.0.1:9000"


async def test_issuer_defaults_to_the_origin_of_the_first_request(
    aiohttp_client: MakeClient,
) -> None:
    provider = DevProvider(clients=[CLIENT])
    test_client = await aiohttp_client(provider.app())
    meta = await (await test_client.get("/.well-known/openid-configuration")).json()
    assert meta["issuer"] == str(test_client.make_url("/")).rstrip("/")


# -- tokens a test hands to the relying party itself ----------------------------------------------

ENTRA_TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"


def entra_provider(clock: Clock) -> DevProvider:
    shape = load_shape(Path(__file__).resolve().parents[1] / "providers" / "fixtures" / "entra-id")
    return DevProvider("http://127.0.0.1:9000", clock=clock, shape=shape, auto_login=shape.user)


async def test_minted_access_token_is_for_the_api_and_names_the_user(
    client: TestClient[Any, Any], provider: DevProvider, clock: Clock
) -> None:
    token = provider.mint_access_token("https://api.example.com", scope="orders.read")
    assert header_of(token)["typ"] == "at+jwt"
    claims = (await verify(client, token)).claims
    assert (claims["iss"], claims["aud"], claims["scope"]) == (
        provider.issuer,
        "https://api.example.com",
        "orders.read",
    )
    assert (claims["sub"], claims["email"]) == ("alice", "alice@example.org")
    assert claims["exp"] == int(clock.now) + provider.access_token_ttl
    bob = provider.mint_access_token("a", user={"sub": "bob"}, changes={"exp": None, "x": 1})
    bob_claims = (await verify(client, bob)).claims
    assert bob_claims["sub"] == "bob" and "exp" not in bob_claims and bob_claims["x"] == 1


async def test_minted_logout_token_ends_the_users_sessions_or_one_sid(
    client: TestClient[Any, Any], provider: DevProvider, clock: Clock
) -> None:
    token = provider.mint_logout_token("app")
    assert header_of(token)["typ"] == "logout+jwt"
    claims = (await verify(client, token)).claims
    assert claims["iss"] == provider.issuer and claims["aud"] == "app"
    assert claims["sub"] == "alice" and "sid" not in claims and "nonce" not in claims
    assert claims["events"] == {"http://schemas.openid.net/event/backchannel-logout": {}}
    assert claims["iat"] == int(clock.now) and claims["jti"]
    by_sid = (await verify(client, provider.mint_logout_token("app", sid="s-1"))).claims
    assert by_sid["sid"] == "s-1" and "sub" not in by_sid
    assert provider.mint_logout_token("app") != token  # a new jti each time


def test_minted_tokens_of_a_multi_tenant_shape_name_the_users_tenant(clock: Clock) -> None:
    provider = entra_provider(clock)
    tenant_issuer = f"http://127.0.0.1:9000/{ENTRA_TENANT}/v2.0"
    access = jwt.decode(provider.mint_access_token("api"), provider.keys.current).claims
    logout = jwt.decode(provider.mint_logout_token("app"), provider.keys.current).claims
    for claims in (access, logout):
        assert (claims["iss"], claims["tid"]) == (tenant_issuer, ENTRA_TENANT)
    other = {"sub": "x", "tid": "72f988bf-86f1-41af-91ab-2d7cd011db47"}
    assert (
        provider.token_issuer(other)
        == "http://127.0.0.1:9000/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
    )


def test_minting_needs_a_user_with_sub() -> None:
    with pytest.raises(ValueError, match="sub"):
        DevProvider("http://127.0.0.1:9000").mint_logout_token("app")
