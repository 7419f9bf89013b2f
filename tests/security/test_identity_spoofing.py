"""Identity header spoofing: a client claiming to be someone else in the headers sidecar owns.

The backend trusts `X-Forwarded-User/-Email/-Groups/-Preferred-Username`, `X-Forwarded-Access-
Token`, `X-Auth-Request-*` and the signed `X-Sidecar-Assertion` because only sidecar may set them.
Each case sends forged copies in every spelling a backend framework might fold into the same name
(case, `_` for `-`: CGI, PHP, nginx and Django read them alike), duplicated, on public and
protected routes, named in `Connection` so a proxy might drop sidecar's own copy, over a websocket
upgrade, and to forward-auth; then it reads what the echo backend received.
"""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from .conftest import (
    ALICE,
    IDENTITY_HEADERS,
    MALLORY,
    Seen,
    Stack,
    StackFactory,
    parse_response,
    raw_exchange,
)

FORGED = "root@evil.example"


def spellings(name: str) -> list[str]:
    """`x-forwarded-user` as a client might spell it to slip past a case-sensitive filter."""
    title = "-".join(part.capitalize() for part in name.split("-"))
    variants = {
        name,
        name.upper(),
        title,
        name.replace("-", "_"),
        name.upper().replace("-", "_"),
        title.replace("-", "_"),
        name.replace("-", "_", 1),  # x_forwarded-user
        name[::-1].replace("-", "_", 1)[::-1],  # x-forwarded_user
        "".join(c.upper() if i % 2 else c for i, c in enumerate(name)),
    }
    return sorted(variants)


def forged_pairs(names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(spelling, FORGED) for name in names for spelling in spellings(name)]


def identity_values(seen: Seen) -> dict[str, list[str]]:
    """Every header the backend got whose name, read with `_` as `-`, is an identity header."""
    found: dict[str, list[str]] = {}
    for name, value in seen.headers:
        canonical = name.lower().replace("_", "-")
        if canonical in IDENTITY_HEADERS or canonical.startswith(
            ("x-auth-request-", "x-sidecar-assertion")
        ):
            found.setdefault(canonical, []).append(value)
    return found


def backend_report(text: str) -> Seen:
    report = json.loads(text)
    return Seen(report["method"], report["raw_path"], tuple(map(tuple, report["headers"])))


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack(headers={"strip": ["X-Internal-Role"]})


async def test_every_spelling_is_stripped_on_a_public_route(stack: Stack) -> None:
    browser = await stack.browser()
    pairs = forged_pairs((*IDENTITY_HEADERS, "x-auth-request-user", "x-auth-request-email"))
    async with browser.http.get(stack.url("/public/x"), headers=pairs) as response:
        assert response.status == 200
        seen = backend_report(await response.text())
    assert identity_values(seen) == {}
    assert FORGED not in json.dumps(seen.headers)


async def test_every_spelling_is_replaced_for_a_signed_in_user(stack: Stack) -> None:
    browser = await stack.browser()
    await stack.sign_in(browser)
    pairs = forged_pairs(IDENTITY_HEADERS)
    async with browser.http.get(stack.url("/app"), headers=pairs) as response:
        assert response.status == 200
        seen = backend_report(await response.text())
    assert identity_values(seen) == {
        "x-forwarded-user": [ALICE["sub"]],
        "x-forwarded-email": [ALICE["email"]],
        "x-forwarded-preferred-username": [ALICE["preferred_username"]],
        "x-forwarded-groups": [",".join(ALICE["groups"])],
    }
    assert FORGED not in json.dumps(seen.headers)


async def test_duplicated_and_odd_headers_over_a_raw_socket(stack: Stack) -> None:
    """Duplicates, empty values, whitespace around the value, one header per line, sent raw."""
    head = (
        "GET /public/raw HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{stack.port}\r\n"
        f"X-Forwarded-User: {FORGED}\r\n"
        f"X-Forwarded-User: {FORGED}\r\n"
        f"x-forwarded-user:{FORGED}\r\n"
        f"X_Forwarded_Email:   {FORGED}   \r\n"
        "X-Forwarded-Groups: \r\n"
        f"X-FORWARDED-GROUPS: admins\r\n"
        f"X-Internal-Role: admin\r\n"
        f"x_internal_role: admin\r\n"
        "Connection: close\r\n\r\n"
    )
    response = parse_response(await raw_exchange(stack.port, head.encode()))
    assert response.status == 200
    seen = stack.backend_seen[-1]
    assert identity_values(seen) == {}
    assert not seen.values("X-Internal-Role")
    assert not [n for n, _ in seen.headers if n.lower().replace("_", "-") == "x-internal-role"]


