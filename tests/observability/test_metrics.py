"""Metrics change as requests flow: scrape /metrics before and after real requests through sidecar
(echo backend, development provider), and read the numbers a Prometheus server would."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from sidecar import keys
from sidecar.app import create_app, create_health_app
from sidecar.config.model import SidecarConfig
from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.observability.metrics import MAX_LABEL_VALUES, Metrics, status_class

ServerFactory = Callable[..., Awaitable[TestServer]]
ClientFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]

CLIENT_ID = "metrics-tests"
CLIENT_SECRET = "client-secret-for-metrics-tests"
SESSION_SECRET = "a-session-secret-of-at-least-32-characters"
ALICE = {"sub": "alice", "email": "alice@example.org", "email_verified": True, "groups": ["staff"]}


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape as {(name, sorted labels): value}."""
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plain_config(upstream: str, **server: Any) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {"version": 1, "upstream": upstream, "server": {"metrics_on_main_port": True, **server}}
    )


async def scrape(
    client: TestClient[web.Request, web.Application], path: str = "/oauth2/metrics"
) -> Any:
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await response.text())


async def test_requests_are_counted_by_route_method_and_status_class(
    aiohttp_client: ClientFactory, echo_server: TestServer
) -> None:
    client = await aiohttp_client(create_app(plain_config(str(echo_server.make_url("")))))
    before = await scrape(client)
    for path in ("/echo", "/status/404", "/status/503", "/private/user-4711?q=1"):
        await client.get(path)
    await client.post("/echo", data=b"x")
    after = await scrape(client)

    counted = "sidecar_requests_total"
    assert (
        value(after, counted, route="default", method="GET", status_class="2xx")
        == value(before, counted, route="default", method="GET", status_class="2xx") + 2
    )
    assert value(after, counted, route="default", method="GET", status_class="4xx") == 1
    assert value(after, counted, route="default", method="GET", status_class="5xx") == 1
    assert value(after, counted, route="default", method="POST", status_class="2xx") == 1
    # The scrape itself is a request on the main port: its route is the endpoint's pattern.
    assert value(after, counted, route="/oauth2/metrics", method="GET", status_class="2xx") == 1
    assert value(after, "sidecar_request_duration_seconds_count", route="default") == 5
    assert value(after, "sidecar_request_duration_seconds_bucket", route="default", le="+Inf") == 5
    assert value(after, "sidecar_build_info", version=__import__("sidecar").__version__) == 1


async def test_raw_paths_and_invented_methods_never_become_labels(
    aiohttp_client: ClientFactory, echo_server: TestServer
) -> None:
    client = await aiohttp_client(create_app(plain_config(str(echo_server.make_url("")))))
    await client.get("/users/user-4711/secret-document")
    await client.request("PROPFIND", "/coffee")
    response = await client.get("/oauth2/metrics")
    text = await response.text()
    assert "user-4711" not in text and "secret-document" not in text and "PROPFIND" not in text
    samples = parse(text)
    assert (
        value(
            samples, "sidecar_requests_total", route="default", method="other", status_class="2xx"
        )
        == 1
    )


async def test_upstream_errors_are_counted_by_kind(aiohttp_client: ClientFactory) -> None:
    config = plain_config(f"http://127.0.0.1:{closed_port()}")
    client = await aiohttp_client(create_app(config))
    response = await client.get("/anything", headers={"Accept": "application/json"})
    assert response.status == 502
    samples = await scrape(client)
    assert value(samples, "sidecar_upstream_errors_total", kind="unavailable") == 1
    assert (
        value(samples, "sidecar_requests_total", route="default", method="GET", status_class="5xx")
        == 1
    )


async def test_metrics_are_served_on_the_internal_app_and_not_on_the_main_port_by_default(
    aiohttp_client: ClientFactory, echo_server: TestServer
) -> None:
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "upstream": str(echo_server.make_url("")),
            "server": {"internal_listen": "127.0.0.1:0"},
        }
    )
    main_app = create_app(config)
    main = await aiohttp_client(main_app)
    internal = await aiohttp_client(create_health_app(config, main_app))
    response = await main.get("/oauth2/metrics")
    assert response.headers.get("X-Echo") == "1"  # an ordinary path, proxied to the backend
    await main.get("/echo")
    samples = await scrape(internal, "/metrics")
    assert (
        value(samples, "sidecar_requests_total", route="default", method="GET", status_class="2xx")
        == 2
    )
    # Scrapes on the internal port do not count themselves.
    again = await scrape(internal, "/metrics")
    assert not any(labels and dict(labels).get("route") == "/metrics" for _, labels in again)


def test_every_label_admits_a_bounded_number_of_values() -> None:
    metrics = Metrics()
    for n in range(MAX_LABEL_VALUES + 50):
        metrics.sign_in_event("sign_in_failed", f"reason_{n}")
    metrics.sign_in_event("sign_in_failed", "bad value with spaces")
    samples = parse(metrics.render().decode())
    reasons = {
        dict(labels)["reason"]
        for name, labels in samples
        if name == "sidecar_sign_ins_failed_total"
    }
    assert len(reasons) == MAX_LABEL_VALUES + 1  # the admitted ones and "other"
    assert value(samples, "sidecar_sign_ins_failed_total", reason="other") == 51


