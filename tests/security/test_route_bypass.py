"""Route bypass: reaching `/admin` (policy: group `admins`) without being an admin.

Routes are matched on the path, and the backend reads the path too: any spelling on which the two
disagree is a way past the policy. Each case sends one spelling raw (no client tidies it), as
Mallory (signed in, not an admin) and as an anonymous client, and asserts that the backend never
received a request that some common backend would read as a path under `/admin` — a lenient
reading that decodes everything, turns `\\` into `/`, drops `;` parameters, folds case (Express,
IIS, Windows), resolves dot segments and trims trailing dots and spaces (IIS, Windows).
"""

from __future__ import annotations

import re
from http.cookies import SimpleCookie
from urllib.parse import unquote_to_bytes

import pytest

from .conftest import ALICE, MALLORY, Stack, StackFactory, raw_request

BYPASSES = (
    "/admin",
    "/admin/",
    "/admin/x",
    "//admin",
    "///admin/x",
    "/./admin",
    "/x/../admin",
    "/public/../admin",
    "/public/./../admin",
    "/public/%2e%2e/admin",
    "/public/%2E%2E/admin",
    "/public/.%2e/admin",
    "/public/%2e./admin",
    "/public/..;/admin",
    "/public;/../admin",
    "/public;x/..;y/admin",
    "/public/..%2fadmin",
    "/public%2f..%2fadmin",
    "/public/%2e%2e%2fadmin",
    "/public/..%5cadmin",
    "/public\\..\\admin",
    "/public/..\\admin",
    "/public//../admin",
    "/public/x//../../admin",
    "/%2e/admin",
    "/%61dmin",
    "/%2561dmin",
    "/adm%69n/x",
    "/ADMIN",
    "/Admin/x",
    "/aDmIn",
    "/public/../ADMIN",
    "/admin;jsessionid=1",
    "/admin;/x",
    "/admin%3bx",
    "/admin%3b/x",
    "/admin?x=1",
    "/admin?/public",
    "/public?/admin",
    "/admin#x",
    "/admin%23",
    "/admin%20",
    "/admin%20/x",
    "/admin.",
    "/admin./x",
    "/admin..",
    "/admin%2e",
    "/admin%2e%2e/x",
    "/admin.%20",
    "/admin%09",
    "/admin%00",
    "/admin%00.html",
    "/admin%5c",
    "/admin%5cx",
    "/admin\\x",
    "/admin%2fx",
    "/%c0%ae%c0%ae/admin",
    "/public/%c0%ae%c0%ae/admin",
    "/public/..%c0%afadmin",
    "/public/%e0%80%ae%e0%80%ae/admin",
    "/admin/.",
    "/admin/..",
    "/admin/%2e",
    "/admin/../public/x",
    "/admin/%2e%2e/public/x",
    "/admin/..;/public/x",
    "/admin;/../public/x",
    "/%20/admin",
    "/public/%20/../admin",
    "/admin\t",
    "/admin%ff",
    "/public/%252e%252e/admin",
)


def lenient_reading(raw: str) -> str:
    """The path as the most forgiving backend reads it."""
    path = raw.split("?", 1)[0].split("#", 1)[0]
    path = unquote_to_bytes(path).decode("utf-8", "replace")  # once: see THREAT_MODEL.md
    # Overlong UTF-8 (`%c0%ae`) read as the ASCII it imitates, as broken decoders did.
    path = path.replace("\ufffd\ufffd", ".")
    path = path.replace("\\", "/").replace("\x00", "").lower()
    out: list[str] = []
    for segment in path.split("/"):
        segment = segment.split(";", 1)[0]
        if segment not in (".", ".."):
            segment = segment.rstrip(". \t")
        if segment in ("", "."):
            continue
        if segment == "..":
            if out:
                out.pop()
            continue
        out.append(segment)
    return "/" + "/".join(out)


def reaches_admin(raw: str) -> bool:
    """Under /admin to a forgiving backend, or to one that resolves nothing at all."""
    reading = lenient_reading(raw)
    literal = unquote_to_bytes(raw.split("?", 1)[0]).decode("utf-8", "replace").lower()
    return (
        reading == "/admin"
        or reading.startswith("/admin/")
        or re.match(r"[/\\]+admin([/\\;.\s]|$)", literal) is not None
    )


