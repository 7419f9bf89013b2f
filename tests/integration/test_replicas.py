"""Two sidecar processes (`python -m sidecar run`, one configuration, one real redis-server, the
development provider) behave as one: signed in through A, the user is served by B; signed out
through B, the session is over on A too (even for a copy of the old cookie); a logout token the
provider sends to B ends the session on A; and a restarted replica knows every session.

The browser is an aiohttp client whose cookie jar, like a browser's, ignores ports: the two
replicas on 127.0.0.1 stand for two pods behind one address.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp.test_utils import TestServer
from joserfc import jwt
from support.claims import logout_claims
from support.echo import make_echo_app
from support.redis_server import RedisServer, free_port
from yarl import URL

from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient

CLIENT_ID = "sidecar-replicas"
CLIENT_SECRET = "client-secret-for-the-replica-test"
SESSION_SECRET = "a-session-secret-shared-by-both-replicas"
ALICE = {"sub": "alice", "email": "alice@example.org", "preferred_username": "alice"}
# Safety net only: every wait below ends when a process answers; this bounds a broken build.
DEADLINE_SECONDS = 30

ServerFactory = Callable[..., Awaitable[TestServer]]


@dataclass
class Replica:
    name: str
    port: int
    config_file: Path
    log_file: Path
    process: asyncio.subprocess.Process | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    async def start(self) -> None:
        with self.log_file.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "sidecar",
                "run",
                "-c",
                str(self.config_file),
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        await self.wait_ready()

    async def wait_ready(self) -> None:
        async with asyncio.timeout(DEADLINE_SECONDS), aiohttp.ClientSession() as http:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise AssertionError(f"{self.name} exited: {self.log_file.read_text()}")
                try:
                    async with http.get(self.url("/oauth2/readyz")) as response:
                        if response.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            async with asyncio.timeout(DEADLINE_SECONDS):
                await process.wait()
        except TimeoutError:
            process.kill()
            await process.wait()


@dataclass
class Cluster:
    provider: DevProvider
    a: Replica
    b: Replica
    http: aiohttp.ClientSession = field(
        default_factory=lambda: aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    )

    async def get(self, url: str, **headers: str) -> aiohttp.ClientResponse:
        async with self.http.get(url, headers=headers, allow_redirects=False) as response:
            await response.read()
            return response

    async def sign_in_through(self, replica: Replica) -> None:
        url = replica.url("/")
        for _hop in range(10):
            response = await self.get(url, Accept="text/html")
            if response.status not in (302, 303):
                break
            url = str(response.url.join(URL(response.headers["Location"])))
        assert response.status == 200, response.status

    async def user_on(self, replica: Replica, cookies: dict[str, str] | None = None) -> str | None:
        """Who `replica` says the browser is (None: not signed in); `cookies` replaces the jar."""
        headers = {"Accept": "application/json"}
        if cookies is not None:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
            session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        else:
            session = self.http
        try:
            async with session.get(
                replica.url("/whoami"), headers=headers, allow_redirects=False
            ) as response:
                if response.status != 200:
                    assert response.status == 401, response.status
                    return None
                body = await response.json()
        finally:
            if cookies is not None:
                await session.close()
        for name, value in body["headers"]:
            if name.lower() == "x-forwarded-user":
                return str(value)
        return None

    def cookies(self) -> dict[str, str]:
        return {cookie.key: cookie.value for cookie in self.http.cookie_jar}


def write_config(path: Path, *, port: int, issuer: str, upstream: str, redis_url: str) -> None:
    config: dict[str, Any] = {
        "version": 1,
        "upstream": upstream,
        "server": {"listen": f"127.0.0.1:{port}", "shutdown_grace_seconds": 1},
        "provider": {
            "issuer": issuer,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "scopes": ["openid", "email", "profile"],
        },
        "session": {"secret": SESSION_SECRET, "store": "redis", "redis": {"url": redis_url}},
        "auth": {"provider_logout": False},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")


@pytest.fixture
async def cluster(
    tmp_path: Path, redis_server: RedisServer, aiohttp_server: ServerFactory
) -> AsyncIterator[Cluster]:
    provider = DevProvider(auto_login=ALICE)
    issuer = await provider.start()
    echo = await aiohttp_server(make_echo_app())
    upstream = str(echo.make_url("")).rstrip("/")
    replicas = []
    for name in ("a", "b"):
        port = free_port()
        config_file = tmp_path / f"{name}.yaml"
        write_config(
            config_file, port=port, issuer=issuer, upstream=upstream, redis_url=redis_server.url
        )
        replicas.append(Replica(name, port, config_file, tmp_path / f"{name}.log"))
    provider.add_client(
        DevClient(
            CLIENT_ID,
            CLIENT_SECRET,
            redirect_uris=[replica.url("/oauth2/callback") for replica in replicas],
        )
    )
    cluster = Cluster(provider, replicas[0], replicas[1])
    try:
        await asyncio.gather(*(replica.start() for replica in replicas))
        yield cluster
    finally:
        await cluster.http.close()
        await asyncio.gather(*(replica.stop() for replica in replicas))
        await provider.stop()


async def test_signed_in_through_one_replica_served_by_the_other(cluster: Cluster) -> None:
    await cluster.sign_in_through(cluster.a)
    assert await cluster.user_on(cluster.b) == "alice"
    assert await cluster.user_on(cluster.a) == "alice"


async def test_signed_out_through_one_replica_signed_out_on_both(cluster: Cluster) -> None:
    await cluster.sign_in_through(cluster.a)
    old_cookies = cluster.cookies()
    async with cluster.http.post(
        cluster.b.url("/oauth2/sign_out"),
        headers={"Origin": cluster.b.origin},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    assert await cluster.user_on(cluster.a) is None
    assert await cluster.user_on(cluster.b) is None
    # Not only forgotten by the browser: the session is over, a copied cookie is worthless.
    assert await cluster.user_on(cluster.a, old_cookies) is None


async def test_a_logout_token_sent_to_one_replica_ends_the_session_on_the_other(
    cluster: Cluster,
) -> None:
    await cluster.sign_in_through(cluster.a)
    keys = cluster.provider.keys
    token = jwt.encode(
        {"alg": "RS256", "kid": keys.current_kid, "typ": "logout+jwt"},
        logout_claims(cluster.provider.issuer, CLIENT_ID, int(cluster.provider.clock())),
        keys.current,
    )
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            cluster.b.url("/oauth2/backchannel_logout"), data={"logout_token": token}
        ) as response,
    ):
        assert response.status == 200
        assert response.headers["Cache-Control"] == "no-store"
    assert await cluster.user_on(cluster.a) is None


async def test_a_restarted_replica_loses_no_session(cluster: Cluster) -> None:
    await cluster.sign_in_through(cluster.a)
    await cluster.a.stop()
    await cluster.a.start()
    assert await cluster.user_on(cluster.a) == "alice"
