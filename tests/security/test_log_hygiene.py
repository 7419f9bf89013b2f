"""Log hygiene: a whole session life at debug level, and no secret in any log line.

Sidecar runs as `python -m sidecar run` with `logging.level: debug`; everything it writes (stdout
and stderr) is kept. The development provider runs in the test with a recorder in front of it
that keeps every secret it hands out or receives: state, nonce, PKCE challenge and verifier,
codes, access, refresh and ID tokens, the client secret. The browser keeps every cookie value
sidecar sets. The life: a sign-in, browsing (each request refreshes: the refresh margin exceeds
the token lifetime), an API call, an API call with a stolen bearer token and one with a Basic
password, a tampered cookie, a forged callback, a sign-in the provider spoils (wrong nonce), a
refresh the provider refuses, and a sign-out. Then every secret, whole and in pieces, is searched
for in the log.
"""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from sidecar.dev.provider import DevProvider

from .conftest import (
    ALICE,
    CLIENT_SECRET,
    SESSION_SECRET,
    Browser,
    Seen,
    SidecarProcess,
    StackFactory,
    build_config_data,
    make_recording_echo_app,
    register,
    start_sidecar_process,
    stop_sidecar_process,
)

_SECRET_PARAMS = (
    "state",
    "nonce",
    "code",
    "code_challenge",
    "code_verifier",
    "refresh_token",
    "access_token",
    "id_token",
    "id_token_hint",
    "client_secret",
    "client_assertion",
    "token",
)


class Recorder:
    """Every secret that crosses the provider, in either direction."""

    def __init__(self) -> None:
        self.secrets: set[str] = set()

    def add(self, value: Any) -> None:
        if isinstance(value, str) and len(value) >= 8:
            self.secrets.add(value)

    def add_params(self, params: Any) -> None:
        for name in _SECRET_PARAMS:
            self.add(params.get(name))

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.add_params(request.query)
        if request.method == "POST":
            self.add_params(await request.post())
        authorization = request.headers.get("Authorization", "")
        self.add(authorization.partition(" ")[2])
        response: web.StreamResponse = await handler(request)
        location = response.headers.get("Location")
        if location:
            self.add_params({k: v for k, v in URL(location).query.items()})
        if isinstance(response, web.Response) and response.body is not None:
            try:
                doc = json.loads(bytes(response.body))  # type: ignore[arg-type]
            except (ValueError, TypeError):
                doc = None
            if isinstance(doc, dict):
                self.add_params(doc)
        return response


async def start_provider(recorder: Recorder) -> tuple[DevProvider, web.AppRunner]:
    provider = DevProvider(auto_login=ALICE, access_token_ttl=300)
    app = provider.app()
    app.middlewares.append(recorder.middleware)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    provider.issuer = f"http://127.0.0.1:{runner.addresses[0][1]}"
    return provider, runner


def pieces(secret: str) -> list[str]:
    """The secret and the parts a careless log line might hold: each JWT segment but the
    header (which is not secret), and a 16-character slice from its middle."""
    found = [secret]
    if secret.count(".") == 2 and secret.startswith("eyJ"):
        found += [part for part in secret.split(".")[1:] if len(part) >= 16]
    if len(secret) >= 24:
        middle = len(secret) // 2
        found.append(secret[middle - 8 : middle + 8])
    return found


@pytest.fixture
async def life(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
    sidecar_processes: list[SidecarProcess],
) -> AsyncIterator[tuple[SidecarProcess, DevProvider, Recorder, Browser]]:
    recorder = Recorder()
    provider, runner = await start_provider(recorder)
    seen: list[Seen] = []
    echo = await aiohttp_server(make_recording_echo_app(seen))
    data = build_config_data(
        issuer=provider.issuer,
        upstream=str(echo.make_url("")).rstrip("/"),
        logging={"level": "debug", "format": "json"},
        session={"secret": SESSION_SECRET, "refresh_margin_seconds": 3600},
        server={"shutdown_grace_seconds": 1},
    )
    running = await start_sidecar_process(data, tmp_path)
    sidecar_processes.append(running)
    register(provider, running.origin)
    http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    try:
        yield running, provider, recorder, Browser(http)
    finally:
        await http.close()
        await runner.cleanup()