def test_status_classes() -> None:
    assert [status_class(s) for s in (101, 204, 302, 499, 504, 42)] == [
        "1xx",
        "2xx",
        "3xx",
        "4xx",
        "5xx",
        "other",
    ]


# -- with sign-in ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def provider() -> AsyncIterator[DevProvider]:
    clock = FakeClock()
    dev = DevProvider(clock=clock, auto_login=ALICE)
    await dev.start()
    yield dev
    await dev.stop()


async def signed_in_stack(
    aiohttp_server: ServerFactory, provider: DevProvider, upstream: str, **sections: Any
) -> tuple[TestServer, aiohttp.ClientSession]:
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "upstream": upstream,
            "server": {"metrics_on_main_port": True},
            "provider": {
                "issuer": provider.issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "scopes": ["openid", "email", "profile", "groups"],
            },
            "session": {"secret": SESSION_SECRET},
            **sections,
        }
    )
    server = await aiohttp_server(create_app(config, clock=provider.clock))
    provider.add_client(
        DevClient(
            CLIENT_ID, CLIENT_SECRET, redirect_uris=[str(server.make_url("/oauth2/callback"))]
        )
    )
    directory = server.app[keys.AUTH_SERVICES].directory
    assert directory is not None
    await asyncio.wait_for(directory.wait_ready(), 10)
    browser = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    return server, browser


async def scrape_url(browser: aiohttp.ClientSession, server: TestServer) -> Any:
    async with browser.get(server.make_url("/oauth2/metrics")) as response:
        return parse(await response.text())


async def test_sign_ins_refreshes_and_policy_denials_are_counted(
    aiohttp_server: ServerFactory, provider: DevProvider, echo_server: TestServer
) -> None:
    server, browser = await signed_in_stack(
        aiohttp_server,
        provider,
        str(echo_server.make_url("")),
        policies={"ops": {"groups_any": ["ops"]}},
        routes=[{"name": "admin", "path": "/admin", "policy": "ops"}],
    )
    async with browser:
        async with browser.get(server.make_url("/echo")) as response:
            assert response.status == 200  # signed in via the provider and back
        async with browser.get(server.make_url("/admin")) as response:
            assert response.status == 403
        async with (
            aiohttp.ClientSession() as stranger,
            stranger.get(
                server.make_url("/oauth2/callback?state=forged&code=x&iss=" + provider.issuer)
            ) as response,
        ):
            assert response.status == 400  # no sign-in attempt of this browser has that state
        clock = provider.clock
        assert isinstance(clock, FakeClock)
        clock.now += provider.access_token_ttl  # the access token is due for refresh
        async with browser.get(server.make_url("/echo")) as response:
            assert response.status == 200
        samples = await scrape_url(browser, server)

    assert value(samples, "sidecar_sign_ins_started_total") == 1
    assert value(samples, "sidecar_sign_ins_completed_total") == 1
    assert value(samples, "sidecar_sign_ins_failed_total", reason="attempt_unknown") == 1
    assert value(samples, "sidecar_refreshes_total", outcome="refreshed") == 1
    assert (
        value(
            samples,
            "sidecar_policy_denials_total",
            route="admin",
            reason="policy:ops:groups_any-missing",
        )
        == 1
    )
    assert (
        value(samples, "sidecar_requests_total", route="admin", method="GET", status_class="4xx")
        == 1
    )
    assert (
        value(
            samples,
            "sidecar_requests_total",
            route="sign-in-callback",
            method="GET",
            status_class="3xx",
        )
        == 1
    )


async def test_rejected_refresh_is_counted(
    aiohttp_server: ServerFactory, provider: DevProvider, echo_server: TestServer
) -> None:
    server, browser = await signed_in_stack(aiohttp_server, provider, str(echo_server.make_url("")))
    async with browser:
        async with browser.get(server.make_url("/echo")) as response:
            assert response.status == 200
        provider.faults.refresh_invalid_grant = True
        clock = provider.clock
        assert isinstance(clock, FakeClock)
        clock.now += provider.access_token_ttl
        async with browser.get(
            server.make_url("/echo"), headers={"Accept": "application/json"}
        ) as response:
            assert response.status == 401
        samples = await scrape_url(browser, server)
    assert value(samples, "sidecar_refreshes_total", outcome="rejected") == 1


async def test_provider_fetch_errors_are_counted(
    aiohttp_server: ServerFactory, provider: DevProvider, echo_server: TestServer
) -> None:
    provider.faults.down = True
    config = SidecarConfig.model_validate(
        {
            "version": 1,
            "upstream": str(echo_server.make_url("")),
            "server": {"metrics_on_main_port": True},
            "provider": {"issuer": provider.issuer, "client_id": CLIENT_ID, "client_secret": "s"},
            "session": {"secret": SESSION_SECRET},
        }
    )
    server = await aiohttp_server(create_app(config))
    metrics = server.app[keys.METRICS]
    async with asyncio.timeout(10):
        while not value(
            parse(metrics.render().decode()),
            "sidecar_provider_fetch_errors_total",
            kind="discovery",
        ):
            await asyncio.sleep(0.01)  # the directory's first attempt runs in the background
