"""A real aiohttp backend for tests: it reports what it received and answers in every way a
proxy must pass on. Bodies are hashed as they arrive, never held whole.

Routes:
- `/echo` (and any unknown path): JSON of method, raw path, query, all headers as pairs, body
  length and sha256, peer address and port.
- `/stream?n=&size=&delay=` chunked; `/download?bytes=N` generated on the fly; `/upload` consumed
  streaming, answers length and sha256; `/sse?n=&delay=&hold=` server-sent events.
- `/hold` streams one chunk, then waits until the test sets `HOLD_RELEASE`.
- `/status/{code}`, `/cookies` (several Set-Cookie), `/gzip` (pre-compressed body),
  `/slow?seconds=`, `/redirect`, `/hop` (hop-by-hop response headers), `/truncate` (dies mid-body).
- `/ws` websocket echo; the text `close:<code>` closes with that code, `headers` returns the
  handshake headers; close codes seen from peers go to `WS_CLOSE_CODES`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
from collections.abc import Awaitable, Callable

from aiohttp import WSMsgType, web

HOLD_RELEASE = web.AppKey("hold_release", asyncio.Event)
"""Set by a test to let `/hold` and `/sse?hold=1` finish: proves chunks pass before the end."""

WS_CLOSE_CODES = web.AppKey("ws_close_codes", asyncio.Queue)
"""Close codes the `/ws` endpoint saw from its peer, one per connection, in order."""

GZIP_PLAIN = b"hello, compressed world\n" * 100
GZIP_BODY = gzip.compress(GZIP_PLAIN, mtime=0)
_BLOCK = bytes(range(256)) * 256  # 64 KiB


async def _digest_body(request: web.Request) -> tuple[int, str]:
    digest = hashlib.sha256()
    length = 0
    async for chunk in request.content.iter_any():
        digest.update(chunk)
        length += len(chunk)
    return length, digest.hexdigest()


def _peer_port(request: web.Request) -> int | None:
    """The client's source port: equal across requests when a connection is kept alive."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return int(peer[1]) if peer else None


async def echo(request: web.Request) -> web.Response:
    length, sha = await _digest_body(request)
    report = {
        "method": request.method,
        "raw_path": request.raw_path,
        "query": request.query_string,
        "headers": [[name, value] for name, value in request.headers.items()],
        "body_length": length,
        "body_sha256": sha,
        "peer": request.remote,
        "peer_port": _peer_port(request),
    }
    return web.json_response(report, headers={"X-Echo": "1"})


async def stream(request: web.Request) -> web.StreamResponse:
    count = int(request.query.get("n", "5"))
    size = int(request.query.get("size", "16"))
    delay = float(request.query.get("delay", "0"))
    response = web.StreamResponse()
    await response.prepare(request)
    for i in range(count):
        await response.write(str(i % 10).encode() * size)
        if delay:
            await asyncio.sleep(delay)
    await response.write_eof()
    return response


async def download(request: web.Request) -> web.StreamResponse:
    total = int(request.query["bytes"])
    response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    response.content_length = total
    await response.prepare(request)
    left = 0 if request.method == "HEAD" else total
    while left > 0:
        block = _BLOCK if left >= len(_BLOCK) else _BLOCK[:left]
        await response.write(block)
        left -= len(block)
    await response.write_eof()
    return response


async def upload(request: web.Request) -> web.Response:
    length, sha = await _digest_body(request)
    return web.json_response({"body_length": length, "body_sha256": sha})


async def sse(request: web.Request) -> web.StreamResponse:
    count = int(request.query.get("n", "3"))
    delay = float(request.query.get("delay", "0.05"))
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    hold = request.query.get("hold") == "1"
    for i in range(count):
        await response.write(f"id: {i}\ndata: event {i}\n\n".encode())
        if hold and i == 0:
            await request.app[HOLD_RELEASE].wait()
        else:
            await asyncio.sleep(delay)
    await response.write_eof()
    return response


