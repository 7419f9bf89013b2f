"""A real `redis-server` for tests: started on a free 127.0.0.1 port in a temporary directory.

`RedisServer.start()` runs `redis-server` without persistence (unless `persistent=True`: an
append-only file fsynced on every write, so `stop()` then `start()` on the same port keeps the
data, as a real restart does), waits until it answers PING and `stop()` ends it (SIGTERM, then
SIGKILL); `arguments` adds to its command line (TLS, passwords). The `redis_server` fixture
(registered in tests/conftest.py) skips when `redis-server` is not installed, except in CI (env
`CI` set), where a missing Redis is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
START_TIMEOUT_SECONDS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_available() -> bool:
    return Path(REDIS_SERVER).exists()


def require_redis() -> None:
    """Skip the test when redis-server is missing; fail instead in CI."""
    if redis_available():
        return
    if os.environ.get("CI"):
        pytest.fail("redis-server is not installed (CI installs it: see .ci/run)")
    pytest.skip("redis-server is not installed")


class RedisServer:
    """One redis-server process on 127.0.0.1:`port`, data under `directory`."""

    def __init__(
        self, directory: Path, *, persistent: bool = False, arguments: Sequence[str] = ()
    ) -> None:
        self.directory = directory
        self.persistent = persistent
        self.extra_arguments = list(arguments)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _arguments(self) -> list[str]:
        arguments = [
            REDIS_SERVER,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.directory),
            "--save",
            "",
            "--daemonize",
            "no",
            "--protected-mode",
            "yes",
            "--logfile",
            str(self.directory / "redis.log"),
        ]
        if self.persistent:
            arguments += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            arguments += ["--appendonly", "no"]
        return arguments + self.extra_arguments

    def start(self) -> None:
        """Start (or restart, on the same port and directory) and wait until it answers."""
        for _attempt in range(3):
            self.process = subprocess.Popen(
                self._arguments(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_until_answering():
                return
            self.stop()
            if self.persistent:
                break  # the port is part of the test's configuration: do not move it
            self.port = free_port()  # someone else took the port: try another
        raise RuntimeError(f"redis-server did not start; see {self.directory / 'redis.log'}")

    def _wait_until_answering(self) -> bool:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def command(self, *words: str) -> bytes:
        """Send one inline command and return the raw first reply (for test set-up only)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall((" ".join(words) + "\r\n").encode())
            return sock.recv(65536)
