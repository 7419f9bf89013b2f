"""Open redirects through every redirect parameter sidecar reads.

An open redirect on an authentication proxy is a phishing tool with the victim's trusted domain
on the link. Each case below sends what an attacker puts in a link — `/oauth2/start?rd=`,
`/oauth2/sign_out?rd=` (and its form field), the URL an unauthenticated browser asked for (which
sidecar remembers across the sign-in), and the original URL a forward-auth proxy names — runs the
flow a browser would, and asserts that every Location the browser is given keeps it on sidecar's
origin (or the provider's end-session endpoint, whose return URL is itself on the origin).
"""

from __future__ import annotations

from http.cookies import SimpleCookie
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from yarl import URL

from .conftest import Browser, Stack, StackFactory, raw_request, stays_on_origin
from .redirect_payloads import (
    ALLOW_LIST_BYPASSES,
    ALLOWED_DOMAIN,
    ALLOWED_TARGETS,
    EVIL,
    OPEN_REDIRECT_PAYLOADS,
)


def _fill(payload: str, stack: Stack) -> str:
    return payload.replace("{host}", f"127.0.0.1:{stack.port}").replace("{origin}", stack.origin)


def _with_query(stack: Stack, path: str, name: str, value: str) -> URL:
    return URL(stack.url(path) + "?" + name + "=" + quote(value, safe=""), encoded=True)


