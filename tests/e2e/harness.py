"""Building blocks of the end-to-end tests: the real provider process, sockets, provider page steps.

`start_provider` runs `provider.mjs` (node `oidc-provider`, see its header for the accounts,
scopes and clients it offers) on a free port of 127.0.0.1 and returns a `RunningProvider`, whose
`register_client(...)` registers a confidential client by dynamic registration, so each test gets
a client whose redirect URIs point at its own servers (`Servers.reserve()` binds them first).
`sign_in_at_provider`, `shows_provider_login_form` and `confirm_sign_out_at_provider` drive the
provider's own pages in a Playwright page. `missing_tool` skips locally but fails under CI (`CI`
set), so CI can never pass by not running these tests. The pytest fixtures are in conftest.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import pytest
from aiohttp import web

if TYPE_CHECKING:
    from playwright.async_api import Page

E2E_DIR = Path(__file__).resolve().parent
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # No internet here: every host name fails at once instead of waiting on DNS (oidc-provider's
    # built-in pages load a web font). Tests use 127.0.0.1 literals only.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
MIN_NODE = (20, 18)
PROVIDER_START_SECONDS = 30.0
PAGE_TIMEOUT_MS = 15_000


def missing_tool(reason: str) -> NoReturn:
    """Skip locally, fail under CI: the e2e tests must run in CI, never silently not run."""
    if os.environ.get("CI"):
        pytest.fail(f"e2e prerequisite missing under CI: {reason}", pytrace=False)
    pytest.skip(f"e2e prerequisite missing: {reason}")


def find_chromium() -> str:
    for candidate in (os.environ.get("SIDECAR_E2E_CHROMIUM"), "/usr/bin/chromium"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("chromium")
    if found is None:
        missing_tool("chromium not found (apt-get install -y chromium)")
    return found


def find_node() -> str:
    node = shutil.which("node")
    if node is None:
        missing_tool("node not found (Node.js >= 20.18 is needed for oidc-provider)")
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    found = re.match(r"v(\d+)\.(\d+)", version.stdout.strip())
    if found is None or (int(found[1]), int(found[2])) < MIN_NODE:
        missing_tool(
            f"node {version.stdout.strip() or '?'} is too old; oidc-provider needs >= 20.18"
        )
    return node


def ensure_node_modules() -> None:
    """Run `npm ci` when node_modules is missing or does not match the committed lock file."""
    lock = json.loads((E2E_DIR / "package-lock.json").read_text())
    wanted = lock["packages"]["node_modules/oidc-provider"]["version"]
    installed_manifest = E2E_DIR / "node_modules" / "oidc-provider" / "package.json"
    if (
        installed_manifest.exists()
        and json.loads(installed_manifest.read_text()).get("version") == wanted
    ):
        return
    npm = shutil.which("npm")
    if npm is None:
        missing_tool("npm not found, and tests/e2e/node_modules is not installed")
    result = subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=E2E_DIR,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if result.returncode != 0:
        pytest.fail(f"npm ci in tests/e2e failed:\n{result.stdout}\n{result.stderr}", pytrace=False)


def bind_socket() -> socket.socket:
    """A listening TCP socket on a free port of 127.0.0.1."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def base_url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}"


class Servers:
    """aiohttp apps served on 127.0.0.1 in the running loop, all closed by `close()`.

    `reserve()` binds a socket first, so its URL is known (to register a redirect URI, to write a
    config) before the app that will serve on it is built; `serve(app, sock=...)` then serves it.
    """

    def __init__(self) -> None:
        self._runners: list[web.AppRunner] = []
        self._sockets: list[socket.socket] = []

    def reserve(self) -> tuple[socket.socket, str]:
        sock = bind_socket()
        self._sockets.append(sock)
        return sock, base_url(sock)

    async def serve(self, app: web.Application, *, sock: socket.socket | None = None) -> str:
        """Serve `app` (on `sock`, or a fresh socket) and return its base URL."""
        if sock is None:
            sock, _ = self.reserve()
        runner = web.AppRunner(app, access_log=None)
        self._runners.append(runner)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        return base_url(sock)

    async def close(self) -> None:
        for runner in reversed(self._runners):
            await runner.cleanup()
        for sock in self._sockets:
            sock.close()


@dataclass(frozen=True)
class ClientCredentials:
    """A client registered at the provider."""

    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    token_endpoint_auth_method: str
    metadata: dict[str, Any] = field(repr=False)


