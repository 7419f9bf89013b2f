"""Session cookies under attack: tampered, truncated, spliced, replayed under other keys, bloated,
and planted before sign-in (session fixation).

Each case signs a user in for real, then presents a doctored Cookie header over a raw socket, and
asserts that the request is treated as carrying no session (a sign-in redirect for a browser, the
bad cookie cleared) and that the backend saw nothing. A valid session under the same conditions
is the control.
"""

from __future__ import annotations

import base64
import random
from collections.abc import Awaitable, Callable
from http.cookies import SimpleCookie
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from sidecar.app import create_app
from sidecar.config.model import SidecarConfig

from .conftest import (
    ALICE,
    MALLORY,
    SESSION_COOKIE,
    SESSION_SECRET,
    RawResponse,
    Stack,
    StackFactory,
    build_config_data,
    raw_request,
)

OTHER_SECRET = "another-deployment-entirely-0123456789abcdef"
NEW_SECRET = "the-next-session-secret-after-rotation-0123456"
BIG_GROUPS = [random.Random(n).randbytes(12).hex() for n in range(120)]  # incompressible


def session_cookies(cookies: dict[str, str]) -> dict[str, str]:
    return {
        k: v
        for k, v in cookies.items()
        if k == SESSION_COOKIE or (k.startswith(SESSION_COOKIE + "_") and "_login_" not in k)
    }


def header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{name}={value}" for name, value in cookies.items())


async def get(
    stack_or_port: Stack | int, cookies: dict[str, str] | str, path: str = "/private"
) -> RawResponse:
    port = stack_or_port if isinstance(stack_or_port, int) else stack_or_port.port
    cookie = cookies if isinstance(cookies, str) else header(cookies)
    return await raw_request(port, path, {"Cookie": cookie, "Accept": "text/html"})


def assert_no_session(response: RawResponse, stack: Stack, path: str = "/private") -> None:
    assert response.status == 302, response.status
    assert (response.header("Location") or "").startswith(stack.provider.issuer)
    assert path not in stack.backend_paths()


async def signed_in_cookies(stack: Stack, user: dict[str, Any] = ALICE) -> dict[str, str]:
    """The session cookies the callback sets (read from its Set-Cookie headers: aiohttp's own
    client jar leaves a ~3.7 KB cookie out of a large Cookie header, a browser does not)."""
    stack.provider.auto_login = dict(user)
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/"), max_hops=3)
    (callback,) = [hop for hop in hops if hop.url.startswith(stack.url("/oauth2/callback"))]
    jar: SimpleCookie = SimpleCookie()
    for value in callback.set_cookies:
        jar.load(value)
    cookies = {name: morsel.value for name, morsel in jar.items() if morsel.value}
    return session_cookies(cookies)


def flip(value: str, index: int) -> str:
    char = value[index]
    return value[:index] + ("A" if char != "A" else "B") + value[index + 1 :]


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def test_control_a_valid_cookie_passes(stack: Stack) -> None:
    cookies = await signed_in_cookies(stack)
    response = await get(stack, cookies)
    assert response.status == 200


@pytest.mark.parametrize("where", [0, 1, 5, 20, -40, -17, -2, -1])
async def test_tampered_cookie_is_no_session(stack: Stack, where: int) -> None:
    cookies = await signed_in_cookies(stack)
    cookies[SESSION_COOKIE] = flip(cookies[SESSION_COOKIE], where)
    response = await get(stack, cookies)
    assert_no_session(response, stack)
    cleared = [c for c in response.all("Set-Cookie") if c.startswith(SESSION_COOKIE + "=")]
    assert cleared and "Max-Age=0" in cleared[0]


@pytest.mark.parametrize("keep", [0, 1, 10, 50, -1, -10])
async def test_truncated_cookie_is_no_session(stack: Stack, keep: int) -> None:
    cookies = await signed_in_cookies(stack)
    value = cookies[SESSION_COOKIE]
    cookies[SESSION_COOKIE] = value[:keep]
    assert_no_session(await get(stack, cookies), stack)


