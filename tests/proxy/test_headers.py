"""Tables for the one builder of upstream and response headers (sidecar/proxy/headers.py)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.model import SidecarConfig
from sidecar.proxy.headers import (
    HeaderPlan,
    build_header_plan,
    build_response_headers,
    build_upstream_headers,
    normalize_header_name,
)
from sidecar.session.cookies import CookiePolicy, read_request_cookies

CONFIG = SidecarConfig.model_validate(
    {
        "version": 1,
        "upstream": "http://127.0.0.1:9000",
        "server": {"trusted_proxies": ["10.0.0.0/8", "fd00::/8"]},
        "headers": {"strip": ["X-Internal-Role"]},
    }
)
PLAN = build_header_plan(CONFIG)
IDENTITY = (("X-Forwarded-User", "alice"), ("X-Forwarded-Email", "alice@example.com"))
UNTRUSTED = "203.0.113.9"
TRUSTED = "10.1.2.3"


COOKIES = CookiePolicy(name="_sidecar", secure=False)


def build(
    incoming: Sequence[tuple[str, str]],
    *,
    peer: str | None = UNTRUSTED,
    identity: Sequence[tuple[str, str]] = IDENTITY,
    plan: HeaderPlan = PLAN,
    upstream_host: str | None = None,
) -> list[tuple[str, str]]:
    headers = build_upstream_headers(
        incoming,
        plan=plan,
        peer=peer,
        scheme="http",
        host="app.example.com",
        request_id="rid-1",
        identity_headers=identity,
        cookie=read_request_cookies(
            COOKIES, [v for n, v in incoming if n.lower() == "cookie"]
        ).upstream,
        upstream_host=upstream_host,
    )
    return list(headers.items())


def values(pairs: list[tuple[str, str]], name: str) -> list[str]:
    wanted = normalize_header_name(name)
    return [v for n, v in pairs if normalize_header_name(n) == wanted]


# --- spoofing: a client can neither inject nor remove identity headers -------------------------

SPOOFING = [
    ("exact name", [("X-Forwarded-Email", "evil@example.com")]),
    ("lower case", [("x-forwarded-email", "evil@example.com")]),
    ("upper case", [("X-FORWARDED-EMAIL", "evil@example.com")]),
    ("underscores", [("X_Forwarded_Email", "evil@example.com")]),
    ("mixed separators", [("x-forwarded_email", "evil@example.com")]),
    ("duplicated", [("X-Forwarded-Email", "evil1"), ("X-Forwarded-Email", "evil2")]),
    ("connection names it", [("Connection", "X-Forwarded-Email"), ("X-Forwarded-Email", "evil")]),
    ("connection names it, no copy", [("Connection", "close, X-Forwarded-Email")]),
    ("connection names user", [("Connection", "x-forwarded-user")]),
    ("auth request header", [("X-Auth-Request-Email", "evil@example.com")]),
    ("auth request unknown", [("x_auth_request_anything", "evil")]),
    ("access token", [("X-Forwarded-Access-Token", "evil-token")]),
    ("access token underscores", [("x_forwarded_access_token", "evil-token")]),
    ("configured strip", [("X-Internal-Role", "evil-admin")]),
    ("configured strip underscores", [("x_internal_role", "evil-admin")]),
    ("request id", [("X-Request-Id", "evil-id")]),
    ("request id underscores", [("X_Request_Id", "evil-id")]),
]


@pytest.mark.parametrize(("incoming"), [row[1] for row in SPOOFING], ids=[r[0] for r in SPOOFING])
def test_spoofed_identity_headers_never_reach_the_backend(incoming: list[tuple[str, str]]) -> None:
    pairs = build(incoming)
    assert not [v for _, v in pairs if "evil" in v]
    assert values(pairs, "X-Forwarded-Email") == ["alice@example.com"]
    assert values(pairs, "X-Forwarded-User") == ["alice"]
    assert values(pairs, "X-Request-Id") == ["rid-1"]
    assert pairs[-2:] == list(IDENTITY), "identity headers are added last"


@pytest.mark.parametrize(("incoming"), [row[1] for row in SPOOFING], ids=[r[0] for r in SPOOFING])
def test_spoofed_identity_headers_are_dropped_without_a_session(
    incoming: list[tuple[str, str]],
) -> None:
    pairs = build(incoming, identity=())
    assert not [v for _, v in pairs if "evil" in v]
    assert values(pairs, "X-Forwarded-Email") == []


def test_authorization_is_stripped_only_when_sidecar_sends_its_own() -> None:
    incoming = [("Authorization", "Bearer client"), ("authorization", "Basic x")]
    assert values(build(incoming), "Authorization") == ["Bearer client", "Basic x"]
    config = CONFIG.model_copy(
        update={"headers": CONFIG.headers.model_copy(update={"authorization": True})}
    )
    pairs = build(
        incoming, plan=build_header_plan(config), identity=[("Authorization", "Bearer s")]
    )
    assert values(pairs, "Authorization") == ["Bearer s"]


def test_claim_header_names_from_config_are_stripped_in_every_spelling() -> None:
    config = CONFIG.model_copy(
        update={"headers": CONFIG.headers.model_copy(update={"claims": {"X-User_Tenant": "tid"}})}
    )
    plan = build_header_plan(config)
    incoming = [("x-user-tenant", "evil"), ("X_USER_TENANT", "evil"), ("X-User_Tenant", "evil")]
    assert build(incoming, plan=plan, identity=[("X-User_Tenant", "t1")])[-1] == (
        "X-User_Tenant",
        "t1",
    )
    assert not [v for _, v in build(incoming, plan=plan, identity=()) if v == "evil"]


# --- hop-by-hop --------------------------------------------------------------------------------

HOP_BY_HOP_ROWS: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = [
    (
        "standard hop-by-hop",
        [
            ("Connection", "keep-alive"),
            ("Keep-Alive", "timeout=5"),
            ("Proxy-Connection", "keep-alive"),
            ("TE", "trailers"),
            ("Trailer", "X-Checksum"),
            ("Transfer-Encoding", "chunked"),
            ("Upgrade", "h2c"),
            ("Proxy-Authorization", "Basic cHJveHk6c2VjcmV0"),
            ("Accept", "text/html"),
        ],
        [("Accept", "text/html")],
    ),
    (
        "names listed in Connection, case-insensitive",
        [("Connection", "X-Custom, x-OTHER"), ("x-custom", "1"), ("X-Other", "2"), ("X-Keep", "3")],
        [("X-Keep", "3")],
    ),
    (
        "several Connection headers",
        [
            ("Connection", "x-a"),
            ("connection", " x-b ,,"),
            ("X-A", "1"),
            ("X-B", "2"),
            ("X-C", "3"),
        ],
        [("X-C", "3")],
    ),
    (
        "end-to-end headers pass in order, repeats in the first spelling",
        [("Accept", "*/*"), ("X-Thing", "a"), ("x-thing", "b"), ("Content-Length", "3")],
        [("Accept", "*/*"), ("X-Thing", "a"), ("X-Thing", "b"), ("Content-Length", "3")],
    ),
]


@pytest.mark.parametrize(
    ("incoming", "kept"), [r[1:] for r in HOP_BY_HOP_ROWS], ids=[r[0] for r in HOP_BY_HOP_ROWS]
)
def test_hop_by_hop_headers_are_dropped(
    incoming: list[tuple[str, str]], kept: list[tuple[str, str]]
) -> None:
    pairs = build(incoming, identity=())
    added = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    assert [(n, v) for n, v in pairs if n.lower() not in added] == kept


# --- forwarding headers ------------------------------------------------------------------------

FORWARDED_ROWS: list[tuple[str, list[tuple[str, str]], str | None, dict[str, list[str]]]] = [
    ("untrusted, nothing sent", [], UNTRUSTED, {"X-Forwarded-For": [UNTRUSTED]}),
    (
        "untrusted client's values are replaced",
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
        ],
        UNTRUSTED,
        {
            "X-Forwarded-For": [UNTRUSTED],
            "X-Forwarded-Proto": ["http"],
            "X-Forwarded-Host": ["app.example.com"],
        },
    ),
    (
        "trusted proxy's values are kept and appended to",
        [
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "public.example"),
        ],
        TRUSTED,
        {
            "X-Forwarded-For": [f"1.2.3.4, {TRUSTED}"],
            "X-Forwarded-Proto": ["https"],
            "X-Forwarded-Host": ["public.example"],
        },
    ),
    (
        "trusted proxy, several X-Forwarded-For headers become one list",
        [("X-Forwarded-For", "1.2.3.4"), ("x-forwarded-for", "5.6.7.8, 9.9.9.9")],
        TRUSTED,
        {"X-Forwarded-For": [f"1.2.3.4, 5.6.7.8, 9.9.9.9, {TRUSTED}"]},
    ),
    (
        "trusted IPv6 proxy",
        [("X-Forwarded-For", "1.2.3.4")],
        "fd00::5",
        {"X-Forwarded-For": ["1.2.3.4, fd00::5"]},
    ),
    (
        "IPv4-mapped trusted peer",
        [("X-Forwarded-For", "1.2.3.4")],
        "::ffff:10.0.0.7",
        {"X-Forwarded-For": ["1.2.3.4, ::ffff:10.0.0.7"]},
    ),
    (
        "Connection: X-Forwarded-For trick from an untrusted client",
        [("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "1.2.3.4")],
        UNTRUSTED,
        {"X-Forwarded-For": [UNTRUSTED]},
    ),
    (
        "Connection: X-Forwarded-For trick without a value",
        [("Connection", "keep-alive, X-Forwarded-For, X-Forwarded-Proto")],
        UNTRUSTED,
        {"X-Forwarded-For": [UNTRUSTED], "X-Forwarded-Proto": ["http"]},
    ),
    (
        "Connection: X-Forwarded-For from a trusted proxy drops its hop-only value",
        [("Connection", "X-Forwarded-For"), ("X-Forwarded-For", "1.2.3.4")],
        TRUSTED,
        {"X-Forwarded-For": [TRUSTED]},
    ),
    (
        "underscore spelling is never believed",
        [("X_Forwarded_For", "1.2.3.4"), ("x_forwarded_proto", "https")],
        TRUSTED,
        {"X-Forwarded-For": [TRUSTED], "X-Forwarded-Proto": ["http"]},
    ),
    (
        "Forwarded and X-Real-IP dropped from untrusted clients",
        [("Forwarded", "for=1.2.3.4"), ("X-Real-IP", "1.2.3.4")],
        UNTRUSTED,
        {"Forwarded": [], "X-Real-IP": []},
    ),
    (
        "Forwarded and X-Real-IP kept from trusted proxies",
        [("Forwarded", "for=1.2.3.4"), ("X-Real-IP", "1.2.3.4")],
        TRUSTED,
        {"Forwarded": ["for=1.2.3.4"], "X-Real-IP": ["1.2.3.4"]},
    ),
    (
        "URL-rewriting and prefix headers dropped from untrusted clients",
        [
            ("X-Original-URL", "/admin"),
            ("x_rewrite_url", "/admin"),
            ("X-Forwarded-Prefix", "/evil"),
            ("X-Forwarded-Port", "8443"),
        ],
        UNTRUSTED,
        {
            "X-Original-URL": [],
            "X-Rewrite-URL": [],
            "X-Forwarded-Prefix": [],
            "X-Forwarded-Port": [],
        },
    ),
    (
        "URL-rewriting and prefix headers kept from trusted proxies",
        [("X-Original-URL", "/app/x"), ("X-Forwarded-Prefix", "/app")],
        TRUSTED,
        {"X-Original-URL": ["/app/x"], "X-Forwarded-Prefix": ["/app"]},
    ),
    ("unknown peer", [("X-Forwarded-For", "1.2.3.4")], None, {"X-Forwarded-For": []}),
    (
        "peer that is not an address",
        [("X-Forwarded-For", "1.2.3.4")],
        "unix",
        {"X-Forwarded-For": ["unix"]},
    ),
]


@pytest.mark.parametrize(
    ("incoming", "peer", "expected"),
    [r[1:] for r in FORWARDED_ROWS],
    ids=[r[0] for r in FORWARDED_ROWS],
)
def test_forwarding_headers_are_believed_only_from_trusted_proxies(
    incoming: list[tuple[str, str]], peer: str | None, expected: dict[str, list[str]]
) -> None:
    pairs = build(incoming, peer=peer)
    for name, wanted in expected.items():
        assert values(pairs, name) == wanted, name
    assert len(values(pairs, "X-Forwarded-Proto")) == 1
    assert len(values(pairs, "X-Forwarded-Host")) == 1


# --- cookies, host ---------------------------------------------------------------------------

COOKIE_ROWS = [
    ("own cookie removed", ["a=1; _sidecar=secret; b=2"], ["a=1; b=2"]),
    ("only own cookies: header dropped", ["_sidecar=secret; _sidecar_1=more"], []),
    ("untouched when nothing is ours", ["a=1;b=2"], ["a=1;b=2"]),
    ("sign-in attempt cookies removed", ["_sidecar_login_x=1; theme=dark"], ["theme=dark"]),
    ("look-alike names kept", ["_sidecarx=1; sidecar=2"], ["_sidecarx=1; sidecar=2"]),
    ("several Cookie headers joined", ["a=1", "_sidecar=s; c=3"], ["a=1; c=3"]),
    ("empty pieces ignored", ["; _sidecar=s ;; d=4 ;"], ["d=4"]),
]


@pytest.mark.parametrize(
    ("cookies", "expected"), [r[1:] for r in COOKIE_ROWS], ids=[r[0] for r in COOKIE_ROWS]
)
def test_sidecar_cookies_are_removed_from_the_cookie_header(
    cookies: list[str], expected: list[str]
) -> None:
    pairs = build([("Cookie", c) for c in cookies])
    assert values(pairs, "Cookie") == expected


def test_cookie_header_named_by_connection_or_configured_strip_is_not_sent() -> None:
    incoming = [("Cookie", "a=1; _sidecar=s"), ("Connection", "cookie")]
    assert values(build(incoming), "Cookie") == []
    config = CONFIG.model_copy(
        update={"headers": CONFIG.headers.model_copy(update={"strip": ["Cookie"]})}
    )
    assert values(build(incoming[:1], plan=build_header_plan(config)), "Cookie") == []
    assert values(build(incoming[:1]), "Cookie") == ["a=1"]


def test_host_is_passed_through_or_replaced_by_the_upstreams() -> None:
    incoming = [("Host", "app.example.com"), ("host", "evil.example")]
    assert values(build(incoming), "Host") == ["app.example.com"]
    assert values(build(incoming, upstream_host="127.0.0.1:9000"), "Host") == ["127.0.0.1:9000"]


def test_plan_holds_normalised_names_built_once() -> None:
    assert "x-forwarded-email" in PLAN.strip
    assert "x-forwarded-access-token" in PLAN.strip
    assert "x-internal-role" in PLAN.strip
    assert "authorization" not in PLAN.strip
    assert PLAN.is_trusted(TRUSTED) and not PLAN.is_trusted(UNTRUSTED)
    assert not PLAN.is_trusted("not-an-address") and not PLAN.is_trusted(None)


# --- response headers --------------------------------------------------------------------------

RESPONSE_ROWS: list[tuple[str, list[tuple[str, str]], list[tuple[str, str]]]] = [
    (
        "several Set-Cookie stay several, in order",
        [("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2; Path=/")],
        [("Set-Cookie", "a=1"), ("Content-Type", "text/plain"), ("set-cookie", "b=2; Path=/")],
    ),
    (
        "hop-by-hop dropped, encoding and length kept",
        [
            ("Connection", "keep-alive, X-Hop"),
            ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"),
            ("X-Hop", "1"),
            ("Proxy-Authenticate", "Basic"),
            ("Upgrade", "h2c"),
            ("Content-Encoding", "gzip"),
            ("Content-Length", "20"),
        ],
        [("Content-Encoding", "gzip"), ("Content-Length", "20")],
    ),
    (
        "Connection can name Set-Cookie (the upstream's choice)",
        [("Connection", "set-cookie"), ("Set-Cookie", "a=1"), ("ETag", '"x"')],
        [("ETag", '"x"')],
    ),
]


@pytest.mark.parametrize(
    ("upstream", "expected"), [r[1:] for r in RESPONSE_ROWS], ids=[r[0] for r in RESPONSE_ROWS]
)
def test_response_headers_drop_hop_by_hop_only(
    upstream: list[tuple[str, str]], expected: list[tuple[str, str]]
) -> None:
    assert list(build_response_headers(upstream).items()) == expected


# --- property: whatever the client sends, identity headers appear once, last --------------------

_NAMES = st.sampled_from(
    [
        "X-Forwarded-Email",
        "x_forwarded_email",
        "X-FORWARDED-USER",
        "Connection",
        "Cookie",
        "X-Forwarded-For",
        "Host",
        "X-Request-Id",
        "Accept",
        "X-Auth-Request-User",
        "Keep-Alive",
    ]
)
_VALUES = st.sampled_from(
    ["x-forwarded-email", "X-Forwarded-User, close", "_sidecar=1", "1.2.3.4", "v", ""]
)


@given(st.lists(st.tuples(_NAMES, _VALUES), max_size=12), st.sampled_from([UNTRUSTED, TRUSTED]))
def test_identity_headers_appear_exactly_once_whatever_is_sent(
    incoming: list[tuple[str, str]], peer: str
) -> None:
    pairs = build(incoming, peer=peer)
    assert pairs[-2:] == list(IDENTITY)
    assert values(pairs, "X-Forwarded-Email") == ["alice@example.com"]
    assert values(pairs, "X-Forwarded-User") == ["alice"]
    assert len(values(pairs, "Host")) == 1
    assert len(values(pairs, "X-Forwarded-For")) == 1
    assert not [v for n, v in pairs if n.lower() == "cookie" and "_sidecar" in v]


def test_many_invented_header_names_do_not_weaken_stripping() -> None:
    plan = build_header_plan(CONFIG)
    for i in range(10_000):
        build([(f"X-Invented-{i}", "v")], plan=plan)
    pairs = build([("x_forwarded_email", "evil@example.com"), ("X-Invented-1", "v")], plan=plan)
    assert values(pairs, "X-Forwarded-Email") == ["alice@example.com"]
    assert values(pairs, "X-Invented-1") == ["v"]
