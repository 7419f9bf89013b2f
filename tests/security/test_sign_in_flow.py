"""State, nonce, PKCE and the authorization code: replay, login CSRF, injection and mix-up.

Each case plays the attacker's part with real HTTP: a second browser, a copied callback URL, a
code stolen from one browser and fed to another, an attempt left to expire (the shared fake clock
moves), a callback whose `iss` names another provider or none. What is asserted: the victim's
browser holds no session it did not ask for, the attacker's holds none of the victim's, and the
backend never sees the page either wanted.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from support.claims import with_changes
from yarl import URL

from .conftest import MALLORY, Browser, Stack, StackFactory


def _query(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def _replace_query(url: str, **changes: str | None) -> str:
    query = with_changes(_query(url), changes)
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


def _refused(stack: Stack, browser: Browser, status: int, path: str = "/wanted") -> None:
    assert status in (400, 401, 403, 502), status
    assert not browser.has_session()
    assert path not in stack.backend_paths()


async def test_authorization_request_carries_state_nonce_and_s256_pkce(stack: Stack) -> None:
    browser = await stack.browser()
    seen = [await stack.start_attempt(browser, "/wanted") for _ in range(2)]
    for params in seen:
        assert params["response_type"] == "code"
        assert params["code_challenge_method"] == "S256"
        assert len(params["code_challenge"]) == 43
        assert len(params["state"]) >= 22
        assert len(params["nonce"]) >= 22
    assert seen[0]["state"] != seen[1]["state"]
    assert seen[0]["nonce"] != seen[1]["nonce"]
    assert seen[0]["code_challenge"] != seen[1]["code_challenge"]


async def test_login_csrf_attackers_callback_in_victims_browser(stack: Stack) -> None:
    """The attacker signs in as Mallory up to the callback, then makes the victim's browser
    open that callback URL: the victim must not end up signed in as Mallory."""
    stack.provider.auto_login = dict(MALLORY)
    attacker = await stack.browser()
    params = await stack.start_attempt(attacker, "/wanted")
    callback_url = await stack.provider_answer(params)
    victim = await stack.browser()
    await stack.start_attempt(victim, "/mine")  # even with an attempt of its own in flight
    hop = await victim.request("GET", callback_url)
    _refused(stack, victim, hop.status)


async def test_state_swapped_between_two_browsers(stack: Stack) -> None:
    one = await stack.browser()
    two = await stack.browser()
    params_one = await stack.start_attempt(one, "/wanted")
    params_two = await stack.start_attempt(two, "/wanted")
    answer_one = await stack.provider_answer(params_one)
    answer_two = await stack.provider_answer(params_two)
    # browser two receives browser one's answer, and one gets two's code with its own state
    hop = await two.request("GET", answer_one)
    _refused(stack, two, hop.status)
    crossed = _replace_query(answer_one, code=_query(answer_two)["code"])
    hop = await one.request("GET", crossed)
    _refused(stack, one, hop.status)


async def test_code_injection_is_stopped_by_pkce(stack: Stack) -> None:
    """A victim's code (leaked through a log or Referer) pasted into the attacker's own
    callback, with the attacker's valid state: the attacker's verifier does not match."""
    victim = await stack.browser()
    victim_code = _query(await stack.provider_answer(await stack.start_attempt(victim)))["code"]
    stack.provider.auto_login = dict(MALLORY)
    attacker = await stack.browser()
    attacker_answer = await stack.provider_answer(await stack.start_attempt(attacker, "/wanted"))
    hop = await attacker.request("GET", _replace_query(attacker_answer, code=victim_code))
    _refused(stack, attacker, hop.status)


async def test_callback_replayed_after_use_gives_nothing(stack: Stack) -> None:
    victim = await stack.browser()
    params = await stack.start_attempt(victim, "/wanted")
    answer = await stack.provider_answer(params)
    attempt_cookies = dict(victim.cookies())
    done = await victim.request("GET", answer)
    assert done.status == 302
    assert victim.has_session()
    # the same browser again: the attempt is gone; it keeps its session and lands on /
    again = await victim.request("GET", answer)
    assert again.status in (302, 400)
    if again.status == 302:
        assert again.location == "/"
    # another browser with the copied attempt cookie and URL: the code is spent
    thief = await stack.browser()
    for name, value in attempt_cookies.items():
        thief.http.cookie_jar.update_cookies({name: value}, URL(stack.origin))
    stack.backend_seen.clear()
    hop = await thief.request("GET", answer)
    _refused(stack, thief, hop.status)


async def test_callback_without_the_attempt_cookie_gives_nothing(stack: Stack) -> None:
    victim = await stack.browser()
    answer = await stack.provider_answer(await stack.start_attempt(victim, "/wanted"))
    stranger = await stack.browser()
    hop = await stranger.request("GET", answer)
    _refused(stack, stranger, hop.status)


@pytest.mark.parametrize(
    ("change", "value"),
    [
        ("state", None),
        ("state", ""),
        ("code", None),
        ("code", ""),
        ("state", "x" * 5000),
        ("code", "x" * 5000),
        ("state", "' OR 1=1 --"),
    ],
)
async def test_callback_with_missing_or_forged_parameters(
    stack: Stack, change: str, value: str | None
) -> None:
    browser = await stack.browser()
    answer = await stack.provider_answer(await stack.start_attempt(browser, "/wanted"))
    hop = await browser.request("GET", _replace_query(answer, **{change: value}))
    _refused(stack, browser, hop.status)


async def test_expired_attempt_is_refused(stack: Stack) -> None:
    browser = await stack.browser()
    answer = await stack.provider_answer(await stack.start_attempt(browser, "/wanted"))
    stack.clock.advance(stack.config.session.login_timeout_seconds + 1)  # type: ignore[union-attr]
    hop = await browser.request("GET", answer)
    _refused(stack, browser, hop.status)


async def test_provider_mix_up_wrong_iss_is_refused(stack: Stack) -> None:
    browser = await stack.browser()
    answer = await stack.provider_answer(await stack.start_attempt(browser, "/wanted"))
    hop = await browser.request(
        "GET", _replace_query(answer, iss="https://attacker-provider.example")
    )
    _refused(stack, browser, hop.status)


async def test_provider_mix_up_missing_iss_is_refused_when_the_provider_promises_it(
    stack: Stack,
) -> None:
    """RFC 9207 2.4: a provider whose metadata says it sends `iss` must be answered without one
    only by an attacker's mixed-up response."""
    browser = await stack.browser()
    answer = await stack.provider_answer(await stack.start_attempt(browser, "/wanted"))
    hop = await browser.request("GET", _replace_query(answer, iss=None))
    _refused(stack, browser, hop.status)


