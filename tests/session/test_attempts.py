"""Sign-in attempt cookies: several tabs at once, the cap, replay, expiry and purpose separation."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.session.attempts import (
    LoginAttempt,
    attempt_cookie_name,
    build_attempt_cookie,
    is_attempt_cookie,
    take_attempt,
)
from sidecar.session.codec import SessionCodec
from sidecar.session.cookies import CookiePolicy, is_own_cookie
from sidecar.session.store import CookieSessionStore

from .conftest import Jar, make_config

NOW = 1_800_000_000.0
TIMEOUT = 600.0
SECRET = "q0J7tB9y4kKz0mJ2pA7c2oU8x5nV1rW3eT6yH9sD4fG"

codec = SessionCodec([SECRET])
policy = CookiePolicy.from_config(make_config())


def attempt(n: int, *, created_at: float = NOW) -> LoginAttempt:
    return LoginAttempt(
        state=f"state-{n}-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        nonce=f"nonce-{n}",
        code_verifier=f"verifier-{n}-" + "v" * 40,
        redirect_to=f"/page/{n}?q=1",
        created_at=created_at,
    )


def start(jar: Jar, a: LoginAttempt, *, now: float | None = None, max_attempts: int = 5) -> None:
    jar.apply(
        build_attempt_cookie(
            codec,
            policy,
            a,
            jar.cookies,
            now=a.created_at if now is None else now,
            max_attempts=max_attempts,
            timeout=TIMEOUT,
        )
    )


def take(jar: Jar, state: str, *, now: float = NOW + 5) -> LoginAttempt | None:
    found, headers = take_attempt(codec, policy, state, jar.cookies, now=now, timeout=TIMEOUT)
    jar.apply(headers)
    return found


def test_attempt_cookie_is_named_after_the_state_and_marked_as_ours() -> None:
    name = attempt_cookie_name(policy, "some-state")
    assert re.fullmatch(r"__Host-_sidecar_login_[A-Za-z0-9_-]{8}", name)
    assert name == attempt_cookie_name(policy, "some-state")
    assert name != attempt_cookie_name(policy, "other-state")
    assert is_attempt_cookie(policy, name) and is_own_cookie(policy, name)
    assert policy.chunk_index(name) is None  # never mistaken for a session chunk


def test_attempt_cookie_has_session_attributes_and_login_timeout() -> None:
    jar = Jar()
    start(jar, attempt(1))
    (name,) = jar.cookies
    attrs = jar.attributes[name]
    assert attrs["max-age"] == "600" and attrs["samesite"] == "Lax"
    assert "secure" in attrs and "httponly" in attrs and attrs["path"] == "/"


def test_attempt_cookie_lifetime_defaults_to_the_configured_login_timeout() -> None:
    configured = CookiePolicy.from_config(make_config(login_timeout_seconds=120))
    (header,) = build_attempt_cookie(codec, configured, attempt(1), {}, now=NOW, max_attempts=5)
    assert "; Max-Age=120;" in header


def test_attempt_cookie_is_lax_even_when_the_session_cookie_is_strict() -> None:
    strict = CookiePolicy.from_config(make_config(cookie_samesite="Strict"))
    headers = build_attempt_cookie(
        codec, strict, attempt(1), {}, now=NOW, max_attempts=5, timeout=TIMEOUT
    )
    assert headers[-1].endswith("; SameSite=Lax")


def test_attempt_round_trips() -> None:
    jar = Jar()
    start(jar, attempt(1))
    assert take(jar, attempt(1).state) == attempt(1)


def test_three_concurrent_attempts_all_complete() -> None:
    jar = Jar()
    for n in (1, 2, 3):
        start(jar, attempt(n, created_at=NOW + n))
    assert len(jar.cookies) == 3
    for n in (2, 3, 1):  # callbacks return in any order
        assert take(jar, attempt(n).state) == attempt(n, created_at=NOW + n)
    assert jar.cookies == {}


def test_cap_drops_the_oldest_attempt() -> None:
    jar = Jar()
    for n in (1, 2, 3, 4):
        start(jar, attempt(n, created_at=NOW + n), max_attempts=3)
        assert len(jar.cookies) <= 3
    assert take(jar, attempt(1).state) is None
    for n in (2, 3, 4):
        assert take(jar, attempt(n).state) is not None


def test_cap_uses_the_time_inside_the_cookie_not_cookie_order() -> None:
    jar = Jar()
    start(jar, attempt(1, created_at=NOW + 50), now=NOW + 50)
    start(jar, attempt(2, created_at=NOW + 10), now=NOW + 50)  # older, though set later
    start(jar, attempt(3, created_at=NOW + 60), max_attempts=2)
    assert take(jar, attempt(2).state, now=NOW + 60) is None
    assert take(jar, attempt(1).state, now=NOW + 60) is not None


def test_new_attempt_removes_undecodable_and_expired_attempt_cookies() -> None:
    jar = Jar()
    start(jar, attempt(1, created_at=NOW))
    jar.cookies[attempt_cookie_name(policy, "forged")] = "not-an-encrypted-value"
    start(jar, attempt(2, created_at=NOW + TIMEOUT + 1))
    assert list(jar.cookies) == [attempt_cookie_name(policy, attempt(2).state)]


def test_new_attempt_leaves_foreign_and_session_cookies_alone() -> None:
    jar = Jar({"_session": "provider", "__Host-_sidecar": "session", "_interaction": "x"})
    start(jar, attempt(1))
    assert {"_session", "__Host-_sidecar", "_interaction"} <= set(jar.cookies)


def test_replayed_callback_finds_no_attempt() -> None:
    jar = Jar()
    start(jar, attempt(1))
    assert take(jar, attempt(1).state) is not None
    assert take(jar, attempt(1).state) is None


def test_callback_without_attempt_cookie_sets_nothing() -> None:
    found, headers = take_attempt(codec, policy, "unknown", {}, now=NOW, timeout=TIMEOUT)
    assert found is None and headers == []


def test_expired_attempt_fails_and_is_deleted() -> None:
    jar = Jar()
    start(jar, attempt(1))
    assert take(jar, attempt(1).state, now=NOW + TIMEOUT + 1) is None
    assert jar.cookies == {}


def test_attempt_from_the_future_fails() -> None:
    jar = Jar()
    start(jar, attempt(1, created_at=NOW + 3600), now=NOW)
    assert take(jar, attempt(1).state, now=NOW) is None


def test_attempt_moved_to_another_states_cookie_name_fails() -> None:
    jar = Jar()
    start(jar, attempt(1))
    (value,) = jar.cookies.values()
    stolen = {attempt_cookie_name(policy, attempt(2).state): value}
    found, _ = take_attempt(codec, policy, attempt(2).state, stolen, now=NOW, timeout=TIMEOUT)
    assert found is None


def test_tampered_attempt_fails_and_is_deleted() -> None:
    jar = Jar()
    start(jar, attempt(1))
    (name,) = jar.cookies
    jar.cookies[name] = jar.cookies[name][:-2] + ("AA" if jar.cookies[name][-2:] != "AA" else "BB")
    assert take(jar, attempt(1).state) is None
    assert jar.cookies == {}


async def test_attempt_cookie_is_not_accepted_as_a_session_cookie() -> None:
    config = make_config()
    assert config.session is not None
    store = CookieSessionStore(codec, policy, config.session)
    jar = Jar()
    start(jar, attempt(1))
    (value,) = jar.cookies.values()
    assert await store.load({policy.name: value}, now=NOW) is None


def test_session_cookie_is_not_accepted_as_an_attempt() -> None:
    session_value = codec.encode(attempt(1).to_payload(), purpose="session", now=NOW)
    name = attempt_cookie_name(policy, attempt(1).state)
    found, _ = take_attempt(
        codec, policy, attempt(1).state, {name: session_value}, now=NOW, timeout=TIMEOUT
    )
    assert found is None


def test_attempt_repr_hides_the_flow_secrets() -> None:
    text = repr(attempt(1))
    assert "state-1" not in text and "nonce-1" not in text and "verifier-1" not in text


@given(
    state=st.text(min_size=1, max_size=100),
    redirect_to=st.text(max_size=200),
    created_at=st.floats(NOW - 100, NOW),
)
def test_any_attempt_round_trips(state: str, redirect_to: str, created_at: float) -> None:
    a = LoginAttempt(state, "nonce", "verifier", redirect_to, created_at)
    jar = Jar()
    jar.apply(build_attempt_cookie(codec, policy, a, {}, now=NOW, max_attempts=1, timeout=TIMEOUT))
    found, _ = take_attempt(codec, policy, state, jar.cookies, now=NOW, timeout=TIMEOUT)
    assert found == a


@pytest.mark.parametrize(
    "payload", [b"[]", b"{}", b'{"s":"a","n":"b","v":"c","r":"d","t":true}', b"\xff"]
)
def test_malformed_attempt_payload_is_refused(payload: bytes) -> None:
    with pytest.raises(ValueError):
        LoginAttempt.from_payload(payload)
