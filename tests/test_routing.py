"""Route matching as a user configures it: the path normaliser (tables and properties), the route
table (prefix boundaries, exact, regex, methods, hosts, first match, `;` parameters) and the
configuration errors a user sees for bad routes."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.config.load import parse_config_text
from sidecar.config.model import SidecarConfig
from sidecar.errors import ConfigError
from sidecar.routing import DEFAULT_ROUTE, RouteTable, normalize_path, strip_path_parameters

BASE = """\
version: 1
upstream: http://127.0.0.1:9000
provider:
  issuer: https://id.example.com
  client_id: sidecar
  client_secret: not-a-real-secret
session:
  secret: 0123456789abcdef0123456789abcdef
"""


def config_with(**sections: Any) -> SidecarConfig:
    data: dict[str, Any] = {
        "version": 1,
        "upstream": "http://127.0.0.1:9000",
        "provider": {
            "issuer": "https://id.example.com",
            "client_id": "sidecar",
            "client_secret": "not-a-real-secret",
        },
        "session": {"secret": "0123456789abcdef0123456789abcdef"},
        **sections,
    }
    return SidecarConfig.model_validate(data)


def table(*routes: dict[str, Any], policies: dict[str, Any] | None = None) -> RouteTable:
    return RouteTable.from_config(config_with(routes=list(routes), policies=policies or {}))


def route_name(t: RouteTable, raw: str, method: str = "GET", host: str = "app.example.com") -> str:
    path = normalize_path(raw)
    assert path is not None, raw
    route = t.match(method, host, path)
    return "refused" if route is None else route.name


def problems(yaml_tail: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config_text(BASE + yaml_tail, source="sidecar.yaml")
    return info.value.problems


# -- the normaliser ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("/", "/"),
        ("/admin", "/admin"),
        ("/admin/", "/admin/"),
        ("/admin?next=/public", "/admin"),
        ("/public?x=/../admin", "/public"),
        # dot segments, plain and encoded, resolve before matching
        ("/public/../admin", "/admin"),
        ("/public/%2e%2e/admin", "/admin"),
        ("/public/%2E%2e/admin", "/admin"),
        ("/public/.%2E/admin", "/admin"),
        ("/./admin", "/admin"),
        ("/%2e/admin", "/admin"),
        ("/../admin", "/admin"),
        ("/../../..", "/"),
        ("/public/..", "/"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/a/./b/../c", "/a/c"),
        # duplicate slashes collapse
        ("//admin", "/admin"),
        ("///admin//x//", "/admin/x/"),
        ("/a/../b//c", "/b/c"),
        ("/a//b/./c", "/a/b/c"),
        # unreserved characters are decoded, everything else stays encoded (upper-case hex)
        ("/%61dmin", "/admin"),
        ("/%7Euser/%2D%5F", "/~user/-_"),
        ("/caf%c3%a9", "/caf%C3%A9"),
        ("/a%20b", "/a%20b"),
        ("/a%3Bb", "/a%3Bb"),
        ("/a%3fb", "/a%3Fb"),
        ("/a%25b", "/a%25b"),
        # double encoding stays literal: decoded once at most, never twice
        ("/public/%252e%252e/admin", "/public/%252e%252e/admin"),
        ("/public/%25%32%65%25%32%65/admin", "/public/%252e%252e/admin"),
        # dot-like names that are not dot segments stay
        ("/.well-known/x", "/.well-known/x"),
        ("/a/.../b", "/a/.../b"),
        ("/a/..b/c", "/a/..b/c"),
        # path parameters that do not hide a dot segment stay (the route table checks them)
        ("/app;jsessionid=1/x", "/app;jsessionid=1/x"),
        ("/x/page;v=1", "/x/page;v=1"),
        ("/a/b;x/..", "/a/"),
        # sub-delimiters and other printable characters pass untouched
        ("/a:b@c!$&'()*+,=", "/a:b@c!$&'()*+,="),
    ],
)
def test_normalize_path_resolves_to_what_the_backend_sees(raw: str, expected: str) -> None:
    assert normalize_path(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/public/..%2fadmin",
        "/public%2f..%2fadmin",
        "/public%2F..%2Fadmin",
        "/public/..%5cadmin",
        "/public\\..\\admin",
        "/public/..;/admin",
        "/public/.;/admin",
        "/public/..;jsessionid=1/admin",
        "/public/%2e%2e;/admin",
        "/public/.%2e;x/admin",
        # `..` after a duplicate slash: servers that merge slashes first disagree with RFC 3986
        "/public//../admin",
        "/admin//../public/x",
        "/a//b/../c",
        "//..",
        "/admin%00.html",
        "/admin\x00",
        "/admin%0a",
        "/admin\r\nX: y",
        "/admin%7f",
        "/a b",
        "/a#b",
        "/bad%",
        "/bad%2",
        "/bad%zz",
        "/bad%%32%65",
        "/caf\u00e9",  # raw non-ASCII: browsers always percent-encode
        "/caf\udcc3\udca9",  # how aiohttp hands over raw non-UTF-8 bytes
        "/%c0%ae%c0%ae/admin",  # overlong UTF-8 for "..": not UTF-8 at all
        "/%c0%af",  # overlong "/"
        "/%ff",
        "admin",
        "",
        "*",
        "http://evil.example/admin",
    ],
)
def test_normalize_path_refuses_ambiguous_paths(raw: str) -> None:
    assert normalize_path(raw) is None


# Paths as a client might send them: segments of printable characters, escapes (some valid,
# some dot-ish), slashes, dots, and a query string.
_piece = st.one_of(
    st.sampled_from(
        [
            *("/", "//", ".", "..", "%2e", "%2E", "%2f", "%25", "%41", "%c3%a9", ";", ";x"),
            *("?", "%", "admin", "public", "%61dmin", "adm", "in", "\\", "%5c", "%00", "#"),
        ]
    ),
    st.text(
        alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="%"),
        max_size=6,
    ),
)
raw_paths = st.lists(_piece, max_size=12).map(lambda parts: "/" + "".join(parts))


@given(st.one_of(raw_paths, st.text()))
def test_normalize_path_is_idempotent(raw: str) -> None:
    once = normalize_path(raw)
    if once is not None:
        assert normalize_path(once) == once


@given(raw_paths)
def test_normalized_path_has_no_empty_or_dot_segments(raw: str) -> None:
    path = normalize_path(raw)
    if path is None:
        return
    assert path.startswith("/")
    assert "//" not in path
    assert "/./" not in path and "/../" not in path
    assert not path.endswith(("/.", "/..")) and path not in (".", "..")
    assert "?" not in path
    assert all(segment.partition(";")[0] not in (".", "..") for segment in path.split("/")[1:])


# Attempts to climb from /public to /admin: dot-ish pieces between the two.
_climb = st.lists(
    st.sampled_from(["..", "%2e%2e", ".%2E", "%2E.", ".", "/", "//", ";", ";x", "x", "public"]),
    max_size=8,
).map(lambda parts: "/public/" + "/".join(parts) + "/admin")


@settings(max_examples=500)
@given(st.one_of(raw_paths, _climb), st.sampled_from(["", "/", "/x", ";x", "?q=/public"]))
def test_nothing_that_reaches_admin_matches_the_public_route(raw: str, tail: str) -> None:
    t = table(
        {"path": "/public", "access": "public", "name": "public"},
        {"path": "/admin", "policy": "admins", "name": "admin"},
        policies={"admins": {"groups_any": ["admins"]}},
    )
    path = normalize_path(raw + tail)
    if path is None or not (path == "/admin" or path.startswith(("/admin/", "/admin;"))):
        return
    route = t.match("GET", "app.example.com", path)
    assert route is None or route.name == "admin", (raw, path)


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


@settings(max_examples=500)
@given(st.one_of(raw_paths, _climb), st.sampled_from(["", "?q=/admin", "/", "/x"]))
def test_public_route_only_ever_serves_paths_under_it_in_every_reading(raw: str, tail: str) -> None:
    """Whether a backend resolves dot segments and slashes or not, strips `;` parameters or
    not: a request resolve() sends to the public route is under /public in every reading."""
    t = table({"path": "/public", "access": "public", "name": "public"})
    raw += tail
    route = t.resolve("GET", "app.example.com", raw)
    if route is None or route.name != "public":
        return
    path = normalize_path(raw)
    assert path is not None
    literal = raw.partition("?")[0]
    for reading in (path, strip_path_parameters(path), literal):
        assert _under(reading, "/public"), (raw, reading)


# -- the route table ------------------------------------------------------------------------------


def test_prefix_route_matches_whole_segments_only() -> None:
    t = table({"path": "/static", "access": "public", "name": "static"})
    assert route_name(t, "/static") == "static"
    assert route_name(t, "/static/") == "static"
    assert route_name(t, "/static/css/site.css") == "static"
    assert route_name(t, "/staticfoo") == "default"
    assert route_name(t, "/static.css") == "default"
    assert route_name(t, "/stati") == "default"
    assert route_name(t, "/") == "default"


def test_prefix_with_trailing_slash_also_matches_the_directory_itself() -> None:
    t = table({"path": "/docs/", "access": "public", "name": "docs"})
    assert route_name(t, "/docs") == "docs"
    assert route_name(t, "/docs/a") == "docs"
    assert route_name(t, "/docsx") == "default"


def test_root_prefix_matches_everything() -> None:
    t = table({"path": "/", "access": "public", "name": "all"})
    assert route_name(t, "/") == "all"
    assert route_name(t, "/anything/at/all") == "all"


def test_exact_route_matches_only_that_path() -> None:
    t = table({"exact": "/health", "access": "public", "name": "health"})
    assert route_name(t, "/health") == "health"
    assert route_name(t, "/health/") == "default"
    assert route_name(t, "/health/x") == "default"
    assert route_name(t, "/healthz") == "default"
    assert route_name(t, "/health?full=1") == "health"


def test_regex_route_must_match_the_whole_normalised_path() -> None:
    t = table({"regex": "/api/v[0-9]+/public/.*", "access": "public", "name": "api"})
    assert route_name(t, "/api/v2/public/x") == "api"
    assert route_name(t, "/api/v2/public/") == "api"
    assert route_name(t, "/api/v2/public") == "default"
    assert route_name(t, "/x/api/v2/public/y") == "default"  # anchored at the start
    assert route_name(t, "/api/v2/public/../../admin") == "default"  # sees /api/admin
    assert route_name(t, "/api/v2/publicx/y") == "default"


def test_regex_route_never_sees_the_query_string() -> None:
    t = table({"regex": r".*\.png", "access": "public", "name": "png"})
    assert route_name(t, "/admin?x=.png") == "default"
    assert route_name(t, "/img/a.png?v=2") == "png"


def test_methods_limit_a_route() -> None:
    t = table(
        {"path": "/files", "methods": ["get", "HEAD"], "access": "public", "name": "read"},
        {"path": "/files", "name": "write"},
    )
    assert route_name(t, "/files/a", "GET") == "read"
    assert route_name(t, "/files/a", "head") == "read"
    assert route_name(t, "/files/a", "POST") == "write"
    assert route_name(t, "/files/a", "DELETE") == "write"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("app.example.com", "app"),
        ("APP.Example.COM", "app"),
        ("app.example.com:8443", "app"),
        ("app.example.com.", "app"),
        ("a.tenants.example.com", "tenants"),
        ("a.b.tenants.example.com", "tenants"),
        ("tenants.example.com", "default"),  # the wildcard is for subdomains only
        ("eviltenants.example.com", "default"),
        ("tenants.example.com.evil.net", "default"),
        ("app.example.com.evil.net", "default"),
        ("other.example.com", "default"),
        ("[::1]:4180", "loopback"),
    ],
)
def test_host_routes_match_exact_names_or_subdomain_wildcards(host: str, expected: str) -> None:
    t = table(
        {"path": "/", "host": "app.example.com", "access": "public", "name": "app"},
        {"path": "/", "host": "*.tenants.example.com", "access": "public", "name": "tenants"},
        {"path": "/", "host": "[::1]", "access": "public", "name": "loopback"},
    )
    assert route_name(t, "/x", host=host) == expected


def test_first_matching_route_wins_in_configuration_order() -> None:
    t = table(
        {"path": "/admin/public", "access": "public", "name": "admin-public"},
        {"path": "/admin", "policy": "admins", "name": "admin"},
        {"path": "/", "access": "public", "name": "everything-else"},
        {"path": "/never", "policy": "admins", "name": "shadowed"},
        policies={"admins": {"groups_any": ["admins"]}},
    )
    assert route_name(t, "/admin/public/x") == "admin-public"
    assert route_name(t, "/admin/x") == "admin"
    assert route_name(t, "/admin") == "admin"
    assert route_name(t, "/never") == "everything-else"
    assert route_name(t, "/") == "everything-else"


def test_catch_all_regex_keeps_its_place_among_indexed_routes() -> None:
    t = table(
        {"path": "/a", "access": "public", "name": "a"},
        {"regex": "/.*", "name": "any"},
        {"path": "/b", "access": "public", "name": "b"},
    )
    assert route_name(t, "/a/x") == "a"
    assert route_name(t, "/b/x") == "any"
    assert route_name(t, "/c") == "any"


def test_no_routes_means_every_path_needs_sign_in() -> None:
    t = table()
    route = t.match("GET", "app.example.com", "/anything")
    assert route is DEFAULT_ROUTE
    assert route.access == "authenticated"


def test_route_carries_access_policy_and_flags() -> None:
    t = table(
        {"path": "/s", "access": "public"},
        {"path": "/a", "policy": "admins", "bearer": False, "identity_assertion": False},
        {"path": "/c", "cors_preflight": True},
        policies={"admins": {"groups_any": ["admins"]}},
    )
    public, admin, cors = t.routes
    assert (public.name, public.access, public.policy) == ("routes[0]", "public", None)
    assert admin.access == "policy" and admin.policy is not None
    assert admin.policy.name == "admins"
    assert (admin.bearer, admin.identity_assertion, admin.cors_preflight) == (False, False, False)
    assert (cors.access, cors.bearer, cors.cors_preflight) == ("authenticated", None, True)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # parameters that do not change which route applies are fine
        ("/docs;jsessionid=1/x", "default"),
        ("/admin/x;v=1", "admin"),
        ("/admin;v=1", "refused"),
        ("/public/a;b=c", "public"),
        # read with and without parameters, these reach different routes: refused
        ("/admin;x/secret", "refused"),
        ("/public;x", "refused"),
        ("/;/admin", "refused"),
        ("/health;x", "refused"),
    ],
)
def test_path_parameters_that_change_the_route_are_refused(raw: str, expected: str) -> None:
    t = table(
        {"path": "/public", "access": "public", "name": "public"},
        {"exact": "/health", "access": "public", "name": "health"},
        {"path": "/admin", "policy": "admins", "name": "admin"},
        policies={"admins": {"groups_any": ["admins"]}},
    )
    assert route_name(t, raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "/public/../admin",
        "/public/%2e%2e/admin",
        "/public/%2E%2e/admin",
        "//admin",
        "/./admin",
        "/public/./../admin/",
        "/%61dmin",
    ],
)
def test_bypass_attempts_reach_the_admin_route(raw: str) -> None:
    t = table(
        {"path": "/public", "access": "public", "name": "public"},
        {"path": "/admin", "policy": "admins", "name": "admin"},
        policies={"admins": {"groups_any": ["admins"]}},
    )
    assert route_name(t, raw) == "admin"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # already normal, or normalising does not change the route: fine
        ("/admin/users", "admin"),
        ("/admin/./users", "admin"),
        ("/admin/x/../users", "admin"),
        ("/admin//users", "admin"),
        ("/public/a/../b", "public"),
        ("/other//x", "default"),
        ("/public?next=/admin", "public"),
        ("/admin?next=/public", "admin"),
        # the literal spelling and the normalised one reach different routes: refused
        ("/public/../admin", "refused"),
        ("/public/%2e%2e/admin", "refused"),
        ("//admin", "refused"),
        ("/./admin", "refused"),
        ("/%61dmin", "refused"),
        ("/admin/../public/x", "refused"),  # /admin to a backend that resolves nothing
        ("//public/x", "refused"),
        # ambiguous whatever the routes
        ("/public/..%2fadmin", "refused"),
        ("/public/..;/admin", "refused"),
    ],
)
def test_resolve_refuses_paths_whose_spellings_disagree(raw: str, expected: str) -> None:
    t = table(
        {"path": "/public", "access": "public", "name": "public"},
        {"path": "/admin", "policy": "admins", "name": "admin"},
        policies={"admins": {"groups_any": ["admins"]}},
    )
    route = t.resolve("GET", "app.example.com", raw)
    assert (route.name if route is not None else "refused") == expected


def test_thousand_routes_match_quickly(capsys: pytest.CaptureFixture[str]) -> None:
    """A micro benchmark, printed (run with -s to see it), never a timed assertion."""
    routes: list[dict[str, Any]] = []
    for index in range(1000):
        kind = index % 4
        if kind == 0:
            routes.append({"path": f"/svc{index}/api", "access": "public"})
        elif kind == 1:
            routes.append({"exact": f"/svc{index}/health", "access": "public"})
        elif kind == 2:
            routes.append({"path": f"/svc{index}", "methods": ["POST"]})
        else:
            routes.append({"path": f"/svc{index}", "host": "*.example.com"})
    routes.append({"regex": "/late/[a-z]+", "access": "public", "name": "late"})
    t = RouteTable.from_config(config_with(routes=routes))
    paths = [normalize_path(f"/svc{i}/api/x?q=1") or "/" for i in range(0, 1000, 7)]
    paths += ["/late/abc", "/nothing/here", "/"]
    rounds = 200
    started = time.perf_counter()
    for _ in range(rounds):
        for path in paths:
            t.match("GET", "app.example.com", path)
    elapsed = time.perf_counter() - started
    per_match_us = elapsed / (rounds * len(paths)) * 1e6
    raws = [f"/svc{i}/api/x?q=1" for i in range(0, 1000, 7)] + ["/a/./b//c", "/x/%7Ey"]
    started = time.perf_counter()
    for raw in raws:  # first sight of each path: normalise and match
        t.resolve("GET", "app.example.com", raw)
    per_cold_us = (time.perf_counter() - started) / len(raws) * 1e6
    started = time.perf_counter()
    for _ in range(rounds):
        for raw in raws:
            t.resolve("GET", "app.example.com", raw)
    per_resolve_us = (time.perf_counter() - started) / (rounds * len(raws)) * 1e6
    with capsys.disabled():
        print(
            f"\nroute table: 1000 routes, {per_match_us:.2f} us per match, "
            f"{per_cold_us:.2f} us per first resolve (normalise + match), "
            f"{per_resolve_us:.2f} us per remembered one"
        )
    assert route_name(t, "/late/abc") == "late"
    assert route_name(t, "/svc8/api/x") == "routes[8]"


@settings(max_examples=50)
@given(st.sampled_from(["/static", "/static/", "/static/a", "/staticx", "/stat", "/x/static"]))
def test_prefix_match_agrees_with_segment_definition(path: str) -> None:
    t = table({"path": "/static", "access": "public", "name": "static"})
    expected = path == "/static" or path.startswith("/static/")
    assert (route_name(t, path) == "static") is expected


# -- configuration errors ---------------------------------------------------------------------


def test_full_example_config_loads() -> None:
    config = parse_config_text(
        BASE
        + """\
