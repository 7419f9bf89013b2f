"""API and machine clients through the real app: bearer tokens from the development provider and
from a trusted second issuer, introspected opaque tokens, htpasswd users and CORS preflight.

Every stack here is real and on 127.0.0.1: `DevProvider` (the machine client gets its access
token from it with the authorization code flow, as a CLI would), the echo backend, and sidecar
built by `create_app`, all sharing one fake clock. What the backend saw is read from the echo's
JSON report; what a refused client sees is the status, the JSON body and `WWW-Authenticate`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import bcrypt
import jwt as pyjwt
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from joserfc import jwt
from joserfc.jwk import RSAKey
from multidict import CIMultiDictProxy
from support.echo import make_echo_app

from sidecar import keys
from sidecar.app import create_app
from sidecar.auth.api_clients import is_cors_preflight
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.dev.provider_tokens import pkce_s256

from .conftest import ALICE, CLIENT_ID, CLIENT_SECRET, SESSION_SECRET, FakeClock

MACHINE_ID = "machine-client"
MACHINE_SECRET = "machine-secret-for-tests"
MACHINE_REDIRECT = "http://127.0.0.1/machine/callback"
VERIFIER = "v" * 64
JSON = {"Accept": "application/json"}
ROUTES = [
    {"path": "/api", "bearer": True, "name": "api"},
    {"path": "/admin-api", "bearer": True, "policy": "admins", "name": "admin-api"},
    {"path": "/cors", "cors_preflight": True, "name": "cors"},
]
POLICIES = {"admins": {"groups_any": ["admins"]}}
PASSWORD = "correct horse battery staple"
CI_HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)

    def backend_headers(self) -> dict[str, list[str]]:
        """What the echo backend received, by lower-case header name."""
        seen: dict[str, list[str]] = {}
        for name, value in self.json()["headers"]:
            seen.setdefault(name.lower(), []).append(value)
        return seen


@dataclass
class ApiStack:
    provider: DevProvider
    sidecar: TestServer
    clock: FakeClock
    http: aiohttp.ClientSession
    providers: list[DevProvider] = field(default_factory=list)
    echo_url: str = ""

    def url(self, path: str) -> str:
        return str(self.sidecar.make_url(path))

    async def call(
        self, path: str, *, method: str = "GET", headers: Mapping[str, str] | None = None
    ) -> Answer:
        async with self.http.request(
            method, self.url(path), headers=dict(headers or {}), allow_redirects=False
        ) as response:
            return Answer(response.status, response.headers, await response.text())

    async def bearer(self, path: str, token: str, **headers: str) -> Answer:
        return await self.call(path, headers={"Authorization": f"Bearer {token}", **headers})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def machine_tokens(
    provider: DevProvider, http: aiohttp.ClientSession, *, scope: str = "openid"
) -> dict[str, Any]:
    """Tokens for the machine client by the authorization code flow (auto-login: alice)."""
    query = {
        "client_id": MACHINE_ID,
        "redirect_uri": MACHINE_REDIRECT,
        "response_type": "code",
        "scope": scope,
        "state": "s",
        "code_challenge": pkce_s256(VERIFIER),
        "code_challenge_method": "S256",
    }
    async with http.get(
        provider.url("/authorize"), params=query, allow_redirects=False
    ) as response:
        location = response.headers["Location"]
    code = parse_qs(urlsplit(location).query)["code"][0]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": MACHINE_REDIRECT,
        "code_verifier": VERIFIER,
    }
    async with http.post(
        provider.url("/token"),
        data=form,
        headers={"Authorization": basic(MACHINE_ID, MACHINE_SECRET)},
    ) as response:
        assert response.status == 200, await response.text()
        tokens: dict[str, Any] = await response.json()
    return tokens


async def start_provider(clock: FakeClock, **options: Any) -> DevProvider:
    provider = DevProvider(clock=clock, auto_login=ALICE, **options)
    await provider.start()
    provider.add_client(DevClient(MACHINE_ID, MACHINE_SECRET, redirect_uris=[MACHINE_REDIRECT]))
    return provider


ApiStackFactory = Callable[..., Awaitable[ApiStack]]


@pytest.fixture
async def make_api_stack(aiohttp_server: ServerFactory) -> AsyncIterator[ApiStackFactory]:
    made: list[ApiStack] = []

    async def make(
        *,
        api: Callable[[str], dict[str, Any]] | None = None,
        trusted: int = 0,
        routes: list[dict[str, Any]] | None = None,
        provider_options: Mapping[str, Any] | None = None,
        **sections: Any,
    ) -> ApiStack:
        clock = FakeClock()
        provider = await start_provider(clock, **(provider_options or {}))
        extra = [await start_provider(clock) for _ in range(trusted)]
        echo = await aiohttp_server(make_echo_app())
        api_section = api(provider.issuer) if api is not None else {}
        if extra:
            api_section.setdefault("bearer", {})["trusted_issuers"] = [
                {"issuer": other.issuer, "audiences": [other.issuer]} for other in extra
            ]
        data: dict[str, Any] = {
            "version": 1,
            "upstream": str(echo.make_url("")).rstrip("/"),
            "provider": {
                "issuer": provider.issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["openid", "email", "profile", "groups"],
            },
            "session": {"secret": SESSION_SECRET},
            "policies": POLICIES,
            "routes": ROUTES if routes is None else routes,
            "api": api_section,
            **sections,
        }
        config = SidecarConfig.model_validate(data)
        sidecar = await aiohttp_server(create_app(config, clock=clock))
        provider.add_client(DevClient(CLIENT_ID, CLIENT_SECRET, redirect_uris=[]))
        directory = sidecar.app[keys.AUTH_SERVICES].require_directory()
        await asyncio.wait_for(directory.wait_ready(), 5)
        http = aiohttp.ClientSession()
        stack = ApiStack(provider, sidecar, clock, http, extra, data["upstream"])
        made.append(stack)
        return stack

    yield make
    for stack in made:
        await stack.http.close()
        await stack.provider.stop()
        for other in stack.providers:
            await other.stop()


def bearer_api(issuer: str) -> dict[str, Any]:
    return {"bearer": {"audiences": [issuer]}}


# -- bearer JWTs from the provider ------------------------------------------------------------


async def test_provider_access_token_reaches_a_bearer_route_with_identity_headers(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    answer = await stack.bearer("/api/things", token, **JSON)
    assert answer.status == 200, answer.text
    seen = answer.backend_headers()
    assert seen["x-forwarded-user"] == ["alice"]
    # pass_authorization (the default): the backend is the token's audience and sees it too
    assert seen["authorization"] == [f"Bearer {token}"]
    assert "set-cookie" not in answer.headers


async def test_provider_access_token_is_not_forwarded_when_pass_authorization_is_off(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(
        api=lambda issuer: {"bearer": {"audiences": [issuer], "pass_authorization": False}}
    )
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    answer = await stack.bearer("/api", token)
    assert answer.status == 200
    seen = answer.backend_headers()
    assert "authorization" not in seen
    assert seen["x-forwarded-user"] == ["alice"]


async def test_bearer_token_with_headers_access_token_sends_it_as_x_forwarded_access_token(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api, headers={"access_token": True})
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    seen = (await stack.bearer("/api", token)).backend_headers()
    assert seen["x-forwarded-access-token"] == [token]


def assert_invalid_token(answer: Answer) -> None:
    assert answer.status == 401, answer.text
    assert answer.headers["Content-Type"].startswith("application/json")
    assert answer.json()["error"] == "invalid_token"
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="sidecar", error="invalid_token"'
    assert "Location" not in answer.headers


async def test_token_for_another_audience_is_refused_with_401_json(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=lambda issuer: {"bearer": {"audiences": ["https://api.x"]}})
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    # a browser-like Accept: still JSON, still no redirect to sign in
    assert_invalid_token(await stack.bearer("/api", token, Accept="text/html"))


async def test_expired_token_is_refused_and_one_within_the_leeway_is_not(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    stack.clock.advance(300 + 30)  # access_token_ttl 300, leeway 60
    assert (await stack.bearer("/api", token)).status == 200
    stack.clock.advance(60)
    assert_invalid_token(await stack.bearer("/api", token))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    return claims


async def test_forged_and_unsigned_tokens_are_refused(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    claims = _claims_of(token)
    kid = stack.provider.keys.current_kid
    impostor = RSAKey.generate_key(2048)
    forged = jwt.encode({"alg": "RS256", "kid": kid}, claims, impostor)
    header = _b64(json.dumps({"alg": "none", "kid": kid}).encode())
    unsigned = f"{header}.{_b64(json.dumps(claims).encode())}."
    tampered_claims = {**claims, "sub": "root"}
    head, _, signature = token.split(".")
    tampered = f"{head}.{_b64(json.dumps(tampered_claims).encode())}.{signature}"
    for bad in (forged, unsigned, tampered, "not-a-jwt", token + "x"):
        assert_invalid_token(await stack.bearer("/api", bad))


async def test_refused_tokens_never_reach_the_log(
    make_api_stack: ApiStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_api_stack(api=lambda issuer: {"bearer": {"audiences": ["https://api.x"]}})
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    caplog.set_level(logging.DEBUG)
    assert_invalid_token(await stack.bearer("/api", token))
    assert "credential refused: bearer-invalid: aud" in caplog.text
    for part in token.split("."):
        assert part not in caplog.text


async def test_token_from_an_untrusted_issuer_is_refused(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(api=bearer_api)
    stranger = await start_provider(stack.clock)
    try:
        token = (await machine_tokens(stranger, stack.http))["access_token"]
    finally:
        await stranger.stop()
    assert_invalid_token(await stack.bearer("/api", token))


async def test_token_from_a_trusted_issuer_is_accepted_with_its_own_audience(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api, trusted=1)
    other = stack.providers[0]
    token = (await machine_tokens(other, stack.http))["access_token"]
    answer = await stack.bearer("/api", token)
    assert answer.status == 200, answer.text
    assert answer.backend_headers()["x-forwarded-user"] == ["alice"]
    assert other.counters.jwks >= 1  # its keys came from its own JWKS


async def test_id_token_is_refused_as_a_bearer_token(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(api=bearer_api)
    id_token = (await machine_tokens(stack.provider, stack.http))["id_token"]
    assert_invalid_token(await stack.bearer("/api", id_token))  # aud is the client, not the API


async def test_bearer_token_on_a_route_without_bearer_is_unauthenticated(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    answer = await stack.bearer("/elsewhere", token)  # no Accept: still a program, not a browser
    assert answer.status == 401
    assert "Location" not in answer.headers
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="sidecar"'


async def test_browser_sending_the_backends_basic_credentials_is_still_sent_to_sign_in(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api)  # no htpasswd: Basic belongs to the backend
    answer = await stack.call(
        "/elsewhere", headers={"Authorization": basic("me", "pw"), "Accept": "text/html"}
    )
    assert answer.status == 302
    assert answer.headers["Location"].startswith(stack.provider.url("/authorize"))


async def test_bearer_everywhere_when_enabled_globally(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(
        api=lambda issuer: {"bearer": {"enabled": True, "audiences": [issuer]}}, routes=[]
    )
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    assert (await stack.bearer("/anything", token)).status == 200


async def test_a_route_can_refuse_bearer_tokens_that_are_on_globally(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(
        api=lambda issuer: {"bearer": {"enabled": True, "audiences": [issuer]}},
        routes=[{"path": "/browser-only", "bearer": False}],
    )
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    assert (await stack.bearer("/browser-only", token)).status == 401
    assert (await stack.bearer("/other", token)).status == 200


async def test_route_policy_applies_to_bearer_identity(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    # the provider's access tokens carry no groups: the admins policy denies, as JSON
    answer = await stack.bearer("/admin-api", token)
    assert answer.status == 403
    assert answer.json()["error"] == "forbidden"
    assert "insufficient_scope" in answer.headers["WWW-Authenticate"]


async def test_client_identity_headers_are_stripped_for_bearer_clients(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    answer = await stack.bearer("/api", token, **{"X-Forwarded-Email": "ceo@example.org"})
    assert "x-forwarded-email" not in answer.backend_headers()


async def test_two_authorization_headers_are_refused(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(api=bearer_api)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    async with stack.http.get(
        stack.url("/api"),
        headers=[("Authorization", f"Bearer {token}"), ("Authorization", "Bearer other")],
    ) as response:
        assert response.status == 401


# -- forward-auth: the same credentials at /oauth2/auth ----------------------------------------


def forwarded(uri: str, method: str = "GET") -> dict[str, str]:
    """What nginx / Traefik send to /oauth2/auth about the original request."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "app.example.com",
        "X-Forwarded-Uri": uri,
    }


