"""Auth0 quirks against its replayed shape: the audience parameter, namespaced claims, the
issuer's trailing slash and offline access."""

from __future__ import annotations

from typing import Any

from .conftest import ShapeStackFactory, jwt_payload, seen_headers


async def test_audience_makes_the_access_token_a_jwt_for_the_api(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("auth0")
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    token = seen_headers(hops[-1])["x-forwarded-access-token"]
    assert jwt_payload(token)["aud"] == [
        "https://api.example.com",
        stack.provider.issuer + "/userinfo",
    ]


async def test_namespaced_claim_is_addressed_by_its_exact_name(
    make_shape_stack: ShapeStackFactory,
) -> None:
    def roles_header(data: dict[str, Any]) -> None:
        data["headers"]["claims"] = {"X-Roles": "https://example.com/roles", "X-Sub": "sub"}

    stack = await make_shape_stack("auth0", edit=roles_header)
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    seen = seen_headers(hops[-1])
    assert seen["x-roles"] == "admin,editor"
    assert seen["x-sub"] == "auth0|64f1c3e2a7b9d0e1f2a3b4c5"


async def test_issuer_without_the_trailing_slash_is_refused(
    make_shape_stack: ShapeStackFactory,
) -> None:
    def no_slash(data: dict[str, Any]) -> None:
        data["provider"]["issuer"] = data["provider"]["issuer"].rstrip("/")

    stack = await make_shape_stack("auth0", edit=no_slash, wait_ready=False)
    browser = await stack.browser()
    for _ in range(200):  # each request lets the background discovery make progress
        ready = await browser.request("GET", stack.url("/oauth2/readyz"))
        if "mismatch" in ready.text:
            break
    assert ready.status == 503
    assert f"got {stack.provider.issuer}/" in ready.text


async def test_without_offline_access_no_refresh_token(make_shape_stack: ShapeStackFactory) -> None:
    def online_only(data: dict[str, Any]) -> None:
        data["provider"]["scopes"] = ["openid", "email", "profile"]

    stack = await make_shape_stack("auth0", edit=online_only)
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.clock.advance(301)
    await browser.follow(stack.url("/echo"))
    assert stack.provider.counters.refreshes == 0
