"""The forwarder, seen from outside: a tiny proxy app in front of the real echo backend."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient, TestServer
from support.echo import GZIP_BODY, HOLD_RELEASE, WS_CLOSE_CODES

from sidecar.config.model import SidecarConfig
from sidecar.errors import SidecarError
from sidecar.proxy.forward import Forwarder, create_upstream_client
from sidecar.proxy.headers import build_header_plan, build_upstream_headers
from sidecar.session.cookies import CookiePolicy, read_request_cookies

MiB = 1024 * 1024
COOKIES = CookiePolicy(name="_sidecar", secure=False)
IDENTITY = (("X-Forwarded-User", "alice"), ("X-Forwarded-Email", "alice@example.com"))
FORWARDER = web.AppKey("forwarder", Forwarder)

ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def make_config(upstream: str, **server: Any) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {"version": 1, "upstreams": [{"path": "/", "url": upstream}], "server": server}
    )


def make_proxy_app(
    config: SidecarConfig, *, identity: Sequence[tuple[str, str]] = IDENTITY
) -> web.Application:
    """What app.py will do, reduced to the proxy: build headers once, then forward."""
    plan = build_header_plan(config)

    @web.middleware
    async def errors(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except SidecarError as exc:
            return web.json_response({"code": exc.code}, status=exc.status)

    async def client_context(app: web.Application) -> AsyncIterator[None]:
        client = create_upstream_client()
        app[FORWARDER] = Forwarder(
            client, config.upstreams, max_body_bytes=config.server.max_body_bytes
        )
        yield
        await client.close()

    async def handle(request: web.Request) -> web.StreamResponse:
        forwarder = request.app[FORWARDER]
        upstream = forwarder.select(request.path)
        headers = build_upstream_headers(
            request.headers.items(),
            plan=plan,
            peer=request.remote,
            scheme=request.scheme,
            host=request.host,
            request_id="rid-test",
            identity_headers=identity,
            cookie=read_request_cookies(COOKIES, request.headers.getall("Cookie", ())).upstream,
            upstream_host=forwarder.upstream_host(upstream),
        )
        return await forwarder.forward(request, headers)

    app = web.Application(middlewares=[errors])
    app.cleanup_ctx.append(client_context)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


@pytest.fixture
async def proxy(echo_server: TestServer, aiohttp_client: ClientFactory) -> TestClient[Any, Any]:
    return await aiohttp_client(make_proxy_app(make_config(str(echo_server.make_url("")))))


async def raw_exchange(port: int, request: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """Send bytes exactly as given (no client library rewriting them); read until close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = [tuple(line.split(": ", 1)) for line in lines]
    return int(status_line.split()[1]), [(n, v) for n, v in headers], body


def echoed_headers(report: dict[str, Any], name: str) -> list[str]:
    return [v for n, v in report["headers"] if n.lower() == name.lower()]


# --- transparency ------------------------------------------------------------------------------


async def test_path_and_query_reach_the_backend_byte_exact(proxy: TestClient[Any, Any]) -> None:
    target = b"/echo/a%2Fb/%2e%2e/c;p=1/./d?q=%41&&x=1+2&x=%7e"
    status, _, body = await raw_exchange(
        proxy.port,  # type: ignore[arg-type]
        b"GET " + target + b" HTTP/1.1\r\nHost: app.example\r\nConnection: close\r\n\r\n",
    )
    assert status == 200
    assert _json_body(body)["raw_path"] == target.decode()


async def test_backend_sees_only_what_the_client_sent_plus_forwarding_headers(
    proxy: TestClient[Any, Any],
) -> None:
    status, _, body = await raw_exchange(
        proxy.port,  # type: ignore[arg-type]
        b"GET /echo HTTP/1.1\r\nHost: app.example\r\nX-Thing: 1\r\nx-thing: 2\r\n"
        b"Cookie: theme=dark; _sidecar=secret\r\nConnection: close\r\n\r\n",
    )
    report = _json_body(body)
    names = [n.lower() for n, _ in report["headers"]]
    assert status == 200
    assert "user-agent" not in names and "accept-encoding" not in names and "accept" not in names
    assert echoed_headers(report, "X-Thing") == ["1", "2"]
    assert echoed_headers(report, "Host") == ["app.example"]
    assert echoed_headers(report, "Cookie") == ["theme=dark"]
    assert echoed_headers(report, "X-Request-Id") == ["rid-test"]
    assert echoed_headers(report, "X-Forwarded-User") == ["alice"]


