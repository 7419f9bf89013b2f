"""The assembled app in front of a real backend: request ids, access log, error pages, health."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from multidict import CIMultiDict

from sidecar import keys
from sidecar.app import create_app
from sidecar.config.model import SidecarConfig
from sidecar.errors import NotAuthenticatedError
from sidecar.gating import GateResult
from sidecar.observability.health import CheckResult

ClientFactory = Callable[..., Awaitable[TestClient[Any, Any]]]
ServerFactory = Callable[..., Awaitable[TestServer]]


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "path_qs": request.path_qs,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body_bytes": len(body),
        }
    )


async def _hang(request: web.Request) -> web.Response:
    await asyncio.Event().wait()  # never answers; the read timeout ends it
    raise AssertionError("unreachable")


@pytest.fixture
async def backend(aiohttp_server: ServerFactory) -> TestServer:
    app = web.Application()
    app.router.add_route("*", "/hang", _hang)
    app.router.add_route("*", "/{tail:.*}", _echo)
    return await aiohttp_server(app)


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_config(upstream: str, **server: Any) -> SidecarConfig:
    return SidecarConfig.model_validate(
        {
            "version": 1,
            "upstreams": [{"path": "/", "url": upstream, "read_timeout_seconds": 0.5}],
            "server": server,
        }
    )


def backend_url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


class Records(logging.Handler):
    """Collects the records of one logger (and its children) for a test."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def named(self, name: str) -> list[logging.LogRecord]:
        return [r for r in self.records if r.name == name]

    async def wait_for(self, name: str, count: int) -> list[logging.LogRecord]:
        # The access line is written right after the response is flushed: give the loop a turn.
        for _ in range(200):
            if len(self.named(name)) >= count:
                break
            await asyncio.sleep(0)
        return self.named(name)


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def record_text(record: logging.LogRecord) -> str:
    text = json.dumps({k: str(v) for k, v in vars(record).items()})
    return text + record.getMessage()


async def test_request_id_is_generated_when_peer_is_not_trusted(
    aiohttp_client: ClientFactory, backend: TestServer
) -> None:
    client = await aiohttp_client(create_app(make_config(backend_url(backend))))
    response = await client.get("/x", headers={"X-Request-Id": "spoofed-id"})
    assert response.status == 200
    request_id = response.headers["X-Request-Id"]
    assert request_id != "spoofed-id"
    assert len(request_id) == 32 and int(request_id, 16) >= 0
    received = CIMultiDict((await response.json())["headers"])
    assert received["X-Request-Id"] == request_id


async def test_request_id_is_taken_from_a_trusted_proxy(
    aiohttp_client: ClientFactory, backend: TestServer
) -> None:
    config = make_config(backend_url(backend), trusted_proxies=["127.0.0.1/32"])
    client = await aiohttp_client(create_app(config))
    response = await client.get("/x", headers={"X-Request-Id": "from-the-ingress-42"})
    assert response.headers["X-Request-Id"] == "from-the-ingress-42"
    received = CIMultiDict((await response.json())["headers"])
    assert received["X-Request-Id"] == "from-the-ingress-42"


async def test_request_id_from_a_trusted_proxy_must_look_like_an_id(
    aiohttp_client: ClientFactory, backend: TestServer
) -> None:
    config = make_config(backend_url(backend), trusted_proxies=["127.0.0.1/32"])
    client = await aiohttp_client(create_app(config))
    response = await client.get("/x", headers={"X-Request-Id": "bad id <script>"})
    assert response.headers["X-Request-Id"] != "bad id <script>"


async def test_access_log_has_one_line_per_request_without_secrets(
    aiohttp_client: ClientFactory, backend: TestServer, records: Records
) -> None:
    client = await aiohttp_client(create_app(make_config(backend_url(backend))))
    response = await client.get(
        "/reports/2024?code=SECRETCODE&state=SECRETSTATE",
        headers={
            "Cookie": "session=SECRETCOOKIE",
            "Authorization": "Bearer SECRETTOKEN",
            "User-Agent": "test-agent/1.0",
        },
    )
    assert response.status == 200
    await response.read()
    lines = await records.wait_for("sidecar.access", 1)
    assert len(lines) == 1
    line = vars(lines[0])
    assert line["request_id"] == response.headers["X-Request-Id"]
    assert line["method"] == "GET"
    assert line["path"] == "/reports/2024"
    assert line["status"] == 200
    assert line["bytes"] > 0
    assert line["duration_ms"] >= 0
    assert line["upstream"] == backend_url(backend)
    assert line["remote"] == "127.0.0.1"
    assert line["user_agent"] == "test-agent/1.0"
    # aiohttp.access is the echo backend's own log, not sidecar's.
    everything = "".join(record_text(r) for r in records.records if r.name != "aiohttp.access")
    for secret in ("SECRETCODE", "SECRETSTATE", "SECRETCOOKIE", "SECRETTOKEN"):
        assert secret not in everything

    await (await client.get("/second")).read()
    assert len(await records.wait_for("sidecar.access", 2)) == 2


