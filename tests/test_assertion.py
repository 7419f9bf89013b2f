"""The signed identity assertion, verified the way a backend would: with an independent JOSE
library (PyJWT, not the joserfc sidecar uses) against the JWKS sidecar publishes.

Unit tests cover the keys (algorithms, kids, rotation, bad PEMs), the claims and the reuse window;
the integration tests run the real app with the development provider and the echo backend, sign
in like a browser, fetch `/oauth2/jwks`, and check what the backend received — including that a
client-sent `X-Sidecar-Assertion` never gets there.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import aiohttp
import jwt as pyjwt
import pytest
from aiohttp.test_utils import TestServer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from support.echo import make_echo_app

from sidecar import keys
from sidecar.app import create_app
from sidecar.assertion import (
    REUSE_SECONDS,
    AssertionSigner,
    SigningKey,
    build_claims,
    load_signing_key,
)
from sidecar.config.load import load_config
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.errors import ConfigError
from sidecar.session.model import Identity

ALICE = {"sub": "alice", "email": "alice@example.org", "groups": ["admins", "staff"]}
IDENTITY = Identity(
    sub="alice",
    user="alice",
    email="alice@example.org",
    email_verified=True,
    username="alice",
    groups=("admins", "staff"),
)
ISSUER = "https://app.example.com"
AUDIENCE = "http://127.0.0.1:8080"


def pem(private: Any) -> str:
    data: bytes = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return data.decode()


def ec_pem(curve: ec.EllipticCurve | None = None) -> str:
    return pem(ec.generate_private_key(curve or ec.SECP256R1()))


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


def signer_for(*pems: str, clock: Clock | None = None, **options: Any) -> AssertionSigner:
    return AssertionSigner(
        [SigningKey.from_pem(text) for text in pems],
        header="X-Sidecar-Assertion",
        ttl_seconds=options.pop("ttl_seconds", 60),
        audience=options.pop("audience", None),
        issuer=options.pop("issuer", None),
        clock=clock or Clock(),
    )


def verify(token: str, jwks: dict[str, Any], *, audience: str = AUDIENCE) -> dict[str, Any]:
    """A backend's check with PyJWT: the key by kid from the JWKS, the alg the key says."""
    kid = pyjwt.get_unverified_header(token)["kid"]
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == kid]
    key = pyjwt.PyJWK(jwk)
    claims: dict[str, Any] = pyjwt.decode(
        token,
        key=key.key,
        algorithms=[jwk["alg"]],
        audience=audience,
        issuer=ISSUER,
        options={"require": ["iss", "aud", "sub", "iat", "exp"]},
    )
    return claims


# -- keys ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("private", "alg"),
    [
        (ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (rsa.generate_private_key(65537, 2048), "RS256"),
        (ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
)
def test_each_key_type_signs_what_pyjwt_verifies(private: Any, alg: str) -> None:
    signer = signer_for(pem(private))
    token = signer.assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE)
    jwks = json.loads(signer.jwks_body)
    assert jwks["keys"][0]["alg"] == alg
    assert "d" not in jwks["keys"][0]  # public halves only
    assert verify(token, jwks)["sub"] == "alice"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not a key", "not an unencrypted PEM private key"),
        (ec_pem(ec.SECP521R1()), "EC keys must use P-256 (ES256) or P-384 (ES384)"),
        (pem(rsa.generate_private_key(65537, 1024)), "RSA keys need at least 2048 bits"),  # noqa: S505
    ],
)
def test_unusable_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_signing_key(text)


def test_kid_is_the_rfc7638_thumbprint_unless_given() -> None:
    text = ec_pem()
    key = SigningKey.from_pem(text)
    public = pyjwt.PyJWK(dict(key.public_jwk))
    assert key.kid == key.public_jwk["kid"]
    assert len(key.kid) == 43  # base64url of a SHA-256
    assert public.key_id == key.kid
    assert SigningKey.from_pem(text, "2026-11").kid == "2026-11"


def test_rotation_first_key_signs_all_are_published() -> None:
    new, old = ec_pem(), ec_pem()
    signer = signer_for(new, old)
    jwks = json.loads(signer.jwks_body)
    kids = [key["kid"] for key in jwks["keys"]]
    token = signer.assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE)
    assert pyjwt.get_unverified_header(token)["kid"] == kids[0]
    assert len(set(kids)) == 2
    # an assertion signed before the rotation (by the old key) still verifies
    before = signer_for(old).assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE)
    assert verify(before, jwks)["sub"] == "alice"


# -- claims and reuse ---------------------------------------------------------------------------