@pytest.mark.parametrize(
    "line",
    [
        f"X-Forwarded-User : {FORGED}",  # space before the colon
        f"X-Forwarded-User\t: {FORGED}",
        f" X-Forwarded-User: {FORGED}",  # leading space: obs-fold of the previous line
        f"X-Forwarded-User\x00: {FORGED}",
        f"X-Forwarded-User\x0b: {FORGED}",
    ],
)
async def test_malformed_header_names_do_not_smuggle_an_identity(stack: Stack, line: str) -> None:
    head = (
        "GET /public/raw HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{stack.port}\r\n"
        "X-Innocent: yes\r\n"
        f"{line}\r\n"
        "Connection: close\r\n\r\n"
    )
    response = parse_response(await raw_exchange(stack.port, head.encode("latin-1")))
    if response.status == 400:
        assert not stack.backend_seen
        return
    assert response.status == 200
    for name, value in stack.backend_seen[-1].headers:
        assert FORGED not in name
        if name.lower().replace("_", "-").strip() in IDENTITY_HEADERS:
            pytest.fail(f"forged identity header reached the backend: {name!r}: {value!r}")


async def test_obs_fold_cannot_start_a_new_identity_header(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies().items())
    head = (
        "GET /app HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{stack.port}\r\n"
        f"Cookie: {cookie}\r\n"
        "X-Innocent: yes\r\n"
        f" X-Forwarded-User: {FORGED}\r\n"
        "Connection: close\r\n\r\n"
    )
    response = parse_response(await raw_exchange(stack.port, head.encode()))
    if response.status == 400:
        assert not [s for s in stack.backend_seen if s.raw_path == "/app"]
        return
    seen = stack.backend_seen[-1]
    assert identity_values(seen)["x-forwarded-user"] == [ALICE["sub"]]


@pytest.mark.parametrize(
    "connection",
    [
        "X-Forwarded-User",
        "close, X-Forwarded-Email",
        "keep-alive, x-forwarded-groups, X_Forwarded_User",
        "X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host",
        "Cookie",
        "X-Request-Id",
    ],
)
async def test_connection_header_cannot_remove_what_sidecar_adds(
    stack: Stack, connection: str
) -> None:
    """Hop-by-hop abuse: headers named in Connection are dropped by proxies; they must be the
    client's copies, never sidecar's own."""
    browser = await stack.browser()
    await stack.sign_in(browser)
    async with browser.http.get(
        stack.url("/app"), headers={"Connection": connection, "X-Forwarded-User": FORGED}
    ) as response:
        assert response.status == 200
        seen = backend_report(await response.text())
    values = identity_values(seen)
    assert values["x-forwarded-user"] == [ALICE["sub"]]
    assert values["x-forwarded-email"] == [ALICE["email"]]
    assert values["x-forwarded-groups"] == [",".join(ALICE["groups"])]
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert len(seen.values("X-Forwarded-Host")) == 1
    assert len(seen.values("X-Request-Id")) == 1


async def test_connection_header_on_a_public_route_admits_nothing(stack: Stack) -> None:
    browser = await stack.browser()
    async with browser.http.get(
        stack.url("/public/c"),
        headers={"Connection": "X-Forwarded-User", "X-Forwarded-User": FORGED},
    ) as response:
        seen = backend_report(await response.text())
    assert identity_values(seen) == {}


async def test_websocket_upgrade_carries_no_forged_identity(stack: Stack) -> None:
    browser = await stack.browser()
    await stack.sign_in(browser)
    async with browser.http.ws_connect(
        stack.url("/ws"), headers=dict(forged_pairs(IDENTITY_HEADERS))
    ) as ws:
        await ws.send_str("headers")
        pairs = json.loads(await ws.receive_str())
    seen = Seen("GET", "/ws", tuple(map(tuple, pairs)))
    values = identity_values(seen)
    assert values["x-forwarded-user"] == [ALICE["sub"]]
    assert values["x-forwarded-email"] == [ALICE["email"]]
    assert FORGED not in json.dumps(pairs)


async def test_websocket_upgrade_without_a_session_never_reaches_the_backend(
    stack: Stack,
) -> None:
    browser = await stack.browser()
    head = (
        "GET /ws HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{stack.port}\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        f"X-Forwarded-User: {FORGED}\r\n\r\n"
    )
    response = parse_response(await raw_exchange(stack.port, head.encode(), read_timeout=2))
    assert response.status in (302, 401)
    assert not stack.backend_seen
    del browser