async def test_provider_error_text_is_not_reflected(stack: Stack) -> None:
    browser = await stack.browser()
    params = await stack.start_attempt(browser, "/wanted")
    evil = "<script>alert(document.cookie)</script>"
    url = (
        stack.url("/oauth2/callback")
        + "?"
        + urlencode(
            {
                "error": evil,
                "error_description": evil,
                "error_uri": "https://evil.example/",
                "state": params["state"],
                "iss": stack.provider.issuer,
            }
        )
    )
    hop = await browser.request("GET", url)
    _refused(stack, browser, hop.status)
    assert "<script>" not in hop.text
    assert "evil.example" not in hop.text


async def test_attempt_cookies_are_capped(stack: Stack) -> None:
    """Starting sign-in many times does not grow the browser's cookies without bound."""
    browser = await stack.browser()
    for _ in range(30):
        await stack.start_attempt(browser)
    attempts = [name for name in browser.cookies() if "_login_" in name]
    assert 0 < len(attempts) <= stack.config.session.max_login_attempts  # type: ignore[union-attr]


async def test_callback_refuses_post_and_other_methods(stack: Stack) -> None:
    browser = await stack.browser()
    answer = await stack.provider_answer(await stack.start_attempt(browser, "/wanted"))
    for method in ("POST", "PUT", "DELETE"):
        hop = await browser.request(method, answer)
        assert hop.status == 405
    assert not browser.has_session()