def test_claims_carry_the_identity_and_a_short_lifetime() -> None:
    clock = Clock()
    signer = signer_for(ec_pem(), clock=clock, ttl_seconds=90)
    claims = verify(
        signer.assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE),
        json.loads(signer.jwks_body),
    )
    assert claims == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "alice",
        "email": "alice@example.org",
        "email_verified": True,
        "preferred_username": "alice",
        "groups": ["admins", "staff"],
        "iat": int(clock.now),
        "exp": int(clock.now) + 90,
    }


def test_claims_leave_out_what_the_identity_lacks() -> None:
    bare = Identity(sub="ci", user="ci-bot")
    claims = build_claims(bare, issuer=ISSUER, audience=AUDIENCE, now=10, ttl_seconds=60)
    assert claims == {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "ci",
        "user": "ci-bot",
        "groups": [],
        "iat": 10,
        "exp": 70,
    }


def test_configured_issuer_and_audience_win() -> None:
    signer = signer_for(ec_pem(), issuer=ISSUER, audience="backend")
    token = signer.assertion_for(IDENTITY, issuer="http://other", audience=AUDIENCE)
    assert verify(token, json.loads(signer.jwks_body), audience="backend")["iss"] == ISSUER


def test_an_assertion_is_reused_briefly_per_identity_and_audience() -> None:
    clock = Clock()
    signer = signer_for(ec_pem(), clock=clock)
    first = signer.assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE)
    clock.now += REUSE_SECONDS - 1
    assert signer.assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE) == first
    other = signer.assertion_for(IDENTITY, issuer=ISSUER, audience="http://elsewhere")
    bob = signer.assertion_for(Identity(sub="bob", user="bob"), issuer=ISSUER, audience=AUDIENCE)
    assert len({first, other, bob}) == 3
    assert signer.signed == 3
    clock.now += 1
    assert signer.assertion_for(IDENTITY, issuer=ISSUER, audience=AUDIENCE) != first


def test_signing_is_fast_enough_for_every_request() -> None:
    signer = signer_for(ec_pem())
    started = time.perf_counter()
    for number in range(200):
        identity = Identity(sub=f"user-{number}", user=f"user-{number}")
        signer.assertion_for(identity, issuer=ISSUER, audience=AUDIENCE)
    per_assertion = (time.perf_counter() - started) / 200
    print(f"ES256 assertion: {per_assertion * 1e6:.0f} us")
    assert per_assertion < 0.002  # generous: about 40 us on a laptop


# -- configuration ------------------------------------------------------------------------------


def _config_file(tmp_path: Path, key_text: str, extra: str = "") -> Path:
    (tmp_path / "assertion.pem").write_text(key_text)
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        "version: 1\n"
        "upstream: http://127.0.0.1:8080\n"
        "provider:\n"
        "  issuer: http://127.0.0.1:9000\n"
        "  client_id: sidecar\n"
        "  client_secret: secret\n"
        "session:\n"
        "  secret: a-session-secret-of-at-least-32-characters\n"
        "identity_assertion:\n"
        "  enabled: true\n"
        "  keys:\n"
        "    - key_file: assertion.pem\n" + extra
    )
    return path


def test_config_reads_the_key_file(tmp_path: Path) -> None:
    text = ec_pem()
    config = load_config(_config_file(tmp_path, text))
    assert config.identity_assertion.keys[0].key.get_secret_value() == text.rstrip("\n")
    assert "PRIVATE" not in repr(config.identity_assertion)


def test_config_refuses_a_weak_key_without_showing_it(tmp_path: Path) -> None:
    text = pem(rsa.generate_private_key(65537, 1024))  # noqa: S505 - must be refused
    with pytest.raises(ConfigError) as caught:
        load_config(_config_file(tmp_path, text))
    (problem,) = caught.value.problems
    assert "identity_assertion.keys[0].key_file" in problem or "keys.0.key" in problem
    assert "RSA keys need at least 2048 bits" in problem
    assert "PRIVATE" not in problem


def test_config_needs_a_key_when_enabled() -> None:
    with pytest.raises(ValueError, match=r"identity_assertion\.keys"):
        SidecarConfig.model_validate(
            {
                "version": 1,
                "upstream": "http://127.0.0.1:8080",
                "provider": {
                    "issuer": "http://127.0.0.1:9000",
                    "client_id": "c",
                    "client_secret": "s",
                },
                "session": {"secret": "a-session-secret-of-at-least-32-characters"},
                "routes": [{"path": "/", "identity_assertion": True}],
            }
        )


# -- through the app ----------------------------------------------------------------------------

ServerFactory = Callable[..., Awaitable[TestServer]]
CLIENT_ID, CLIENT_SECRET = "sidecar-tests", "client-secret-for-tests"


