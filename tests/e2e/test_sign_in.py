"""Sign-in through sidecar, end to end: Chromium, the real oidc-provider, sidecar, the echo backend.

Sidecar runs in this process (`create_app` on a socket bound in advance, so the redirect URI is
registered at the provider before sidecar is built) in front of tests/support/echo.py, which
answers every request with the headers it received. What is checked is what a user and a backend
see: the browser asks for a protected URL, signs in on the provider's forms, lands back on that URL,
and the backend gets the identity headers; refresh keeps working with two-second access tokens
(sidecar's clock is moved forward instead of sleeping; the provider's tokens are real); sign-out
ends both sessions; two tabs signing in at once both succeed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from harness import (
    ClientCredentials,
    RunningProvider,
    Servers,
    confirm_sign_out_at_provider,
    shows_provider_login_form,
    sign_in_at_provider,
)
from support.echo import make_echo_app

from sidecar.app import create_app
from sidecar.config.load import parse_config_text

if TYPE_CHECKING:
    from playwright.async_api import Page

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session")]

READY_SECONDS = 15.0


class MovableClock:
    """Real time plus an offset the test moves forward: sidecar believes tokens have aged."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@dataclass
class RunningSidecar:
    url: str
    client: ClientCredentials
    clock: MovableClock
    issuer: str


StartSidecar = Callable[..., Awaitable[RunningSidecar]]


async def wait_until_ready(
    url: str, *, process: asyncio.subprocess.Process | None = None, log_path: Path | None = None
) -> None:
    """Poll /oauth2/readyz until sidecar serves and has discovered the provider (a condition, not
    a delay); for a sidecar subprocess, fail at once with its output when it exits."""
    deadline = time.monotonic() + READY_SECONDS
    last = "no answer"
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"{url}/oauth2/readyz") as response:
                    if response.status == 200:
                        return
                    last = f"{response.status} {await response.text()}"
            except aiohttp.ClientConnectionError as exc:
                last = repr(exc)
            output = log_path.read_text(errors="replace") if log_path else ""
            if process is not None and process.returncode is not None:
                raise AssertionError(f"sidecar exited with {process.returncode}:\n{output}")
            if time.monotonic() > deadline:
                raise AssertionError(f"sidecar not ready after {READY_SECONDS}s: {last}\n{output}")
            await asyncio.sleep(0.05)


@pytest_asyncio.fixture(loop_scope="session")
async def start_sidecar(
    oidc_provider: RunningProvider, servers: Servers
) -> AsyncIterator[StartSidecar]:
    """Start the echo backend and sidecar in front of it, with a client registered for it."""

    async def start(*, access_token_ttl: int | None = None, extra_yaml: str = "") -> RunningSidecar:
        echo_url = await servers.serve(make_echo_app())
        sock, url = servers.reserve()
        client = await oidc_provider.register_client(
            [f"{url}/oauth2/callback"],
            post_logout_redirect_uris=[f"{url}/", url],
            access_token_ttl=access_token_ttl,
        )
        config = parse_config_text(
            f"""
version: 1
server:
  listen: {json.dumps(url.removeprefix("http://"))}
  public_url: {json.dumps(url)}
upstream: {json.dumps(echo_url)}
provider:
  issuer: {json.dumps(oidc_provider.issuer)}
  client_id: {json.dumps(client.client_id)}
  client_secret: {json.dumps(client.client_secret)}
  scopes: [openid, email, profile, groups]
session:
  secret: {json.dumps(secrets.token_urlsafe(32))}
  refresh_margin_seconds: 1
headers:
  access_token: true
{extra_yaml}
""",
            source="e2e.yaml",
            env={},
        )
        clock = MovableClock()
        await servers.serve(create_app(config, clock=clock), sock=sock)
        await wait_until_ready(url)
        return RunningSidecar(url, client, clock, oidc_provider.issuer)

    yield start


def echo_headers(report: dict[str, Any]) -> dict[str, str]:
    """The headers the backend received, names lower-cased (the last of repeated ones)."""
    return {name.lower(): value for name, value in report["headers"]}


async def backend_report(page: Page) -> dict[str, Any]:
    """The echo backend's JSON report shown on the current page."""
    report: dict[str, Any] = json.loads(await page.locator("pre").inner_text())
    return report


async def fetch_report(page: Page, url: str) -> dict[str, Any]:
    """GET `url` with the page's own fetch (its cookies, same origin) and return the echo report."""
    report: dict[str, Any] = await page.evaluate(
        """async (url) => {
            const response = await fetch(url, {credentials: "same-origin"});
            if (!response.ok) { throw new Error(`${response.status} ${await response.text()}`); }
            return await response.json();
        }""",
        url,
    )
    return report