@pytest.mark.parametrize(
    "value",
    ["", "null", "e30", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.", "A" * 3000, "%00", "../../"],
)
async def test_forged_cookie_values_are_no_session(stack: Stack, value: str) -> None:
    assert_no_session(await get(stack, {SESSION_COOKIE: value}), stack)


async def test_base64_reencoded_cookie_is_no_session(stack: Stack) -> None:
    """Same bytes, different spelling (padding, standard alphabet): not our format."""
    cookies = await signed_in_cookies(stack)
    raw = base64.urlsafe_b64decode(
        cookies[SESSION_COOKIE] + "=" * (-len(cookies[SESSION_COOKIE]) % 4)
    )
    cookies[SESSION_COOKIE] = base64.b64encode(raw).decode()
    response = await get(stack, cookies)
    if response.status == 200:  # identical bytes in another alphabet may decode: still Alice
        return
    assert_no_session(response, stack)


@pytest.fixture
async def big_stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def chunked_cookies(stack: Stack, user: dict[str, Any]) -> dict[str, str]:
    cookies = await signed_in_cookies(stack, {**user, "groups": BIG_GROUPS})
    assert len(cookies) >= 3, sorted(cookies)  # the session is split across cookies
    return cookies


async def test_control_a_chunked_session_passes(big_stack: Stack) -> None:
    cookies = await chunked_cookies(big_stack, ALICE)
    assert (await get(big_stack, cookies)).status == 200


@pytest.mark.parametrize(
    "attack",
    [
        "swap-first-two",
        "reverse",
        "drop-last",
        "drop-middle",
        "duplicate-chunk",
        "extra-chunk",
        "gap",
        "rename-to-first",
    ],
)
async def test_doctored_chunks_are_no_session(big_stack: Stack, attack: str) -> None:
    cookies = await chunked_cookies(big_stack, ALICE)
    names = sorted(cookies, key=lambda n: int(n.rpartition("_")[2]) if n != SESSION_COOKIE else 0)
    values = [cookies[n] for n in names]
    doctored: dict[str, str] = dict(zip(names, values, strict=True))
    if attack == "swap-first-two":
        doctored[names[0]], doctored[names[1]] = values[1], values[0]
    elif attack == "reverse":
        doctored = dict(zip(names, reversed(values), strict=True))
    elif attack == "drop-last":
        del doctored[names[-1]]
    elif attack == "drop-middle":
        del doctored[names[1]]
    elif attack == "duplicate-chunk":
        doctored[names[2]] = values[1]
    elif attack == "extra-chunk":
        doctored[f"{SESSION_COOKIE}_{len(names)}"] = values[1]
    elif attack == "gap":
        doctored[f"{SESSION_COOKIE}_{len(names) + 1}"] = values[1]
    elif attack == "rename-to-first":
        doctored = {SESSION_COOKIE: values[1]}
    assert_no_session(await get(big_stack, doctored), big_stack)


async def test_chunks_spliced_from_two_users_are_no_session(big_stack: Stack) -> None:
    alice = await chunked_cookies(big_stack, ALICE)
    mallory = await chunked_cookies(big_stack, MALLORY)
    spliced = {**alice, SESSION_COOKIE: mallory[SESSION_COOKIE]}
    assert_no_session(await get(big_stack, spliced), big_stack)
    spliced = {**mallory, f"{SESSION_COOKIE}_1": alice[f"{SESSION_COOKIE}_1"]}
    assert_no_session(await get(big_stack, spliced), big_stack)


async def test_attempt_cookie_is_not_a_session(stack: Stack) -> None:
    """The codec binds each value to its purpose: a sign-in attempt cookie does not log in."""
    browser = await stack.browser()
    await stack.start_attempt(browser)
    (attempt,) = [v for k, v in browser.cookies().items() if "_login_" in k]
    assert_no_session(await get(stack, {SESSION_COOKIE: attempt}), stack)


async def test_expired_session_is_no_session(stack: Stack) -> None:
    cookies = await signed_in_cookies(stack)
    stack.clock.advance(stack.config.session.lifetime_seconds + 1)  # type: ignore[union-attr]
    assert_no_session(await get(stack, cookies), stack)


ServerFactory = Callable[..., Awaitable[TestServer]]


async def sidecar_with_secrets(
    stack: Stack, aiohttp_server: ServerFactory, secrets: list[str]
) -> int:
    """Another sidecar before the same provider and backend, with its own session secrets."""
    data = build_config_data(
        issuer=stack.provider.issuer, upstream=str(stack.echo.make_url("")).rstrip("/")
    )
    data["session"] = {"secrets": secrets}
    server = await aiohttp_server(
        create_app(SidecarConfig.model_validate(data), clock=stack.clock), host="127.0.0.1"
    )
    await server.app[__import__("sidecar.keys").keys.AUTH_SERVICES].require_directory().wait_ready()
    port = server.port
    assert port is not None
    return port


async def test_another_deployments_key_is_no_session(
    stack: Stack, aiohttp_server: ServerFactory
) -> None:
    cookies = await signed_in_cookies(stack)
    other = await sidecar_with_secrets(stack, aiohttp_server, [OTHER_SECRET])
    response = await get(other, cookies)
    assert response.status == 302
    assert "/private" not in stack.backend_paths()


async def test_key_rotation_keeps_sessions_then_retires_them(
    stack: Stack, aiohttp_server: ServerFactory
) -> None:
    cookies = await signed_in_cookies(stack)
    rotated = await sidecar_with_secrets(stack, aiohttp_server, [NEW_SECRET, SESSION_SECRET])
    assert (await get(rotated, cookies)).status == 200  # the old key still decrypts
    retired = await sidecar_with_secrets(stack, aiohttp_server, [NEW_SECRET])
    stack.backend_seen.clear()
    response = await get(retired, cookies)
    assert response.status == 302  # the retired key no longer does
    assert "/private" not in stack.backend_paths()


async def test_oversized_cookie_gets_431_and_never_reaches_the_backend(stack: Stack) -> None:
    limit = stack.config.server.max_header_bytes
    response = await get(stack, {"junk": "a" * (limit + 10)})
    assert response.status == 431
    huge = await get(stack, {"junk": "a" * (limit * 5)})
    assert huge.status in (400, 431)
    assert "/private" not in stack.backend_paths()


async def test_many_cookies_do_not_break_the_gate(stack: Stack) -> None:
    cookies = await signed_in_cookies(stack)
    noise = {f"{SESSION_COOKIE}_{n}": "x" for n in range(1, 70)}
    response = await get(stack, {**cookies, **noise})
    assert response.status == 302
    assert "/private" not in stack.backend_paths()


@pytest.mark.parametrize("planted", ["garbage", "attacker-session"])
async def test_session_fixation_a_planted_cookie_is_not_adopted(stack: Stack, planted: str) -> None:
    """A cookie planted before sign-in (by a sibling subdomain, say) is replaced, not kept."""
    if planted == "attacker-session":
        value = (await signed_in_cookies(stack, MALLORY))[SESSION_COOKIE]
    else:
        value = "planted-by-the-attacker"
    stack.provider.auto_login = dict(ALICE)
    victim = await stack.browser()
    from yarl import URL

    victim.http.cookie_jar.update_cookies({SESSION_COOKIE: value}, URL(stack.origin))
    hops = await victim.follow(stack.url("/oauth2/start?rd=/mine"))
    assert hops[-1].status == 200
    assert victim.cookies()[SESSION_COOKIE] != value
    seen = stack.backend_seen[-1]
    assert seen.raw_path == "/mine"
    assert seen.values("X-Forwarded-User") == [ALICE["sub"]]


async def test_duplicate_session_cookie_names_never_adopt_the_planted_one(stack: Stack) -> None:
    """Cookie tossing: the victim's cookie and an attacker's of the same name, in either order.
    Sidecar may refuse both, but must never act as the attacker for the victim."""
    victim = (await signed_in_cookies(stack, ALICE))[SESSION_COOKIE]
    attacker = (await signed_in_cookies(stack, MALLORY))[SESSION_COOKIE]
    for first, second in ((victim, attacker), (attacker, victim)):
        stack.backend_seen.clear()
        cookie = f"{SESSION_COOKIE}={first}; {SESSION_COOKIE}={second}"
        response = await get(stack, cookie)
        users = [s.values("X-Forwarded-User") for s in stack.backend_seen]
        assert response.status in (200, 302)
        assert users in ([], [[ALICE["sub"]]]), users


async def test_cookie_attributes_on_https(make_stack: StackFactory) -> None:
    """With an https public URL: the __Host- prefix (no sibling can set it), Secure, HttpOnly,
    SameSite=Lax, Path=/ and no Domain."""
    stack = await make_stack(server={"public_url": "https://app.example.org"})
    response = await raw_request(stack.port, "/oauth2/start?rd=/", {"Accept": "text/html"})
    (attempt,) = response.all("Set-Cookie")
    assert attempt.startswith(f"__Host-{SESSION_COOKIE}_login_")
    for attribute in ("Secure", "HttpOnly", "SameSite=Lax", "Path=/"):
        assert attribute in attempt
    assert "Domain" not in attempt
    planted = await get(stack, {SESSION_COOKIE: "x", f"{SESSION_COOKIE}_1": "y"})
    assert planted.status == 302
    assert not [c for c in planted.all("Set-Cookie") if c.startswith(SESSION_COOKIE + "=")]
