"""HTTP-level attacks over raw sockets: request smuggling, oversized requests, and forwarding
headers or Host used to steer the redirect URI and redirects.

Smuggling: each payload is an ambiguous request on a public route whose body, if sidecar framed
it differently from a stricter or looser parser, holds a second request to `/public/smuggled`.
Sidecar must refuse the ambiguity (400 and close) or frame it in exactly one way; either way the
backend must never receive that second request. (Sidecar re-frames every body it forwards, so the
backend connection cannot be desynchronised by the client's framing; these cases check the front.)
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from .conftest import (
    EVIL,
    Stack,
    StackFactory,
    parse_response,
    raw_exchange,
    raw_request,
    status_lines,
    stays_on_origin,
)

SMUGGLED = "GET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"


def _head(stack: Stack, *lines: str) -> str:
    return "\r\n".join(["POST /public/a HTTP/1.1", f"Host: 127.0.0.1:{stack.port}", *lines])


def smuggling_payloads(stack: Stack) -> dict[str, bytes]:
    inner = SMUGGLED
    chunk = f"{len(inner):x}\r\n{inner}\r\n0\r\n\r\n"
    return {
        "CL.TE": (
            _head(
                stack,
                f"Content-Length: {len('0' + chr(13) + chr(10) * 1 + chr(13) + chr(10))}",
                "Transfer-Encoding: chunked",
                "",
                "0",
                "",
                inner,
            )
        ).encode(),
        "TE.CL": (
            _head(stack, "Content-Length: 4", "Transfer-Encoding: chunked", "", chunk)
        ).encode(),
        "duplicate-content-length": (
            _head(stack, "Content-Length: 0", f"Content-Length: {len(inner)}", "", inner)
        ).encode(),
        "content-length-list": (
            _head(stack, f"Content-Length: 0, {len(inner)}", "", inner)
        ).encode(),
        "content-length-plus": (_head(stack, "Content-Length: +0", "", inner)).encode(),
        "content-length-hex": (_head(stack, "Content-Length: 0x0", "", inner)).encode(),
        "content-length-space": (_head(stack, "Content-Length: 0 1", "", inner)).encode(),
        "te-chunked-identity": (
            _head(stack, "Transfer-Encoding: chunked, identity", "", chunk)
        ).encode(),
        "te-identity-chunked-with-cl": (
            _head(stack, "Transfer-Encoding: identity, chunked", "Content-Length: 0", "", chunk)
        ).encode(),
        "te-twice": (
            _head(stack, "Transfer-Encoding: chunked", "Transfer-Encoding: identity", "", chunk)
        ).encode(),
        "te-xchunked-with-cl": (
            _head(stack, "Transfer-Encoding: xchunked", "Content-Length: 0", "", chunk)
        ).encode(),
        "te-space-before-colon": (
            _head(stack, "Transfer-Encoding : chunked", "Content-Length: 0", "", chunk)
        ).encode(),
        "te-tab": (
            _head(stack, "Transfer-Encoding:\tchunked", "Content-Length: 0", "", chunk)
        ).encode(),
        "te-obs-fold": (
            _head(
                stack, "X-Padding: a", " Transfer-Encoding: chunked", "Content-Length: 0", "", chunk
            )
        ).encode(),
        "te-folded-value": (
            _head(stack, "Transfer-Encoding:", " chunked", "Content-Length: 0", "", chunk)
        ).encode(),
        "te-vertical-tab": (
            _head(stack, "Transfer-Encoding:\x0bchunked", "Content-Length: 0", "", chunk)
        ).encode("latin-1"),
        "te-in-http10": (
            "POST /public/a HTTP/1.0\r\n"
            f"Host: 127.0.0.1:{stack.port}\r\nTransfer-Encoding: chunked\r\nContent-Length: 0"
            f"\r\n\r\n{chunk}"
        ).encode(),
        "chunk-size-overflow": (
            _head(
                stack,
                "Transfer-Encoding: chunked",
                "",
                "10000000000000000000000001\r\nA\r\n0\r\n\r\n" + inner,
            )
        ).encode(),
        "chunk-size-negative": (
            _head(stack, "Transfer-Encoding: chunked", "", "-1\r\n" + inner + "\r\n0\r\n\r\n")
        ).encode(),
        "chunk-extension-with-lf": (
            _head(stack, "Transfer-Encoding: chunked", "", "1;a=\n" + "x\r\n0\r\n\r\n" + inner)
        ).encode(),
        "bare-lf-line-endings": (
            f"POST /public/a HTTP/1.1\nHost: 127.0.0.1:{stack.port}\nContent-Length: 0\n"
            f"Transfer-Encoding: chunked\n\n{chunk}"
        ).encode(),
        "bare-cr": (
            _head(stack, "X-A: b\rTransfer-Encoding: chunked", "Content-Length: 0", "", chunk)
        ).encode(),
        "nul-in-header": (
            _head(stack, "Transfer-Encoding: chunked\x00", "Content-Length: 0", "", chunk)
        ).encode(),
        "get-with-body-and-te": (
            f"GET /public/a HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
            f"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{chunk}"
        ).encode(),
    }


@pytest.fixture
async def stack(make_stack: StackFactory) -> Stack:
    return await make_stack()


PAYLOAD_NAMES = [
    "CL.TE",
    "TE.CL",
    "duplicate-content-length",
    "content-length-list",
    "content-length-plus",
    "content-length-hex",
    "content-length-space",
    "te-chunked-identity",
    "te-identity-chunked-with-cl",
    "te-twice",
    "te-xchunked-with-cl",
    "te-space-before-colon",
    "te-tab",
    "te-obs-fold",
    "te-folded-value",
    "te-vertical-tab",
    "te-in-http10",
    "chunk-size-overflow",
    "chunk-size-negative",
    "chunk-extension-with-lf",
    "bare-lf-line-endings",
    "bare-cr",
    "nul-in-header",
    "get-with-body-and-te",
]


@pytest.mark.parametrize("name", PAYLOAD_NAMES)
async def test_request_smuggling_never_reaches_the_backend(stack: Stack, name: str) -> None:
    payload = smuggling_payloads(stack)[name]
    response = await raw_exchange(stack.port, payload, read_timeout=3)
    statuses = status_lines(response)
    assert statuses, response[:200]
    assert "/public/smuggled" not in stack.backend_paths(), (name, statuses)
    assert len(stack.backend_seen) <= 1
    # at most one response for the one request; a refusal is a 400 (and the connection closes)
    assert len(statuses) == 1, statuses
    assert statuses[0].split(" ")[1] in ("200", "400", "411", "413", "501"), statuses


@pytest.mark.parametrize("char", ["\x00", "\x01", "\x0b", "\x1b", "\x7f"])
async def test_a_control_character_in_a_header_value_never_reaches_the_backend(
    stack: Stack, char: str
) -> None:
    """Sidecar's own upstream connections look only for CR, LF and NUL when they write a request
    head; they rely on the incoming parser refusing every other control character."""
    payload = (
        f"GET /public/a HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\n"
        f"X-Note: a{char}b\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    response = await raw_exchange(stack.port, payload, read_timeout=3)
    assert [line.split(" ")[1] for line in status_lines(response)] == ["400"]
    assert stack.backend_seen == []


async def test_pipelined_requests_are_each_gated(stack: Stack) -> None:
    """Control: honest pipelining works, and a pipelined request to a protected path is gated
    like any other (it is a request, not a smuggled one)."""
    host = f"Host: 127.0.0.1:{stack.port}"
    data = (
        f"GET /public/one HTTP/1.1\r\n{host}\r\n\r\n"
        f"GET /admin HTTP/1.1\r\n{host}\r\nAccept: text/html\r\n\r\n"
        f"GET /public/two HTTP/1.1\r\n{host}\r\nConnection: close\r\n\r\n"
    ).encode()
    raw = await raw_exchange(stack.port, data)
    statuses = status_lines(raw)
    assert [s.split(" ")[1] for s in statuses] == ["200", "302", "200"], raw
    assert stack.backend_paths() == ["/public/one", "/public/two"]


async def test_chunked_body_is_reframed_for_the_backend(stack: Stack) -> None:
    """Control: a well-formed chunked body arrives whole, as a body, not as a request."""
    body = "GET /public/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"
    data = (
        _head(
            stack,
            "Transfer-Encoding: chunked",
            "Connection: close",
            "",
            f"{len(body):x}\r\n{body}\r\n0\r\n\r\n",
        )
    ).encode()
    response = parse_response(await raw_exchange(stack.port, data))
    assert response.status == 200
    assert stack.backend_paths() == ["/public/a"]


# -- oversized requests -----------------------------------------------------------------------


async def test_oversized_header_gets_431_then_sidecar_still_serves(stack: Stack) -> None:
    limit = stack.config.server.max_header_bytes
    big = await raw_request(stack.port, "/public/big", {"X-Big": "a" * (limit + 1)})
    assert big.status == 431
    huge = await raw_request(stack.port, "/public/big", {"X-Big": "a" * (limit * 5)})
    assert huge.status == 400
    many = await raw_request(
        stack.port,
        "/public/big",
        {f"X-H{n}": "v" for n in range(stack.config.server.max_headers + 5)},
    )
    assert many.status in (400, 431)
    line = await raw_request(
        stack.port, "/public/" + "a" * (stack.config.server.max_request_line_bytes + 10)
    )
    assert line.status in (414, 400)
    assert stack.backend_paths() == []
    ok = await raw_request(stack.port, "/public/ok")
    assert ok.status == 200


async def test_oversized_body_is_refused_when_limited(make_stack: StackFactory) -> None:
    stack = await make_stack(server={"max_body_bytes": 1024})
    data = _head(stack, "Content-Length: 5000", "Connection: close", "", "a" * 5000).encode()
    response = parse_response(await raw_exchange(stack.port, data))
    assert response.status == 413


# -- Host and X-Forwarded-* --------------------------------------------------------------------


def _authorize_redirect_uri(location: str) -> str:
    return parse_qs(urlsplit(location).query)["redirect_uri"][0]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Forwarded-Host": EVIL},
        {"X-Forwarded-Host": EVIL, "X-Forwarded-Proto": "https"},
        {"X-Forwarded-Proto": "javascript"},
        {"Forwarded": f"host={EVIL};proto=https"},
        {"X-Original-Host": EVIL, "X-Host": EVIL, "X-Forwarded-Server": EVIL},
    ],
)
async def test_untrusted_forwarding_headers_do_not_steer_the_redirect_uri(
    stack: Stack, headers: dict[str, str]
) -> None:
    response = await raw_request(stack.port, "/private", {"Accept": "text/html", **headers})
    assert response.status == 302
    redirect_uri = _authorize_redirect_uri(response.header("Location") or "")
    assert redirect_uri == stack.url("/oauth2/callback")
    public = await raw_request(stack.port, "/public/x", headers)
    assert public.status == 200
    seen = stack.backend_seen[-1]
    assert seen.values("X-Forwarded-Host") == [f"127.0.0.1:{stack.port}"]
    assert seen.values("X-Forwarded-Proto") == ["http"]
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert not seen.values("Forwarded")
    assert EVIL not in str(seen.headers) or headers.get("X-Original-Host") == EVIL


async def test_forged_x_forwarded_for_is_replaced_not_appended(stack: Stack) -> None:
    await raw_request(
        stack.port,
        "/public/x",
        {"X-Forwarded-For": "10.0.0.1, 192.168.0.1", "X-Real-IP": "10.0.0.1"},
    )
    seen = stack.backend_seen[-1]
    assert seen.values("X-Forwarded-For") == ["127.0.0.1"]
    assert not seen.values("X-Real-IP")


@pytest.mark.parametrize(
    "host",
    [f"{EVIL}/x", f"user@{EVIL}", f"{EVIL}:99999x", f"{EVIL}\\x", "", f"{EVIL}?q", f"{EVIL}#f"],
)
async def test_malformed_host_builds_no_redirect(stack: Stack, host: str) -> None:
    data = (
        f"GET /private HTTP/1.1\r\nHost: {host}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    ).encode()
    response = parse_response(await raw_exchange(stack.port, data))
    assert response.status == 400
    assert response.header("Location") is None
    assert stack.backend_paths() == []


async def test_duplicate_host_is_refused(stack: Stack) -> None:
    data = (
        f"GET /private HTTP/1.1\r\nHost: 127.0.0.1:{stack.port}\r\nHost: {EVIL}\r\n"
        "Accept: text/html\r\nConnection: close\r\n\r\n"
    ).encode()
    response = parse_response(await raw_exchange(stack.port, data))
    assert response.status == 400
    assert response.header("Location") is None


async def test_foreign_host_cannot_get_a_code_sent_to_it(stack: Stack) -> None:
    """Without public_url the redirect URI follows Host: an attacker's own Host gets a redirect
    URI the provider refuses, so no code is ever sent to the attacker's host."""
    response = await raw_request(stack.port, "/private", {"Accept": "text/html"})
    data = (
        f"GET /private HTTP/1.1\r\nHost: {EVIL}\r\nAccept: text/html\r\nConnection: close\r\n\r\n"
    ).encode()
    foreign = parse_response(await raw_exchange(stack.port, data))
    assert foreign.status == 302
    location = foreign.header("Location") or ""
    assert _authorize_redirect_uri(location) == f"http://{EVIL}/oauth2/callback"
    browser = await stack.browser()
    at_provider = await browser.request("GET", location)
    assert at_provider.status == 400  # the provider refuses the unregistered redirect URI
    assert response.status == 302


