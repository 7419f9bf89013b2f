"""Redirect validation: table rows for every known bypass shape, and a property over any string."""

from __future__ import annotations

from urllib.parse import unquote, urljoin, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from yarl import URL

from sidecar.auth.redirects import check_redirect, parse_origin

ORIGIN = "https://app.example.org"
ALLOWED = (".corp.example", "docs.example.net", "ports.example.net:8443")


def check(target: str, *, origin: str = ORIGIN, allowed: tuple[str, ...] = ALLOWED) -> str | None:
    return check_redirect(target, origin=origin, allowed_domains=allowed)


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/", "/"),
        ("/dashboard", "/dashboard"),
        ("/a/b?x=1&y=two#frag", "/a/b?x=1&y=two#frag"),
        ("/search?next=https://evil.com//x", "/search?next=https://evil.com//x"),
        ("/my%20docs/report.pdf", "/my%20docs/report.pdf"),
        ("/caf%C3%A9", "/caf%C3%A9"),
        ("/files/a%2Fb", "/files/a%2Fb"),
        ("/q?filter={a|b}^", "/q?filter={a|b}^"),
        ("https://app.example.org/x?y=1", "https://app.example.org/x?y=1"),
        ("HTTPS://APP.Example.ORG/Path", "https://app.example.org/Path"),
        ("https://app.example.org", "https://app.example.org/"),
        ("https://app.example.org?x=1", "https://app.example.org/?x=1"),
        ("https://app.example.org:443/x", "https://app.example.org:443/x"),
        ("https://corp.example/x", "https://corp.example/x"),
        ("https://wiki.corp.example/x", "https://wiki.corp.example/x"),
        ("https://a.b.corp.example/", "https://a.b.corp.example/"),
        ("https://docs.example.net/", "https://docs.example.net/"),
        ("https://ports.example.net:8443/", "https://ports.example.net:8443/"),
    ],
)
def test_check_redirect_accepts_same_origin_and_allowed_targets(target: str, expected: str) -> None:
    assert check(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "",
        " /",
        "/ ",
        "/dashboard\n",
        "\t/dashboard",
        "dashboard",
        "./dashboard",
        "?x=1",
        "#top",
        # scheme-relative and slash tricks
        "//evil.com",
        "///evil.com",
        "////evil.com/",
        "/\\evil.com",
        "\\/\\/evil.com/",
        "/\\/evil.com/",
        "/ /evil.com",
        "/ \\evil.com",
        "/\t/evil.com",
        "/\t\\evil.com",
        "/\v/evil.com",
        "/\n/evil.com",
        "/\r/evil.com",
        "/\t/\t\\evil.com",
        "/./\\evil.com",
        "/./../../\\evil.com",
        "/.//evil.com",
        "/../evil.com",
        "/a/..",
        "/%2f%2fevil.com",
        "/%2F%2Fevil.com",
        "/%252f%252fevil.com",
        "/%5cevil.com",
        "/%5Cevil.com",
        "/%09/evil.com",
        "/%0a/evil.com",
        "/%0d/evil.com",
        "/%00/evil.com",
        "/%2e%2e/evil.com",
        "/%2e/%2fevil.com",
        "/x?a=%0d%0aSet-Cookie:x=1",
        "/x#%0a",
        "/%e2%80%a8",
        "/%ff",
        "/%zz",
        "/%",
        "/x\u3002evil.com",
        "/\u2028",
        # schemes
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        "java\tscript:alert(1)",
        "data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==",
        "vbscript:msgbox(1)",
        "ftp://app.example.org/",
        "file:///etc/passwd",
        "https:evil.com",
        "https:/evil.com",
        "https:///evil.com",
        "https:\\\\evil.com",
        "https:app.example.org",
        # hosts
        "https://evil.com/",
        "http://evil.com/",
        "https://app.example.org@evil.com/",
        "https://app.example.org:443@evil.com/",
        "https://user:pass@app.example.org/",
        "https://evil.com#@app.example.org",
        "https://evil.com?@app.example.org",
        "https://evil.com\\@app.example.org",
        "https://evil.com\\.app.example.org",
        "https://app.example.org.evil.com/",
        "https://evilapp.example.org/",
        "https://evil.com/app.example.org",
        "https://evil.com?x=app.example.org",
        "https://app.example.org%2eevil.com/",
        "https://app.example.org%40evil.com/",
        "https://app.example.org%23.evil.com/",
        "https://app.example.org./",
        "https://xn--pple-43d.com/",
        "https://\u0430pp.example.org/",
        "https://app\u3002example.org/",
        "https://app.example.org\uff0fevil.com",
        "https://[::1]/",
        "https://3627734734/",
        "https://0xd83ad6ce/",
        "https://evilcorp.example/",
        "https://corp.example.evil.com/",
        "https://docs.example.net.evil.com/",
        "https://sub.docs.example.net/",
        # ports and schemes against the origin
        "http://app.example.org/",
        "https://app.example.org:8443/",
        "https://app.example.org:0/",
        "https://app.example.org:99999/",
        "https://ports.example.net/",
        "https://ports.example.net:9443/",
        "https://docs.example.net:8443/",
        "http://docs.example.net/",
        # paths of allowed absolute URLs
        "https://app.example.org//evil.com",
        "https://app.example.org/%2f%2fevil.com",
        "https://app.example.org/\\evil.com",
        # markup
        "/<script>",
        '/"onmouseover="x',
        "/`x`",
    ],
)
def test_check_redirect_refuses_unsafe_targets(target: str) -> None:
    assert check(target) is None