async def status(request: web.Request) -> web.StreamResponse:
    code = int(request.match_info["code"])
    if code in (204, 304) or request.method == "HEAD":
        return web.Response(status=code, headers={"ETag": '"v1"', "X-Status": str(code)})
    return web.Response(status=code, text=f"status {code}\n", headers={"X-Status": str(code)})


async def cookies(request: web.Request) -> web.Response:
    response = web.Response(text="cookies\n")
    response.headers.add("Set-Cookie", "a=1; Path=/; HttpOnly")
    response.headers.add("Set-Cookie", "b=2; Path=/; Secure")
    response.headers.add("Set-Cookie", "c=3; Expires=Wed, 21 Oct 2037 07:28:00 GMT; Path=/")
    return response


async def gzipped(request: web.Request) -> web.Response:
    return web.Response(
        body=GZIP_BODY,
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
    )


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("seconds", "1")))
    return web.Response(text="slow\n")


async def hold(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/plain"})
    await response.prepare(request)
    await response.write(b"first\n")
    await request.app[HOLD_RELEASE].wait()
    await response.write(b"last\n")
    await response.write_eof()
    return response


async def redirect(request: web.Request) -> web.Response:
    return web.Response(status=302, headers={"Location": "/echo?redirected=1"})


async def hop(request: web.Request) -> web.Response:
    """A response carrying hop-by-hop headers (and one named in Connection) that must not pass."""
    response = web.Response(text="hop\n")
    response.headers["Connection"] = "keep-alive, X-Backend-Secret"
    response.headers["Keep-Alive"] = "timeout=5"
    response.headers["X-Backend-Secret"] = "hop-only"
    response.headers["Proxy-Authenticate"] = "Basic"
    response.headers["X-Kept"] = "yes"
    return response


async def websocket(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse(protocols=("chat", "superchat"), autoping=True)
    await ws.prepare(request)
    async for msg in ws:
        if msg.type is WSMsgType.TEXT:
            if msg.data.startswith("close:"):
                await ws.close(code=int(msg.data[6:]), message=b"bye")
                break
            if msg.data == "headers":
                pairs = [[name, value] for name, value in request.headers.items()]
                await ws.send_str(json.dumps(pairs))
            else:
                await ws.send_str(msg.data)
        elif msg.type is WSMsgType.BINARY:
            await ws.send_bytes(msg.data)
    request.app[WS_CLOSE_CODES].put_nowait(ws.close_code)
    return ws


async def truncate(request: web.Request) -> web.StreamResponse:
    """Promise 1000 bytes, send 10, then drop the connection: a backend dying mid-response."""
    response = web.StreamResponse()
    response.content_length = 1000
    await response.prepare(request)
    await response.write(b"0123456789")
    assert request.transport is not None
    request.transport.close()
    return response


def _quiet_when_peer_leaves(
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """A peer (the proxy) leaving mid-stream is normal here, not a backend crash to log."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ConnectionResetError:
            return web.Response(status=499)

    return wrapped


def make_echo_app() -> web.Application:
    """The echo backend as an aiohttp application (serve it with `aiohttp_server`)."""
    app = web.Application(client_max_size=1 << 40)
    app[HOLD_RELEASE] = asyncio.Event()
    app[WS_CLOSE_CODES] = asyncio.Queue()
    app.router.add_get("/truncate", truncate)
    app.router.add_get("/hold", _quiet_when_peer_leaves(hold))
    app.router.add_get("/stream", _quiet_when_peer_leaves(stream))
    app.router.add_get("/download", _quiet_when_peer_leaves(download))
    app.router.add_post("/upload", upload)
    app.router.add_put("/upload", upload)
    app.router.add_get("/sse", _quiet_when_peer_leaves(sse))
    app.router.add_route("*", "/status/{code:\\d+}", status)
    app.router.add_get("/cookies", cookies)
    app.router.add_get("/gzip", gzipped)
    app.router.add_get("/slow", slow)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/hop", hop)
    app.router.add_get("/ws", websocket)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app