policies:
  staff:
    email_domains: [example.com]
  admins:
    email_domains: [example.com]
    groups_any: [admins]
routes:
  - path: /static
    access: public
  - exact: /health
    access: public
  - path: /admin
    policy: admins
  - regex: /api/v[0-9]+/.*
    methods: [get, post]
  - path: /
    policy: staff
""",
        source="sidecar.yaml",
    )
    assert [route.access for route in RouteTable.from_config(config).routes] == [
        "public",
        "public",
        "policy",
        "authenticated",
        "policy",
    ]
    assert config.routes[3].methods == ("GET", "POST")


def test_route_errors_are_all_reported_with_lines() -> None:
    found = problems(
        """\
policies:
  admins:
    groups_any: [admins]
routes:
  - path: /public/../admin
  - path: /a
    exact: /a
  - regex: "/api/(["
  - path: /admin
    policy: admns
  - path: /x
    methods: []
  - exact: /y
    host: https://app.example.com
  - path: static
  - path: /z
    access: public
    policy: admins
  - path: /q?x=1
  - path: /w
    methods: ["GET POST"]
  - access: public
"""
    )
    assert found == [
        "sidecar.yaml:13: routes[0].path: write it as requests are matched: /admin",
        "sidecar.yaml:14: routes[1]: give exactly one of path, exact or regex (found: path, exact)",
        "sidecar.yaml:16: routes[2].regex: invalid regular expression: "
        "unterminated character set at position 6",
        "sidecar.yaml:18: routes[3].policy: no policy named admns under policies (admins)",
        "sidecar.yaml:20: routes[4].methods: list at least one method, or leave methods out to "
        "match every one",
        "sidecar.yaml:22: routes[5].host: not a host name (app.example.com, or *.example.com; no "
        "scheme, port or path)",
        "sidecar.yaml:23: routes[6].path: must start with /",
        "sidecar.yaml:24: routes[7]: a public route cannot name a policy "
        "(leave out access: public)",
        "sidecar.yaml:27: routes[8].path: not a path sidecar can match (no query, no encoded / "
        "or \\, no ;-hidden dot segments, escapes must be valid UTF-8)",
        "sidecar.yaml:29: routes[9].methods: 'GET POST' is not an HTTP method",
        "sidecar.yaml:30: routes[10]: give exactly one of path, exact or regex (found: none)",
    ]


def test_route_with_unknown_key_suggests_the_right_one() -> None:
    found = problems("routes:\n  - path: /a\n    method: [GET]\n")
    assert found == ["sidecar.yaml:11: routes[0].method: unknown key (did you mean 'methods'?)"]


def test_routes_without_a_provider_are_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config_text(
            "version: 1\nupstream: http://127.0.0.1:9000\nroutes:\n  - path: /a\n",
            source="sidecar.yaml",
        )
    assert info.value.problems == [
        "sidecar.yaml:3: routes: routes need a provider: without one nobody can sign in"
    ]


def test_policy_reference_checked_for_models_built_in_code() -> None:
    with pytest.raises(ValueError, match="no policy named ghosts"):
        config_with(routes=[{"path": "/a", "policy": "ghosts"}])


def test_resolve_answers_the_same_every_time_whatever_the_query() -> None:
    t = table(
        {"path": "/public", "access": "public"},
        {"path": "/admin", "methods": ["POST"], "host": "admin.example.com"},
    )
    cases = [
        ("GET", "app.example.com", "/public/x", "routes[0]"),
        ("POST", "admin.example.com", "/admin", "routes[1]"),
        ("POST", "app.example.com", "/admin", "default"),
        ("GET", "app.example.com", "/public/../admin", "refused"),
        ("GET", "app.example.com", "/" + "a" * 600, "default"),
    ]
    for _ in range(3):  # remembered answers are the computed ones
        for method, host, path, expected in cases:
            for query in ("", "?x=1", "?/../admin"):
                route = t.resolve(method, host, path + query)
                assert ("refused" if route is None else route.name) == expected, (path, query)
