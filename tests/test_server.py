"""`sidecar run` as a real process: it listens, logs its start, and drains gracefully on SIGTERM."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from support.echo import HOLD_RELEASE

from sidecar.config.model import SidecarConfig
from sidecar.server import describe_upstream, run_until_signalled

# Safety net only: every wait below ends on an event, this bounds a broken build.
DEADLINE_SECONDS = 30


class Sidecar:
    """A sidecar process and the JSON lines it logs."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []

    async def wait_for_line(self, predicate: Any) -> dict[str, Any]:
        assert self.process.stderr is not None
        async with asyncio.timeout(DEADLINE_SECONDS):
            while True:
                raw = await self.process.stderr.readline()
                if not raw:
                    raise AssertionError(f"sidecar exited; it logged: {self.lines}")
                try:
                    entry = json.loads(raw)
                except ValueError:
                    entry = {"message": raw.decode(errors="replace"), "unparsed": True}
                self.lines.append(entry)
                if predicate(entry):
                    return entry


async def start_sidecar(tmp_path: Path, config: dict[str, Any]) -> Sidecar:
    config_file = tmp_path / "sidecar.yaml"
    config_file.write_text(yaml.safe_dump(config), encoding="utf-8")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "run",
        "-c",
        str(config_file),
        stderr=asyncio.subprocess.PIPE,
    )
    return Sidecar(process)


@pytest.fixture
async def sidecar(tmp_path: Path, echo_server: TestServer) -> AsyncIterator[tuple[Sidecar, str]]:
    upstream = str(echo_server.make_url("")).rstrip("/")
    config = {
        "version": 1,
        "upstream": upstream,
        "server": {
            "listen": f"127.0.0.1:{free_port()}",
            "internal_listen": f"127.0.0.1:{free_port()}",
            "shutdown_grace_seconds": DEADLINE_SECONDS,
        },
    }
    process = await start_sidecar(tmp_path, config)
    try:
        yield process, upstream
    finally:
        if process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def is_started(entry: dict[str, Any]) -> bool:
    return str(entry.get("message", "")).startswith("sidecar ") and "listen" in entry


async def test_startup_line_names_the_addresses_and_upstreams(
    sidecar: tuple[Sidecar, str],
) -> None:
    process, upstream = sidecar
    started = await process.wait_for_line(is_started)
    assert started["level"] == "info"
    assert started["upstreams"] == [f"/ -> {upstream}"]
    async with aiohttp.ClientSession() as client:
        async with client.get(f"http://{started['listen']}/echo") as response:
            assert response.status == 200
        async with client.get(f"http://{started['internal_listen']}/healthz") as response:
            assert await response.json() == {"status": "ok"}
        async with client.get(f"http://{started['internal_listen']}/readyz") as response:
            assert response.status == 200
        async with client.get(f"http://{started['internal_listen']}/echo") as response:
            assert response.status == 404  # the internal port serves health only
    process.process.send_signal(signal.SIGINT)
    assert await process.process.wait() == 0


async def test_sigterm_lets_the_request_in_flight_finish_and_refuses_new_ones(
    sidecar: tuple[Sidecar, str], echo_server: TestServer
) -> None:
    process, _ = sidecar
    started = await process.wait_for_line(is_started)
    address = started["listen"]
    host, port = address.rsplit(":", 1)
    async with (
        aiohttp.ClientSession() as client,
        client.get(f"http://{address}/hold") as response,
    ):
        assert response.status == 200
        assert await response.content.readline() == b"first\n"  # the request is in flight

        process.process.send_signal(signal.SIGTERM)
        await process.wait_for_line(lambda e: str(e["message"]).startswith("shutting down"))
        async with asyncio.timeout(DEADLINE_SECONDS):
            while True:
                try:
                    _, writer = await asyncio.open_connection(host, int(port))
                except (ConnectionRefusedError, ConnectionResetError):
                    break  # reset: it was queued as the listener closed; not served either
                writer.close()
                await asyncio.sleep(0.01)

        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection(host, int(port))

        echo_server.app[HOLD_RELEASE].set()
        assert await response.content.read() == b"last\n"
    async with asyncio.timeout(DEADLINE_SECONDS):
        assert await process.process.wait() == 0
    assert process.process.stderr is not None
    rest = [json.loads(line) for line in (await process.process.stderr.read()).splitlines()]
    messages = [entry["message"] for entry in process.lines + rest]
    assert "sidecar stopped" in messages
    assert not any(entry.get("exception") for entry in process.lines + rest)


