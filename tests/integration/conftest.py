"""Real nginx for the integration tests, private to each test.

`start_nginx(config_text, tmp_path)` runs `/usr/sbin/nginx` (Debian's nginx-light has
`auth_request`) from a configuration rendered into `tmp_path`, with its own prefix, pid file,
error and access logs and temp directories there (never the system's), waits until it accepts
connections and returns a `RunningNginx`; the `nginx` fixture stops every one at the end of the
test. Without nginx the test is skipped locally and fails under CI (`CI` set), where `.ci/run`
installs it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
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
class RunningNginx:
    process: subprocess.Popen[bytes]
    directory: Path
    port: int

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def error_log(self) -> str:
        path = self.directory / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # fast shutdown of master and workers
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


async def _wait_listening(nginx: RunningNginx) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + START_TIMEOUT_SECONDS
    while True:
        if nginx.process.poll() is not None:
            pytest.fail(f"nginx exited at start:\n{nginx.error_log()}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", nginx.port)
        except OSError:
            if loop.time() > deadline:
                pytest.fail(f"nginx did not listen within {START_TIMEOUT_SECONDS}s")
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


StartNginx = Callable[[str, Path, int], Awaitable[RunningNginx]]


@pytest.fixture
async def nginx() -> AsyncIterator[StartNginx]:
    """`await nginx(config_text, directory, port)`: nginx running `config_text` (which must already
    listen on 127.0.0.1:`port`), with everything it writes inside `directory`."""
    binary = nginx_binary()
    running: list[RunningNginx] = []

    async def start(config_text: str, directory: Path, port: int) -> RunningNginx:
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
        server = RunningNginx(process, directory, port)
        running.append(server)
        await _wait_listening(server)
        return server

    yield start
    for server in running:
        server.stop()
