"""Sign-out triggered from another site: a GET from an <img>, a link or a cross-site form must not
end the user's session (a nuisance attack, and a step in login-CSRF chains). Only a same-origin
POST or a request the browser marks same-origin/user-typed (`Sec-Fetch-Site`) signs out; anything
else gets the confirmation page and leaves the cookies alone.
"""

from __future__ import annotations

import pytest

from .conftest import SESSION_COOKIE, Browser, Hop, Stack, StackFactory

CROSS_SITE_ATTEMPTS = [
    pytest.param("GET", {}, id="get-without-fetch-metadata"),
    pytest.param("GET", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}, id="img"),
    pytest.param("GET", {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, id="link"),
    pytest.param("GET", {"Sec-Fetch-Site": "same-site"}, id="sibling-subdomain"),
    pytest.param("GET", {"Referer": "https://evil.example/"}, id="get-with-foreign-referer"),
    pytest.param("POST", {"Sec-Fetch-Site": "cross-site"}, id="cross-site-form"),
    pytest.param("POST", {"Origin": "https://evil.example"}, id="post-foreign-origin"),
    pytest.param("POST", {"Origin": "null"}, id="post-opaque-origin"),
    pytest.param(
        "POST",
        {"Origin": "https://evil.example", "Sec-Fetch-Site": "same-origin, cross-site"},
        id="doubled-fetch-metadata",
    ),
    pytest.param("HEAD", {"Sec-Fetch-Site": "cross-site"}, id="head"),
]


def clears_session(hop: Hop) -> bool:
    return any(c.startswith(SESSION_COOKIE + "=") and "Max-Age=0" in c for c in hop.set_cookies)


async def still_signed_in(stack: Stack, browser: Browser) -> bool:
    hop = await browser.request("GET", stack.url("/still-here"))
    return hop.status == 200


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


@pytest.mark.parametrize(("method", "headers"), CROSS_SITE_ATTEMPTS)
async def test_cross_site_sign_out_does_nothing(
    stack: Stack, method: str, headers: dict[str, str]
) -> None:
    browser = await stack.browser()
    await stack.sign_in(browser)
    kwargs = {"data": {"rd": "/"}} if method == "POST" else {}
    hop = await browser.request(method, stack.url("/oauth2/sign_out"), headers=headers, **kwargs)
    assert hop.status == 200  # the confirmation page
    assert not clears_session(hop)
    assert stack.provider.counters.end_session == 0
    assert await still_signed_in(stack, browser)


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("GET", {"Sec-Fetch-Site": "same-origin"}, id="same-origin-get"),
        pytest.param("GET", {"Sec-Fetch-Site": "none"}, id="typed-in-address-bar"),
        pytest.param("POST", {"Sec-Fetch-Site": "same-origin"}, id="same-origin-post"),
        pytest.param("POST", {}, id="post-without-origin"),
    ],
)
async def test_same_origin_sign_out_works(
    stack: Stack, method: str, headers: dict[str, str]
) -> None:
    """Control: the real button still signs out."""
    browser = await stack.browser()
    await stack.sign_in(browser)
    headers = dict(headers)
    if method == "POST" and not headers:
        headers["Origin"] = stack.origin
    kwargs = {"data": {"rd": "/"}} if method == "POST" else {}
    hop = await browser.request(method, stack.url("/oauth2/sign_out"), headers=headers, **kwargs)
    assert hop.status in (302, 303)
    assert clears_session(hop)
    assert not await still_signed_in(stack, browser)


async def test_confirmation_page_posts_back_to_sidecar_only(stack: Stack) -> None:
    browser = await stack.browser()
    await stack.sign_in(browser)
    hop = await browser.request(
        "GET", stack.url("/oauth2/sign_out?rd=%2Fafter"), headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert 'method="post"' in hop.text.lower()
    assert 'action="/oauth2/sign_out"' in hop.text
    assert hop.headers.get("Cache-Control") == "no-store"


async def test_sign_out_page_cannot_be_framed_to_click_jack(stack: Stack) -> None:
    """The confirmation button could be click-jacked inside a hidden frame: the page must
    forbid framing."""
    browser = await stack.browser()
    await stack.sign_in(browser)
    hop = await browser.request(
        "GET", stack.url("/oauth2/sign_out"), headers={"Sec-Fetch-Site": "cross-site"}
    )
    frame_options = hop.headers.get("X-Frame-Options", "").upper()
    csp = hop.headers.get("Content-Security-Policy", "")
    assert frame_options in ("DENY", "SAMEORIGIN") or "frame-ancestors" in csp


async def test_a_cookie_copied_before_sign_out_is_dead_after_it(stack: Stack) -> None:
    """A session cookie copied before sign-out (a shared machine, a stolen backup) must not
    outlive the sign-out."""
    browser = await stack.browser()
    await stack.sign_in(browser)
    copied = {k: v for k, v in browser.cookies().items() if k.startswith(SESSION_COOKIE)}
    hop = await browser.request(
        "GET", stack.url("/oauth2/sign_out"), headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert clears_session(hop)
    assert SESSION_COOKIE not in browser.cookies()
    thief = await stack.browser()
    cookie = "; ".join(f"{k}={v}" for k, v in copied.items())
    after = await thief.request("GET", stack.url("/after"), headers={"Cookie": cookie})
    assert after.status == 302
    assert "/after" not in stack.backend_paths()
