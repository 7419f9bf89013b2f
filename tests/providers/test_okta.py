"""Okta quirks against its replayed shape: the groups claim released by the groups scope of a
custom authorization server, refresh tokens only with offline_access."""

from __future__ import annotations

from typing import Any

from .conftest import ShapeStackFactory, seen_headers


def scopes(*names: str) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["provider"]["scopes"] = list(names)

    return edit


async def test_groups_need_the_groups_scope(make_shape_stack: ShapeStackFactory) -> None:
    stack = await make_shape_stack("okta", edit=scopes("openid", "email", "profile"))
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    seen = seen_headers(hops[-1])
    assert seen["x-forwarded-email"] == "alice@example.com"
    assert "x-forwarded-groups" not in seen


async def test_issuer_is_the_custom_authorization_server(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("okta")
    metadata = stack.services.require_directory().metadata()
    assert metadata.issuer == stack.provider.issuer + "/oauth2/default"
    assert metadata.token_endpoint == stack.provider.issuer + "/oauth2/default/v1/token"


async def test_without_offline_access_no_refresh_token(make_shape_stack: ShapeStackFactory) -> None:
    stack = await make_shape_stack("okta", edit=scopes("openid", "email", "profile", "groups"))
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.clock.advance(301)
    await browser.follow(stack.url("/echo"))
    assert stack.provider.counters.refreshes == 0