# A selection of published open-redirect payloads (the list oauth2-proxy's validator is tested
# against), checked both as sent and after one round of query-unescaping, with an allowed domain
# the payloads try to smuggle.
PUBLISHED_PAYLOADS = [
    '";alert(0);//',
    "%19Jav%09asc%09ript:https%20://www.whitelisteddomain.tld/%250Aconfirm%25281%2529",
    "%68%74%74%70%3a%2f%2f%67%6f%6f%67%6c%65%2e%63%6f%6d",
    ".localdomain.pw",
    "/%09/example.com",
    "/%09/www.whitelisteddomain.tld@google.com",
    "/%2f%2f%2fbing.com%2f%3fwww.omise.co",
    "/%2f%5c%2f%67%6f%6f%67%6c%65%2e%63%6f%6d/",
    "/%5cwww.whitelisteddomain.tld@localdomain.pw",
    "/%68%74%74%70%3a%2f%2f%67%6f%6f%67%6c%65%2e%63%6f%6d",
    "//%09/google.com",
    "//%2fxgoogle.com",
    "//%5cjavascript:alert(1)",
    "///%09/example.com",
    "////%5cgoogle.com",
    "/////example.com/",
    "////\\;@example.com",
    "////example.com/%2e%2e",
    "///\\;@google.com",
    "///example.com@google.com/%2f..",
    "//3H6k7lIAiqjfNeN@example.com+@google.com/",
    "//;@google.com",
    "//XY>.7d8T\\205pZM@example.com@google.com/",
    "//example.com+&@google.com#+@example.com/",
    "//example.com@https:///google.com/%2e%2e",
    "//google%00.com",
    "//google%E3%80%82com",
    "//google.com:80#@example.com/",
    "//google.com:80?@example.com/",
    "//google.com\\@www.whitelisteddomain.tld",
    "//google.com\\texample.com/",
    "//https:///example.com/%2e%2e",
    "//javascript:alert(1)",
    "//www.whitelisteddomain.tld+&@localdomain.pw#+@www.whitelisteddomain.tld/",
    "/<>//example.com",
    "/\\/\\/example.com/",
    "/example.com/%2f%2e%2e",
    "/http://%67%6f%6f%67%6c%65%2e%63%6f%6d",
    "/https:/%5cexample.com/",
    "/https://%09/example.com",
    "/https:///www.whitelisteddomain.tld@www.google.com/%2f%2e%2e",
    "/https://example.com/%2f..",
    "/x:1/:///%01javascript:alert(document.cookie)/",
    "<>//google.com",
    "<>javascript:alert(1);",
    "@google.com",
    "Javas%26%2399;ript:alert(1)",
    "\\/\\/google.com/",
    "\\152\\141\\166\\141\\163\\143\\162\\151\\160\\164\\072alert(1)",
    "\\u006A\\u0061\\u0076\\u0061\\u0073\\u0063\\u0072\\u0069\\u0070\\u0074\\u003aalert(1)",
    "data:www.whitelisteddomain.tld;text/html;charset=UTF-8,<html><script>x</script></html>",
    "http://%67%6f%6f%67%6c%65%2e%63%6f%6d",
    "http://.localdomain.pw",
    "http://00330.00072.0000326.00000316",
    "http://0xd8.0x3a.0xd6.0xce",
    "http://3627734734",
    "http://www.whitelisteddomain.tld@3627734734",
    "http://[::ffff:216.58.214.206]",
    "http://example.com:80%40google.com/",
    "http://google.com%23.example.com/",
    "http://google.com%2f%2f.example.com/",
    "http://google.com%3F.example.com/",
    "http://google.com%5c%5c.example.com/",
    "http://google.com:80#@www.whitelisteddomain.tld/",
    "http://google.com:80?@www.whitelisteddomain.tld/",
    "http://localdomain.pw\\twww.whitelisteddomain.tld/",
    "http://www.localdomain.pw\\.www.whitelisteddomain.tld",
    "http://www.whitelisteddomain.tld%2elocaldomain.pw/",
    "http://www.whitelisteddomain.tld:80%40localdomain.pw/",
    "http://www.whitelisteddomain.tld+&@localdomain.pw#+@www.whitelisteddomain.tld/",
    "http:0xd83ad6ce",
    "http:www.whitelisteddomain.tld@3627734734",
    "https://www.whitelisteddomain.tld.localdomain.pw/",
]


