"""Slow-header clients (slowloris) against the real server: `python -m sidecar run`.

A slowloris client opens many connections and sends its request head a few bytes at a time, so
each connection stays open; sidecar closes any connection whose head has not fully arrived within
`server.header_read_timeout_seconds` (1 s here), however steadily it trickles, and keeps serving
everybody else meanwhile. Bodies and idle keep-alive connections are not cut. These are the only
cases in the suite that take real time: a socket deadline cannot run on a fake clock, so each
wait is bounded and short.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from sidecar.dev.provider import DevProvider

from .conftest import (
    ALICE,
    Seen,
    SidecarProcess,
    build_config_data,
    make_recording_echo_app,
    register,
    start_sidecar_process,
)

DEADLINE = 1.0
SLACK = 2.5  # the deadline plus this is the most a cut may take on a busy 2-core machine


@pytest.fixture
async def sidecar(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
    sidecar_processes: list[SidecarProcess],
) -> AsyncIterator[SidecarProcess]:
    provider = DevProvider(auto_login=ALICE)
    issuer = await provider.start()
    seen: list[Seen] = []
    echo = await aiohttp_server(make_recording_echo_app(seen))
    data = build_config_data(
        issuer=issuer,
        upstream=str(echo.make_url("")).rstrip("/"),
        server={"header_read_timeout_seconds": DEADLINE, "shutdown_grace_seconds": 1},
    )
    running = await start_sidecar_process(data, tmp_path)
    sidecar_processes.append(running)
    register(provider, running.origin)
    yield running
    await provider.stop()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes the connection within `seconds`."""
    try:
        while True:
            block = await asyncio.wait_for(reader.read(4096), seconds)
            if not block:
                return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def test_a_trickled_head_is_cut_at_the_deadline(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    started = time.monotonic()
    writer.write(f"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n".encode())

    async def trickle() -> None:
        with contextlib.suppress(ConnectionError):
            for n in range(40):
                writer.write(f"X-Slow-{n}: a\r\n".encode())
                await writer.drain()
                await asyncio.sleep(0.2)

    trickling = asyncio.create_task(trickle())
    try:
        assert await _closed_within(reader, DEADLINE + SLACK)
        elapsed = time.monotonic() - started
        assert DEADLINE * 0.8 <= elapsed < DEADLINE + SLACK, elapsed
    finally:
        trickling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await trickling
        writer.close()


async def test_a_silent_connection_is_cut(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        assert await _closed_within(reader, DEADLINE + SLACK)
    finally:
        writer.close()


async def test_many_slow_clients_do_not_block_others(sidecar: SidecarProcess) -> None:
    held = []
    for _ in range(200):
        reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
        writer.write(b"GET /public/x HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        held.append((reader, writer))
    try:
        started = time.monotonic()
        async with aiohttp.ClientSession() as http, http.get(sidecar.url("/public/ok")) as r:
            assert r.status == 200
        assert time.monotonic() - started < DEADLINE
        closed = await asyncio.gather(*(_closed_within(r, DEADLINE + SLACK) for r, _ in held))
        assert all(closed)
    finally:
        for _, writer in held:
            writer.close()


async def test_a_slow_body_is_not_cut(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    try:
        writer.write(
            f"POST /public/upload HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n"
            "Content-Length: 6\r\nConnection: close\r\n\r\n".encode()
        )
        for _ in range(6):
            await asyncio.sleep(DEADLINE / 3)  # the body takes twice the head deadline
            writer.write(b"x")
            await writer.drain()
        response = await asyncio.wait_for(reader.read(), DEADLINE + SLACK)
        assert response.startswith(b"HTTP/1.1 200"), response[:100]
        assert b'"body_length": 6' in response
    finally:
        writer.close()


async def test_an_idle_keep_alive_connection_is_not_cut(sidecar: SidecarProcess) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", sidecar.port)
    request = f"GET /public/x HTTP/1.1\r\nHost: 127.0.0.1:{sidecar.port}\r\n\r\n".encode()
    try:
        for _ in range(2):
            writer.write(request)
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            await asyncio.sleep(DEADLINE * 1.5)  # idle between requests, longer than the deadline
    finally:
        writer.close()