class AppStack:
    def __init__(self, sidecar: TestServer, http: aiohttp.ClientSession, upstream: str) -> None:
        self.sidecar = sidecar
        self.http = http
        self.upstream = upstream

    def url(self, path: str) -> str:
        return str(self.sidecar.make_url(path))

    async def get(self, path: str, headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
        """GET and follow redirects by hand (cookies kept), like a browser."""
        url = self.url(path)
        for _ in range(10):
            response = await self.http.get(url, headers=headers, allow_redirects=False)
            await response.read()
            if response.status not in (302, 303):
                return response
            url = urljoin(url, response.headers["Location"])
        raise AssertionError("too many redirects")


@pytest.fixture
async def app_stack(aiohttp_server: ServerFactory) -> AsyncIterator[Callable[..., Any]]:
    cleanups: list[Callable[[], Awaitable[None]]] = []

    async def make(**assertion: Any) -> AppStack:
        provider = DevProvider(auto_login=ALICE)
        issuer = await provider.start()
        cleanups.append(provider.stop)
        echo = await aiohttp_server(make_echo_app())
        upstream = str(echo.make_url("")).rstrip("/")
        config = SidecarConfig.model_validate(
            {
                "version": 1,
                "upstream": upstream,
                "provider": {
                    "issuer": issuer,
                    "client_id": CLIENT_ID,
                    "client_secret": CLIENT_SECRET,
                    "scopes": ["openid", "email", "profile"],
                },
                "session": {"secret": "a-session-secret-of-at-least-32-characters"},
                "server": {"public_url": None},
                "identity_assertion": {"enabled": True, "keys": [{"key": ec_pem()}], **assertion},
                "routes": [{"path": "/plain", "identity_assertion": False}],
            }
        )
        sidecar = await aiohttp_server(create_app(config))
        provider.add_client(
            DevClient(
                CLIENT_ID,
                CLIENT_SECRET,
                redirect_uris=[str(sidecar.make_url("/oauth2/callback"))],
            )
        )
        directory = sidecar.app[keys.AUTH_SERVICES].require_directory()
        await asyncio.wait_for(directory.wait_ready(), 5)
        http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
        cleanups.append(http.close)
        return AppStack(sidecar, http, upstream)

    yield make
    for cleanup in reversed(cleanups):
        await cleanup()


def _seen(body: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in body["headers"] if key.lower() == name.lower()]


async def test_backend_gets_an_assertion_a_pyjwt_backend_verifies_with_the_published_jwks(
    app_stack: Callable[..., Any],
) -> None:
    stack: AppStack = await app_stack()
    spoofed = {"X-Sidecar-Assertion": "forged.by.client", "x_sidecar_assertion": "forged"}
    response = await stack.get("/hello", headers=spoofed)
    assert response.status == 200
    body = json.loads(await response.text())
    (token,) = _seen(body, "X-Sidecar-Assertion")  # exactly one: the client's two are gone
    assert _seen(body, "x_sidecar_assertion") == []
    jwks_response = await stack.http.get(stack.url("/oauth2/jwks"))
    assert jwks_response.headers["Content-Type"].startswith("application/json")
    jwks = await jwks_response.json()
    origin = stack.url("/").rstrip("/")
    header = pyjwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    kid = header["kid"]
    (jwk,) = [key for key in jwks["keys"] if key["kid"] == kid]
    claims = pyjwt.decode(
        token,
        key=pyjwt.PyJWK(jwk).key,
        algorithms=["ES256"],
        audience=stack.upstream,
        issuer=origin,
        options={"require": ["exp", "iat", "sub"]},
    )
    assert claims["sub"] == "alice"
    assert claims["email"] == "alice@example.org"
    assert claims["exp"] - claims["iat"] == 60


async def test_route_can_turn_the_assertion_off_and_spoofs_are_still_stripped(
    app_stack: Callable[..., Any],
) -> None:
    stack: AppStack = await app_stack()
    response = await stack.get("/plain", headers={"X-Sidecar-Assertion": "forged.by.client"})
    body = json.loads(await response.text())
    assert response.status == 200
    assert _seen(body, "X-Sidecar-Assertion") == []


async def test_configured_audience_and_header_name(app_stack: Callable[..., Any]) -> None:
    stack: AppStack = await app_stack(audience="urn:backend", header="X-Identity-JWT")
    response = await stack.get("/hello")
    body = json.loads(await response.text())
    (token,) = _seen(body, "X-Identity-JWT")
    assert pyjwt.decode(token, options={"verify_signature": False})["aud"] == "urn:backend"