async def test_sidecar_cookies_never_reach_the_backend(stack: Stack) -> None:
    browser = await stack.browser()
    await stack.sign_in(browser)
    async with browser.http.get(
        stack.url("/app"), headers={"Cookie": "app=1; _sidecar_login_x=forged"}
    ) as response:
        seen = backend_report(await response.text())
    cookies = " ".join(seen.values("Cookie"))
    assert "_sidecar" not in cookies
    for name, value in browser.cookies().items():
        if name.startswith("_sidecar"):
            assert value not in json.dumps(seen.headers)


async def test_forward_auth_ignores_forged_auth_request_headers(make_stack: StackFactory) -> None:
    stack = await make_stack(server={"trusted_proxies": ["127.0.0.1/32"]})
    forged = forged_pairs(("x-auth-request-user", "x-auth-request-email", "x-auth-request-groups"))
    anonymous = await stack.browser()
    async with anonymous.http.get(
        stack.url("/oauth2/auth"), headers=[*forged, ("X-Forwarded-Uri", "/app")]
    ) as response:
        assert response.status == 401
        assert FORGED not in json.dumps(list(response.headers.items()))
    alice = await stack.browser()
    await stack.sign_in(alice)
    async with alice.http.get(
        stack.url("/oauth2/auth"), headers=[*forged, ("X-Forwarded-Uri", "/app")]
    ) as response:
        assert response.status == 202
        assert response.headers.getall("X-Auth-Request-User") == [ALICE["sub"]]
        assert response.headers.getall("X-Auth-Request-Email") == [ALICE["email"]]
        assert FORGED not in json.dumps(list(response.headers.items()))


async def test_forward_auth_from_an_untrusted_peer_cannot_name_a_public_original(
    stack: Stack,
) -> None:
    """Without trusted_proxies, a client naming `/public` as the original request gets no pass."""
    browser = await stack.browser()
    async with browser.http.get(
        stack.url("/oauth2/auth"), headers={"X-Forwarded-Uri": "/public/x"}
    ) as response:
        assert response.status == 403


def _assertion_key_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@pytest.mark.parametrize("enabled", [False, True])
async def test_forged_sidecar_assertion_is_removed(make_stack: StackFactory, enabled: bool) -> None:
    stack = await make_stack(
        identity_assertion={"enabled": enabled, "keys": [{"key": _assertion_key_pem()}]}
    )
    forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJyb290In0."
    anonymous = await stack.browser()
    async with anonymous.http.get(
        stack.url("/public/a"),
        headers=[("X-Sidecar-Assertion", forged), ("x_sidecar_assertion", forged)],
    ) as response:
        seen = backend_report(await response.text())
    assert identity_values(seen) == {}
    alice = await stack.browser()
    await stack.sign_in(alice)
    async with alice.http.get(
        stack.url("/app"),
        headers=[("X-Sidecar-Assertion", forged), ("X_SIDECAR_ASSERTION", forged)],
    ) as response:
        seen = backend_report(await response.text())
    assertions = identity_values(seen).get("x-sidecar-assertion", [])
    assert forged not in assertions
    assert len(assertions) == (1 if enabled else 0)


async def test_forged_access_token_and_authorization_are_replaced(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack(headers={"access_token": True, "authorization": True})
    alice = await stack.browser()
    await stack.sign_in(alice)
    async with alice.http.get(
        stack.url("/app"),
        headers=[
            ("X-Forwarded-Access-Token", FORGED),
            ("x_forwarded_access_token", FORGED),
        ],
    ) as response:
        seen = backend_report(await response.text())
    tokens = identity_values(seen)["x-forwarded-access-token"]
    assert len(tokens) == 1
    assert tokens[0] != FORGED
    assert seen.values("Authorization") == [f"Bearer {tokens[0]}"]


async def test_a_group_name_with_a_comma_cannot_pose_as_two_groups(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    stack.provider.auto_login = {**MALLORY, "groups": ["staff,admins"]}
    browser = await stack.browser()
    async with browser.http.get(stack.url("/app"), allow_redirects=True) as response:
        assert response.status == 200
        seen = backend_report(await response.text())
    groups = ",".join(identity_values(seen).get("x-forwarded-groups", [])).split(",")
    assert "admins" not in groups
    assert (await browser.request("GET", stack.url("/admin"))).status == 403  # sidecar itself
