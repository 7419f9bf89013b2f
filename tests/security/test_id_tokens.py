"""ID token validation, one check of OpenID Connect Core 3.1.3.7 broken at a time.

The OpenID Foundation's relying-party certification list is the checklist (test ids in the
parametrize ids). The development provider signs or shapes the ID token wrongly as its fault knob
says; the browser completes the sign-in; the case asserts what the browser is left with (a failure
page and no session cookie) and that the backend never saw the request the user asked for. The
accepted cases (absent kid with one key, a rotated key) prove the refusals are not blanket ones.
"""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import ALICE, Browser, Hop, Stack, StackFactory

REFUSED: list[Any] = [
    pytest.param({"alg_none": True}, id="rp-id_token-sig-none"),
    pytest.param({"sign_with_wrong_key": True}, id="rp-id_token-bad-sig-rs256"),
    pytest.param({"hs256_with_public_key": True}, id="hs256-keyed-with-the-public-key"),
    pytest.param({"unknown_kid": True}, id="unknown-kid"),
    pytest.param({"wrong_issuer": True}, id="rp-id_token-issuer-mismatch"),
    pytest.param({"wrong_audience": True}, id="rp-id_token-aud"),
    pytest.param({"missing_audience": True}, id="aud-absent"),
    pytest.param({"extra_audience": True}, id="untrusted-extra-audience-without-azp"),
    pytest.param({"wrong_azp": True}, id="azp-not-the-client"),
    pytest.param({"missing_iat": True}, id="rp-id_token-iat"),
    pytest.param({"expired": True}, id="exp-in-the-past"),
    pytest.param({"missing_exp": True}, id="exp-absent"),
    pytest.param({"issued_in_future": True}, id="iat-in-the-future"),
    pytest.param({"missing_sub": True}, id="rp-id_token-sub"),
    pytest.param({"wrong_nonce": True}, id="rp-nonce-invalid"),
    pytest.param({"missing_nonce": True}, id="nonce-absent"),
    pytest.param({"userinfo_sub_mismatch": True}, id="rp-userinfo-bad-sub-claim"),
    pytest.param({"callback_wrong_issuer": True}, id="rp-iss-mismatch-authorization-response"),
]


async def _sign_in_hops(stack: Stack, browser: Browser, path: str = "/wanted") -> list[Hop]:
    return await browser.follow(stack.url(path))


@pytest.mark.parametrize("faults", REFUSED)
async def test_a_bad_id_token_creates_no_session(
    make_stack: StackFactory, faults: dict[str, Any]
) -> None:
    stack = await make_stack()
    for name, value in faults.items():
        setattr(stack.provider.faults, name, value)
    browser = await stack.browser()
    hops = await _sign_in_hops(stack, browser)
    last = hops[-1]
    assert last.url.startswith(stack.url("/oauth2/callback"))
    assert last.status in (400, 401, 403, 502), last.status
    assert "Sign-in could not be completed" in last.text
    assert not browser.has_session()
    assert not any(cookie.startswith("_sidecar=") for hop in hops for cookie in hop.set_cookies)
    assert "/wanted" not in stack.backend_paths()


async def test_unknown_kid_refetches_the_keys_once_only(make_stack: StackFactory) -> None:
    """An attacker's unknown kid must not turn sidecar into a JWKS-fetching amplifier."""
    stack = await make_stack()
    stack.provider.faults.unknown_kid = True
    before = stack.provider.counters.jwks
    for _ in range(5):
        browser = await stack.browser()
        await _sign_in_hops(stack, browser)
        assert not browser.has_session()
    assert stack.provider.counters.jwks - before <= 1


async def test_rp_id_token_kid_absent_single_jwks_is_accepted(make_stack: StackFactory) -> None:
    stack = await make_stack()
    stack.provider.faults.no_kid = True
    browser = await stack.browser()
    hops = await _sign_in_hops(stack, browser)
    assert hops[-1].status == 200
    assert browser.has_session()


async def test_rp_id_token_kid_absent_multiple_jwks_never_trusts_the_wrong_key(
    make_stack: StackFactory,
) -> None:
    """No kid and two published keys: refusing is right; trying each key is allowed, but then the
    signature must still verify (it does here: the current key signed it)."""
    stack = await make_stack()
    stack.provider.faults.no_kid = True
    stack.provider.faults.publish_extra_key = True
    browser = await stack.browser()
    hops = await _sign_in_hops(stack, browser)
    if browser.has_session():
        assert hops[-1].status == 200
        assert hops[-1].json()["raw_path"] == "/wanted"
    else:
        assert hops[-1].status in (400, 401, 502)


async def test_rp_key_rotation_op_sign_key(make_stack: StackFactory) -> None:
    """The provider starts signing with a new key: the next sign-in still works."""
    stack = await make_stack()
    first = await stack.browser()
    await stack.sign_in(first)
    stack.provider.rotate_keys()
    second = await stack.browser()
    hops = await _sign_in_hops(stack, second)
    assert hops[-1].status == 200
    assert second.has_session()


async def test_a_token_signed_by_a_rotated_out_key_is_refused(make_stack: StackFactory) -> None:
    """After a rotation the old key is gone from the JWKS: a token it signs is not trusted."""
    stack = await make_stack()
    stack.provider.rotate_keys()  # sidecar has the old key cached from start-up
    stack.provider.faults.sign_with_wrong_key = True  # signed by the unpublished key
    browser = await stack.browser()
    hops = await _sign_in_hops(stack, browser)
    assert not browser.has_session()
    assert hops[-1].status in (400, 401, 502)


REFRESH_FAULTS: list[Any] = [
    pytest.param({"alg_none": True}, id="sig-none"),
    pytest.param({"sign_with_wrong_key": True}, id="bad-sig"),
    pytest.param({"wrong_issuer": True}, id="issuer"),
    pytest.param({"wrong_audience": True}, id="aud"),
    pytest.param({"expired": True}, id="exp"),
]


@pytest.mark.parametrize("faults", REFRESH_FAULTS)
async def test_a_bad_id_token_from_a_refresh_ends_the_session(
    make_stack: StackFactory, faults: dict[str, Any]
) -> None:
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    for name, value in faults.items():
        setattr(stack.provider.faults, name, value)
    stack.clock.advance(stack.provider.access_token_ttl + 1)  # refresh is due
    stack.backend_seen.clear()
    refreshes = stack.provider.counters.refreshes
    hop = await browser.request("GET", stack.url("/after-refresh"))
    assert stack.provider.counters.refreshes == refreshes + 1
    assert hop.status == 302
    assert "/after-refresh" not in stack.backend_paths()
    assert not browser.has_session()


async def test_a_refreshed_id_token_for_another_subject_ends_the_session(
    make_stack: StackFactory,
) -> None:
    """OIDC Core 12.2: a refreshed ID token's sub must be the session's."""
    stack = await make_stack()
    browser = await stack.browser()
    await stack.sign_in(browser)
    stack.provider.faults.missing_sub = True
    stack.clock.advance(stack.provider.access_token_ttl + 1)
    hop = await browser.request("GET", stack.url("/after-refresh"))
    assert hop.status == 302
    assert not browser.has_session()
    assert ALICE["sub"]  # the session was Alice's; nobody's now