async def test_forward_auth_admits_a_bearer_token_with_auth_request_headers(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api, server={"trusted_proxies": ["127.0.0.1/32"]})
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    answer = await stack.bearer("/oauth2/auth", token, **forwarded("/api/items"))
    assert answer.status == 202, answer.text
    assert answer.headers["X-Auth-Request-User"] == "alice"
    denied = await stack.bearer("/oauth2/auth", token, **forwarded("/admin-api/x"))
    assert denied.status == 403
    refused = await stack.bearer("/oauth2/auth", token + "x", **forwarded("/api/items"))
    assert_invalid_token(refused)
    # a route without bearer: the token is ignored, nobody is signed in
    elsewhere = await stack.bearer("/oauth2/auth", token, **forwarded("/elsewhere"))
    assert elsewhere.status == 401


def assertion_section() -> dict[str, Any]:
    key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return {"enabled": True, "keys": [{"key": key.decode()}]}


async def test_bearer_clients_get_the_signed_assertion_too(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(
        api=bearer_api,
        server={"trusted_proxies": ["127.0.0.1/32"]},
        identity_assertion=assertion_section(),
    )
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    jwks = (await stack.call("/oauth2/jwks")).json()
    through = await stack.bearer("/api", token, **{"X-Sidecar-Assertion": "forged"})
    (proxied,) = through.backend_headers()["x-sidecar-assertion"]
    at_auth = await stack.bearer("/oauth2/auth", token, **forwarded("/api/items"))
    assert at_auth.status == 202
    for assertion, audience in (
        (proxied, stack.echo_url),
        (at_auth.headers["X-Sidecar-Assertion"], "https://app.example.com"),
    ):
        jwk = pyjwt.PyJWK(jwks["keys"][0])
        claims = pyjwt.decode(assertion, jwk.key, algorithms=["ES256"], audience=audience)
        assert claims["sub"] == "alice"


async def test_forward_auth_admits_an_htpasswd_user(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(
        api=htpasswd_api, routes=BASIC_ROUTES, server={"trusted_proxies": ["127.0.0.1/32"]}
    )
    answer = await stack.call(
        "/oauth2/auth",
        headers={"Authorization": basic("ci", PASSWORD), **forwarded("/admin-api/deploy")},
    )
    assert answer.status == 202, answer.text
    assert answer.headers["X-Auth-Request-Groups"] == "admins"


# -- opaque tokens: introspection --------------------------------------------------------------


def introspection_api(issuer: str) -> dict[str, Any]:
    return {"bearer": {"audiences": [issuer], "introspection": {"enabled": True}}}


OPAQUE = {"opaque_access_tokens": True}


async def test_opaque_token_is_introspected_and_the_answer_cached_for_a_while(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=introspection_api, provider_options=OPAQUE)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    assert token.count(".") != 2  # really opaque
    for _ in range(3):
        answer = await stack.bearer("/api", token)
        assert answer.status == 200, answer.text
        assert answer.backend_headers()["x-forwarded-user"] == ["alice"]
    assert stack.provider.counters.introspect == 1
    stack.clock.advance(31)  # cache_seconds: 30
    assert (await stack.bearer("/api", token)).status == 200
    assert stack.provider.counters.introspect == 2


async def test_unknown_opaque_token_is_refused_and_the_refusal_cached(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=introspection_api, provider_options=OPAQUE)
    for _ in range(2):
        assert_invalid_token(await stack.bearer("/api", "made-up-opaque-token"))
    assert stack.provider.counters.introspect == 1


async def test_refresh_token_is_not_an_access_token(make_api_stack: ApiStackFactory) -> None:
    stack = await make_api_stack(api=introspection_api, provider_options=OPAQUE)
    refresh_token = (await machine_tokens(stack.provider, stack.http))["refresh_token"]
    assert_invalid_token(await stack.bearer("/api", refresh_token))
    assert stack.provider.counters.introspect == 1  # the provider said active, sidecar said no


async def test_opaque_token_without_introspection_is_refused(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api, provider_options=OPAQUE)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    assert_invalid_token(await stack.bearer("/api", token))
    assert stack.provider.counters.introspect == 0


async def test_provider_down_during_introspection_is_503_not_401(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=introspection_api, provider_options=OPAQUE)
    token = (await machine_tokens(stack.provider, stack.http))["access_token"]
    stack.provider.faults.down = True
    assert (await stack.bearer("/api", token, **JSON)).status == 503
    stack.provider.faults.down = False
    assert (await stack.bearer("/api", token)).status == 200  # the outage was not cached


# -- htpasswd users ---------------------------------------------------------------------------


BASIC_ROUTES = [{"path": "/admin-api", "policy": "admins"}]


def htpasswd_api(issuer: str) -> dict[str, Any]:
    return {"htpasswd": f"ci:{CI_HASH}\n", "htpasswd_groups": {"ci": ["admins"]}}


async def test_htpasswd_user_gets_in_and_the_password_never_reaches_the_backend(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=htpasswd_api, routes=BASIC_ROUTES)
    auth = basic("ci", PASSWORD)
    answer = await stack.call("/admin-api/deploy", headers={"Authorization": auth})
    assert answer.status == 200, answer.text
    seen = answer.backend_headers()
    assert seen["x-forwarded-user"] == ["ci"]
    assert seen["x-forwarded-groups"] == ["admins"]
    assert "authorization" not in seen


async def test_htpasswd_wrong_password_and_unknown_user_are_refused_alike(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=htpasswd_api, routes=BASIC_ROUTES)
    for user, password in (("ci", "wrong"), ("nobody", PASSWORD), ("ci", "x" * 100)):
        auth = basic(user, password)
        answer = await stack.call("/api", headers={"Authorization": auth})
        assert answer.status == 401
        assert answer.headers["WWW-Authenticate"].startswith("Basic ")
        assert answer.json()["error"] == "invalid_token"
    answer = await stack.call("/api", headers={"Authorization": "Basic %%%"})
    assert answer.status == 401


# -- CORS preflight ---------------------------------------------------------------------------


async def test_cors_preflight_passes_unauthenticated_only_where_the_route_says(
    make_api_stack: ApiStackFactory,
) -> None:
    stack = await make_api_stack(api=bearer_api)
    preflight = {"Origin": "https://spa.example", "Access-Control-Request-Method": "POST"}
    answer = await stack.call("/cors/items", method="OPTIONS", headers=preflight)
    assert answer.status == 200
    assert answer.json()["method"] == "OPTIONS"
    assert (await stack.call("/api", method="OPTIONS", headers=preflight)).status == 401
    # an OPTIONS that is not a preflight is not let through
    plain = await stack.call("/cors/items", method="OPTIONS", headers={"Origin": "x"})
    assert plain.status == 401


@pytest.mark.parametrize(
    ("method", "headers", "expected"),
    [
        ("OPTIONS", {"Origin": "o", "Access-Control-Request-Method": "PUT"}, True),
        ("OPTIONS", {"Origin": "o"}, False),
        ("OPTIONS", {"Access-Control-Request-Method": "PUT"}, False),
        ("GET", {"Origin": "o", "Access-Control-Request-Method": "PUT"}, False),
    ],
)
def test_is_cors_preflight(method: str, headers: dict[str, str], expected: bool) -> None:
    assert is_cors_preflight(method, headers) is expected
