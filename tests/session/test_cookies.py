"""Cookie names, attributes, chunking and the Set-Cookie values a browser receives."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from aiohttp._cookie_helpers import parse_cookie_header
from hypothesis import example, given, settings
from hypothesis import strategies as st

from sidecar.session.cookies import (
    CookiePolicy,
    build_clear_cookies,
    build_clear_session_cookies,
    build_delete_cookie,
    build_set_cookie,
    build_set_cookies,
    is_own_cookie,
    join_chunks,
    read_request_cookies,
    split_value,
)

from .conftest import Jar, make_config

B64URL = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")

secure = CookiePolicy.from_config(make_config())


def test_policy_uses_host_prefix_when_secure_without_domain() -> None:
    assert secure.name == "__Host-_sidecar"
    assert secure.secure and secure.path == "/" and secure.domain is None and secure.http_only


def test_policy_has_no_host_prefix_with_a_domain() -> None:
    policy = CookiePolicy.from_config(make_config(cookie_domain=".example.com"))
    assert policy.name == "_sidecar" and policy.secure
    assert "; Domain=.example.com" in build_set_cookie(policy, policy.name, "v", max_age_seconds=1)


def test_policy_has_no_host_prefix_and_no_secure_on_plain_http() -> None:
    policy = CookiePolicy.from_config(make_config(public_url="http://127.0.0.1:4180"))
    assert policy.name == "_sidecar" and not policy.secure
    assert "Secure" not in build_set_cookie(policy, policy.name, "v", max_age_seconds=1)


def test_policy_follows_explicit_secure_setting_and_samesite() -> None:
    policy = CookiePolicy.from_config(
        make_config(cookie_secure=False, cookie_name="app", cookie_samesite="Strict")
    )
    assert policy.name == "app" and not policy.secure
    header = build_set_cookie(policy, policy.name, "v", max_age_seconds=60)
    assert header == "app=v; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"


def test_set_cookie_has_every_attribute() -> None:
    header = build_set_cookie(secure, secure.name, "abc", max_age_seconds=3600)
    assert header == "__Host-_sidecar=abc; Path=/; Max-Age=3600; Secure; HttpOnly; SameSite=Lax"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "__Host-x", "secure": False},
        {"name": "__Host-x", "secure": True, "domain": "example.com"},
        {"name": "x;y", "secure": True},
        {"name": "x", "secure": True, "domain": "a.com; Secure"},
        {"name": "x", "secure": False, "same_site": "None"},
    ],
)
def test_policy_refuses_what_browsers_would_reject(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        CookiePolicy(**kwargs)  # type: ignore[arg-type]


def test_set_cookie_refuses_value_that_would_need_quoting() -> None:
    with pytest.raises(ValueError):
        build_set_cookie(secure, secure.name, "a;b", max_age_seconds=1)


@settings(max_examples=60, deadline=None)
@given(
    value=st.integers(0, 50_000).map(lambda n: ("abcXYZ019-_" * (n // 11 + 1))[:n]),
    max_cookie_bytes=st.integers(1000, 4093),
    domain=st.sampled_from([None, ".example.com", "a-very-long-subdomain.example.com"]),
)
def test_join_of_split_is_identity_with_every_cookie_under_the_limit(
    value: str, max_cookie_bytes: int, domain: str | None
) -> None:
    policy = CookiePolicy(
        name="_sidecar", secure=True, domain=domain, max_cookie_bytes=max_cookie_bytes
    )
    headers = build_set_cookies(policy, policy.name, value, [], max_age_seconds=43200)
    assert all(len(h.encode()) <= max_cookie_bytes for h in headers)
    jar = Jar()
    jar.apply(headers)
    assert join_chunks(policy, jar.cookies) == (value or "")


@given(value=B64URL, size=st.integers(1, 500))
def test_split_value_makes_pieces_no_larger_than_asked(value: str, size: int) -> None:
    pieces = split_value(value, size)
    assert "".join(pieces) == value
    assert all(len(p) <= size for p in pieces)
    assert all(pieces) or pieces == [""]


def test_split_value_refuses_a_value_needing_too_many_cookies() -> None:
    with pytest.raises(ValueError, match="cookies"):
        split_value("a" * 10_000, 100)


def big_value() -> Jar:
    headers = build_set_cookies(secure, secure.name, "x" * 12_000, [], max_age_seconds=100)
    jar = Jar()
    jar.apply(headers)
    return jar


def test_large_value_spans_consecutively_named_chunks() -> None:
    jar = big_value()
    assert list(jar.cookies) == [
        "__Host-_sidecar",
        "__Host-_sidecar_1",
        "__Host-_sidecar_2",
        "__Host-_sidecar_3",
    ]
    assert join_chunks(secure, jar.cookies) == "x" * 12_000


def test_join_is_independent_of_cookie_header_order() -> None:
    jar = big_value()
    reversed_cookies = dict(reversed(list(jar.cookies.items())))
    assert join_chunks(secure, reversed_cookies) == "x" * 12_000


@pytest.mark.parametrize("missing", ["__Host-_sidecar", "__Host-_sidecar_1", "__Host-_sidecar_2"])
def test_join_with_a_missing_chunk_gives_none(missing: str) -> None:
    jar = big_value()
    del jar.cookies[missing]
    assert join_chunks(secure, jar.cookies) is None


@pytest.mark.parametrize("extra", ["__Host-_sidecar_5", "__Host-_sidecar_4x", "__Host-_sidecar_04"])
def test_join_with_an_extra_chunk_gives_none_or_ignores_foreign_names(extra: str) -> None:
    jar = big_value()
    jar.cookies[extra] = "zzz"
    result = join_chunks(secure, jar.cookies)
    if extra == "__Host-_sidecar_5":
        assert result is None
    else:
        assert result == "x" * 12_000  # not one of our chunk names at all


def test_join_with_no_session_cookie_gives_none() -> None:
    assert join_chunks(secure, {"_session": "provider", "other": "x"}) is None


def test_join_ignores_foreign_and_login_cookies() -> None:
    cookies = {"__Host-_sidecar": "abc", "__Host-_sidecar_login_AbCd-_12": "l", "_session": "p"}
    assert join_chunks(secure, cookies) == "abc"


def test_smaller_value_deletes_leftover_chunks() -> None:
    jar = big_value()
    headers = build_set_cookies(secure, secure.name, "small", jar.cookies, max_age_seconds=100)
    jar.apply(headers)
    assert jar.cookies == {"__Host-_sidecar": "small"}
    assert join_chunks(secure, jar.cookies) == "small"


def test_delete_cookie_keeps_the_attributes_that_identify_the_cookie() -> None:
    policy = CookiePolicy(name="s", secure=True, domain=".example.com")
    assert build_delete_cookie(policy, "s_2") == (
        "s_2=; Path=/; Domain=.example.com; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
    )
    assert build_delete_cookie(secure, "__Host-_sidecar") == (
        "__Host-_sidecar=; Path=/; Max-Age=0; Secure; HttpOnly; SameSite=Lax"
    )


PRESENT = [
    "__Host-_sidecar",
    "__Host-_sidecar_1",
    "__Host-_sidecar_login_AbCd-_12",
    "_session",
    "_session.sig",
    "_interaction",
    "_interaction_resume",
    "theme",
]


def test_clear_cookies_deletes_every_sidecar_cookie_and_nothing_else() -> None:
    jar = Jar(dict.fromkeys(PRESENT, "v"))
    jar.apply(build_clear_cookies(secure, PRESENT))
    assert sorted(jar.cookies) == [
        "_interaction",
        "_interaction_resume",
        "_session",
        "_session.sig",
        "theme",
    ]


def test_clear_session_cookies_keeps_sign_ins_in_progress() -> None:
    jar = Jar(dict.fromkeys(PRESENT, "v"))
    jar.apply(build_clear_session_cookies(secure, PRESENT))
    assert "__Host-_sidecar_login_AbCd-_12" in jar.cookies
    assert "__Host-_sidecar" not in jar.cookies and "__Host-_sidecar_1" not in jar.cookies


@pytest.mark.parametrize(
    ("name", "own"),
    [
        ("__Host-_sidecar", True),
        ("__Host-_sidecar_1", True),
        ("__Host-_sidecar_12", True),
        ("__Host-_sidecar_login_AbCd-_12", True),
        ("_sidecar", True),  # same cookie from before a switch to https
        ("_sidecar_3", True),
        ("_sidecar_login_AbCd-_12", True),
        ("_session", False),
        ("_session.sig", False),
        ("_interaction", False),
        ("_interaction_resume", False),
        ("_sidecar_0", False),
        ("_sidecar_x", False),
        ("_sidecarx", False),
        ("x_sidecar", False),
        ("__Secure-_sidecar", False),
        ("", False),
    ],
)
def test_is_own_cookie(name: str, own: bool) -> None:
    assert is_own_cookie(secure, name) is own


# --- reading a request's Cookie headers once -----------------------------------------------------

UPSTREAM_ROWS = [
    ("own cookie removed", ["a=1; _sidecar=secret; b=2"], "a=1; b=2"),
    ("only own cookies: nothing left", ["_sidecar=secret; _sidecar_1=more"], ""),
    ("untouched when nothing is ours", ["a=1;b=2"], "a=1;b=2"),
    ("trimmed when nothing is ours", ["  a=1 ; b=2  "], "a=1 ; b=2"),
    ("sign-in attempt cookies removed", ["_sidecar_login_x=1; theme=dark"], "theme=dark"),
    ("prefixed names removed too", ["__Host-_sidecar=s; __Host-_sidecar_1=t; t=1"], "t=1"),
    ("look-alike names kept", ["_sidecarx=1; sidecar=2"], "_sidecarx=1; sidecar=2"),
    ("several Cookie headers joined", ["a=1", "_sidecar=s; c=3"], "a=1; c=3"),
    ("empty pieces ignored", ["; _sidecar=s ;; d=4 ;"], "d=4"),
    ("quoting passed on as sent", ['q="a b"; _sidecar=s; r=x\\y'], 'q="a b"; r=x\\y'),
    ("no Cookie header", [], ""),
]


@pytest.mark.parametrize(
    ("headers", "expected"), [r[1:] for r in UPSTREAM_ROWS], ids=[r[0] for r in UPSTREAM_ROWS]
)
def test_read_cookies_sends_upstream_all_but_sidecars(headers: list[str], expected: str) -> None:
    assert read_request_cookies(secure, headers).upstream == expected


def test_read_cookies_without_a_policy_sends_every_cookie() -> None:
    read = read_request_cookies(None, [" _sidecar=s; a=1 ", "", "b=2"])
    assert read.upstream == "_sidecar=s; a=1; b=2"
    assert read.own == {} and not read.duplicated


OWN_ROWS: list[tuple[str, list[str], dict[str, str] | None]] = [
    (
        "session and chunk",
        ["a=1; __Host-_sidecar=v0; __Host-_sidecar_1=v1"],
        {"__Host-_sidecar": "v0", "__Host-_sidecar_1": "v1"},
    ),
    ("attempt", ["_sidecar_login_ab=x"], {"_sidecar_login_ab": "x"}),
    ("name without a value", ["__Host-_sidecar"], {"__Host-_sidecar": ""}),
    (
        "repeated name: the last wins",
        ["_sidecar_login_a=1; _sidecar_login_a=2"],
        {"_sidecar_login_a": "2"},
    ),
    ("only the first header, like aiohttp", ["a=1", "__Host-_sidecar=v"], {}),
    ("a quote in the first header: aiohttp decides", ['a="x"; __Host-_sidecar=v'], None),
    ("whitespace inside our piece: aiohttp decides", ["__Host-_sidecar = v"], None),
    ("ours hidden in another piece: aiohttp decides", ["a=x __Host-_sidecar=v"], None),
    ("a quote elsewhere does not matter", ["__Host-_sidecar=v", 'a="x"'], {"__Host-_sidecar": "v"}),
]


@pytest.mark.parametrize(
    ("headers", "own"), [r[1:] for r in OWN_ROWS], ids=[r[0] for r in OWN_ROWS]
)
def test_read_cookies_finds_sidecars_own(headers: list[str], own: dict[str, str] | None) -> None:
    assert read_request_cookies(secure, headers).own == own


DUPLICATE_ROWS = [
    ("same name, two values", ["__Host-_sidecar=a; __Host-_sidecar=b"], True),
    ("in two Cookie headers", ["__Host-_sidecar=a", "x=1; __Host-_sidecar=b"], True),
    ("a chunk twice", ["__Host-_sidecar=a; __Host-_sidecar_1=b; __Host-_sidecar_1=c"], True),
    ("same value twice", ["__Host-_sidecar=a; __Host-_sidecar= a "], False),
    ("old unprefixed name beside the new", ["_sidecar=a; __Host-_sidecar=b"], False),
    ("attempts are not sessions", ["__Host-_sidecar_login_x=a; __Host-_sidecar_login_x=b"], False),
    ("no value", ["__Host-_sidecar; __Host-_sidecar=b"], False),
]


@pytest.mark.parametrize(
    ("headers", "duplicated"),
    [r[1:] for r in DUPLICATE_ROWS],
    ids=[r[0] for r in DUPLICATE_ROWS],
)
def test_read_cookies_notices_a_tossed_session_cookie(headers: list[str], duplicated: bool) -> None:
    assert read_request_cookies(secure, headers).duplicated is duplicated


def _old_filter(value: str, drop: Callable[[str], bool]) -> str:
    """How the header builder removed sidecar's cookies before the one reading (the reference)."""
    kept: list[str] = []
    dropped = False
    for pair in value.split(";"):
        stripped = pair.strip()
        if not stripped:
            continue
        if drop(stripped.partition("=")[0].strip()):
            dropped = True
        else:
            kept.append(stripped)
    return "; ".join(kept) if dropped else value.strip()


