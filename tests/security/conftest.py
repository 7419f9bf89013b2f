"""The attacker's bench: a running sidecar between a misbehaving provider and a tattling backend.

Everything is real and on 127.0.0.1. `make_stack(**config_sections)` starts the development OpenID
provider (auto-login as Alice, who is in `admins`; its `faults` make it misbehave), the echo
backend (which answers with what arrived) wrapped so every request it serves is also recorded in
`stack.backend_seen`, and sidecar itself (`create_app`) on a real port in front of it, with the
routes every case attacks: `/public` is public, `/admin` needs the `admins` group, everything else
needs a sign-in. The clock is shared and fake, so expiry is moved, never slept for.

Attackers do not use polite clients: `Browser` is a cookie-jar client that follows redirects by
hand and records every hop; `raw_exchange` writes bytes to a socket and reads what comes back.
`run_sidecar_process` starts `python -m sidecar run -c cfg.yaml` for the cases that need the real
server (its socket timeouts) or its real log output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestServer
from support.browser import Browser, Hop
from support.clock import FakeClock
from support.echo import make_echo_app

from sidecar import keys
from sidecar.app import create_app
from sidecar.auth.services import AuthServices
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient

CLIENT_ID = "sidecar-security"
CLIENT_SECRET = "client-secret-for-the-security-suite"
SESSION_SECRET = "the-security-suite-session-secret-0123456789"
SESSION_COOKIE = "_sidecar"
ALICE = {
    "sub": "alice",
    "email": "alice@example.org",
    "preferred_username": "alice",
    "groups": ["admins", "staff"],
}
MALLORY = {
    "sub": "mallory",
    "email": "mallory@example.org",
    "preferred_username": "mallory",
    "groups": ["staff"],
}
ROUTES = [
    {"name": "public", "path": "/public", "access": "public"},
    {"name": "admin", "path": "/admin", "policy": "admins"},
]
POLICIES = {"admins": {"groups_any": ["admins"]}}
IDENTITY_HEADERS = (
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-preferred-username",
    "x-forwarded-groups",
    "x-forwarded-access-token",
)
EVIL = "evil.example"

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass(frozen=True)
class Seen:
    """One request as the backend received it."""

    method: str
    raw_path: str
    headers: tuple[tuple[str, str], ...]

    def values(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def make_recording_echo_app(seen: list[Seen]) -> web.Application:
    """The echo backend, also writing down every request it serves."""
    app = make_echo_app()

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(Seen(request.method, request.raw_path, tuple(request.headers.items())))
        response: web.StreamResponse = await handler(request)
        return response

    app.middlewares.insert(0, record)
    return app


@dataclass
class Stack:
    provider: DevProvider
    sidecar: TestServer
    echo: TestServer
    clock: FakeClock
    config: SidecarConfig
    backend_seen: list[Seen]
    browsers: list[Browser] = field(default_factory=list)

    @property
    def services(self) -> AuthServices:
        return self.sidecar.app[keys.AUTH_SERVICES]

    @property
    def port(self) -> int:
        port = self.sidecar.port
        assert port is not None
        return port

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def browser(self) -> Browser:
        browser = Browser(aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)))
        self.browsers.append(browser)
        return browser

    async def sign_in(self, browser: Browser, path: str = "/") -> list[Hop]:
        hops = await browser.follow(self.url(path))
        assert hops[-1].status == 200, [(hop.status, hop.url) for hop in hops]
        assert browser.has_session()
        return hops

    async def start_attempt(self, browser: Browser, path: str = "/") -> dict[str, str]:
        """Begin a sign-in and stop at the provider: the authorize parameters sidecar sent."""
        hop = await browser.request("GET", self.url(path))
        assert hop.status == 302, hop.status
        return {k: v[0] for k, v in parse_qs(urlsplit(hop.location).query).items()}

    async def provider_answer(self, authorize: Mapping[str, str]) -> str:
        """What the provider redirects back with for these authorize parameters (its Location),
        fetched without anyone's cookies: the attacker's own trip to the provider."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(
                self.provider.url("/authorize"), params=dict(authorize), allow_redirects=False
            ) as response,
        ):
            assert response.status == 302, response.status
            return response.headers["Location"]

    def backend_paths(self) -> list[str]:
        return [seen.raw_path for seen in self.backend_seen]


StackFactory = Callable[..., Awaitable[Stack]]


def build_config_data(*, issuer: str, upstream: str, **sections: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": 1,
        "upstream": upstream,
        "provider": {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "email", "profile", "groups"],
        },
        "session": {"secret": SESSION_SECRET},
        "routes": ROUTES,
        "policies": POLICIES,
    }
    for name, value in sections.items():
        current = data.get(name)
        data[name] = {**current, **value} if isinstance(current, dict) else value
    return data


def register(provider: DevProvider, origin: str) -> None:
    provider.add_client(
        DevClient(
            CLIENT_ID,
            CLIENT_SECRET,
            redirect_uris=[origin + "/oauth2/callback"],
            post_logout_redirect_uris=[origin + "/", origin + "/goodbye"],
        )
    )