async def test_browser_lands_on_the_url_it_asked_for_and_backend_sees_identity(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar()
    wanted = f"{sidecar.url}/reports/2024?sort=desc&page=2"

    await page.goto(wanted)
    assert await shows_provider_login_form(page)
    await sign_in_at_provider(page, "admin-erin")

    assert page.url == wanted
    report = await backend_report(page)
    assert report["raw_path"] == "/reports/2024?sort=desc&page=2"
    headers = echo_headers(report)
    assert headers["x-forwarded-user"] == "admin-erin"
    assert headers["x-forwarded-email"] == "admin-erin@example.com"
    assert headers["x-forwarded-preferred-username"] == "admin-erin"
    assert headers["x-forwarded-groups"] == "staff,admins"
    assert headers["x-forwarded-access-token"]
    cookie_names = [part.split("=", 1)[0].strip() for part in headers.get("cookie", "").split(";")]
    assert not [name for name in cookie_names if "sidecar" in name]


async def test_identity_headers_sent_by_the_browser_are_replaced(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar()
    await page.goto(f"{sidecar.url}/whoami")
    await sign_in_at_provider(page, "frank")

    await page.set_extra_http_headers(
        {"X-Forwarded-Email": "ceo@example.com", "X-Forwarded-Groups": "admins"}
    )
    await page.goto(f"{sidecar.url}/whoami")
    headers = echo_headers(await backend_report(page))
    assert headers["x-forwarded-email"] == "frank@example.com"
    assert headers["x-forwarded-groups"] == "staff"


async def test_refresh_with_two_second_tokens_keeps_the_session(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar(access_token_ttl=2)
    await page.goto(f"{sidecar.url}/one")
    await sign_in_at_provider(page, "grace")
    first_token = echo_headers(await backend_report(page))["x-forwarded-access-token"]

    sidecar.clock.advance(5)
    second = echo_headers(await fetch_report(page, f"{sidecar.url}/two"))
    assert second["x-forwarded-email"] == "grace@example.com"
    assert second["x-forwarded-access-token"] != first_token

    # Again, with requests racing: the provider rotates refresh tokens and revokes the whole grant
    # when one is used twice, so this only passes if sidecar refreshes once for all of them.
    sidecar.clock.advance(5)
    reports = await asyncio.gather(
        *(fetch_report(page, f"{sidecar.url}/race/{i}") for i in range(5))
    )
    tokens = {echo_headers(report)["x-forwarded-access-token"] for report in reports}
    assert second["x-forwarded-access-token"] not in tokens
    assert len(tokens) == 1

    sidecar.clock.advance(5)
    after = echo_headers(await fetch_report(page, f"{sidecar.url}/three"))
    assert after["x-forwarded-user"] == "grace"
    assert after["x-forwarded-access-token"] not in tokens
    await assert_access_token_is_live(sidecar, after["x-forwarded-access-token"])


async def assert_access_token_is_live(sidecar: RunningSidecar, access_token: str) -> None:
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{sidecar.issuer}/me", headers={"Authorization": f"Bearer {access_token}"}
        ) as response,
    ):
        assert response.status == 200, await response.text()


async def test_refresh_refused_after_provider_sign_out_means_signing_in_again(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar(access_token_ttl=2)
    await page.goto(f"{sidecar.url}/desk")
    await sign_in_at_provider(page, "mallory")
    # The user signs out at the provider itself (another app's sign-out link): the provider
    # session ends, and with it the refresh token sidecar holds.
    await page.goto(f"{sidecar.issuer}/session/end")
    await confirm_sign_out_at_provider(page)

    sidecar.clock.advance(5)
    assert await userinfo_status(page, sidecar) == 401
    await page.goto(f"{sidecar.url}/desk")
    assert await shows_provider_login_form(page)
    await sign_in_at_provider(page, "mallory")
    assert page.url == f"{sidecar.url}/desk"
    assert echo_headers(await backend_report(page))["x-forwarded-user"] == "mallory"


async def test_sign_out_ends_the_local_and_the_provider_session(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar()
    await page.goto(f"{sidecar.url}/private")
    await sign_in_at_provider(page, "heidi")
    assert echo_headers(await backend_report(page))["x-forwarded-user"] == "heidi"

    await page.goto(f"{sidecar.url}/oauth2/sign_out")
    await confirm_sign_out_at_provider(page)
    # Back at sidecar's post-logout page ("/"), which is protected: straight to the provider's
    # login form, as the provider session has ended too.
    assert await shows_provider_login_form(page)
    assert await userinfo_status(page, sidecar) == 401

    await page.goto(f"{sidecar.url}/private")
    assert await shows_provider_login_form(page)


async def test_session_too_big_for_one_cookie_is_split_and_still_works(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar()
    await page.goto(f"{sidecar.url}/big")
    await sign_in_at_provider(page, "big400-lee")  # the provider gives this login 401 groups

    groups = echo_headers(await backend_report(page))["x-forwarded-groups"].split(",")
    assert len(groups) == 401
    assert groups[:2] == ["staff", "group-0001"]
    assert groups[-1] == "group-0400"
    own = [c for c in await page.context.cookies(sidecar.url) if c["name"].startswith("_sidecar")]
    assert not [c for c in own if "_login_" in c["name"]]  # the finished attempt is gone
    assert len(own) > 1
    assert all(len(c["name"]) + len(c["value"]) < 4096 for c in own)
    # Still one session on the next request, after the browser sent every chunk back.
    again = echo_headers(await fetch_report(page, f"{sidecar.url}/big/again"))
    assert again["x-forwarded-groups"].split(",") == groups


async def test_a_link_from_another_site_cannot_sign_the_user_out(
    start_sidecar: StartSidecar, servers: Servers, page: Page
) -> None:
    sidecar = await start_sidecar()
    await page.goto(f"{sidecar.url}/private")
    await sign_in_at_provider(page, "judy")
    link = f'<a id="out" href="{sidecar.url}/oauth2/sign_out">win a prize</a>'

    async def lure(request: web.Request) -> web.Response:
        del request
        return web.Response(text=link, content_type="text/html")

    other_site = web.Application()
    other_site.router.add_get("/", lure)
    other_url = await servers.serve(other_site)

    await page.goto(other_url)
    async with page.expect_navigation():
        await page.click("#out")

    # Another origin (Sec-Fetch-Site: same-site): a confirmation page, still signed in.
    assert page.url.startswith(f"{sidecar.url}/oauth2/sign_out")
    assert await userinfo_status(page, sidecar) == 200
    async with page.expect_navigation():
        await page.click('form button[type="submit"]')
    await confirm_sign_out_at_provider(page)
    assert await userinfo_status(page, sidecar) == 401


async def userinfo_status(page: Page, sidecar: RunningSidecar) -> int:
    """Status of sidecar's /oauth2/userinfo with this browser's cookies (200: signed in)."""
    response = await page.context.request.get(
        f"{sidecar.url}/oauth2/userinfo", headers={"Accept": "application/json"}
    )
    return response.status


async def test_two_tabs_signing_in_at_once_both_succeed(
    start_sidecar: StartSidecar, page: Page
) -> None:
    sidecar = await start_sidecar()
    other = await page.context.new_page()
    await page.goto(f"{sidecar.url}/tab/one")
    await other.goto(f"{sidecar.url}/tab/two")
    assert await shows_provider_login_form(page)
    assert await shows_provider_login_form(other)

    await sign_in_at_provider(page, "ivan")
    await sign_in_at_provider(other, "ivan")

    assert page.url == f"{sidecar.url}/tab/one"
    assert other.url == f"{sidecar.url}/tab/two"
    assert echo_headers(await backend_report(page))["x-forwarded-user"] == "ivan"
    assert echo_headers(await backend_report(other))["x-forwarded-user"] == "ivan"


async def test_five_line_config_run_from_the_command_line_protects_a_backend(
    oidc_provider: RunningProvider, servers: Servers, page: Page, tmp_path: Path
) -> None:
    echo_url = await servers.serve(make_echo_app())
    probe, url = servers.reserve()
    probe.close()  # `sidecar run` binds the port itself; only its number was wanted
    client = await oidc_provider.register_client([f"{url}/oauth2/callback"])
    config_path = tmp_path / "sidecar.yaml"
    config_path.write_text(
        f"""version: 1
server: {{listen: {json.dumps(url.removeprefix("http://"))}}}
upstream: {json.dumps(echo_url)}
provider:
  issuer: {json.dumps(oidc_provider.issuer)}
  client_id: {json.dumps(client.client_id)}
  client_secret: {json.dumps(client.client_secret)}
session: {{secret: {json.dumps(secrets.token_urlsafe(32))}}}
"""
    )
    log_path = tmp_path / "sidecar.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "sidecar",
            "run",
            "-c",
            str(config_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=asyncio.subprocess.STDOUT,
        )
    try:
        await wait_until_ready(url, process=process, log_path=log_path)
        await page.goto(f"{url}/legacy/app?id=7")
        await sign_in_at_provider(page, "kim")
        assert page.url == f"{url}/legacy/app?id=7"
        headers = echo_headers(await backend_report(page))
        assert headers["x-forwarded-email"] == "kim@example.com"
        assert headers["x-forwarded-user"] == "kim"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        exit_code = await asyncio.wait_for(process.wait(), timeout=20)
    assert exit_code == 0, log_path.read_text(errors="replace")
