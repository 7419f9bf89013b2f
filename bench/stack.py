"""The benchmark's processes on 127.0.0.1: nginx, the provider, Apache, sidecar; and their memory.

Each `start_*` renders a private configuration into the run's directory (pid files, temp paths
and logs there too: never the system services), starts the program as a child process, waits
until it answers, and returns a `Service` whose `stop()` ends it. `Stack` owns every service of a
run and stops them all, in reverse order, on exit. `rss_kib(pids)` / `process_tree(pid)` read
/proc for resident memory (VmRSS, VmHWM), and `reset_peak_rss` clears VmHWM (writing 5 to
/proc/PID/clear_refs) so a peak can be measured for one phase.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

import aiohttp

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
E2E_DIR = REPO / "tests" / "e2e"
TEMPLATES = BENCH_DIR / "templates"
NGINX = "/usr/sbin/nginx"
APACHE = "/usr/sbin/apache2"
APACHE_OIDC_MODULE = "/usr/lib/apache2/modules/mod_auth_openidc.so"
NGINX_ECHO_MODULE = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
START_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 10.0
BACKEND_BODY = "hello from the backend\n"


class StackError(Exception):
    """A service of the benchmark could not be set up."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Service:
    """A running child process and where its output goes."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    url: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_SECONDS)


def _spawn(name: str, argv: Sequence[str], log_path: Path, **kwargs: Any) -> Service:
    log = log_path.open("ab")
    try:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **kwargs
        )
    finally:
        log.close()
    return Service(name=name, process=process, log_path=log_path)


async def _wait_until(
    service: Service, check: Callable[[], Any], *, what: str, seconds: float
) -> None:
    """Poll `check` (an async callable returning truthy when ready) until ready or timeout."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            raise StackError(f"{service.name} exited while starting:\n{service.log_tail()}")
        try:
            if await check():
                return
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        await asyncio.sleep(0.1)
    service.stop()
    raise StackError(f"{service.name} did not become ready ({what}):\n{service.log_tail()}")


async def _http_status(url: str, headers: dict[str, str] | None = None) -> int:
    timeout = aiohttp.ClientTimeout(total=5)
    async with (
        aiohttp.ClientSession(timeout=timeout) as http,
        http.get(url, headers=headers, allow_redirects=False) as response,
    ):
        await response.read()
        return response.status


