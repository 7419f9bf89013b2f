"""`sidecar demo` as a new user runs it: start it, open the printed URL, sign in with a name.

The demo is a real process; the test is a cookie-keeping HTTP client that follows redirects and
fills the development provider's sign-in form, the way a person in a browser would.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from html.parser import HTMLParser
from urllib.parse import urljoin

import aiohttp
import pytest


class _FormParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "form" and self.action is None:
            self.action = values.get("action", "")
        elif tag == "input" and "name" in values:
            self.fields[values["name"]] = values.get("value", "")


async def _start_demo() -> tuple[asyncio.subprocess.Process, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "demo",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    async with asyncio.timeout(30):
        while True:
            line = (await process.stdout.readline()).decode()
            assert line, "the demo exited before printing its URL"
            found = re.search(r"open this:\s+(http://\S+)", line)
            if found:
                return process, found.group(1)


async def _stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        return await process.wait()


async def _follow(
    session: aiohttp.ClientSession, method: str, url: str, data: dict[str, str] | None = None
) -> tuple[str, int, str]:
    for _ in range(10):
        async with session.request(method, url, data=data, allow_redirects=False) as response:
            body = await response.text()
            if response.status not in (301, 302, 303, 307):
                return url, response.status, body
            url = urljoin(url, response.headers["Location"])
            method, data = "GET", None
    raise AssertionError("too many redirects")


async def test_demo_signs_a_person_in_and_the_backend_sees_who() -> None:
    process, url = await _start_demo()
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            where, status, page = await _follow(browser, "GET", url + "some/page?x=1")
            assert status == 200
            assert "NOT FOR PRODUCTION" in page and "Sign in" in page  # the provider's form
            form = _FormParser()
            form.feed(page)
            assert form.action is not None
            form.fields.update({"username": "grace", "email": "", "groups": "users, ops"})
            where, status, page = await _follow(
                browser, "POST", urljoin(where, form.action), form.fields
            )
            assert status == 200
            assert where == url + "some/page?x=1"  # back where the person started
            assert "Hello, grace" in page
            assert "grace@example.com" in page  # X-Forwarded-Email reached the backend
            assert "ops" in page  # and the groups

            async with browser.get(
                url + "oauth2/userinfo", headers={"Accept": "application/json"}
            ) as r:
                assert r.status == 200
                assert (await r.json())["email"] == "grace@example.com"
    finally:
        assert await _stop(process) == 0


async def test_demo_refuses_an_api_client_without_a_session() -> None:
    process, url = await _start_demo()
    try:
        async with (
            aiohttp.ClientSession() as client,
            client.get(url, headers={"Accept": "application/json"}) as response,
        ):
            assert response.status == 401
            assert (await response.json())["error"] == "unauthenticated"
    finally:
        assert await _stop(process) == 0


@pytest.mark.parametrize("port", ["x", "1.5"])
async def test_demo_rejects_a_bad_port(port: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "sidecar",
        "demo",
        "--port",
        port,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        _, err = await process.communicate()
    assert process.returncode == 2
    assert b"Traceback" not in err