def _old_duplicate(policy: CookiePolicy, headers: list[str]) -> bool:
    """How the gate noticed cookie tossing before the one reading (the reference)."""
    seen: dict[str, str] = {}
    for header in headers:
        for pair in header.split(";"):
            name, sep, value = pair.strip().partition("=")
            if not sep or policy.chunk_index(name) is None:
                continue
            if seen.setdefault(name, value.strip()) != value.strip():
                return True
    return False


_PLAIN_NAMES = [
    "__Host-_sidecar",
    "__Host-_sidecar_1",
    "_sidecar",
    "_sidecar_2",
    "__Host-_sidecar_login_q",
    "a",
    "_sidecarx",
    "x_sidecar",
    "theme",
]
_NAMES = st.sampled_from([*_PLAIN_NAMES, "", " __Host-_sidecar", "__Host-_sidecar "])
_PLAIN_VALUES = st.text("abcXYZ019-_=.,/!#%&()*+:<>?@[]^`{|}~$'", max_size=8)
_WILD_VALUES = st.text('ab_-=; \t"\\,\x1c\x00é' + "_sidecar", max_size=10)


def _headers(
    names: st.SearchStrategy[str],
    equals: list[str],
    values: st.SearchStrategy[str],
    separators: list[str],
) -> st.SearchStrategy[list[str]]:
    piece = st.tuples(names, st.sampled_from(equals), values).map("".join)
    header = st.tuples(st.lists(piece, max_size=6), st.sampled_from(separators))
    return st.lists(header.map(lambda t: t[1].join(t[0])), max_size=3)


