"""Google quirks against its replayed shape: offline access, the hosted domain, no sign-out.

Google issues a refresh token only for `access_type=offline` (and, for a returning user, only with
`prompt=consent`); the guide's extra_authorize_params ask for both. The `hd` claim marks a
Workspace account; the guide's policy admits one domain. Google publishes no end_session_endpoint,
so sign-out ends only sidecar's session (proven in test_journey).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import ShapeStackFactory, load, seen_headers


def forward_access_token(data: dict[str, Any]) -> None:
    data["headers"] = {"access_token": True}


async def test_guide_asks_for_offline_access_and_the_access_token_is_renewed(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("google", edit=forward_access_token)
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    authorize = parse_qs(urlsplit(hops[1].url).query)
    assert authorize["access_type"] == ["offline"] and authorize["prompt"] == ["consent"]
    first = seen_headers(hops[-1])["x-forwarded-access-token"]
    stack.clock.advance(301)
    after = await browser.follow(stack.url("/echo"))
    assert stack.provider.counters.refreshes == 1
    assert seen_headers(after[-1])["x-forwarded-access-token"] != first
    stack.clock.advance(301)  # Google sends no new refresh token: the first one is used again
    await browser.follow(stack.url("/echo"))
    assert stack.provider.counters.refreshes == 2


async def test_without_offline_access_there_is_no_refresh_token(
    make_shape_stack: ShapeStackFactory,
) -> None:
    def online_only(data: dict[str, Any]) -> None:
        forward_access_token(data)
        del data["provider"]["extra_authorize_params"]

    stack = await make_shape_stack("google", edit=online_only)
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    first = seen_headers(hops[-1])["x-forwarded-access-token"]
    stack.clock.advance(301)
    after = await browser.follow(stack.url("/echo"))
    assert after[-1].status == 200
    assert stack.provider.counters.refreshes == 0
    # the session lives on, but the backend is handed the expired access token
    assert seen_headers(after[-1])["x-forwarded-access-token"] == first


@pytest.mark.parametrize(
    ("hd", "status"),
    [("example.com", 200), ("other.example", 403), (None, 403)],
    ids=["workspace-domain", "other-domain", "consumer-account"],
)
async def test_hd_policy_admits_only_the_workspace_domain(
    make_shape_stack: ShapeStackFactory, hd: str | None, status: int
) -> None:
    user = {k: v for k, v in load("google").user.items() if k != "hd"}
    if hd is not None:
        user["hd"] = hd
    stack = await make_shape_stack("google", user=user)
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/echo"))
    assert hops[-1].status == status