@dataclass
class RunningProvider:
    """A running oidc-provider; `log()` shows what it printed (for failure messages)."""

    issuer: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def metadata(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            url = f"{self.issuer}/.well-known/openid-configuration"
            async with http.get(url) as response:
                response.raise_for_status()
                document: dict[str, Any] = await response.json()
                return document

    async def register_client(
        self,
        redirect_uris: Sequence[str],
        *,
        post_logout_redirect_uris: Sequence[str] = (),
        token_endpoint_auth_method: str = "client_secret_basic",  # noqa: S107 - a method name
        grant_types: Sequence[str] = ("authorization_code", "refresh_token"),
        access_token_ttl: int | None = None,
        backchannel_logout_uri: str | None = None,
        **extra: Any,
    ) -> ClientCredentials:
        """Register a confidential client (dynamic registration, RFC 7591) and return it.

        `access_token_ttl` (seconds) gives this client's access tokens a short life, for refresh
        tests; the provider's default is an hour.
        """
        body: dict[str, Any] = {
            "redirect_uris": list(redirect_uris),
            "post_logout_redirect_uris": list(post_logout_redirect_uris),
            "token_endpoint_auth_method": token_endpoint_auth_method,
            "grant_types": list(grant_types),
            "response_types": ["code"],
            **extra,
        }
        if access_token_ttl is not None:
            body["access_token_ttl"] = access_token_ttl
        if backchannel_logout_uri is not None:
            body["backchannel_logout_uri"] = backchannel_logout_uri
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{self.issuer}/reg", json=body) as response,
        ):
            document: dict[str, Any] = await response.json(content_type=None)
            if response.status != 201:
                raise AssertionError(f"client registration failed: {response.status} {document}")
        return ClientCredentials(
            client_id=document["client_id"],
            client_secret=document.get("client_secret", ""),
            redirect_uris=tuple(document["redirect_uris"]),
            post_logout_redirect_uris=tuple(document.get("post_logout_redirect_uris", ())),
            token_endpoint_auth_method=document["token_endpoint_auth_method"],
            metadata=document,
        )


def start_provider(log_path: Path, config: dict[str, Any] | None = None) -> RunningProvider:
    node = find_node()
    ensure_node_modules()
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [node, str(E2E_DIR / "provider.mjs"), json.dumps(config or {})],
        cwd=E2E_DIR,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()
    deadline = time.monotonic() + PROVIDER_START_SECONDS
    while time.monotonic() < deadline:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith("ready "):
                ready = json.loads(line.removeprefix("ready "))
                return RunningProvider(ready["issuer"], ready["port"], process, log_path)
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop_process(process)
    pytest.fail(
        f"oidc-provider did not start:\n{log_path.read_text(errors='replace')[-4000:]}",
        pytrace=False,
    )


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


LOGIN_FORM = 'form input[name="prompt"][value="login"]'
CONSENT_FORM = 'form input[name="prompt"][value="consent"]'
LOGOUT_BUTTON = 'button[name="logout"][value="yes"]'


async def sign_in_at_provider(
    page: Page,
    login: str,
    *,
    password: str = "any-password",  # noqa: S107
) -> None:
    """Fill oidc-provider's login form, then its consent form when asked, on the current page.

    Returns once the page shows neither form (normally: the browser is back at the client). The
    consent form does not come when the grant already exists; neither does the login form when the
    provider session does, so this is a no-op then.
    """
    await page.wait_for_load_state()
    for _ in range(4):
        if await page.locator(LOGIN_FORM).count():
            await page.fill('input[name="login"]', login)
            await page.fill('input[name="password"]', password)
        elif not await page.locator(CONSENT_FORM).count():
            return
        async with page.expect_navigation():
            await page.click('button[type="submit"]')
    raise AssertionError(f"still on the provider's forms after signing in: {page.url}")


async def shows_provider_login_form(page: Page) -> bool:
    await page.wait_for_load_state()
    return await page.locator(LOGIN_FORM).count() > 0


async def confirm_sign_out_at_provider(page: Page) -> None:
    """Press "Yes, sign me out" on the provider's RP-initiated logout page (the current page)."""
    await page.wait_for_load_state()
    if not await page.locator(LOGOUT_BUTTON).count():
        raise AssertionError(f"not on the provider's logout page: {page.url}")
    async with page.expect_navigation():
        await page.click(LOGOUT_BUTTON)