@pytest.fixture
async def make_stack(aiohttp_server: ServerFactory) -> AsyncIterator[StackFactory]:
    stacks: list[Stack] = []

    async def make(*, provider_options: Mapping[str, Any] | None = None, **sections: Any) -> Stack:
        clock = FakeClock()
        provider = DevProvider(clock=clock, auto_login=ALICE, **(provider_options or {}))
        issuer = await provider.start()
        seen: list[Seen] = []
        echo = await aiohttp_server(make_recording_echo_app(seen))
        data = build_config_data(
            issuer=issuer, upstream=str(echo.make_url("")).rstrip("/"), **sections
        )
        config = SidecarConfig.model_validate(data)
        sidecar = await aiohttp_server(create_app(config, clock=clock), host="127.0.0.1")
        stack = Stack(provider, sidecar, echo, clock, config, seen)
        stacks.append(stack)
        register(provider, stack.origin)
        directory = stack.services.require_directory()
        await asyncio.wait_for(directory.wait_ready(), 5)
        return stack

    yield make
    for stack in stacks:
        for browser in stack.browsers:
            await browser.http.close()
        await stack.provider.stop()


# -- raw sockets ------------------------------------------------------------------------------


async def raw_exchange(
    port: int, data: bytes, *, read_timeout: float = 5.0, chunks: list[bytes] | None = None
) -> bytes:
    """Write `data` (then each of `chunks`) to 127.0.0.1:port; read until the server closes the
    connection or stays silent for `read_timeout` seconds; return every byte that came back."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        for chunk in chunks or ():
            writer.write(chunk)
        await writer.drain()
        received = bytearray()
        while True:
            try:
                block = await asyncio.wait_for(reader.read(65536), read_timeout)
            except TimeoutError:
                break
            if not block:
                break
            received += block
        return bytes(received)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_lines(response: bytes) -> list[str]:
    """The status lines of every HTTP response in a byte stream (`HTTP/1.1 400 Bad Request`).
    A response may follow a body without a line break, so they are found anywhere."""
    return [
        match.group(0).decode("latin-1")
        for match in re.finditer(rb"HTTP/1\.[01] [1-5][0-9]{2} [^\r\n]*", response)
    ]


# -- sidecar as a process ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class SidecarProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")


async def start_sidecar_process(data: Mapping[str, Any], directory: Path) -> SidecarProcess:
    """`python -m sidecar run -c cfg.yaml` with `data` (its server.listen is set here); waits
    until /oauth2/readyz answers 200. Stopped with `stop_sidecar_process`."""
    port = free_port()
    data = {**data, "server": {**data.get("server", {}), "listen": f"127.0.0.1:{port}"}}
    config_path = directory / "cfg.yaml"
    config_path.write_text(yaml.safe_dump(dict(data)))
    log_path = directory / "sidecar.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "sidecar", "run", "-c", str(config_path)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    running = SidecarProcess(process, port, log_path)
    deadline = time.monotonic() + 20
    async with aiohttp.ClientSession() as http:
        while True:
            if process.poll() is not None:
                raise AssertionError(f"sidecar exited: {running.logs()}")
            with contextlib.suppress(aiohttp.ClientError):
                async with http.get(running.url("/oauth2/readyz")) as response:
                    if response.status == 200:
                        return running
            if time.monotonic() > deadline:
                stop_sidecar_process(running)
                raise AssertionError(f"sidecar not ready: {running.logs()}")
            await asyncio.sleep(0.05)  # polling a starting process, not timing a behaviour


def stop_sidecar_process(running: SidecarProcess) -> None:
    if running.process.poll() is None:
        running.process.terminate()
        try:
            running.process.wait(20)
        except subprocess.TimeoutExpired:
            running.process.kill()
            running.process.wait()


@pytest.fixture
def sidecar_processes() -> Iterator[list[SidecarProcess]]:
    """Every sidecar process a test starts is stopped afterwards."""
    started: list[SidecarProcess] = []
    yield started
    for running in started:
        stop_sidecar_process(running)


# -- what a browser does with a Location ------------------------------------------------------


def stays_on_origin(location: str, origin: str) -> bool:
    """True when a browser following `location` (from any page of `origin`) is certain to stay
    on `origin`: either `origin` + a path, or a path starting with exactly one `/`. No
    backslash, whitespace or control character anywhere (browsers drop or reinterpret those)."""
    if any(
        char == "\\" or char.isspace() or ord(char) < 0x20 or ord(char) == 0x7F for char in location
    ):
        return False
    if location.startswith(origin + "/") or location == origin:
        rest = location[len(origin) :]
        return not rest.startswith("//")
    return location.startswith("/") and not location.startswith("//")


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def parse_response(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers.append((name.strip(), value.strip()))
    return RawResponse(status, headers, body)


async def raw_request(
    port: int, target: str, headers: Mapping[str, str] | None = None, method: str = "GET"
) -> RawResponse:
    """One request with `target` sent byte for byte as the request-target (no client tidying)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines += ["Connection: close", "", ""]
    data = await raw_exchange(port, "\r\n".join(lines).encode("latin-1"))
    return parse_response(data)