@pytest.mark.parametrize("payload", PUBLISHED_PAYLOADS)
def test_check_redirect_refuses_published_open_redirect_payloads(payload: str) -> None:
    allowed = ("www.whitelisteddomain.tld",)
    for form in {payload, unquote(payload)}:
        assert check_redirect(form, origin=ORIGIN, allowed_domains=allowed) is None, form


def test_check_redirect_allows_the_origins_own_port_and_ipv6() -> None:
    origin = "http://127.0.0.1:4180"
    assert check_redirect("http://127.0.0.1:4180/x", origin=origin, allowed_domains=()) == (
        "http://127.0.0.1:4180/x"
    )
    assert check_redirect("http://127.0.0.1/x", origin=origin, allowed_domains=()) is None
    assert check_redirect("http://127.0.0.1:4181/x", origin=origin, allowed_domains=()) is None
    assert check_redirect("https://127.0.0.1:4180/x", origin=origin, allowed_domains=()) is None
    six = "http://[::1]:4180"
    assert check_redirect("http://[::1]:4180/x", origin=six, allowed_domains=()) == (
        "http://[::1]:4180/x"
    )
    assert check_redirect("http://[::2]:4180/x", origin=six, allowed_domains=()) is None


def test_check_redirect_exact_domain_entry_does_not_match_subdomains() -> None:
    assert check("https://sub.docs.example.net/") is None
    assert check("https://docs.example.net/") == "https://docs.example.net/"


def test_check_redirect_allowed_domain_on_plain_http_origin_may_use_http() -> None:
    origin = "http://localhost:4180"
    allowed = ("other.test",)
    assert check_redirect("http://other.test/", origin=origin, allowed_domains=allowed) == (
        "http://other.test/"
    )
    assert check_redirect("http://other.test:4180/", origin=origin, allowed_domains=allowed) == (
        "http://other.test:4180/"
    )
    assert check_redirect("http://other.test:81/", origin=origin, allowed_domains=allowed) is None


def test_check_redirect_refuses_everything_for_an_invalid_origin() -> None:
    assert check_redirect("/x", origin="not a url", allowed_domains=()) is None


def test_check_redirect_refuses_overlong_targets() -> None:
    assert check("/" + "a" * 5000) is None


