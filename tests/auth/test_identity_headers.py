"""Identity headers: claim mapping, list joining, and hostile values that must never be sent."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.auth.identity_headers import (
    IdentityHeaderCache,
    build_auth_request_headers,
    build_identity_headers,
    format_header_value,
)
from sidecar.config.model import HeadersConfig
from sidecar.session.model import Identity, Tokens

ALICE = Identity(
    sub="0f6c2a",
    user="0f6c2a",
    email="alice@example.com",
    email_verified=True,
    username="alice",
    groups=("admins", "staff"),
    claims={
        "sub": "0f6c2a",
        "name": "Alice Liddell",
        "org": {"team": {"name": "platform"}, "id": 7},
        "org.flat": "flat wins",
        "roles": ["reader", "writer"],
    },
)
TOKENS = Tokens(access_token="at-123", refresh_token="rt-456", id_token="id.jwt.sig")


def test_build_identity_headers_defaults_follow_oauth2_proxy() -> None:
    assert build_identity_headers(ALICE, TOKENS, HeadersConfig()) == [
        ("X-Forwarded-User", "0f6c2a"),
        ("X-Forwarded-Email", "alice@example.com"),
        ("X-Forwarded-Preferred-Username", "alice"),
        ("X-Forwarded-Groups", "admins,staff"),
    ]


def test_build_identity_headers_tokens_only_when_enabled() -> None:
    config = HeadersConfig(claims={}, access_token=True, authorization=True)
    assert build_identity_headers(ALICE, TOKENS, config) == [
        ("X-Forwarded-Access-Token", "at-123"),
        ("Authorization", "Bearer at-123"),
    ]
    assert build_identity_headers(ALICE, None, config) == []
    assert build_identity_headers(ALICE, Tokens(), config) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("user", "0f6c2a"),
        ("sub", "0f6c2a"),
        ("email", "alice@example.com"),
        ("email_verified", "true"),
        ("username", "alice"),
        ("groups", "admins,staff"),
        ("name", "Alice Liddell"),
        ("org.team.name", "platform"),
        ("org.id", "7"),
        ("org.flat", "flat wins"),
        ("roles", "reader,writer"),
        ("org", None),
        ("org.team", None),
        ("missing", None),
        ("org.missing.deeper", None),
    ],
)
def test_build_identity_headers_maps_fields_and_claims(source: str, expected: str | None) -> None:
    headers = build_identity_headers(ALICE, None, HeadersConfig(claims={"X-Who": source}))
    assert headers == ([] if expected is None else [("X-Who", expected)])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("  padded  ", "padded"),
        ("", None),
        (None, None),
        (False, "false"),
        (3, "3"),
        ([], None),
        (["a", "", "b"], "a,b"),
        (["a", {"x": 1}], None),
        ({"x": 1}, None),
        # spoofing rows: header splitting through a claim value
        ("alice\r\nX-Forwarded-User: admin", None),
        ("alice\nX-Forwarded-User: admin", None),
        ("alice\rX", None),
        ("alice\x00admin", None),
        ("alice\x7f", None),
        (["staff", "admins\r\nX-Admin: 1"], None),
        # a group whose name holds the separator must not pose as two groups
        (["staff,admins", "users"], "users"),
        (["staff,admins"], None),
    ],
)
def test_format_header_value(value: Any, expected: str | None) -> None:
    assert format_header_value(value) == expected


def test_build_identity_headers_skips_a_spoofing_value_but_keeps_the_others() -> None:
    hostile = Identity(
        sub="x",
        user="x",
        email="eve@example.com\r\nX-Forwarded-User: admin",
        username="eve",
        groups=("staff\nadmins",),
    )
    assert build_identity_headers(hostile, None, HeadersConfig()) == [
        ("X-Forwarded-User", "x"),
        ("X-Forwarded-Preferred-Username", "eve"),
    ]


def test_build_identity_headers_never_sends_a_token_with_control_characters() -> None:
    config = HeadersConfig(claims={}, access_token=True, authorization=True)
    tokens = Tokens(access_token="at\r\nX-Admin: 1")
    assert build_identity_headers(ALICE, tokens, config) == []


def test_build_auth_request_headers_are_oauth2_proxys_fixed_set() -> None:
    assert build_auth_request_headers(ALICE, TOKENS, HeadersConfig()) == [
        ("X-Auth-Request-User", "0f6c2a"),
        ("X-Auth-Request-Email", "alice@example.com"),
        ("X-Auth-Request-Groups", "admins,staff"),
        ("X-Auth-Request-Preferred-Username", "alice"),
    ]
    with_token = build_auth_request_headers(ALICE, TOKENS, HeadersConfig(access_token=True))
    assert with_token[-1] == ("X-Auth-Request-Access-Token", "at-123")


def test_build_auth_request_headers_skip_missing_and_hostile_values() -> None:
    hostile = Identity(sub="s", user="s", email="a@b.c\r\nX-Admin: 1", groups=(), claims={})
    tokens = Tokens(access_token="bad token", refresh_token=None, id_token=None)
    assert build_auth_request_headers(hostile, tokens, HeadersConfig(access_token=True)) == [
        ("X-Auth-Request-User", "s")
    ]


def test_identity_header_cache_builds_once_per_session_and_anew_after_a_refresh() -> None:
    cache = IdentityHeaderCache(HeadersConfig(access_token=True), size=2)
    first = cache.headers(ALICE, TOKENS)
    assert list(first) == build_identity_headers(ALICE, TOKENS, HeadersConfig(access_token=True))
    assert cache.headers(ALICE, TOKENS) is first  # the same session: not rebuilt
    refreshed = Tokens(access_token="at-789", refresh_token="rt-456")
    assert ("X-Forwarded-Access-Token", "at-789") in cache.headers(ALICE, refreshed)
    equal_but_new = Identity(sub="0f6c2a", user="0f6c2a", groups=("admins",))
    assert ("X-Forwarded-Groups", "admins") in cache.headers(equal_but_new, TOKENS)
    assert cache.headers(ALICE, TOKENS) is not first  # evicted (size 2), so built again