class Stack:
    """Every service of one run; `close()` stops them in reverse start order."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.chmod(0o755)  # nginx and Apache workers run as nobody / www-data
        self.services: list[Service] = []
        self.cleanup: list[Path] = []  # directories outside `directory` to remove on close

    def add(self, service: Service) -> Service:
        self.services.append(service)
        return service

    def close(self) -> None:
        for service in reversed(self.services):
            service.stop()
        self.services.clear()
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self.cleanup.clear()

    # --- nginx: the fast backend ----------------------------------------------------------------

    async def start_nginx(self, *, large_file_bytes: int) -> Service:
        port = free_port()
        for sub in ("nginx-proxy", "nginx-fastcgi", "nginx-uwsgi", "nginx-scgi"):
            (self.dir / sub).mkdir(exist_ok=True)
        body_temp = Path(tempfile.mkdtemp(prefix="sidecar-bench-body-", dir="/dev/shm"))
        os.chmod(body_temp, 0o777)  # nginx's workers (nobody) write upload bodies there
        self.cleanup.append(body_temp)
        large = self.dir / "large.bin"
        with large.open("wb") as handle:  # sparse: served from the page cache, costs no disk
            handle.truncate(large_file_bytes)
        conf = self.dir / "nginx.conf"
        conf.write_text(
            Template((TEMPLATES / "nginx.conf").read_text()).substitute(
                dir=self.dir, port=port, echo_module=NGINX_ECHO_MODULE, body_temp=body_temp
            )
        )
        service = self.add(
            _spawn(
                "nginx",
                [
                    NGINX,
                    "-c",
                    str(conf),
                    "-p",
                    str(self.dir),
                    "-e",
                    str(self.dir / "nginx-error.log"),
                ],
                self.dir / "nginx.log",
            )
        )
        service.url = f"http://127.0.0.1:{port}"
        service.info = {"large_path": "/large.bin", "large_bytes": large_file_bytes}

        async def ready() -> bool:
            return await _http_status(service.url + "/") == 200

        await _wait_until(service, ready, what=f"GET {service.url}/", seconds=START_TIMEOUT_SECONDS)
        return service

    def last_upload_bytes(self) -> int:
        """Bytes nginx read for the last /upload, request line and headers included (its log)."""
        lines = (self.dir / "nginx-upload.log").read_text().split()
        return int(lines[-1]) if lines else -1

    # --- oidc-provider (the e2e harness's provider.mjs) -----------------------------------------

    async def start_provider(self) -> Service:
        node = shutil.which("node")
        if node is None:
            raise StackError("node not found (Node.js >= 20.18 runs oidc-provider)")
        if not (E2E_DIR / "node_modules" / "oidc-provider").is_dir():
            raise StackError("tests/e2e/node_modules is missing: run npm ci --prefix tests/e2e")
        log = self.dir / "provider.log"
        service = self.add(
            _spawn("provider", [node, str(E2E_DIR / "provider.mjs"), "{}"], log, cwd=E2E_DIR)
        )

        async def ready() -> bool:
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith("ready "):
                    service.url = json.loads(line.removeprefix("ready "))["issuer"]
                    return True
            return False

        await _wait_until(service, ready, what="the ready line", seconds=START_TIMEOUT_SECONDS)
        return service

    @staticmethod
    async def register_client(issuer: str, redirect_uris: Sequence[str]) -> dict[str, Any]:
        """Register a confidential client (dynamic registration) with these redirect URIs."""
        body = {
            "redirect_uris": list(redirect_uris),
            "token_endpoint_auth_method": "client_secret_basic",
            "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"],
        }
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{issuer}/reg", json=body) as response,
        ):
            document: dict[str, Any] = await response.json(content_type=None)
            if response.status != 201:
                raise StackError(f"client registration failed: {response.status} {document}")
            return document

    # --- Apache httpd + mod_auth_openidc, and plain mod_proxy -----------------------------------

    async def start_apache(
        self, *, backend_url: str, issuer: str, client: dict[str, Any], oidc_port: int
    ) -> Service:
        plain_port = free_port()
        (self.dir / "apache-run").mkdir(exist_ok=True)
        conf = self.dir / "apache.conf"
        conf.write_text(
            Template((TEMPLATES / "apache.conf").read_text()).substitute(
                dir=self.dir,
                oidc_port=oidc_port,
                plain_port=plain_port,
                backend_port=backend_url.rsplit(":", 1)[1],
                issuer=issuer,
                client_id=client["client_id"],
                client_secret=client["client_secret"],
                passphrase=secrets.token_urlsafe(32),
            )
        )
        service = self.add(
            _spawn(
                "apache",
                [APACHE, "-f", str(conf), "-k", "start", "-DFOREGROUND"],
                self.dir / "apache.log",
            )
        )
        service.url = f"http://127.0.0.1:{oidc_port}"
        service.info = {"plain_url": f"http://127.0.0.1:{plain_port}"}

        async def ready() -> bool:
            plain = await _http_status(service.info["plain_url"] + "/")
            return plain == 200 and await _http_status(service.url + "/") == 302

        await _wait_until(
            service, ready, what="plain 200 and oidc 302", seconds=START_TIMEOUT_SECONDS
        )
        return service

    # --- sidecar ---------------------------------------------------------------------------------

    async def start_sidecar(
        self,
        name: str,
        *,
        port: int,
        backend_url: str,
        issuer: str,
        client: dict[str, Any],
        workers: int,
        routes: list[dict[str, Any]] | None = None,
        env: dict[str, str] | None = None,
        command: Sequence[str] = (sys.executable, "-m", "sidecar"),
    ) -> Service:
        url = f"http://127.0.0.1:{port}"
        config: dict[str, Any] = {
            "version": 1,
            "server": {
                "listen": f"127.0.0.1:{port}",
                "public_url": url,
                "workers": workers,
                "max_header_bytes": 65536,
            },
            "upstream": backend_url,
            "provider": {
                "issuer": issuer,
                "client_id": client["client_id"],
                "client_secret": client["client_secret"],
                "scopes": ["openid", "email", "profile", "groups"],
            },
            "session": {"secret": secrets.token_urlsafe(32)},
            "logging": {"level": "warning", "format": "json"},
        }
        if routes is not None:
            config["routes"] = routes
        path = self.dir / f"{name}.yaml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        service = self.add(
            _spawn(
                name,
                [*command, "run", "-c", str(path)],
                self.dir / f"{name}.log",
                cwd=REPO,
                env={**os.environ, **(env or {})},
            )
        )
        service.url = url
        service.info = {"workers": workers, "config": str(path)}

        async def ready() -> bool:
            return await _http_status(url + "/oauth2/readyz") == 200

        await _wait_until(
            service, ready, what=f"GET {url}/oauth2/readyz", seconds=START_TIMEOUT_SECONDS
        )
        service.info["uvloop"] = uses_uvloop(service.pid)
        return service


# --- memory -----------------------------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (from /proc/*/stat parent ids)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, ()))
    return found


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(root: int) -> float:
    """CPU time (user + system) used so far by `root`, its live descendants and its reaped
    children: a figure that other load on the machine barely moves, unlike req/s."""
    ticks = 0
    for pid in process_tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
        if pid == root:
            ticks += int(fields[13]) + int(fields[14])  # cutime, cstime (reaped children)
    return ticks / CLOCK_TICKS


def uses_uvloop(root: int) -> bool:
    """Whether every serving process has uvloop loaded (sidecar uses it when importable): the
    workers when there are any (the supervisor only accepts and never loads it), else `root`."""
    pids = [pid for pid in process_tree(root) if pid != root] or [root]
    try:
        return all("uvloop" in Path(f"/proc/{pid}/maps").read_text() for pid in pids)
    except OSError:
        return False


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return 0
    return 0


def rss_kib(pids: Sequence[int]) -> int:
    """Resident memory now, summed over `pids` (KiB)."""
    return sum(_status_kib(pid, "VmRSS") for pid in pids)


def peak_rss_kib(pids: Sequence[int]) -> dict[int, int]:
    """Peak resident memory (VmHWM) of each pid (KiB)."""
    return {pid: _status_kib(pid, "VmHWM") for pid in pids}


def reset_peak_rss(pids: Sequence[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            Path(f"/proc/{pid}/clear_refs").write_text("5")