def test_parse_origin_normalises_case_and_default_port() -> None:
    assert parse_origin("HTTPS://App.Example.ORG") == ("https", "app.example.org", 443)
    assert parse_origin("http://127.0.0.1:4180") == ("http", "127.0.0.1", 4180)
    with pytest.raises(ValueError):
        parse_origin("ftp://x")


def _allowed_hosts(origin: str, allowed: tuple[str, ...], host: str) -> bool:
    if host == urlsplit(origin).hostname:
        return True
    for entry in allowed:
        name = entry.split(":")[0]
        if name.startswith(".") and (host == name[1:] or host.endswith(name)):
            return True
        if host == name:
            return True
    return False


def _lands_on(result: str, origin: str, allowed: tuple[str, ...]) -> bool:
    """Where a browser following `result` from a page on `origin` ends up is allowed."""
    joined = urljoin(origin + "/somewhere/page", result)
    host = urlsplit(joined).hostname or ""
    yarl_host = URL(origin + "/somewhere/page").join(URL(result, encoded=True)).host or ""
    return _allowed_hosts(origin, allowed, host) and _allowed_hosts(origin, allowed, yarl_host)


_PIECES = st.sampled_from(
    [
        "/",
        "//",
        "\\",
        "%2f",
        "%5c",
        "%09",
        "%0a",
        "%2e",
        ".",
        "..",
        "@",
        ":",
        "#",
        "?",
        " ",
        "\t",
        "\n",
        "\r",
        "\x00",
        "http:",
        "https:",
        "https://",
        "javascript:",
        "evil.com",
        "app.example.org",
        "corp.example",
        "wiki.corp.example",
        "docs.example.net",
        ":443",
        ":8443",
        "%40",
        "\u3002",
        "\uff0f",
        "a",
        "x",
        "=",
        "&",
        "[",
        "]",
        "::1",
        "%25",
    ]
)
_URL_LIKE = st.builds(
    "{}{}{}{}{}".format,
    st.sampled_from(["https://", "http://", "HTTPS://", "//", "/", "https:", "https:/", ""]),
    st.sampled_from(
        [
            "app.example.org",
            "APP.example.org",
            "evil.com",
            "corp.example",
            "x.corp.example",
            "docs.example.net",
            "ports.example.net",
            "app.example.org@evil.com",
            "evil.com@app.example.org",
            "evil.com#@app.example.org",
            "app.example.org.evil.com",
            "evilcorp.example",
            "[::1]",
            "",
            "%2f",
            "\\",
            "@",
        ]
    ),
    st.sampled_from(["", ":443", ":8443", ":80", ":0", ":"]),
    st.sampled_from(["", "/", "//", "/\\", "/a/b", "/./x", "/%2e%2e/", "?q=1", "#f", "/%09"]),
    st.lists(_PIECES, max_size=4).map("".join),
)
# A good start followed by anything: most outcomes hinge on what the suffix does to the authority.
_GOOD_PREFIXED = st.builds(
    str.__add__,
    st.sampled_from(
        [
            "/",
            "https://app.example.org",
            "https://app.example.org/",
            "https://x.corp.example",
            "https://docs.example.net/",
            "https://ports.example.net:8443",
        ]
    ),
    st.lists(_PIECES, max_size=6).map("".join),
)
_TARGETS = st.one_of(
    _URL_LIKE,
    _GOOD_PREFIXED,
    _GOOD_PREFIXED,
    st.lists(_PIECES, min_size=1, max_size=12).map("".join),
    st.text(max_size=40),
    st.text(alphabet="/\\:@.%#?abc \t", max_size=20),
)


@settings(max_examples=3000, deadline=None)
@given(_TARGETS)
@example("/\t/evil.com")
@example("https://app.example.org@evil.com")
def test_check_redirect_never_accepts_an_off_origin_target(target: str) -> None:
    result = check(target)
    if result is not None:
        assert _lands_on(result, ORIGIN, ALLOWED), (target, result)
        assert not any(ord(char) < 0x21 or char in '\\<>"`' for char in result)