async def _land_after_sign_in(stack: Stack, browser: Browser, start: URL | str) -> str:
    """Follow a sign-in from `start` to the callback; the callback's Location."""
    first = await browser.request("GET", start)  # type: ignore[arg-type]
    assert first.status == 302, (first.status, first.text[:200])
    assert first.location.startswith(stack.provider.issuer + "/authorize?")
    at_provider = await browser.request("GET", first.location)
    assert at_provider.status == 302
    assert at_provider.location.startswith(stack.url("/oauth2/callback?"))
    callback = await browser.request("GET", at_provider.location)
    assert callback.status == 302, (callback.status, callback.text[:300])
    assert browser.has_session()
    return callback.location


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
async def test_start_rd_never_leaves_the_origin(stack: Stack, payload: str) -> None:
    browser = await stack.browser()
    value = _fill(payload, stack)
    location = await _land_after_sign_in(
        stack, browser, _with_query(stack, "/oauth2/start", "rd", value)
    )
    assert stays_on_origin(location, stack.origin), location
    assert EVIL not in location.lower().replace("%", "")
    assert "pwned" not in " ".join(browser.cookies())


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
async def test_start_rd_given_twice_never_leaves_the_origin(stack: Stack, payload: str) -> None:
    """`?rd=/safe&rd=EVIL`: whichever copy a parser picks, the result is checked."""
    browser = await stack.browser()
    value = quote(_fill(payload, stack), safe="")
    for query in (f"rd=%2Fsafe&rd={value}", f"rd={value}&rd=%2Fsafe"):
        start = URL(stack.url("/oauth2/start") + "?" + query, encoded=True)
        location = await _land_after_sign_in(stack, browser, start)
        assert stays_on_origin(location, stack.origin), location


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
async def test_sign_out_rd_never_leaves_the_origin(make_stack: StackFactory, payload: str) -> None:
    stack = await make_stack(auth={"provider_logout": False})
    browser = await stack.browser()
    await stack.sign_in(browser)
    value = _fill(payload, stack)
    hop = await browser.request(
        "GET",
        _with_query(stack, "/oauth2/sign_out", "rd", value),  # type: ignore[arg-type]
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert hop.status == 302
    assert stays_on_origin(hop.location, stack.origin), hop.location
    posted = await browser.request(
        "POST",
        stack.url("/oauth2/sign_out"),
        data={"rd": value},
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert posted.status == 303
    assert stays_on_origin(posted.location, stack.origin), posted.location


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
async def test_post_logout_redirect_uri_sent_to_the_provider_stays_on_the_origin(
    stack: Stack, payload: str
) -> None:
    """With RP-initiated logout the return URL travels through the provider: it must be ours."""
    browser = await stack.browser()
    await stack.sign_in(browser)
    value = _fill(payload, stack)
    hop = await browser.request(
        "GET",
        _with_query(stack, "/oauth2/sign_out", "rd", value),  # type: ignore[arg-type]
        headers={"Sec-Fetch-Site": "same-origin"},
    )
    assert hop.status == 302
    assert hop.location.startswith(stack.provider.url("/end_session?"))
    query = parse_qs(urlsplit(hop.location).query)
    (returned,) = query["post_logout_redirect_uri"]
    assert stays_on_origin(returned, stack.origin), returned
    back = await browser.request("GET", hop.location)
    assert back.status == 302
    assert stays_on_origin(back.location.split("?state=")[0], stack.origin), back.location


@pytest.mark.parametrize("payload", OPEN_REDIRECT_PAYLOADS)
async def test_sign_out_confirmation_page_carries_no_foreign_target(
    stack: Stack, payload: str
) -> None:
    """A cross-site GET gets the confirmation page; its form must not carry the payload."""
    browser = await stack.browser()
    hop = await browser.request(
        "GET",
        _with_query(stack, "/oauth2/sign_out", "rd", _fill(payload, stack)),  # type: ignore[arg-type]
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert hop.status == 200
    assert EVIL not in hop.text
    assert "<script>alert" not in hop.text
    assert "javascript:" not in hop.text.lower()


@pytest.mark.parametrize("configured", [f"https://{EVIL}/", f"//{EVIL}", f"/\\{EVIL}"])
async def test_configured_post_logout_redirect_is_checked_too(
    make_stack: StackFactory, configured: str
) -> None:
    stack = await make_stack(auth={"provider_logout": False, "post_logout_redirect": configured})
    browser = await stack.browser()
    hop = await browser.request(
        "GET", stack.url("/oauth2/sign_out"), headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert hop.status == 302
    assert stays_on_origin(hop.location, stack.origin), hop.location


REMEMBERED_TARGETS = (
    f"//{EVIL}",
    f"//{EVIL}/",
    f"///{EVIL}/x",
    f"//{EVIL}/%2e%2e",
    f"//{EVIL}?q=1",
    f"//{EVIL}%2f@127.0.0.1",
    f"/%5c{EVIL}",
    f"/\\{EVIL}",
    f"/%09/{EVIL}",
    f"/%2f%2f{EVIL}",
    f"/.//{EVIL}",
    f"/x/..//{EVIL}",
    f"/public/..//{EVIL}",
    f"/%2e//{EVIL}",
)


@pytest.mark.parametrize("target", REMEMBERED_TARGETS)
async def test_remembered_original_url_never_leaves_the_origin(stack: Stack, target: str) -> None:
    """The request-target itself is the payload: sent raw, remembered across the sign-in."""
    first = await raw_request(stack.port, target, {"Accept": "text/html"})
    if first.status == 400:
        return  # refused outright: nothing remembered
    assert first.status == 302, first.status
    location = first.header("Location") or ""
    assert location.startswith(stack.provider.issuer + "/authorize?")
    jar = SimpleCookie()
    for value in first.all("Set-Cookie"):
        jar.load(value)
    browser = await stack.browser()
    for name, morsel in jar.items():
        browser.http.cookie_jar.update_cookies({name: morsel.value}, URL(stack.origin))
    at_provider = await browser.request("GET", location)
    callback = await browser.request("GET", at_provider.location)
    assert callback.status == 302
    assert browser.has_session()
    assert stays_on_origin(callback.location, stack.origin), callback.location


async def test_absolute_form_request_target_is_not_remembered(stack: Stack) -> None:
    response = await raw_request(stack.port, f"http://{EVIL}/x", {"Accept": "text/html"})
    assert response.status == 400
    assert not stack.backend_seen


FORWARD_AUTH_URIS = (
    f"//{EVIL}",
    f"//{EVIL}/x",
    f"/\\{EVIL}",
    f"/%5c{EVIL}",
    f"/%09/{EVIL}",
    f"//{EVIL}%2f@127.0.0.1",
    f"/.//{EVIL}",
)


@pytest.mark.parametrize("uri", FORWARD_AUTH_URIS)
async def test_forward_auth_sign_in_url_never_leaves_the_origin(
    make_stack: StackFactory, uri: str
) -> None:
    stack = await make_stack(server={"trusted_proxies": ["127.0.0.1/32"]})
    for via in ({"X-Forwarded-Uri": uri}, {"X-Original-URL": uri}):
        browser = await stack.browser()
        hop = await browser.request("GET", stack.url("/oauth2/auth"), headers=via)
        if hop.status == 403:  # refused as malformed or ambiguous
            continue
        assert hop.status == 401
        sign_in = hop.headers["X-Auth-Request-Sign-In"]
        assert sign_in.startswith("/oauth2/start?rd=")
        (rd,) = parse_qs(urlsplit(sign_in).query)["rd"]
        assert stays_on_origin(rd, stack.origin), rd
        location = await _land_after_sign_in(stack, browser, stack.url(sign_in))
        assert stays_on_origin(location, stack.origin), location


async def test_forward_auth_foreign_host_cannot_carry_the_browser_away(
    make_stack: StackFactory,
) -> None:
    """A proxy passing on an attacker's Host: the sign-in URL, used on sidecar's real origin,
    still lands there."""
    stack = await make_stack(server={"trusted_proxies": ["127.0.0.1/32"]})
    browser = await stack.browser()
    hop = await browser.request(
        "GET",
        stack.url("/oauth2/auth"),
        headers={"X-Forwarded-Host": EVIL, "X-Forwarded-Uri": "/x", "X-Forwarded-Proto": "https"},
    )
    assert hop.status == 401
    sign_in = hop.headers["X-Auth-Request-Sign-In"]
    assert sign_in.startswith("/oauth2/start?")
    location = await _land_after_sign_in(stack, browser, stack.url(sign_in))
    assert stays_on_origin(location, stack.origin), location


@pytest.mark.parametrize("payload", ALLOW_LIST_BYPASSES)
async def test_allowed_domain_bypasses_are_refused(make_stack: StackFactory, payload: str) -> None:
    stack = await make_stack(auth={"allowed_redirect_domains": [ALLOWED_DOMAIN]})
    browser = await stack.browser()
    location = await _land_after_sign_in(
        stack, browser, _with_query(stack, "/oauth2/start", "rd", payload)
    )
    assert stays_on_origin(location, stack.origin), location


@pytest.mark.parametrize("target", ALLOWED_TARGETS)
async def test_allowed_targets_are_kept(make_stack: StackFactory, target: str) -> None:
    """Positive control: the checks above pass because bad targets are refused, not all."""
    stack = await make_stack(auth={"allowed_redirect_domains": [ALLOWED_DOMAIN]})
    browser = await stack.browser()
    location = await _land_after_sign_in(
        stack, browser, _with_query(stack, "/oauth2/start", "rd", target)
    )
    assert location == target