async def test_hop_by_hop_request_headers_and_the_connection_trick_are_dropped(
    proxy: TestClient[Any, Any],
) -> None:
    status, _, body = await raw_exchange(
        proxy.port,  # type: ignore[arg-type]
        b"GET /echo HTTP/1.1\r\nHost: app.example\r\n"
        b"Connection: close, X-Forwarded-For, X-Forwarded-Email, X-Secret\r\n"
        b"X-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Email: evil@example.com\r\n"
        b"X_Forwarded_Email: evil@example.com\r\nX-Secret: hop\r\nKeep-Alive: timeout=9\r\n"
        b"TE: trailers\r\nProxy-Authorization: Basic eDp5\r\n\r\n",
    )
    report = _json_body(body)
    assert status == 200
    assert echoed_headers(report, "X-Forwarded-For") == ["127.0.0.1"]
    assert echoed_headers(report, "X-Forwarded-Email") == ["alice@example.com"]
    assert not [v for _, v in report["headers"] if "evil" in v or v in ("hop", "timeout=9")]
    names = {n.lower() for n, _ in report["headers"]}
    assert not names & {"te", "proxy-authorization", "keep-alive", "x-secret", "x_forwarded_email"}


async def test_hop_by_hop_response_headers_are_dropped(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.get("/hop")
    assert resp.status == 200
    assert resp.headers["X-Kept"] == "yes"
    for name in ("X-Backend-Secret", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in resp.headers
    assert await resp.text() == "hop\n"


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [((), ["127.0.0.1"]), (("127.0.0.0/8",), ["1.2.3.4, 127.0.0.1"])],
    ids=["untrusted-peer-replaced", "trusted-peer-appended"],
)
async def test_forwarded_headers_depend_on_trusted_proxies(
    echo_server: TestServer,
    aiohttp_client: ClientFactory,
    trusted: tuple[str, ...],
    expected: list[str],
) -> None:
    config = make_config(str(echo_server.make_url("")), trusted_proxies=list(trusted))
    client = await aiohttp_client(make_proxy_app(config))
    resp = await client.get(
        "/echo",
        headers={"X-Forwarded-For": "1.2.3.4", "X-Forwarded-Proto": "https"},
    )
    report = await resp.json()
    assert echoed_headers(report, "X-Forwarded-For") == expected
    assert echoed_headers(report, "X-Forwarded-Proto") == ["https" if trusted else "http"]


async def test_host_is_replaced_when_preserve_host_is_off(
    echo_server: TestServer, aiohttp_client: ClientFactory
) -> None:
    upstream = str(echo_server.make_url("")).rstrip("/")
    config = SidecarConfig.model_validate(
        {"version": 1, "upstreams": [{"url": upstream, "preserve_host": False}]}
    )
    client = await aiohttp_client(make_proxy_app(config))
    report = await (await client.get("/echo", headers={"Host": "app.example"})).json()
    assert echoed_headers(report, "Host") == [upstream.removeprefix("http://")]
    assert echoed_headers(report, "X-Forwarded-Host") == ["app.example"]


async def test_several_set_cookie_headers_stay_several(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.get("/cookies")
    assert resp.headers.getall("Set-Cookie") == [
        "a=1; Path=/; HttpOnly",
        "b=2; Path=/; Secure",
        "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/",
    ]


async def test_compressed_bodies_pass_without_decompression(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.get("/gzip", auto_decompress=False, headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Content-Encoding"] == "gzip"
    assert resp.headers["Content-Length"] == str(len(GZIP_BODY))
    assert await resp.read() == GZIP_BODY


async def test_redirects_are_passed_on_not_followed(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.get("/redirect", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "/echo?redirected=1"


async def test_head_keeps_content_length_without_a_body(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.head("/download?bytes=12345")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "12345"
    assert await resp.read() == b""


@pytest.mark.parametrize("code", [204, 304])
async def test_bodiless_statuses_pass_through(proxy: TestClient[Any, Any], code: int) -> None:
    resp = await proxy.get(f"/status/{code}")
    assert resp.status == code
    assert resp.headers["ETag"] == '"v1"'
    assert "Transfer-Encoding" not in resp.headers
    assert await resp.read() == b""


async def test_error_statuses_from_the_backend_pass_through(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.post("/status/418", data=b"x")
    assert resp.status == 418
    assert await resp.text() == "status 418\n"


async def test_options_request_passes_through(proxy: TestClient[Any, Any]) -> None:
    report = await (await proxy.options("/echo")).json()
    assert report["method"] == "OPTIONS"


# --- streaming ---------------------------------------------------------------------------------


async def test_chunks_arrive_before_the_backend_finishes(
    proxy: TestClient[Any, Any], echo_server: TestServer
) -> None:
    release = echo_server.app[HOLD_RELEASE]
    resp = await proxy.get("/hold")
    assert await resp.content.readline() == b"first\n"
    assert not release.is_set()  # the backend is still holding the rest
    release.set()
    assert await resp.content.read() == b"last\n"


async def test_server_sent_events_are_passed_on_as_they_happen(
    proxy: TestClient[Any, Any], echo_server: TestServer
) -> None:
    release = echo_server.app[HOLD_RELEASE]
    resp = await proxy.get("/sse?n=3&delay=0&hold=1")
    assert resp.headers["Content-Type"] == "text/event-stream"
    first = await resp.content.readuntil(b"\n\n")
    assert first == b"id: 0\ndata: event 0\n\n"
    assert not release.is_set()
    release.set()
    assert await resp.content.read() == b"id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n"


async def test_chunked_response_arrives_whole(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.get("/stream?n=50&size=1000")
    body = await resp.read()
    assert len(body) == 50_000
    assert body[:1000] == b"0" * 1000


@pytest.mark.parametrize("size", [0, 1, 64 * 1024, 64 * 1024 + 1, 200_000])
async def test_bodies_on_either_side_of_the_whole_read_limit_arrive_intact(
    proxy: TestClient[Any, Any], size: int
) -> None:
    """Up to 64 KiB the answer is read whole and sent at once; above, streamed: same bytes."""
    resp = await proxy.get(f"/download?bytes={size}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(size)
    assert "Transfer-Encoding" not in resp.headers
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert hashlib.sha256(await resp.read()).hexdigest() == _sha256_of_generated(size)
    again = await proxy.get("/cookies")  # the upstream connection is still good for the next one
    assert await again.text() == "cookies\n"


async def _body(total: int) -> AsyncIterator[bytes]:
    block = bytes(range(256)) * 256
    left = total
    while left > 0:
        piece = block if left >= len(block) else block[:left]
        left -= len(piece)
        yield piece


def _sha256_of_generated(total: int) -> str:
    digest = hashlib.sha256()
    block = bytes(range(256)) * 256
    for start in range(0, total, len(block)):
        digest.update(block[: min(len(block), total - start)])
    return digest.hexdigest()


@pytest.mark.parametrize("known_length", [True, False], ids=["content-length", "chunked"])
async def test_large_upload_streams_with_bounded_memory(
    proxy: TestClient[Any, Any], known_length: bool
) -> None:
    total = 200 * MiB
    headers = {"Content-Length": str(total)} if known_length else {}
    tracemalloc.start()
    try:
        resp = await proxy.post("/upload", data=_body(total), headers=headers)
        report = await resp.json()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.status == 200
    assert report == {"body_length": total, "body_sha256": _sha256_of_generated(total)}
    assert peak < 50 * MiB, f"peak {peak / MiB:.1f} MiB"


async def test_large_download_streams_with_bounded_memory(proxy: TestClient[Any, Any]) -> None:
    total = 200 * MiB
    tracemalloc.start()
    try:
        resp = await proxy.get("/download?bytes=" + str(total))
        digest = hashlib.sha256()
        received = 0
        async for chunk in resp.content.iter_any():
            digest.update(chunk)
            received += len(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert resp.headers["Content-Length"] == str(total)
    assert received == total
    assert digest.hexdigest() == _sha256_of_generated(total)
    assert peak < 50 * MiB, f"peak {peak / MiB:.1f} MiB"


async def test_backend_dying_mid_body_truncates_the_response(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.get("/truncate")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


# --- websockets --------------------------------------------------------------------------------


async def test_websocket_round_trips_text_binary_and_ping(proxy: TestClient[Any, Any]) -> None:
    async with proxy.ws_connect(
        "/ws", protocols=("chat",), autoping=False, origin="https://app.example"
    ) as ws:
        assert ws.protocol == "chat"
        await ws.send_str("hello")
        assert (await ws.receive()).data == "hello"
        await ws.send_bytes(b"\x00\x01binary")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.BINARY, b"\x00\x01binary")
        await ws.ping(b"are you there")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.PONG, b"are you there")
        await ws.send_str("headers")
        upstream_headers = json.loads((await ws.receive()).data)
        names = [n.lower() for n, _ in upstream_headers]
        assert ["X-Forwarded-User", "alice"] in upstream_headers
        assert ["Origin", "https://app.example"] in upstream_headers
        assert "sec-websocket-extensions" not in names


async def test_websocket_close_code_from_backend_reaches_the_client(
    proxy: TestClient[Any, Any],
) -> None:
    async with proxy.ws_connect("/ws") as ws:
        await ws.send_str("close:4001")
        msg = await ws.receive()
        assert (msg.type, msg.data, msg.extra) == (WSMsgType.CLOSE, 4001, "bye")
    assert ws.close_code == 4001


async def test_websocket_close_code_from_client_reaches_the_backend(
    proxy: TestClient[Any, Any], echo_server: TestServer
) -> None:
    ws = await proxy.ws_connect("/ws")
    await ws.send_str("ping")
    assert (await ws.receive()).data == "ping"
    await ws.close(code=4002, message=b"leaving")
    codes = echo_server.app[WS_CLOSE_CODES]
    assert await asyncio.wait_for(codes.get(), timeout=5) == 4002


async def test_websocket_client_vanishing_closes_the_backend_as_going_away(
    proxy: TestClient[Any, Any], echo_server: TestServer
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: app.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    writer.transport.abort()  # the browser tab is killed: no close frame is ever sent
    codes = echo_server.app[WS_CLOSE_CODES]
    assert await asyncio.wait_for(codes.get(), timeout=5) == 1001


async def test_websocket_refused_by_backend_passes_its_status(
    echo_server: TestServer, aiohttp_client: ClientFactory
) -> None:
    client = await aiohttp_client(make_proxy_app(make_config(str(echo_server.make_url("")))))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/status/403")
    assert caught.value.status == 403


# --- failures ----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_unreachable_backend_gives_502(aiohttp_client: ClientFactory) -> None:
    config = make_config(f"http://127.0.0.1:{_closed_port()}")
    client = await aiohttp_client(make_proxy_app(config))
    resp = await client.get("/anything")
    assert resp.status == 502
    assert (await resp.json())["code"] == "upstream_unavailable"
    ws_resp = await client.get("/ws", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert ws_resp.status == 502


async def test_slow_backend_gives_504(
    echo_server: TestServer, aiohttp_client: ClientFactory
) -> None:
    upstream = str(echo_server.make_url("")).rstrip("/")
    config = SidecarConfig.model_validate(
        {"version": 1, "upstreams": [{"url": upstream, "read_timeout_seconds": 0.2}]}
    )
    client = await aiohttp_client(make_proxy_app(config))
    resp = await client.get("/slow?seconds=30")
    assert resp.status == 504
    assert (await resp.json())["code"] == "upstream_timeout"


async def test_websocket_handshake_to_a_slow_backend_gives_504(
    echo_server: TestServer, aiohttp_client: ClientFactory
) -> None:
    upstream = str(echo_server.make_url("")).rstrip("/")
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "upstreams": [
                {"url": upstream, "connect_timeout_seconds": 0.1, "read_timeout_seconds": 0.2}
            ],
        }
    )
    client = await aiohttp_client(make_proxy_app(config))
    with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
        await client.ws_connect("/slow?seconds=30")
    assert caught.value.status == 504


async def test_body_over_the_limit_gives_413(
    echo_server: TestServer, aiohttp_client: ClientFactory
) -> None:
    config = make_config(str(echo_server.make_url("")), max_body_bytes=1000)
    client = await aiohttp_client(make_proxy_app(config))
    resp = await client.post("/upload", data=b"x" * 1001)
    assert resp.status == 413
    assert (await resp.json())["code"] == "payload_too_large"
    chunked = await client.post("/upload", data=_body(5000))
    assert chunked.status == 413
    fits = await client.post("/upload", data=_body(1000))
    assert (await fits.json())["body_length"] == 1000


async def test_longest_prefix_selects_the_upstream() -> None:
    async with aiohttp.ClientSession() as session:
        forwarder = Forwarder(
            session,
            SidecarConfig.model_validate(
                {
                    "version": 1,
                    "upstreams": [
                        {"path": "/", "url": "http://127.0.0.1:1"},
                        {"path": "/api", "url": "http://127.0.0.1:2"},
                        {"path": "/api/v2/", "url": "http://127.0.0.1:3"},
                    ],
                }
            ).upstreams,
        )
    cases = {"/": 1, "/apix": 1, "/api": 2, "/api/users": 2, "/api/v2": 2, "/api/v2/x": 3}
    for path, port in cases.items():
        assert forwarder.select(path).url == f"http://127.0.0.1:{port}", path


def _json_body(body: bytes) -> dict[str, Any]:
    """The JSON document in a raw HTTP/1.1 body, chunked or not."""
    if body[:1] == b"{":
        return dict(json.loads(body))
    size, _, rest = body.partition(b"\r\n")
    return dict(json.loads(rest[: int(size, 16)]))


async def test_client_leaving_mid_download_frees_the_upstream_quietly(
    proxy: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    resp = await proxy.get("/download?bytes=" + str(100 * MiB))
    assert len(await resp.content.readexactly(MiB)) == MiB
    resp.close()  # the browser navigates away
    again = await proxy.get("/echo")
    assert again.status == 200
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


async def test_backend_dying_mid_body_is_not_logged_as_a_crash(
    proxy: TestClient[Any, Any], caplog: pytest.LogCaptureFixture
) -> None:
    resp = await proxy.get("/truncate")
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    assert (await proxy.get("/echo")).status == 200
    assert not [r for r in caplog.records if "Traceback" in r.getMessage()]


async def test_expect_100_continue_upload_passes(proxy: TestClient[Any, Any]) -> None:
    resp = await proxy.post("/upload", data=b"x" * 5000, expect100=True)
    assert (await resp.json())["body_length"] == 5000


async def test_absolute_form_request_target_goes_to_the_configured_upstream(
    proxy: TestClient[Any, Any],
) -> None:
    status, _, body = await raw_exchange(
        proxy.port,  # type: ignore[arg-type]
        b"GET http://evil.example/echo?a=1 HTTP/1.1\r\nHost: app.example\r\n"
        b"Connection: close\r\n\r\n",
    )
    assert status == 200
    assert _json_body(body)["raw_path"] == "/echo?a=1"


async def test_upstream_connections_are_pooled_and_kept_alive(proxy: TestClient[Any, Any]) -> None:
    ports = set()
    for _ in range(5):
        report = await (await proxy.get("/echo")).json()
        ports.add(report["peer_port"])
    assert len(ports) == 1


async def test_upstream_base_path_is_prefixed(
    echo_server: TestServer, aiohttp_client: ClientFactory
) -> None:
    config = make_config(str(echo_server.make_url("/base/")))
    client = await aiohttp_client(make_proxy_app(config))
    report = await (await client.get("/x/y?z=1")).json()
    assert report["raw_path"] == "/base/x/y?z=1"


async def test_http_1_0_client_gets_the_body_without_chunking(proxy: TestClient[Any, Any]) -> None:
    status, headers, body = await raw_exchange(
        proxy.port,  # type: ignore[arg-type]
        b"GET /stream?n=3&size=4 HTTP/1.0\r\nHost: app.example\r\n\r\n",
    )
    assert status == 200
    assert "Transfer-Encoding" not in dict(headers)
    assert body == b"000011112222"