def is_handover(entry: dict[str, Any]) -> bool:
    return entry.get("message") == "connection handed over"


async def test_workers_take_turns_with_long_lived_connections(
    tmp_path: Path, echo_server: TestServer
) -> None:
    """8 keep-alive connections (as a load balancer or wrk holds them) are dealt out in turn, 4
    to each of 2 workers, not left to the kernel's hash of the client's address and port."""
    port = free_port()
    config = {
        "version": 1,
        "upstream": str(echo_server.make_url("")).rstrip("/"),
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2},
        "logging": {"level": "debug", "format": "json"},
    }
    process = await start_sidecar(tmp_path, config)
    try:
        started = [await process.wait_for_line(is_started) for _ in range(2)]
        assert all(entry["listen"] == f"127.0.0.1:{port}" for entry in started)
        sessions = [
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) for _ in range(8)
        ]
        try:
            for _ in range(3):  # each connection is kept alive and reused
                for client in sessions:
                    async with client.get(f"http://127.0.0.1:{port}/echo") as response:
                        assert response.status == 200
                        await response.read()
        finally:
            for client in sessions:
                await client.close()
        handed = [await process.wait_for_line(is_handover) for _ in range(8)]
        served_by = collections.Counter(entry["pid"] for entry in handed)
        assert served_by == {entry["pid"]: 4 for entry in started}
        process.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_SECONDS):
            assert await process.process.wait() == 0
    finally:
        if process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


def test_describe_upstream_hides_credentials() -> None:
    assert describe_upstream("http://user:pw@app:8080/base") == "http://app:8080/base"
    assert describe_upstream("http://app:8080") == "http://app:8080"


async def test_workers_share_the_port_and_all_drain_on_sigterm(
    tmp_path: Path, echo_server: TestServer
) -> None:
    port = free_port()
    config = {
        "version": 1,
        "upstream": str(echo_server.make_url("")).rstrip("/"),
        "server": {"listen": f"127.0.0.1:{port}", "workers": 2},
    }
    process = await start_sidecar(tmp_path, config)
    try:
        first = await process.wait_for_line(is_started)
        second = await process.wait_for_line(is_started)
        assert {first["worker"], second["worker"]} == {0, 1}
        assert first["pid"] != second["pid"]
        async with aiohttp.ClientSession() as client:
            for _ in range(4):
                async with client.get(f"http://127.0.0.1:{port}/echo") as response:
                    assert response.status == 200
        process.process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_SECONDS):
            assert await process.process.wait() == 0
    finally:
        if process.process.returncode is None:
            process.process.kill()
            await process.process.wait()


async def test_a_serving_process_exempts_its_start_up_heap_from_the_collector(
    echo_server: TestServer,
) -> None:
    """Each full collection walked the few hundred thousand objects built at start and stalled
    every request in flight (the benchmark's p99 was 8x its p50); a serving process freezes them."""
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "server": {"listen": f"127.0.0.1:{free_port()}"},
            "upstream": str(echo_server.make_url("/")),
        }
    )
    frozen: asyncio.Queue[int] = asyncio.Queue()
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(
        run_until_signalled(config, started=lambda _: frozen.put_nowait(gc.get_freeze_count()))
    )
    try:
        frozen_at_start = await asyncio.wait_for(frozen.get(), DEADLINE_SECONDS)
        # Modules alone are tens of thousands of objects; a few would mean nothing was frozen.
        assert frozen_at_start > 10_000
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://{config.server.listen}/") as response,
        ):
            assert response.status == 200
    finally:
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        gc.unfreeze()
