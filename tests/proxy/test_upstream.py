"""sidecar.proxy.upstream against a scripted HTTP/1.1 server: reuse, framing, misbehaviour.

The scripted server (raw asyncio on 127.0.0.1) answers each request head with the bytes a test
gives it, so the upstream can misbehave in ways a real server will not: a body cut short,
Content-Length beside Transfer-Encoding, an unasked 101, bytes after the response, an idle
connection closed just as it is reused, no answer at all. The forwarder's own tests
(tests/proxy/test_forward.py) cover the same path end to end through sidecar.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import uvloop

from sidecar.proxy.upstream import (
    MAX_HEAD_BYTES,
    UpstreamBrokenError,
    UpstreamConnectError,
    UpstreamPool,
    UpstreamTimeoutError,
    serialize_request_head,
)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Seen: yes\r\n\r\nhello"
HEAD = serialize_request_head("GET", "/x?y=1", [("Host", "backend")])

Script = Callable[[int, int], bytes | None]
"""(connection number, request number on it) -> the bytes to answer, or None to close."""


@dataclass
class Scripted:
    """A raw HTTP server: answers each request head as the script says; records what came."""

    script: Script
    port: int = 0
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        number = self.connections
        self.writers.append(writer)
        requests = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                answer = self.script(number, requests)
                requests += 1
                if answer is None:
                    break
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[Scripted]:
    server_state = Scripted(script)
    server = await asyncio.start_server(server_state.handle, "127.0.0.1", 0)
    server_state.port = server.sockets[0].getsockname()[1]
    try:
        yield server_state
    finally:
        for writer in server_state.writers:
            writer.close()
        server.close()
        await server.wait_closed()


def pool_for(server: Scripted, *, read_timeout: float | None = 5.0) -> UpstreamPool:
    return UpstreamPool("127.0.0.1", server.port, connect_timeout=5.0, read_timeout=read_timeout)


async def get(pool: UpstreamPool) -> tuple[int, list[tuple[str, str]], bytes]:
    connection = await pool.send(HEAD)
    try:
        return connection.status, connection.headers, await connection.read_all()
    finally:
        pool.release(connection)


def always(answer: bytes) -> Script:
    return lambda _connection, _request: answer


async def test_the_request_head_reaches_the_upstream_byte_exact() -> None:
    head = serialize_request_head(
        "GET", "/caf%C3%A9?q=%20", [("Host", "b"), ("X-Name", "Zoë"), ("Cookie", "a=1; b=2")]
    )
    async with scripted(always(OK)) as server:
        pool = pool_for(server)
        connection = await pool.send(head)
        pool.release(connection)
        pool.close()
    assert server.heads == [
        b"GET /caf%C3%A9?q=%20 HTTP/1.1\r\n"
        b"Host: b\r\nX-Name: Zo\xc3\xab\r\nCookie: a=1; b=2\r\n\r\n"
    ]


def test_bytes_the_incoming_parser_kept_as_surrogates_go_out_unchanged() -> None:
    value = b"\xff\xfe raw".decode("utf-8", "surrogateescape")
    assert serialize_request_head("GET", "/", [("X-Raw", value)]).endswith(
        b"X-Raw: \xff\xfe raw\r\n\r\n"
    )


@pytest.mark.parametrize("bad", ["a\r\nInjected: 1", "a\nb", "a\rb", "nul\x00"])
def test_a_character_that_would_split_or_cut_the_head_is_refused(bad: str) -> None:
    # Other control characters never get this far: aiohttp's parser answers 400 to a request
    # carrying one (tests/security), and identity headers refuse them when they are built.
    with pytest.raises(ValueError):
        serialize_request_head("GET", "/", [("X-Value", bad)])
    with pytest.raises(ValueError):
        serialize_request_head("GET", "/" + bad, [])


def test_a_tab_in_a_value_is_allowed() -> None:
    assert b"X-Value: a\tb\r\n" in serialize_request_head("GET", "/", [("X-Value", "a\tb")])


async def test_a_kept_alive_connection_serves_the_next_request() -> None:
    async with scripted(always(OK)) as server:
        pool = pool_for(server)
        for _ in range(3):
            status, headers, body = await get(pool)
            assert (status, body) == (200, b"hello")
            assert ("X-Seen", "yes") in headers
        pool.close()
    assert server.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ],
    ids=["connection-close", "http-1.0"],
)
async def test_a_connection_the_upstream_will_close_is_not_reused(answer: bytes) -> None:
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        assert (await get(pool))[2] == b"hello"
        assert (await get(pool))[2] == b"hello"
        pool.close()
    assert server.connections == 2


async def test_a_body_that_runs_until_the_upstream_closes_is_complete_at_the_close() -> None:
    answer = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it"
    async with scripted(lambda _c, _r: answer) as server:
        pool = pool_for(server)
        connection = await pool.send(HEAD)
        server.writers[0].close()  # the end of the body
        assert await connection.read_all() == b"all of it"
        pool.release(connection)
        assert pool.idle_count == 0


async def test_a_chunked_body_arrives_whole() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    )
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        status, headers, body = await get(pool)
        pool.close()
    assert (status, body) == (200, b"abcde")
    assert ("Transfer-Encoding", "chunked") in headers  # the forwarder drops hop-by-hop headers


async def test_interim_responses_are_skipped() -> None:
    answer = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + OK
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        status, headers, body = await get(pool)
        pool.close()
    assert (status, body) == (200, b"hello")
    assert ("Link", "</a.css>") not in headers


async def test_an_empty_header_value_is_kept() -> None:
    answer = b"HTTP/1.1 200 OK\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n"
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        _, headers, _ = await get(pool)
        pool.close()
    assert ("X-Empty", "") in headers


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n",
        b"HTTP/1.1 200 OK\r\nX-Bad: a\rb\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
    ids=["cl-and-te", "two-lengths", "bad-chunk", "cr-in-value", "101-upgrade", "101", "garbage"],
)
async def test_an_answer_llhttp_refuses_fails_and_closes_the_connection(answer: bytes) -> None:
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        with pytest.raises(UpstreamBrokenError, match=r"invalid response|switched protocols"):
            await get(pool)
        assert pool.idle_count == 0


async def test_a_head_without_end_is_refused_at_the_limit() -> None:
    endless = b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * (MAX_HEAD_BYTES + 1024)
    async with scripted(always(endless)) as server:
        pool = pool_for(server)
        with pytest.raises(UpstreamBrokenError, match="response head over"):
            await get(pool)
        assert pool.idle_count == 0


async def test_large_headers_under_the_limit_pass() -> None:
    cookies = b"".join(b"Set-Cookie: c%d=%s\r\n" % (n, b"v" * 4000) for n in range(50))
    answer = b"HTTP/1.1 200 OK\r\n" + cookies + b"Content-Length: 2\r\n\r\nok"
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        _, headers, body = await get(pool)
        pool.close()
    assert body == b"ok"
    assert sum(1 for name, _ in headers if name == "Set-Cookie") == 50


async def test_a_body_cut_short_fails_and_is_not_reused() -> None:
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this"

    def script(connection: int, _request: int) -> bytes | None:
        return cut if connection == 1 else OK

    async with scripted(script) as server:
        pool = pool_for(server)
        connection = await pool.send(HEAD)
        server.writers[0].close()
        with pytest.raises(UpstreamBrokenError, match="closed the connection early"):
            await connection.read_all()
        pool.release(connection)
        assert pool.idle_count == 0
        assert (await get(pool))[2] == b"hello"  # a new connection
        pool.close()


async def test_bytes_after_the_response_keep_the_response_but_not_the_connection() -> None:
    async with scripted(always(OK + OK)) as server:
        pool = pool_for(server)
        assert (await get(pool))[2] == b"hello"
        assert pool.idle_count == 0
        assert (await get(pool))[2] == b"hello"
        pool.close()
    assert server.connections == 2


async def test_an_idle_connection_closed_as_it_is_reused_is_retried_on_a_new_one() -> None:
    # Connection 1 answers once, then closes on the next request without a byte: the race of a
    # keep-alive timeout on the upstream. The request must succeed on connection 2.
    def script(connection: int, request: int) -> bytes | None:
        return None if (connection, request) == (1, 1) else OK

    async with scripted(script) as server:
        pool = pool_for(server)
        assert (await get(pool))[2] == b"hello"
        assert (await get(pool))[2] == b"hello"
        pool.close()
    assert server.connections == 2


async def test_a_new_connection_closed_without_an_answer_is_not_retried() -> None:
    async with scripted(lambda _c, _r: None) as server:
        pool = pool_for(server)
        with pytest.raises(UpstreamBrokenError):
            await get(pool)
    assert server.connections == 1


async def test_an_upstream_that_never_answers_times_out() -> None:
    never = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await never.wait()
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = UpstreamPool("127.0.0.1", port, connect_timeout=5.0, read_timeout=0.2)
    try:
        with pytest.raises(UpstreamTimeoutError, match=r"no answer within 0\.2 s"):
            await asyncio.wait_for(pool.send(HEAD), 10)
    finally:
        never.set()
        server.close()
        await server.wait_closed()


async def test_a_port_nobody_listens_on_is_a_connect_error() -> None:
    async with scripted(always(OK)) as server:
        port = server.port
    pool = UpstreamPool("127.0.0.1", port, connect_timeout=5.0, read_timeout=5.0)
    with pytest.raises(UpstreamConnectError, match="cannot connect"):
        await pool.send(HEAD)


async def test_reading_pauses_while_the_body_is_not_consumed() -> None:
    """A slow client must not make sidecar buffer the whole download."""
    size = 16 * 1024 * 1024
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    async with scripted(always(answer)) as server:
        pool = pool_for(server)
        connection = await pool.send(HEAD)
        for _ in range(50):  # let the upstream write as much as the sockets take
            await asyncio.sleep(0.01)
        buffered = sum(len(chunk) for chunk in connection._chunks)
        assert buffered < 2 * 1024 * 1024
        received = 0
        while chunk := await connection.read():
            received += len(chunk)
        assert received == size
        pool.release(connection)
        assert pool.idle_count == 1
        pool.close()


async def test_a_paused_download_does_not_time_out_while_the_client_is_slow() -> None:
    size = 4 * 1024 * 1024
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
    async with scripted(always(answer)) as server:
        pool = pool_for(server, read_timeout=0.1)
        connection = await pool.send(HEAD)
        await asyncio.sleep(0.3)  # the "client" reads nothing for three read timeouts
        received = 0
        while chunk := await connection.read():
            received += len(chunk)
        assert received == size
        pool.release(connection)
        pool.close()


async def test_closing_the_pool_closes_idle_connections() -> None:
    async with scripted(always(OK)) as server:
        pool = pool_for(server)
        connection = await pool.send(HEAD)
        await connection.read_all()
        pool.release(connection)
        assert pool.idle_count == 1
        pool.close()
        assert pool.idle_count == 0
        await asyncio.sleep(0)
        assert connection.closed or not connection.reusable


def test_it_works_on_uvloop_too() -> None:
    """Sidecar's server runs on uvloop, whose transports are not asyncio's classes."""

    async def main() -> tuple[int, bytes]:
        async with scripted(always(OK)) as server:
            pool = pool_for(server)
            status, _, body = await get(pool)
            status, _, body = await get(pool)
            pool.close()
            assert server.connections == 1
            return status, body

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(main()) == (200, b"hello")
