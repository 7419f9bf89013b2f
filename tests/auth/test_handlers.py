"""Sign-in end to end through sidecar's endpoints, with the dev provider as a (mis)behaving IdP."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from support.browser import SESSION_COOKIE

from .conftest import ALICE, Stack, StackFactory


def echo_headers(stack: Stack, hop_json: dict[str, object]) -> dict[str, str]:
    headers = hop_json["headers"]
    assert isinstance(headers, list)
    return {str(name).lower(): str(value) for name, value in headers}


async def test_sign_in_lands_on_the_original_url_with_identity_headers(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hops = await browser.follow(
        stack.url("/reports/q3?year=2026&x=1"),
        headers={"X-Forwarded-Email": "mallory@evil.test", "X_Forwarded_User": "admin"},
    )
    assert [hop.status for hop in hops] == [302, 302, 302, 200]
    assert hops[1].url.startswith(stack.provider.issuer + "/authorize")
    assert hops[2].url.startswith(stack.url("/oauth2/callback"))
    assert hops[2].location == "/reports/q3?year=2026&x=1"
    report = hops[-1].json()
    assert report["raw_path"] == "/reports/q3?year=2026&x=1"
    seen = echo_headers(stack, report)
    assert seen["x-forwarded-user"] == "alice"
    assert seen["x-forwarded-email"] == "alice@example.org"
    assert seen["x-forwarded-preferred-username"] == "alice"
    assert seen["x-forwarded-groups"] == "admins,staff"
    assert SESSION_COOKIE not in seen.get("cookie", "")
    assert browser.has_session()


async def test_spoofed_identity_headers_are_removed_for_a_signed_in_user(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    hop = await browser.request(
        "GET",
        stack.url("/echo"),
        headers={"X-Forwarded-Email": "mallory@evil.test", "x-forwarded-groups": "root"},
    )
    seen_pairs = [(str(k).lower(), v) for k, v in hop.json()["headers"]]
    assert ("x-forwarded-email", "alice@example.org") in seen_pairs
    assert ("x-forwarded-email", "mallory@evil.test") not in seen_pairs
    assert [v for k, v in seen_pairs if k == "x-forwarded-groups"] == ["admins,staff"]


async def test_start_validates_rd(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/oauth2/start?rd=/wiki/page%3Fid%3D7"))
    assert hops[-1].json()["raw_path"] == "/wiki/page?id=7"
    evil = await stack.browser()
    hops = await evil.follow(stack.url("/oauth2/start?rd=//evil.test/x"))
    assert hops[2].location == "/"


async def test_two_attempts_at_once_both_succeed(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    first = await browser.request("GET", stack.url("/tab-one"))
    second = await browser.request("GET", stack.url("/tab-two"))
    assert first.status == second.status == 302
    hops_one = await browser.follow(first.location)
    hops_two = await browser.follow(second.location)
    assert hops_one[-1].json()["raw_path"] == "/tab-one"
    assert hops_two[-1].json()["raw_path"] == "/tab-two"


async def test_replayed_callback_fails_and_creates_no_session(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hops = await stack.sign_in(browser, "/")
    callback_url = hops[2].url
    stranger = await stack.browser()
    replay = await stranger.request("GET", callback_url)
    assert replay.status == 400
    assert "expired or was already used" in replay.text
    assert "Sign in again" in replay.text
    assert not stranger.has_session()
    assert not any(SESSION_COOKIE + "=" in c and "Max-Age=0" not in c for c in replay.set_cookies)


async def test_stale_callback_with_a_valid_session_lands_instead_of_failing(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    hops = await stack.sign_in(browser, "/somewhere")
    again = await browser.request("GET", hops[2].url)
    assert again.status == 302
    assert again.location == "/"


async def test_state_from_another_browser_fails(make_stack: StackFactory) -> None:
    stack = await make_stack()
    victim = await stack.browser()
    attacker = await stack.browser()
    started = await attacker.request("GET", stack.url("/"))
    at_provider = await attacker.request("GET", started.location)
    callback_url = at_provider.location
    await victim.request("GET", stack.url("/"))  # the victim has an attempt of their own
    landed = await victim.request("GET", callback_url)
    assert landed.status == 400
    assert not victim.has_session()


async def test_provider_error_gives_a_page_not_a_loop(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.provider.faults.authorize_error = "access_denied"
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/private"))
    assert [hop.status for hop in hops] == [302, 302, 400]
    assert "access_denied" in hops[-1].text
    assert "Sign in again" in hops[-1].text
    assert not browser.has_session()
    assert not any("_login_" in name for name in browser.cookie_names())


@pytest.mark.parametrize(
    "fault",
    [
        "wrong_issuer",
        "wrong_audience",
        "extra_audience",
        "wrong_azp",
        "wrong_nonce",
        "missing_nonce",
        "expired",
        "issued_in_future",
        "alg_none",
        "hs256_with_public_key",
        "sign_with_wrong_key",
        "unknown_kid",
        "userinfo_sub_mismatch",
        "callback_wrong_issuer",
    ],
)
async def test_misbehaving_provider_leaves_no_session(make_stack: StackFactory, fault: str) -> None:
    stack = await make_stack()
    setattr(stack.provider.faults, fault, True)
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/private"))
    assert [hop.status for hop in hops] == [302, 302, 400], fault
    assert "Sign in again" in hops[-1].text
    assert not browser.has_session()
    assert not any(
        c.startswith(SESSION_COOKIE + "=") and "Max-Age=0" not in c for c in hops[-1].set_cookies
    )


async def test_key_rotation_needs_no_restart(make_stack: StackFactory) -> None:
    stack = await make_stack()
    first = await stack.browser()
    await stack.sign_in(first)
    stack.provider.rotate_keys()
    second = await stack.browser()
    hops = await stack.sign_in(second, "/after-rotation")
    assert hops[-1].json()["raw_path"] == "/after-rotation"
    assert stack.provider.counters.jwks == 2


async def test_userinfo_endpoint(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    anonymous = await browser.request(
        "GET", stack.url("/oauth2/userinfo"), headers={"Accept": "text/html"}
    )
    assert anonymous.status == 401
    assert anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
    await stack.sign_in(browser)
    info = await browser.request("GET", stack.url("/oauth2/userinfo"))
    assert info.status == 200
    assert info.json() == {
        "user": "alice",
        "email": ALICE["email"],
        "groups": ["admins", "staff"],
        "preferred_username": "alice",
    }


async def test_sign_out_post_clears_cookies_and_ends_the_provider_session(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    await browser.request("GET", stack.url("/oauth2/start"))  # an attempt cookie too
    assert any("_login_" in name for name in browser.cookie_names())
    hop = await browser.request(
        "POST",
        stack.url("/oauth2/sign_out"),
        data={"rd": "/goodbye"},
        headers={"Origin": stack.origin, "Sec-Fetch-Site": "same-origin"},
    )
    assert hop.status == 303
    location = urlsplit(hop.location)
    assert hop.location.startswith(stack.provider.issuer + "/end_session")
    query = {k: v[0] for k, v in parse_qs(location.query).items()}
    assert query["post_logout_redirect_uri"] == stack.url("/goodbye")
    assert "id_token_hint" in query
    assert not browser.has_session()
    assert not any("_login_" in name for name in browser.cookie_names())
    end = await browser.follow(hop.location)
    assert end[0].status == 302 and end[0].location == stack.url("/goodbye")
    assert stack.provider.counters.end_session == 1


async def test_cross_site_get_sign_out_does_not_sign_out(make_stack: StackFactory) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    for site in ("cross-site", "same-site", None):
        headers = {} if site is None else {"Sec-Fetch-Site": site}
        hop = await browser.request("GET", stack.url("/oauth2/sign_out"), headers=headers)
        assert hop.status == 200
        assert 'method="post"' in hop.text
        assert not hop.set_cookies
        assert browser.has_session()
    cross_post = await browser.request(
        "POST",
        stack.url("/oauth2/sign_out"),
        headers={"Origin": "https://evil.test", "Sec-Fetch-Site": "cross-site"},
    )
    assert cross_post.status == 200
    assert browser.has_session()


async def test_same_origin_get_sign_out_signs_out(make_stack: StackFactory) -> None:
    stack = await make_stack(auth={"provider_logout": False})
    browser = await stack.browser()
    await stack.sign_in(browser)
    hop = await browser.request(
        "GET",
        stack.url("/oauth2/sign_out?rd=https://evil.test/"),
        headers={"Sec-Fetch-Site": "none"},
    )
    assert hop.status == 302
    assert hop.location == "/"
    assert not browser.has_session()
    assert stack.provider.counters.end_session == 0


@pytest.mark.parametrize("fault", ["token_status_500", "token_drop_connection"])
async def test_token_endpoint_outage_during_sign_in_gives_a_503_page(
    make_stack: StackFactory, fault: str
) -> None:
    stack = await make_stack()
    setattr(stack.provider.faults, fault, True)
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/private"))
    assert [hop.status for hop in hops] == [302, 302, 503]
    assert "Sign in again" in hops[-1].text
    assert not browser.has_session()


async def test_id_token_without_kid_from_a_single_key_provider_is_accepted(
    make_stack: StackFactory,
) -> None:
    stack = await make_stack()
    stack.provider.faults.no_kid = True
    browser = await stack.browser()
    await stack.sign_in(browser, "/no-kid")