@pytest.mark.parametrize(
    "headers",
    [
        {"Host": EVIL},
        {"X-Forwarded-Host": EVIL},
        {"X-Forwarded-Proto": "https", "X-Forwarded-Host": EVIL},
    ],
)
async def test_public_url_fixes_the_redirect_uri_and_redirect_origin(
    make_stack: StackFactory, headers: dict[str, str]
) -> None:
    stack = await make_stack(
        server={"public_url": "http://sidecar.test:8080", "trusted_proxies": ["127.0.0.1/32"]},
        auth={"provider_logout": False},
    )
    lines = [f"Host: {headers.get('Host', f'127.0.0.1:{stack.port}')}", "Accept: text/html"]
    lines += [f"{k}: {v}" for k, v in headers.items() if k != "Host"]
    start = parse_response(
        await raw_exchange(
            stack.port,
            (
                "GET /private HTTP/1.1\r\n" + "\r\n".join(lines) + "\r\nConnection: close\r\n\r\n"
            ).encode(),
        )
    )
    assert start.status == 302
    assert (
        _authorize_redirect_uri(start.header("Location") or "")
        == "http://sidecar.test:8080/oauth2/callback"
    )
    sign_out = parse_response(
        await raw_exchange(
            stack.port,
            (
                f"GET /oauth2/sign_out?rd=http://{EVIL}/ HTTP/1.1\r\n"
                + "\r\n".join(lines)
                + "\r\nSec-Fetch-Site: same-origin\r\nConnection: close\r\n\r\n"
            ).encode(),
        )
    )
    assert sign_out.status == 302
    assert stays_on_origin(sign_out.header("Location") or "", "http://sidecar.test:8080")
