"""Forwarding a request to its upstream and the answer back, streaming both ways, websockets too.

`Forwarder` picks the upstream by longest path prefix, matched on whole segments (the table is
built once), sends the request with the headers `sidecar.proxy.headers` built, the byte-exact path
and query appended to the upstream URL (prefixes are not stripped), and the body streamed from the
client as it arrives (`max_body_bytes` gives 413); then streams the response back chunk by chunk,
untouched: no decompression, no redirect following, several `Set-Cookie` stay several. A
WebSocket upgrade is proxied message by message (text, binary, ping/pong, close codes) in both
directions. A GET without a body to an http:// upstream goes through sidecar's own pooled
connections (`sidecar.proxy.upstream`: far less CPU per request than aiohttp's client); every
other request through aiohttp's client. A small response (a Content-Length up to 64 KiB, not an
event stream) is read whole and answered in one write; the rest is streamed. Failures before
anything reached the client raise `UpstreamUnavailableError` (502) or `UpstreamTimeoutError`
(504) for `sidecar.pipeline` to render; after the response started (or when a small body breaks
off), the client connection is aborted so the client sees a truncated response, never a wrong
one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from aiohttp import WSMsgType, web
from multidict import CIMultiDict
from yarl import URL

from sidecar.config.model import UpstreamConfig
from sidecar.errors import PayloadTooLargeError, UpstreamTimeoutError, UpstreamUnavailableError
from sidecar.proxy.headers import build_response_headers
from sidecar.proxy.upstream import (
    UpstreamConnection,
    UpstreamError,
    UpstreamPool,
    serialize_request_head,
)
from sidecar.proxy.upstream import UpstreamTimeoutError as _LeanTimeout

# Headers aiohttp's client would add on its own; a transparent proxy sends only what it was given.
_SKIP_AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
_NO_BODY_STATUSES = frozenset({204, 304})
_WS_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_WS_CLOSE_SECONDS = 10.0
# Close codes that describe a state and may not be sent in a close frame (RFC 6455 7.4.1).
_WS_UNSENDABLE = frozenset({1005, 1006, 1015})
_CHUNK_BYTES = 64 * 1024
# Bodies up to this Content-Length are read whole and sent with the headers in one write.
_WHOLE_BODY_BYTES = 64 * 1024


def create_upstream_client(*, connection_limit: int = 1000) -> aiohttp.ClientSession:
    """The shared client for upstream traffic: pooled keep-alive, no cookie jar, no own timeouts.

    `Forwarder` relies on it not decompressing and not adding headers of its own (set here once,
    not per request).

    Call inside a running event loop (e.g. in the app's cleanup context) and close it on shutdown.
    """
    connector = aiohttp.TCPConnector(
        limit=connection_limit, limit_per_host=0, keepalive_timeout=30, enable_cleanup_closed=False
    )
    return aiohttp.ClientSession(
        connector=connector,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None),
        auto_decompress=False,
        skip_auto_headers=_SKIP_AUTO_HEADERS,
        max_line_size=65536,
        max_field_size=65536,
    )


@dataclass(frozen=True, slots=True)
class _Route:
    """One upstream with everything per-request work needs, precomputed."""

    upstream: UpstreamConfig
    prefix: str
    base: str
    host_header: str
    timeout: aiohttp.ClientTimeout
    handshake_seconds: float
    pool: UpstreamPool | None
    """Own pooled connections for GET without a body; None for https:// (aiohttp's client)."""
    base_path: str
    """The path of the upstream URL, put before each request's path."""

    def matches(self, path: str) -> bool:
        prefix = self.prefix
        if not path.startswith(prefix):
            return False
        return prefix.endswith("/") or len(path) == len(prefix) or path[len(prefix)] == "/"


def _build_route(upstream: UpstreamConfig) -> _Route:
    parts = urlsplit(upstream.url)
    host_header = parts.netloc.rpartition("@")[2]  # host[:port], no userinfo
    pool = None
    if parts.scheme == "http" and parts.hostname:
        pool = UpstreamPool(
            parts.hostname,
            parts.port or 80,
            connect_timeout=upstream.connect_timeout_seconds,
            read_timeout=upstream.read_timeout_seconds,
        )
    return _Route(
        upstream=upstream,
        prefix=upstream.path,
        base=upstream.url.rstrip("/"),
        host_header=host_header,
        timeout=aiohttp.ClientTimeout(
            total=None,
            sock_connect=upstream.connect_timeout_seconds,
            sock_read=upstream.read_timeout_seconds,
        ),
        handshake_seconds=upstream.connect_timeout_seconds + upstream.read_timeout_seconds,
        pool=pool,
        base_path=parts.path.rstrip("/"),
    )


class _BodyTooLarge(Exception):
    """The streamed request body passed the configured limit."""


class Forwarder:
    """Sends requests to the upstreams and streams the answers back."""

    def __init__(
        self,
        client: aiohttp.ClientSession,
        upstreams: Sequence[UpstreamConfig],
        *,
        max_body_bytes: int | None = None,
    ) -> None:
        if not upstreams:
            raise ValueError("at least one upstream is needed")
        self._client = client
        self._routes = tuple(
            sorted((_build_route(u) for u in upstreams), key=lambda r: len(r.prefix), reverse=True)
        )
        self._max_body_bytes = max_body_bytes

    def _route(self, path: str) -> _Route:
        for route in self._routes:
            if route.matches(path):
                return route
        raise UpstreamUnavailableError(
            "No application is configured for this path.", reason="no upstream prefix matches"
        )

    def select(self, path: str) -> UpstreamConfig:
        """The upstream serving `path`: the longest matching prefix (whole path segments)."""
        return self._route(path).upstream

    def upstream_host(self, upstream: UpstreamConfig) -> str | None:
        """The Host header to send to `upstream`: None to pass the client's through."""
        if upstream.preserve_host:
            return None
        for route in self._routes:
            if route.upstream is upstream:
                return route.host_header
        return _build_route(upstream).host_header

    async def forward(
        self,
        request: web.Request,
        headers: CIMultiDict[str],
        *,
        extra_response_headers: Sequence[tuple[str, str]] = (),
    ) -> web.StreamResponse:
        """Forward `request` with `headers` and stream the upstream's response back."""
        route = self._route(request.path)
        raw_path = request.raw_path
        if not raw_path.startswith("/"):
            raw_path = request.rel_url.raw_path_qs
        websocket = _is_websocket_upgrade(request)
        pool = route.pool
        if (
            pool is not None
            and request.method == "GET"
            and not websocket
            and not request.body_exists
        ):
            target = route.base_path + raw_path  # (no URL object needed on this path)
            return await self._forward_get(
                request, pool, target, headers, route, extra_response_headers
            )
        url = URL(route.base + raw_path, encoded=True)
        if websocket:
            return await self._forward_websocket(
                request, url, headers, route, extra_response_headers
            )
        return await self._forward_http(request, url, headers, route, extra_response_headers)

    def close(self) -> None:
        """Close the idle pooled connections (on shutdown; aiohttp's client is closed apart)."""
        for route in self._routes:
            if route.pool is not None:
                route.pool.close()

    async def _forward_get(
        self,
        request: web.Request,
        pool: UpstreamPool,
        target: str,
        headers: CIMultiDict[str],
        route: _Route,
        extra_response_headers: Sequence[tuple[str, str]],
    ) -> web.StreamResponse:
        """A GET without a body, on sidecar's own pooled connection: the same answers as
        `_forward_http` gives, for less CPU."""
        try:
            head = serialize_request_head("GET", target, headers.items())
        except ValueError as exc:  # the builders refuse control characters first
            raise UpstreamUnavailableError(reason="control character in a header") from exc
        try:
            upstream = await pool.send(head)
        except _LeanTimeout as exc:
            raise UpstreamTimeoutError(reason=f"{exc} from {route.base}") from exc
        except UpstreamError as exc:
            raise UpstreamUnavailableError(reason=f"{exc}: {route.base}") from exc
        try:
            return await self._answer(request, upstream, extra_response_headers)
        finally:
            # Also on cancellation (the client left): only a complete exchange is reused.
            pool.release(upstream)

    async def _answer(
        self,
        request: web.Request,
        upstream: UpstreamConnection,
        extra_response_headers: Sequence[tuple[str, str]],
    ) -> web.StreamResponse:
        response_headers = build_response_headers(upstream.headers)
        for name, value in extra_response_headers:
            response_headers.add(name, value)
        status = upstream.status
        if _is_small(request.method, status, response_headers):
            try:
                body = await upstream.read_all()
            except UpstreamError:
                truncated = web.StreamResponse(
                    status=status, reason=upstream.reason, headers=response_headers
                )
                with contextlib.suppress(ConnectionError):
                    await truncated.prepare(request)
                _abort(request)
                return truncated
            response_headers["Content-Length"] = str(len(body))
            return web.Response(
                status=status, reason=upstream.reason, headers=response_headers, body=body
            )
        response = web.StreamResponse(
            status=status, reason=upstream.reason, headers=response_headers
        )
        try:
            await response.prepare(request)
            while chunk := await upstream.read():
                await response.write(chunk)
        except (UpstreamError, ConnectionError):
            _abort(request)  # the response has started: only a truncated answer to signal
            return response
        with contextlib.suppress(ConnectionError):  # the client left after the last byte
            await response.write_eof()
        return response

    async def _forward_http(
        self,
        request: web.Request,
        url: URL,
        headers: CIMultiDict[str],
        route: _Route,
        extra_response_headers: Sequence[tuple[str, str]],
    ) -> web.StreamResponse:
        limit = self._max_body_bytes
        length = request.content_length
        if limit is not None and length is not None and length > limit:
            raise PayloadTooLargeError(reason=f"Content-Length {length} over {limit}")
        data: aiohttp.StreamReader | AsyncIterator[bytes] | None = None
        too_large: list[bool] = []
        if request.body_exists:
            if limit is None or length is not None:
                data = request.content
            else:
                data = _limited(request.content, limit, too_large)
        try:
            upstream = await self._client.request(
                request.method,
                url,
                headers=headers,
                data=data,
                allow_redirects=False,
                timeout=route.timeout,  # auto_decompress and skip_auto_headers: the client's
            )
        except TimeoutError as exc:
            raise UpstreamTimeoutError(reason=f"{type(exc).__name__} to {route.base}") from exc
        except aiohttp.ClientError as exc:
            if too_large:
                raise PayloadTooLargeError(reason=f"chunked body over {limit}") from exc
            raise UpstreamUnavailableError(reason=f"{type(exc).__name__} to {route.base}") from exc

        response_headers = build_response_headers(upstream.headers.items())
        for name, value in extra_response_headers:
            response_headers.add(name, value)
        if _is_small(request.method, upstream.status, upstream.headers):
            body: bytes | None = None
            try:
                body = await upstream.read()
            except (aiohttp.ClientError, TimeoutError, ConnectionError):
                pass  # answered below as a truncated response, as when streaming
            finally:
                # Also on cancellation (the client left): a half-read connection is never reused.
                if body is None or too_large:
                    upstream.close()
                else:
                    upstream.release()
            if body is not None and not too_large:
                response_headers["Content-Length"] = str(len(body))
                return web.Response(
                    status=upstream.status,
                    reason=upstream.reason,
                    headers=response_headers,
                    body=body,
                )
            truncated = web.StreamResponse(
                status=upstream.status, reason=upstream.reason, headers=response_headers
            )
            with contextlib.suppress(ConnectionError):
                await truncated.prepare(request)
            _abort(request)
            return truncated

        response = web.StreamResponse(
            status=upstream.status, reason=upstream.reason, headers=response_headers
        )
        complete = False
        try:
            await response.prepare(request)
            if request.method != "HEAD" and upstream.status not in _NO_BODY_STATUSES:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
            complete = not too_large
        except (aiohttp.ClientError, TimeoutError, ConnectionError):
            # The response has started: nothing to render, only a truncated answer to signal.
            pass
        finally:
            # Also on cancellation (the client left): a half-read connection is never reused.
            if complete:
                upstream.release()
            else:
                upstream.close()
        if complete:
            with contextlib.suppress(ConnectionError):  # the client left after the last byte
                await response.write_eof()
            return response
        _abort(request)
        return response

    async def _forward_websocket(
        self,
        request: web.Request,
        url: URL,
        headers: CIMultiDict[str],
        route: _Route,
        extra_response_headers: Sequence[tuple[str, str]],
    ) -> web.StreamResponse:
        ws_headers = CIMultiDict(
            (name, value)
            for name, value in headers.items()
            if not name.lower().startswith("sec-websocket-")
        )
        protocols = tuple(
            p.strip()
            for value in request.headers.getall("Sec-WebSocket-Protocol", ())
            for p in value.split(",")
            if p.strip()
        )
        try:
            async with asyncio.timeout(route.handshake_seconds):
                upstream = await self._client.ws_connect(
                    url,
                    headers=ws_headers,
                    protocols=protocols,
                    autoclose=False,
                    autoping=False,
                    max_msg_size=_WS_MAX_MESSAGE_BYTES,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=_WS_CLOSE_SECONDS),
                )
        except aiohttp.WSServerHandshakeError as exc:
            # The upstream answered without upgrading (401, 404, ...): pass its status on.
            refused = web.Response(
                status=exc.status,
                headers=build_response_headers((exc.headers or {}).items()),
            )
            for name, value in extra_response_headers:
                refused.headers.add(name, value)
            return refused
        except TimeoutError as exc:
            raise UpstreamTimeoutError(reason=f"websocket handshake to {route.base}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailableError(reason=f"{type(exc).__name__} to {route.base}") from exc

        client = web.WebSocketResponse(
            protocols=(upstream.protocol,) if upstream.protocol else (),
            autoclose=False,
            autoping=False,
            compress=False,
            max_msg_size=_WS_MAX_MESSAGE_BYTES,
            timeout=_WS_CLOSE_SECONDS,
        )
        for name, value in extra_response_headers:
            client.headers.add(name, value)
        try:
            await client.prepare(request)
            await _relay(client, upstream)
        finally:
            if not upstream.closed:  # the client vanished (handler cancelled): "going away"
                await upstream.close(code=1001)
        return client


async def _relay(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Pump messages both ways until one side closes, then close the other with the same code.

    The upstream is always closed first: once the client's connection is closed aiohttp may
    cancel this handler. And aiohttp's client websocket, closed while another task reads it,
    sends 1000 instead of the given code; so its reader is stopped before it is closed.
    """
    to_upstream = asyncio.create_task(_pump(client, upstream))
    to_client = asyncio.create_task(_pump(upstream, client))
    try:
        await asyncio.wait((to_upstream, to_client), return_when=asyncio.FIRST_COMPLETED)
        if to_upstream.done():
            to_client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await to_client
            code, reason = to_upstream.result()
        else:
            code, reason = to_client.result()
        with contextlib.suppress(ConnectionError, aiohttp.ClientError):
            await upstream.close(code=code, message=reason)
        with contextlib.suppress(ConnectionError):
            # Safe while the client pump reads: the server side sends its frame first.
            await client.close(code=code, message=reason)
    finally:
        for task in (to_upstream, to_client):
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _pump(
    source: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    sink: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> tuple[int, bytes]:
    """Copy messages from `source` to `sink` until `source` closes; return its code and reason."""
    try:
        while True:
            msg = await source.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                await sink.send_str(msg.data)
            elif kind is WSMsgType.BINARY:
                await sink.send_bytes(msg.data)
            elif kind is WSMsgType.PING:
                await sink.ping(msg.data)
            elif kind is WSMsgType.PONG:
                await sink.pong(msg.data)
            elif kind is WSMsgType.CLOSE:
                # The caller answers it, after passing it on to the other side.
                code = msg.data if msg.data not in _WS_UNSENDABLE else 1000
                return code, (msg.extra or "").encode()
            else:  # CLOSING, CLOSED, ERROR: the other end went away without a close frame.
                return (1011 if kind is WSMsgType.ERROR else 1001), b""
    except (ConnectionError, aiohttp.ClientError):
        return 1011, b""


async def _limited(
    content: aiohttp.StreamReader, limit: int, too_large: list[bool]
) -> AsyncIterator[bytes]:
    """Yield the request body, stopping (and flagging) once it grows past `limit` bytes."""
    seen = 0
    async for chunk in content.iter_chunked(_CHUNK_BYTES):
        seen += len(chunk)
        if seen > limit:
            too_large.append(True)
            raise _BodyTooLarge
        yield chunk


def _is_small(method: str, status: int, headers: Mapping[str, str]) -> bool:
    """Whether to read the response whole: a body is expected, its Content-Length is at most
    `_WHOLE_BODY_BYTES`, and it is not an event stream (those are passed on as they happen)."""
    if method == "HEAD" or status < 200 or status in _NO_BODY_STATUSES:
        return False
    length = headers.get("Content-Length")
    if length is None or not (length.isascii() and length.isdigit()):
        return False
    if int(length) > _WHOLE_BODY_BYTES:
        return False
    return not headers.get("Content-Type", "").lower().startswith("text/event-stream")


def _is_websocket_upgrade(request: web.Request) -> bool:
    headers = request.headers
    upgrade = headers.get("Upgrade")
    if upgrade is None or upgrade.strip().lower() != "websocket":
        return False
    return any(
        token.strip().lower() == "upgrade"
        for value in headers.getall("Connection", ())
        for token in value.split(",")
    )


def _abort(request: web.Request) -> None:
    """Close the client connection at once: a truncated response must not look complete."""
    transport = request.transport
    if transport is not None:
        transport.abort()