async def test_no_secret_in_any_log_line_of_a_whole_session_life(
    life: tuple[SidecarProcess, DevProvider, Recorder, Browser],
) -> None:
    sidecar, provider, recorder, browser = life
    cookie_values: set[str] = set()

    def keep_cookies(hops: Any) -> None:
        for hop in hops if isinstance(hops, list) else [hops]:
            for header in hop.set_cookies:
                name, _, rest = header.partition("=")
                value = rest.partition(";")[0]
                if name.startswith("_sidecar") and len(value) >= 8:
                    cookie_values.add(value)

    # sign in, browse (each request refreshes), API calls
    hops = await browser.follow(sidecar.url("/app?q=1"))
    keep_cookies(hops)
    assert hops[-1].status == 200, [(h.status, h.url) for h in hops]
    for path in ("/app/2", "/app/3"):
        hop = await browser.request("GET", sidecar.url(path))
        keep_cookies(hop)
        assert hop.status == 200
    assert provider.counters.refreshes >= 1
    api = await browser.request(
        "GET", sidecar.url("/api/x"), headers={"Accept": "application/json"}
    )
    keep_cookies(api)
    assert api.status == 200
    # stolen and guessed credentials from a program
    access_tokens = [s for s in recorder.secrets if s.startswith("eyJ")]
    basic = base64.b64encode(b"alice:hunter2-password").decode()
    recorder.add(basic)
    recorder.add("hunter2-password")
    async with aiohttp.ClientSession() as program:
        for authorization in (f"Bearer {access_tokens[0]}", f"Basic {basic}"):
            async with program.get(
                sidecar.url("/api/y"),
                headers={"Authorization": authorization, "Accept": "application/json"},
            ) as response:
                assert response.status == 401
        # a tampered cookie and a forged callback
        value = next(iter(cookie_values))
        tampered = value[:-6] + "AAAAAA"
        recorder.add(tampered)
        async with program.get(
            sidecar.url("/app"),
            headers={"Cookie": f"_sidecar={tampered}", "Accept": "text/html"},
            allow_redirects=False,
        ) as response:
            assert response.status == 302
        forged_state = "forged-state-0123456789abcdef"
        forged_code = "forged-code-0123456789abcdef"
        recorder.add(forged_state)
        recorder.add(forged_code)
        async with program.get(
            sidecar.url(
                f"/oauth2/callback?code={forged_code}&state={forged_state}&iss={provider.issuer}"
            )
        ) as response:
            assert response.status >= 400
    # a sign-in the provider spoils
    provider.faults.wrong_nonce = True
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as other_http:
        other = Browser(other_http)
        spoiled = await other.follow(sidecar.url("/other"))
        keep_cookies(spoiled)
        assert spoiled[-1].status >= 400
    provider.faults.reset()
    # a refresh the provider refuses ends the session; sign in again, then sign out
    provider.faults.refresh_invalid_grant = True
    refused = await browser.request("GET", sidecar.url("/app/4"))
    keep_cookies(refused)
    assert refused.status == 302
    provider.faults.reset()
    hops = await browser.follow(sidecar.url("/app/5"))
    keep_cookies(hops)
    assert hops[-1].status == 200
    out = await browser.request(
        "GET", sidecar.url("/oauth2/sign_out"), headers={"Sec-Fetch-Site": "same-origin"}
    )
    keep_cookies(out)
    assert out.status == 302
    recorder.add_params({k: v for k, v in URL(out.location).query.items()})

    stop_sidecar_process(sidecar)  # flush everything
    logs = sidecar.logs()
    lines = logs.splitlines()
    # Run at debug level, so any debug line sidecar (or a library) writes is searched too;
    # whether one appears depends on the libraries (asyncio logs its selector, uvloop nothing).
    assert len(lines) > 10
    assert any("sign" in line for line in lines)  # the life was logged at all

    secrets = {*recorder.secrets, *cookie_values, CLIENT_SECRET, SESSION_SECRET}
    assert len([s for s in secrets if s.startswith("eyJ")]) >= 3  # id, access tokens seen
    leaked = sorted(
        {
            piece
            for secret in secrets
            for piece in pieces(secret)
            if piece in logs or re.escape(piece) in logs
        }
    )
    assert leaked == [], [line for line in lines if any(p in line for p in leaked)][:5]


async def test_no_secret_in_any_raw_log_record_before_redaction(
    make_stack: StackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """The same life in process, reading the log records themselves (message, arguments and
    extra fields) before the redaction filter could mask anything: that filter is the last line
    of defence, not the reason nothing leaks."""
    caplog.set_level(logging.DEBUG)
    stack = await make_stack()
    browser = await stack.browser()
    secrets: set[str] = {CLIENT_SECRET, SESSION_SECRET}
    hops = await stack.sign_in(browser, "/app?q=1")
    for hop in hops:
        secrets.update(URL(hop.url).query.values())
        if hop.location:
            secrets.update(URL(hop.location).query.values())
    session = await stack.services.store.load(browser.cookies(), now=stack.clock())
    assert session is not None
    stack.clock.advance(stack.provider.access_token_ttl + 1)
    assert (await browser.request("GET", stack.url("/app/2"))).status == 200
    refreshed = await stack.services.store.load(browser.cookies(), now=stack.clock())
    assert refreshed is not None
    for tokens in (session.tokens, refreshed.tokens):
        secrets.update(t for t in (tokens.access_token, tokens.refresh_token, tokens.id_token) if t)
    secrets.update(browser.cookies().values())
    bearer = {"Authorization": f"Bearer {refreshed.tokens.access_token}"}
    await browser.request("GET", stack.url("/api"), headers=bearer)
    stack.provider.faults.refresh_invalid_grant = True
    stack.clock.advance(stack.provider.access_token_ttl + 1)
    await browser.request("GET", stack.url("/app/3"))
    stack.provider.faults.reset()
    await stack.sign_in(browser, "/app/4")
    secrets.update(browser.cookies().values())
    await browser.request(
        "GET", stack.url("/oauth2/sign_out"), headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert caplog.records
    text = "\n".join(
        " ".join([record.getMessage(), repr(record.args), *map(repr, vars(record).values())])
        for record in caplog.records
    )
    secrets = {s for s in secrets if len(s) >= 8 and not s.startswith(("http", "/"))}
    leaked = sorted({p for s in secrets for p in pieces(s) if p in text})
    assert leaked == [], leaked[:3]
