"""GitHub quirks against its replayed shape: plain OAuth 2.0 with the identity from the REST
API, verified email only, org/team groups, GitHub App tokens that expire, and token errors
answered with HTTP 200."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from .conftest import ShapeStackFactory, load, seen_headers

USER_EMAILS = ("GET", "https://api.github.com/user/emails")
USER_ORGS = ("GET", "https://api.github.com/user/orgs")


def github_app() -> Any:
    """A GitHub App with expiring user tokens: 8-hour tokens, one-time refresh tokens."""
    return replace(
        load("github"),
        refresh_tokens=True,
        access_token_expires=True,
        access_token_prefix="ghu_",
        extra_token_response={"refresh_token_expires_in": 15811200},
    )


async def test_no_verified_primary_email_means_no_email(
    make_shape_stack: ShapeStackFactory,
) -> None:
    shape = load("github")
    emails = [{**entry, "verified": False} for entry in shape.api[USER_EMAILS]]
    stack = await make_shape_stack(
        "github", shape=replace(shape, api={**shape.api, USER_EMAILS: emails})
    )
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/echo"))
    assert hops[-1].status == 200
    seen = seen_headers(hops[-1])
    assert seen["x-forwarded-user"] == "octocat"
    assert "x-forwarded-email" not in seen


async def test_user_outside_the_organization_is_denied(make_shape_stack: ShapeStackFactory) -> None:
    shape = load("github")
    orgs = [org for org in shape.api[USER_ORGS] if org["login"] != "octo-org"]
    stack = await make_shape_stack(
        "github", shape=replace(shape, api={**shape.api, USER_ORGS: orgs})
    )
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/echo"))
    assert hops[-1].status == 403


async def test_github_app_tokens_are_refreshed(make_shape_stack: ShapeStackFactory) -> None:
    def app_scopes(data: dict[str, Any]) -> None:
        data["provider"]["scopes"] = []

    stack = await make_shape_stack("github", shape=github_app(), edit=app_scopes)
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.clock.advance(301)
    after = await browser.follow(stack.url("/echo"))
    assert after[-1].status == 200 and len(after) == 1
    assert stack.provider.counters.refreshes == 1


async def test_revoked_refresh_token_answered_with_200_ends_the_session(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("github", shape=github_app())
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.provider.faults.refresh_invalid_grant = True  # GitHub: 200 {"error": ...}
    stack.clock.advance(301)
    hop = await browser.request("GET", stack.url("/echo"))
    assert hop.status == 302  # back to sign-in, not a 503 outage page
    assert hop.location.startswith(stack.provider.issuer + "/login/oauth/authorize")
    assert stack.provider.counters.refreshes == 0


async def test_token_is_only_sent_to_the_api(make_shape_stack: ShapeStackFactory) -> None:
    stack = await make_shape_stack("github")
    browser = await stack.browser()
    await stack.sign_in(browser)
    # /user, /user/emails, /user/orgs, /user/teams: one call each, nothing else
    assert stack.provider.counters.userinfo == 1
    assert stack.provider.counters.api_calls == 3