def _check_against_the_old_reading(headers: list[str]) -> None:
    read = read_request_cookies(secure, headers)
    old_upstream = "; ".join(
        c for c in (_old_filter(h, lambda n: is_own_cookie(secure, n)) for h in headers) if c
    )
    assert read.upstream == old_upstream
    assert read.duplicated is _old_duplicate(secure, headers)
    # aiohttp's request.cookies: the first Cookie header, the last of a repeated name winning.
    aiohttp_cookies = {n: m.value for n, m in parse_cookie_header(headers[0] if headers else "")}
    own = {n: v for n, v in aiohttp_cookies.items() if is_own_cookie(secure, n)}
    assert read.own is None or read.own == own


@given(_headers(_NAMES, ["=", "", " = "], _WILD_VALUES, [";", "; ", " ;", ";;", " "]))
@settings(max_examples=500)
@example(['a="x; __Host-_sidecar=v"'])
@example(["a=x\x1c; __Host-_sidecar=v\x1c"])
def test_read_cookies_agrees_with_the_old_reading_on_any_header(headers: list[str]) -> None:
    _check_against_the_old_reading(headers)


@given(_headers(st.sampled_from(_PLAIN_NAMES), ["=", ""], _PLAIN_VALUES, [";", "; ", " ;\t", ";;"]))
@settings(max_examples=300)
def test_read_cookies_reads_plain_headers_without_aiohttp(headers: list[str]) -> None:
    _check_against_the_old_reading(headers)
    assert read_request_cookies(secure, headers).own is not None