async def test_gate_seam_adds_identity_response_headers_and_log_fields(
    aiohttp_client: ClientFactory, backend: TestServer, records: Records
) -> None:
    async def gate(request: web.Request) -> GateResult:
        return GateResult(
            identity_headers=[("X-Forwarded-User", "alice")],
            response_headers=[("Set-Cookie", "_sidecar=refreshed; Path=/")],
            log_fields={"user": "alice", "decision": "allow", "reasons": "route-public"},
        )

    app = create_app(make_config(backend_url(backend)))
    app[keys.GATE] = gate
    client = await aiohttp_client(app)
    response = await client.get("/x", headers={"X-Forwarded-User": "mallory"})
    assert response.status == 200
    received = (await response.json())["headers"]
    assert [v for k, v in received if k.lower() == "x-forwarded-user"] == ["alice"]
    assert response.headers["Set-Cookie"] == "_sidecar=refreshed; Path=/"
    (line,) = await records.wait_for("sidecar.access", 1)
    assert (line.user, line.decision, line.reasons) == ("alice", "allow", "route-public")  # type: ignore[attr-defined]


async def test_gate_refusal_gives_401_json_with_www_authenticate(
    aiohttp_client: ClientFactory, backend: TestServer
) -> None:
    async def gate(request: web.Request) -> GateResult:
        raise NotAuthenticatedError(reason="no session cookie")

    app = create_app(make_config(backend_url(backend)))
    app[keys.GATE] = gate
    client = await aiohttp_client(app)
    response = await client.get("/api/items", headers={"Accept": "application/json"})
    assert response.status == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    body = await response.json()
    assert body == {
        "error": "unauthenticated",
        "message": "Authentication required.",
        "request_id": response.headers["X-Request-Id"],
    }


async def test_unreachable_upstream_gives_502_page_for_browsers(
    aiohttp_client: ClientFactory, closed_port: int
) -> None:
    client = await aiohttp_client(create_app(make_config(f"http://127.0.0.1:{closed_port}")))
    response = await client.get("/", headers={"Accept": "text/html,*/*;q=0.8"})
    assert response.status == 502
    assert response.content_type == "text/html"
    page = await response.text()
    assert "Bad Gateway" in page
    assert "not reachable" in page
    assert response.headers["X-Request-Id"] in page
    assert "Traceback" not in page


async def test_unreachable_upstream_gives_502_json_for_api_clients(
    aiohttp_client: ClientFactory, closed_port: int
) -> None:
    client = await aiohttp_client(create_app(make_config(f"http://127.0.0.1:{closed_port}")))
    for kwargs in (
        {"headers": {"Accept": "application/json"}},
        {"headers": {"X-Requested-With": "XMLHttpRequest"}},
        {"data": b"{}", "headers": {"Content-Type": "application/json"}},
    ):
        method = "POST" if "data" in kwargs else "GET"
        response = await client.request(method, "/api", **kwargs)
        assert response.status == 502
        body = await response.json()
        assert body["error"] == "upstream_unavailable"
        assert body["request_id"] == response.headers["X-Request-Id"]


async def test_slow_upstream_gives_504(aiohttp_client: ClientFactory, backend: TestServer) -> None:
    client = await aiohttp_client(create_app(make_config(backend_url(backend))))
    response = await client.get("/hang", headers={"Accept": "application/json"})
    assert response.status == 504
    assert (await response.json())["error"] == "upstream_timeout"
    page_response = await client.get("/hang", headers={"Accept": "text/html"})
    assert page_response.status == 504
    assert "Gateway Timeout" in await page_response.text()


