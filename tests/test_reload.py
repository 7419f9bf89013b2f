"""Live config reload: in-process against a ReloadingServer on a real socket, then for real with
`python -m sidecar run` under load while its config file is rewritten."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from joserfc import jwt
from support.echo import HOLD_RELEASE

from sidecar import keys
from sidecar.app import build_handler_args
from sidecar.auth.backchannel import LOGOUT_EVENT
from sidecar.config.load import load_config
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.reload import ReloadingRunner, ReloadingServer, fingerprint

ServerFactory = Callable[..., Awaitable[TestServer]]
DEADLINE_SECONDS = 30  # safety net only: every wait ends on an event or a condition
CLIENT_ID = "reload-tests"
CLIENT_SECRET = "client-secret-for-reload-tests"
SECRET_A = "a-session-secret-of-at-least-32-characters"
SECRET_B = "another-session-secret-of-at-least-32-chars"
ALICE = {"sub": "alice", "email": "alice@example.org", "email_verified": True}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def named_backend(name: str) -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"backend": name, "path": request.path})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    return app


def write_config(path: Path, config: dict[str, Any]) -> None:
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


class Running:
    """A ReloadingServer listening on 127.0.0.1, and a client for it."""

    def __init__(self, reloading: ReloadingServer, runner: ReloadingRunner, base: str) -> None:
        self.reloading = reloading
        self.runner = runner
        self.base = base

    async def get(self, client: aiohttp.ClientSession, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with client.get(self.base + path, **kwargs) as response:
            text = await response.text()
            try:
                return response.status, json.loads(text)
            except ValueError:
                return response.status, text


@pytest.fixture
async def run_file() -> AsyncIterator[Callable[[Path], Awaitable[Running]]]:
    runners: list[ReloadingRunner] = []

    async def start(path: Path) -> Running:
        config = load_config(path)
        reloading = ReloadingServer(config, path=path, ready_timeout_seconds=5)
        runner = ReloadingRunner(reloading, handler_args=build_handler_args(config))
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        return Running(reloading, runner, f"http://127.0.0.1:{port}")

    yield start
    for runner in runners:
        await runner.cleanup()


async def test_reload_sends_new_requests_to_the_new_upstream(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    run_file: Callable[[Path], Awaitable[Running]],
) -> None:
    a = await aiohttp_server(named_backend("a"))
    b = await aiohttp_server(named_backend("b"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(a.make_url(""))})
    running = await run_file(path)
    async with aiohttp.ClientSession() as client:
        assert await running.get(client, "/x") == (200, {"backend": "a", "path": "/x"})
        write_config(
            path,
            {
                "version": 1,
                "upstreams": [
                    {"path": "/", "url": str(a.make_url(""))},
                    {"path": "/b", "url": str(b.make_url(""))},
                ],
            },
        )
        result = await running.reloading.reload()
        assert result.outcome == "applied"
        # The same kept-alive connection: its next request already sees the new routes.
        assert await running.get(client, "/b/y") == (200, {"backend": "b", "path": "/b/y"})
        assert await running.get(client, "/x") == (200, {"backend": "a", "path": "/x"})


async def test_request_in_flight_finishes_on_the_old_configuration(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    echo_server: TestServer,
    run_file: Callable[[Path], Awaitable[Running]],
) -> None:
    b = await aiohttp_server(named_backend("b"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(echo_server.make_url(""))})
    running = await run_file(path)
    old = running.reloading.current
    async with aiohttp.ClientSession() as client, client.get(running.base + "/hold") as held:
        assert await held.content.readline() == b"first\n"  # in flight on the old config
        write_config(path, {"version": 1, "upstream": str(b.make_url(""))})
        assert (await running.reloading.reload()).outcome == "applied"
        async with aiohttp.ClientSession() as other:
            assert await running.get(other, "/new") == (200, {"backend": "b", "path": "/new"})
        assert old.in_flight == 1
        assert not old.app[keys.HTTP_CLIENT].closed  # its upstream pool is still open
        echo_server.app[HOLD_RELEASE].set()
        assert await held.content.read() == b"last\n"
    async with asyncio.timeout(DEADLINE_SECONDS):
        while not old.app[keys.HTTP_CLIENT].closed:  # closed once its last request returned
            await asyncio.sleep(0.01)
    assert old.in_flight == 0


async def test_shutdown_drains_a_request_still_in_flight_on_a_retired_configuration(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    echo_server: TestServer,
    run_file: Callable[[Path], Awaitable[Running]],
) -> None:
    b = await aiohttp_server(named_backend("b"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(echo_server.make_url(""))})
    running = await run_file(path)
    old = running.reloading.current
    async with aiohttp.ClientSession() as client, client.get(running.base + "/hold") as held:
        assert await held.content.readline() == b"first\n"
        write_config(path, {"version": 1, "upstream": str(b.make_url(""))})
        assert (await running.reloading.reload()).outcome == "applied"
        stopping = asyncio.create_task(running.runner.cleanup())  # SIGTERM's drain
        await asyncio.sleep(0)
        assert not stopping.done()
        echo_server.app[HOLD_RELEASE].set()
        assert await held.content.read() == b"last\n"  # finished on the retired configuration
    async with asyncio.timeout(DEADLINE_SECONDS):
        await stopping
    assert old.app[keys.HTTP_CLIENT].closed
    assert running.reloading.current.app[keys.HTTP_CLIENT].closed


async def test_invalid_config_is_refused_and_the_old_one_keeps_serving(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    run_file: Callable[[Path], Awaitable[Running]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await aiohttp_server(named_backend("a"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(a.make_url(""))})
    running = await run_file(path)
    path.write_text("version: 1\nupstream: ftp://nowhere\nserver:\n  listn: x\n", encoding="utf-8")
    with caplog.at_level(logging.ERROR, logger="sidecar.reload"):
        result = await running.reloading.reload("SIGHUP")
    assert result.outcome == "invalid"
    assert any("upstream" in problem for problem in result.problems)
    assert any("listn" in problem for problem in result.problems)
    refused = [r for r in caplog.records if "reload refused" in r.getMessage()]
    assert refused and "server.listn" in refused[0].getMessage()
    async with aiohttp.ClientSession() as client:
        assert await running.get(client, "/x") == (200, {"backend": "a", "path": "/x"})


async def test_config_whose_provider_never_gets_ready_is_refused(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    run_file: Callable[[Path], Awaitable[Running]],
) -> None:
    a = await aiohttp_server(named_backend("a"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(a.make_url(""))})
    running = await run_file(path)
    running.reloading._ready_timeout = 0.2
    write_config(
        path,
        {
            "version": 1,
            "upstream": str(a.make_url("")),
            "provider": {
                "issuer": f"http://127.0.0.1:{free_port()}",
                "client_id": "x",
                "client_secret": "y",
            },
            "session": {"secret": SECRET_A},
        },
    )
    result = await running.reloading.reload()
    assert result.outcome == "not_ready"
    assert any("provider" in problem for problem in result.problems)
    async with aiohttp.ClientSession() as client:
        assert (await running.get(client, "/x"))[0] == 200  # still no sign-in required


async def test_changes_that_need_a_restart_are_kept_and_the_rest_applies(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    run_file: Callable[[Path], Awaitable[Running]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    a = await aiohttp_server(named_backend("a"))
    b = await aiohttp_server(named_backend("b"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(a.make_url(""))})
    running = await run_file(path)
    write_config(
        path,
        {"version": 1, "upstream": str(b.make_url("")), "server": {"listen": "127.0.0.1:1"}},
    )
    with caplog.at_level(logging.WARNING, logger="sidecar.reload"):
        assert (await running.reloading.reload()).outcome == "applied"
    assert any("server.listen" in r.getMessage() for r in caplog.records)
    assert running.reloading.current.config.server.listen == "0.0.0.0:4180"
    async with aiohttp.ClientSession() as client:
        assert (await running.get(client, "/x"))[1]["backend"] == "b"


def test_fingerprint_sees_a_configmap_symlink_swap(tmp_path: Path) -> None:
    # How kubelet updates a mounted ConfigMap: a new timestamped directory, then `..data` is
    # swapped to it atomically; the file name the container reads goes through `..data`.
    content = "version: 1\nupstream: http://127.0.0.1:9\n"
    first = tmp_path / "..2026_11_28_08_00_00.1"
    first.mkdir()
    (first / "config.yaml").write_text(content, encoding="utf-8")
    (tmp_path / "..data").symlink_to(first.name)
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    before = fingerprint(tmp_path / "config.yaml")
    second = tmp_path / "..2026_11_28_08_05_00.2"
    second.mkdir()
    (second / "config.yaml").write_text(content, encoding="utf-8")  # same size
    stat = (first / "config.yaml").stat()
    os.utime(second / "config.yaml", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime
    (tmp_path / "..data_tmp").symlink_to(second.name)
    os.replace(tmp_path / "..data_tmp", tmp_path / "..data")
    after = fingerprint(tmp_path / "config.yaml")
    assert before is not None and after is not None and before != after
    assert fingerprint(tmp_path / "missing.yaml") is None


async def test_watcher_reloads_when_the_file_changes_and_on_request(
    tmp_path: Path,
    aiohttp_server: ServerFactory,
    run_file: Callable[[Path], Awaitable[Running]],
) -> None:
    a = await aiohttp_server(named_backend("a"))
    b = await aiohttp_server(named_backend("b"))
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "upstream": str(a.make_url(""))})
    running = await run_file(path)
    reloading = running.reloading
    watcher = asyncio.create_task(reloading.watch(poll_seconds=0.01))
    try:
        write_config(
            path, {"version": 1, "upstream": str(b.make_url("")), "server": {"watch_config": False}}
        )
        async with asyncio.timeout(DEADLINE_SECONDS):
            while reloading.current.number != 2:
                await asyncio.sleep(0.01)
        # watch_config: false now; only an explicit request (SIGHUP) reloads.
        write_config(
            path, {"version": 1, "upstream": str(a.make_url("")), "server": {"watch_config": False}}
        )
        reloading.request_reload()
        async with asyncio.timeout(DEADLINE_SECONDS):
            while reloading.current.number != 3:
                await asyncio.sleep(0.01)
        async with aiohttp.ClientSession() as client:
            assert (await running.get(client, "/x"))[1]["backend"] == "a"
    finally:
        watcher.cancel()


async def test_sessions_survive_a_reload_unless_the_keys_are_rotated_away(
    tmp_path: Path,
    echo_server: TestServer,
    run_file: Callable[[Path], Awaitable[Running]],
) -> None:
    provider = DevProvider(auto_login=ALICE)
    await provider.start()
    port = free_port()
    base = {
        "version": 1,
        "upstream": str(echo_server.make_url("")),
        "provider": {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    }
    provider.add_client(
        DevClient(
            CLIENT_ID, CLIENT_SECRET, redirect_uris=[f"http://127.0.0.1:{port}/oauth2/callback"]
        )
    )
    path = tmp_path / "sidecar.yaml"
    write_config(path, {**base, "session": {"secret": SECRET_A}})
    config = load_config(path)
    reloading = ReloadingServer(config, path=path, ready_timeout_seconds=10)
    runner = ReloadingRunner(reloading, handler_args=build_handler_args(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    api = {"Accept": "application/json"}
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with asyncio.timeout(DEADLINE_SECONDS):
                while not reloading.current.ready():
                    await asyncio.sleep(0.01)
            async with browser.get(url + "/echo") as response:
                assert response.status == 200  # signed in through the provider
            # New routes, same secret (plus a new one to rotate in: the old still decrypts).
            write_config(
                path,
                {
                    **base,
                    "session": {"secrets": [SECRET_B, SECRET_A]},
                    "routes": [{"path": "/open", "access": "public"}],
                },
            )
            assert (await reloading.reload()).outcome == "applied"
            async with browser.get(url + "/echo", headers=api) as response:
                assert response.status == 200  # the session cookie still decodes
            # The old key dropped: sessions it encrypted end.
            write_config(path, {**base, "session": {"secrets": [SECRET_B]}})
            browser.cookie_jar.clear(lambda c: "login" in c.key)
            assert (await reloading.reload()).outcome == "applied"
            async with browser.get(url + "/echo", headers=api) as response:
                assert response.status == 401
    finally:
        await runner.cleanup()
        await provider.stop()


async def test_a_session_revoked_by_back_channel_logout_stays_revoked_after_a_reload(
    tmp_path: Path,
    echo_server: TestServer,
) -> None:
    provider = DevProvider(auto_login=ALICE)
    await provider.start()
    port = free_port()
    base = {
        "version": 1,
        "upstream": str(echo_server.make_url("")),
        "provider": {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        "session": {"secret": SECRET_A},
    }
    provider.add_client(
        DevClient(
            CLIENT_ID, CLIENT_SECRET, redirect_uris=[f"http://127.0.0.1:{port}/oauth2/callback"]
        )
    )
    path = tmp_path / "sidecar.yaml"
    write_config(path, base)
    config = load_config(path)
    reloading = ReloadingServer(config, path=path, ready_timeout_seconds=10)
    internal_readiness: list[Any] = []  # what the internal port's /readyz runs
    reloading.mirror_readiness(internal_readiness)
    runner = ReloadingRunner(reloading, handler_args=build_handler_args(config))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    url = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(DEADLINE_SECONDS):
            while not reloading.current.ready():
                await asyncio.sleep(0.01)
        first_checks = list(internal_readiness)
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            async with browser.get(url + "/echo") as response:
                assert response.status == 200
            cookie = "; ".join(f"{c.key}={c.value}" for c in browser.cookie_jar)
        now = int(time.time())
        token = jwt.encode(
            {"alg": "RS256", "kid": provider.keys.current_kid, "typ": "logout+jwt"},
            {
                "iss": provider.issuer,
                "aud": CLIENT_ID,
                "iat": now,
                "exp": now + 120,
                "jti": "logout-1",
                "events": {LOGOUT_EVENT: {}},
                "sub": "alice",
            },
            provider.keys.current,
        )
        headers = {"Cookie": cookie, "Accept": "application/json"}
        async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.post(
                url + "/oauth2/backchannel_logout", data={"logout_token": token}
            ) as response:
                assert response.status == 200
            async with http.get(url + "/echo", headers=headers) as response:
                assert response.status == 401  # revoked
            write_config(path, {**base, "routes": [{"path": "/open", "access": "public"}]})
            assert (await reloading.reload()).outcome == "applied"
            async with http.get(url + "/echo", headers=headers) as response:
                assert response.status == 401  # the new configuration remembers the revocation
        # The internal port's readiness now asks the new configuration's provider check.
        assert internal_readiness == reloading.current.readiness != first_checks
    finally:
        await runner.cleanup()
        await provider.stop()


# -- the real process ------------------------------------------------------------------------


class LogReader:
    """Reads a sidecar process's JSON log lines as they come (so its pipe never fills)."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.lines: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stderr is not None
        while raw := await self.process.stderr.readline():
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"message": raw.decode(errors="replace")})
            self._changed.set()
        self._changed.set()

    async def wait_for(self, predicate: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        seen = 0
        async with asyncio.timeout(DEADLINE_SECONDS):
            while True:
                for entry in self.lines[seen:]:
                    if predicate(entry):
                        return entry
                seen = len(self.lines)
                if self._task.done():
                    raise AssertionError(f"sidecar exited; it logged: {self.lines[-20:]}")
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        await self._task


def message_starts(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda entry: str(entry.get("message", "")).startswith(text)


@pytest.fixture
async def provider() -> AsyncIterator[DevProvider]:
    dev = DevProvider(auto_login=ALICE)
    await dev.start()
    yield dev
    await dev.stop()


async def test_reload_under_load_loses_no_request_and_applies_new_routes(
    tmp_path: Path, aiohttp_server: ServerFactory, provider: DevProvider
) -> None:
    a = await aiohttp_server(named_backend("a"))
    b = await aiohttp_server(named_backend("b"))
    port = free_port()
    base = {
        "version": 1,
        "server": {"listen": f"127.0.0.1:{port}", "shutdown_grace_seconds": DEADLINE_SECONDS},
        "provider": {
            "issuer": provider.issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
        "session": {"secret": SECRET_A},
    }
    path = tmp_path / "sidecar.yaml"
    write_config(path, {**base, "upstream": str(a.make_url(""))})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "run", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    logs = LogReader(process)
    url = f"http://127.0.0.1:{port}/public/page"
    answers: list[tuple[int, str]] = []
    failures: list[str] = []
    stop = asyncio.Event()

    async def load(client: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            try:
                async with client.get(url, headers={"Accept": "application/json"}) as response:
                    body = await response.json()
                    answers.append((response.status, body.get("backend", "")))
            except (aiohttp.ClientError, ValueError) as exc:
                failures.append(repr(exc))

    try:
        await logs.wait_for(message_starts("sidecar "))
        async with aiohttp.ClientSession() as client:
            async with asyncio.timeout(DEADLINE_SECONDS):
                while True:  # until the provider is discovered: then sign-in is required
                    async with client.get(url, headers={"Accept": "application/json"}) as first:
                        if first.status == 401:
                            break
                    await asyncio.sleep(0.05)
            workers = [asyncio.create_task(load(client)) for _ in range(8)]
            write_config(
                path,
                {
                    **base,
                    "upstream": str(b.make_url("")),
                    "routes": [{"path": "/public", "access": "public"}],
                },
            )
            await logs.wait_for(message_starts("configuration reloaded"))
            switched_at = len(answers)
            async with asyncio.timeout(DEADLINE_SECONDS):
                while len(answers) < switched_at + 200:
                    await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*workers)

            assert failures == []
            assert set(answers) <= {(401, ""), (200, "b")}  # old: sign-in needed; new: public
            assert answers[-100:] == [(200, "b")] * 100  # after the reload only the new config
            assert (401, "") in answers[:switched_at]

            # An invalid file is refused, the log says why, the running config keeps serving.
            path.write_text(path.read_text() + "bogus_key: 1\n", encoding="utf-8")
            refused = await logs.wait_for(message_starts("configuration reload refused"))
            assert "bogus_key" in refused["message"]
            async with client.get(url) as response:
                assert response.status == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(DEADLINE_SECONDS):
                await process.wait()
        await logs.close()
    assert process.returncode == 0


async def test_sighup_reloads_the_running_process(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    a = await aiohttp_server(named_backend("a"))
    b = await aiohttp_server(named_backend("b"))
    port = free_port()
    server = {"listen": f"127.0.0.1:{port}", "watch_config": False}
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "server": server, "upstream": str(a.make_url(""))})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "run", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    logs = LogReader(process)
    try:
        await logs.wait_for(message_starts("sidecar "))
        write_config(path, {"version": 1, "server": server, "upstream": str(b.make_url(""))})
        process.send_signal(signal.SIGHUP)
        reloaded = await logs.wait_for(message_starts("configuration reloaded"))
        assert "SIGHUP" in reloaded["message"] and reloaded["changed"] == ["upstreams"]
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://127.0.0.1:{port}/x") as response,
        ):
            assert (await response.json())["backend"] == "b"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(DEADLINE_SECONDS):
                await process.wait()
        await logs.close()
    assert process.returncode == 0


async def test_sighup_to_the_supervisor_reloads_every_worker(
    tmp_path: Path, aiohttp_server: ServerFactory
) -> None:
    a = await aiohttp_server(named_backend("a"))
    b = await aiohttp_server(named_backend("b"))
    port = free_port()
    server = {"listen": f"127.0.0.1:{port}", "watch_config": False, "workers": 2}
    path = tmp_path / "sidecar.yaml"
    write_config(path, {"version": 1, "server": server, "upstream": str(a.make_url(""))})
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sidecar", "run", "-c", str(path), stderr=asyncio.subprocess.PIPE
    )
    logs = LogReader(process)
    try:
        started = [
            await logs.wait_for(lambda e, n=n: message_starts("sidecar ")(e) and e["worker"] == n)
            for n in (0, 1)
        ]
        write_config(path, {"version": 1, "server": server, "upstream": str(b.make_url(""))})
        process.send_signal(signal.SIGHUP)
        reloaded: set[int] = set()
        async with asyncio.timeout(DEADLINE_SECONDS):
            while len(reloaded) < 2:
                await logs.wait_for(message_starts("configuration reloaded"))
                reloaded = {
                    int(entry["pid"])
                    for entry in logs.lines
                    if str(entry.get("message", "")).startswith("configuration reloaded")
                }
                if len(reloaded) < 2:
                    await asyncio.sleep(0.01)
        assert reloaded == {entry["pid"] for entry in started}
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            async with asyncio.timeout(DEADLINE_SECONDS):
                await process.wait()
        await logs.close()
    assert process.returncode == 0