def cookie_header(set_cookies: list[str]) -> str:
    jar: SimpleCookie = SimpleCookie()
    for value in set_cookies:
        jar.load(value)
    return "; ".join(f"{name}={morsel.value}" for name, morsel in jar.items())


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


async def _session_cookie(stack: Stack, user: dict[str, object]) -> str:
    stack.provider.auto_login = dict(user)
    browser = await stack.browser()
    await stack.sign_in(browser)
    return "; ".join(f"{k}={v}" for k, v in browser.cookies().items() if k.startswith("_sidecar"))


def _admin_requests(stack: Stack) -> list[str]:
    return [path for path in stack.backend_paths() if reaches_admin(path)]


def test_lenient_reading_reads_the_tricks() -> None:
    assert reaches_admin("/public/%2e%2e/admin")
    assert reaches_admin("/ADMIN.")
    assert reaches_admin("/public/%20/../admin")
    assert reaches_admin("/public/..;/admin")
    assert not reaches_admin("/administrator")
    assert not reaches_admin("/public/admin")
    assert reaches_admin("/admin/../public/x")


@pytest.mark.parametrize("path", BYPASSES)
async def test_a_signed_in_non_admin_never_reaches_admin(stack: Stack, path: str) -> None:
    cookie = await _session_cookie(stack, MALLORY)
    stack.backend_seen.clear()
    for method in ("GET", "HEAD", "POST", "OPTIONS"):
        response = await raw_request(
            stack.port, path, {"Cookie": cookie, "Accept": "text/html"}, method=method
        )
        assert response.status != 0
        assert _admin_requests(stack) == [], (method, path, response.status)


@pytest.mark.parametrize("path", BYPASSES)
async def test_an_anonymous_client_never_reaches_admin(stack: Stack, path: str) -> None:
    for method in ("GET", "HEAD", "OPTIONS"):
        response = await raw_request(stack.port, path, {"Accept": "text/html"}, method=method)
        if reaches_admin(path):
            assert response.status in (302, 400, 401), (method, path, response.status)
    assert _admin_requests(stack) == []


async def test_an_admin_does_reach_admin(stack: Stack) -> None:
    """Positive control: the policy lets its own group in, under every plain spelling."""
    cookie = await _session_cookie(stack, ALICE)
    for path in ("/admin", "/admin/", "/admin/x?y=1"):
        response = await raw_request(stack.port, path, {"Cookie": cookie})
        assert response.status == 200, path
    assert len(_admin_requests(stack)) == 3


async def test_non_admin_sees_403_on_head_and_options(stack: Stack) -> None:
    cookie = await _session_cookie(stack, MALLORY)
    for method in ("GET", "HEAD", "OPTIONS", "DELETE"):
        response = await raw_request(stack.port, "/admin", {"Cookie": cookie}, method=method)
        assert response.status == 403, method


async def test_public_route_does_not_leak_into_its_neighbours(stack: Stack) -> None:
    """`/publicity` is not under `/public`: it needs a sign-in."""
    for path in ("/publicity", "/public-x", "/public.x", "/publi%63x"):
        response = await raw_request(stack.port, path, {"Accept": "text/html"})
        assert response.status in (302, 400), path
    assert not [p for p in stack.backend_paths() if re.match(r"/publi", p)]


@pytest.mark.parametrize("path", [p for p in BYPASSES if all(" " < c < "\x7f" for c in p)])
async def test_forward_auth_never_admits_a_non_admin_to_admin(
    make_stack: StackFactory, path: str
) -> None:
    """The same spellings named as the original request by a trusted proxy (nginx, Traefik)."""
    stack = await make_stack(server={"trusted_proxies": ["127.0.0.1/32"]})
    cookie = await _session_cookie(stack, MALLORY)
    for headers in ({"X-Forwarded-Uri": path}, {"X-Original-URL": path}):
        signed_in = await raw_request(stack.port, "/oauth2/auth", {"Cookie": cookie, **headers})
        anonymous = await raw_request(stack.port, "/oauth2/auth", headers)
        if reaches_admin(path):
            assert signed_in.status in (403,), (path, headers, signed_in.status)
            assert anonymous.status in (401, 403), (path, headers, anonymous.status)