async def test_unexpected_error_gives_500_page_and_logs_traceback_without_secrets(
    aiohttp_client: ClientFactory, backend: TestServer, records: Records
) -> None:
    async def gate(request: web.Request) -> GateResult:
        raise RuntimeError("broken while holding access_token=SECRETTOKEN")

    app = create_app(make_config(backend_url(backend)))
    app[keys.GATE] = gate
    client = await aiohttp_client(app)
    response = await client.get("/", headers={"Accept": "text/html"})
    assert response.status == 500
    page = await response.text()
    assert "SECRETTOKEN" not in page and "RuntimeError" not in page
    (error,) = records.named("sidecar.errors")
    assert error.exc_info is not None
    from sidecar.observability.logging import JsonFormatter, RedactionFilter

    RedactionFilter().filter(error)
    formatted = JsonFormatter().format(error)
    assert "RuntimeError" in formatted and "SECRETTOKEN" not in formatted


async def test_healthz_is_always_ok(aiohttp_client: ClientFactory, closed_port: int) -> None:
    client = await aiohttp_client(create_app(make_config(f"http://127.0.0.1:{closed_port}")))
    response = await client.get("/oauth2/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}
    assert response.headers["Cache-Control"] == "no-store"


async def test_readyz_ok_without_checks(aiohttp_client: ClientFactory, backend: TestServer) -> None:
    client = await aiohttp_client(create_app(make_config(backend_url(backend))))
    response = await client.get("/oauth2/readyz")
    assert response.status == 200
    assert (await response.json())["status"] == "ok"


async def test_readyz_names_the_failing_check(
    aiohttp_client: ClientFactory, backend: TestServer
) -> None:
    app = create_app(make_config(backend_url(backend)))
    app[keys.READINESS].append(lambda: CheckResult("provider", False, "discovery failed: 503"))
    app[keys.READINESS].append(lambda: CheckResult("keys", True))
    client = await aiohttp_client(app)
    response = await client.get("/oauth2/readyz")
    assert response.status == 503
    body = await response.json()
    assert body["failing"] == ["provider"]
    assert body["checks"]["provider"] == {"ok": False, "detail": "discovery failed: 503"}
    assert body["checks"]["keys"]["ok"] is True


async def test_health_paths_do_not_shadow_the_backend(
    aiohttp_client: ClientFactory, backend: TestServer
) -> None:
    client = await aiohttp_client(create_app(make_config(backend_url(backend))))
    response = await client.get("/healthz")
    assert (await response.json())["path_qs"] == "/healthz"


async def test_oversized_header_gets_431_page_from_sidecar(
    aiohttp_client: ClientFactory, backend: TestServer, records: Records
) -> None:
    config = make_config(backend_url(backend), max_header_bytes=1024)
    client = await aiohttp_client(create_app(config))
    big_cookie = {"Cookie": "big=" + "S3CRET" * 200}
    page = await client.get("/", headers={**big_cookie, "Accept": "text/html"})
    assert page.status == 431
    assert "Request Header Fields Too Large" in await page.text()
    api = await client.get("/", headers={**big_cookie, "Accept": "application/json"})
    assert api.status == 431
    assert (await api.json())["error"] == "headers_too_large"
    long_target = await client.get("/" + "a" * 9000, headers={"Accept": "application/json"})
    assert long_target.status == 414
    lines = await records.wait_for("sidecar.access", 3)
    assert [line.status for line in lines] == [431, 431, 414]  # type: ignore[attr-defined]
    assert "S3CRET" not in "".join(record_text(r) for r in records.records)


async def test_header_beyond_the_parser_limit_is_refused_without_traceback(
    aiohttp_client: ClientFactory, backend: TestServer, records: Records
) -> None:
    config = make_config(backend_url(backend), max_header_bytes=1024)
    client = await aiohttp_client(create_app(config))
    from sidecar.observability.logging import ParserErrorFilter

    response = await client.get("/", headers={"Cookie": "big=" + "S3CRET" * 2000})
    assert response.status == 400
    body = await response.text()
    assert "Traceback" not in body
    errors = [r for r in records.records if r.name.startswith("aiohttp")]
    assert errors, "aiohttp logs the refused request"
    for record in errors:
        ParserErrorFilter().filter(record)
        assert record.exc_info is None
        assert "S3CRET" not in record.getMessage()
    (line,) = await records.wait_for("sidecar.access", 1)
    assert line.status == 400  # type: ignore[attr-defined]
    assert "S3CRET" not in record_text(line)
    ok = await client.get("/", headers={"Cookie": "small=1"})
    assert ok.status == 200
