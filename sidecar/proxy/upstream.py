"""Pooled HTTP/1.1 connections to one upstream, for requests without a body, parsed by llhttp.

aiohttp's client cost about a fifth of sidecar's CPU per proxied request (py-spy, 32 connections):
per request it builds a request object, a URL, timers, traces and a response object. A proxy
needs less: `UpstreamPool` writes the request head it is given in one write on a kept-alive
connection, parses the answer with llhttp (through `httptools`; the parser of Node.js, and the one
aiohttp's own C parser wraps) and hands back the status and headers, then the body, whole or chunk
by chunk under flow control. `sidecar.proxy.forward` uses it for GET requests without a body to
http:// upstreams; everything else (bodies, HEAD, websockets, https) goes through aiohttp.

Rules:
- A connection is reused only after a complete response that allows keep-alive. A response that
  breaks off, one llhttp refuses (Content-Length beside Transfer-Encoding, a bad chunk size, ...),
  a byte on an idle connection, a second response, a 101, or a timeout closes it.
- Interim 1xx responses (other than 101) are skipped, as aiohttp's client does.
- An answer whose head (status line and headers) runs past `MAX_HEAD_BYTES` is refused, so a
  broken upstream cannot make sidecar buffer headers without end.
- A request that fails on a reused connection before any byte of the answer arrived is retried
  once on a new connection: the upstream closed the idle connection as it was reused, and a GET
  may be repeated.
- `read_timeout` bounds the wait for each read, as aiohttp's `sock_read` does; it is suspended
  while reading is paused because the client is slow.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Iterable
from typing import cast

import httptools

_HIGH_WATER = 256 * 1024  # buffered body bytes at which reading from the upstream pauses
_LOW_WATER = 64 * 1024  # ... and resumes
_MAX_IDLE = 256  # idle connections kept per upstream; more are closed on release
# Bytes an answer may take before its headers are complete (interim 1xx answers included);
# aiohttp's client allowed 64 KiB per header line, this bounds the whole head.
MAX_HEAD_BYTES = 1024 * 1024
_DECODE = ("utf-8", "surrogateescape")  # what aiohttp's parser does with header bytes


class UpstreamError(Exception):
    """The exchange with the upstream failed; the message is safe to log (no header values)."""


class UpstreamConnectError(UpstreamError):
    """No connection could be made."""


class UpstreamTimeoutError(UpstreamError):
    """Connecting, or waiting for the next bytes of the answer, took too long."""


class UpstreamBrokenError(UpstreamError):
    """The connection closed early, or the answer was not valid HTTP/1.1."""


def serialize_request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """`METHOD target HTTP/1.1`, the header lines and the blank line, as bytes for the wire.

    Values are encoded as aiohttp's parser decoded them (UTF-8 with surrogate escapes), so bytes
    pass through unchanged. CR, LF or NUL anywhere (they would split or cut the head) raises
    `ValueError`. Only those three are looked for, with `in` (memchr: 0.1 µs each for a 13 KB head,
    where a regex for every control character took 26 µs, a fifth of a request's CPU): the
    incoming parser refuses every control character but tab, and the identity header builder
    refuses them too, so this is the last guard against header injection, not the only one.
    """
    lines = [f"{method} {target} HTTP/1.1"]
    lines.extend(f"{name}: {value}" for name, value in headers)
    text = "\t".join(lines)
    if "\r" in text or "\n" in text or "\x00" in text:
        raise ValueError("CR, LF or NUL in the request head")
    lines.append("\r\n")
    return "\r\n".join(lines).encode(*_DECODE)


class _Unexpected(Exception):
    """Raised inside a parser callback to stop llhttp: the upstream sent what it must not."""


class UpstreamConnection(asyncio.Protocol):
    """One connection to the upstream and the exchange in progress on it (at most one)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout: float | None) -> None:
        self._loop = loop
        self._read_timeout = read_timeout
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.closed = False
        self.busy = False
        self._clear()

    def _clear(self) -> None:
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.received = False
        self.error: UpstreamError | None = None
        self._eof_body = False
        self._interim = False
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._last_read = 0.0
        self._head_bytes = 0

    # --- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.complete:
            # Nothing was asked: a response nobody requested, or bytes after the answer.
            self.keep_alive = False
            self.abort()
            return
        self.received = True
        self._last_read = self._loop.time()
        if not self.head_done:
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEAD_BYTES:
                self._fail(UpstreamBrokenError(f"response head over {MAX_HEAD_BYTES} bytes"))
                return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamBrokenError("the upstream switched protocols unasked"))
        except httptools.HttpParserError as exc:
            if self.complete:  # a second response after a complete one: keep the first
                self.keep_alive = False
                self.abort()
                return
            cause = exc.__context__ if isinstance(exc.__context__, _Unexpected) else exc
            self._fail(UpstreamBrokenError(f"invalid response from the upstream: {cause}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._cancel_timer()
        if self.busy and not self.complete and self.error is None:
            if self.head_done and self._eof_body and exc is None:
                self.complete = True  # the body ran until the upstream closed: that is its end
            else:
                self.error = UpstreamBrokenError("the upstream closed the connection early")
        self._wake()

    def pause_writing(self) -> None:  # the request head is one small write: nothing to pause
        pass

    def resume_writing(self) -> None:
        pass

    # --- llhttp callbacks (httptools) ---------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.head_done:
            raise _Unexpected("a second response")
        self.headers = []
        self.reason = ""

    def on_status(self, reason: bytes) -> None:
        self.reason += reason.decode(*_DECODE)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode(*_DECODE), value.decode(*_DECODE)))

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200:
            if status == 101:
                raise _Unexpected("101 without an upgrade request")
            self._interim = True  # 100, 102, 103: skipped; the real answer follows
            return
        self.status = status
        self.keep_alive = self._parser.should_keep_alive()
        if not self.keep_alive:
            framed = ("content-length", "transfer-encoding")
            self._eof_body = not any(name.lower() in framed for name, _ in self.headers)
        self.head_done = True
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
        self._cancel_timer()
        self._wake()

    # --- the exchange -------------------------------------------------------------------------

    async def exchange(self, head: bytes) -> None:
        """Send `head`; return once the response's status and headers are in (`UpstreamError`
        otherwise, with the connection closed)."""
        transport = self._transport
        if transport is None or self.closed:
            raise UpstreamBrokenError("the upstream closed the connection early")
        self._clear()
        self.busy = True
        transport.write(head)
        self._last_read = self._loop.time()
        if self._read_timeout:
            self._timer = self._loop.call_at(
                self._last_read + self._read_timeout, self._check_timeout
            )
        try:
            while not self.head_done:
                if self.error is not None:
                    raise self.error
                await self._wait()
        except BaseException:
            self.abort()
            raise

    async def read(self) -> bytes:
        """The next piece of the body; b"" once it is complete. Raises `UpstreamError`."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._paused and self._buffered < _LOW_WATER and self._transport is not None:
                    self._paused = False
                    self._last_read = self._loop.time()
                    self._transport.resume_reading()
                return chunk
            if self.error is not None:
                raise self.error
            if self.complete:
                return b""
            await self._wait()

    async def read_all(self) -> bytes:
        """The whole body (for small ones). Raises `UpstreamError`."""
        while not self.complete:
            if self.error is not None:
                raise self.error
            await self._wait()
        chunks = self._chunks
        if len(chunks) == 1:
            body = chunks.popleft()
        else:
            body = b"".join(chunks)
            chunks.clear()
        self._buffered = 0
        return body

    @property
    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and not self._chunks

    def abort(self) -> None:
        self._cancel_timer()
        if self._transport is not None:
            self._transport.abort()

    # --- internals ----------------------------------------------------------------------------

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self.keep_alive = False
        self.abort()
        self._wake()

    async def _wait(self) -> None:
        waiter = self._loop.create_future()
        self._waiter = waiter
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _check_timeout(self) -> None:
        self._timer = None
        timeout = self._read_timeout
        if not self.busy or self.complete or self.error is not None or not timeout:
            return
        now = self._loop.time()
        if self._paused:  # waiting for the client, not for the upstream
            self._timer = self._loop.call_at(now + timeout, self._check_timeout)
            return
        due = self._last_read + timeout
        if now < due:
            self._timer = self._loop.call_at(due, self._check_timeout)
            return
        self._fail(UpstreamTimeoutError(f"no answer within {timeout:g} s"))

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class UpstreamPool:
    """Kept-alive connections to one `host:port`, newest first."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        connect_timeout: float | None,
        read_timeout: float | None,
        max_idle: int = _MAX_IDLE,
    ) -> None:
        self._host = host
        self._port = port
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_idle = max_idle
        self._idle: list[UpstreamConnection] = []
        self._closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    async def send(self, head: bytes) -> UpstreamConnection:
        """A connection on which `head` was sent and the response head has arrived. Give it back
        with `release` when done, whatever happened."""
        idle = self._idle
        while idle:
            connection = idle.pop()
            if connection.closed:
                continue
            try:
                await connection.exchange(head)
            except UpstreamBrokenError:
                if connection.received:
                    raise  # the upstream had begun to answer: not a stale connection
                break  # closed as it was reused: once more on a new connection
            return connection
        connection = await self._connect()
        await connection.exchange(head)
        return connection

    def release(self, connection: UpstreamConnection) -> None:
        """Keep `connection` for the next request if its exchange ended cleanly, else close it."""
        connection.busy = False
        if connection.reusable and not self._closed and len(self._idle) < self._max_idle:
            self._idle.append(connection)
        else:
            connection.abort()

    def close(self) -> None:
        """Close the idle connections; busy ones are closed when released."""
        self._closed = True
        for connection in self._idle:
            connection.abort()
        self._idle.clear()

    async def _connect(self) -> UpstreamConnection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, connection = await loop.create_connection(
                    lambda: UpstreamConnection(loop, self._read_timeout), self._host, self._port
                )
        except TimeoutError as exc:
            raise UpstreamTimeoutError(f"no connection within {self._connect_timeout:g} s") from exc
        except OSError as exc:
            raise UpstreamConnectError(f"cannot connect ({type(exc).__name__})") from exc
        return connection
