"""The reachability probes against the echo backend, a real Redis and closed ports."""

from __future__ import annotations

from support.redis_server import RedisServer

from sidecar.doctor import diagnose
from sidecar.doctor.report import exit_code

from .conftest import Write, by_title, closed_port


async def test_unreachable_upstream(write: Write) -> None:
    findings = await diagnose(write(upstream=f"http://127.0.0.1:{closed_port()}"))
    upstream = by_title(findings, "upstream / ->")
    assert upstream.status == "fail" and "connection refused" in upstream.detail
    assert exit_code(findings) == 1


async def test_reachable_upstream_answers_head(write: Write) -> None:
    findings = await diagnose(write())
    upstream = by_title(findings, "upstream / ->")
    assert upstream.status == "ok" and "HTTP 200" in upstream.detail


async def test_unreachable_redis(write: Write) -> None:
    findings = await diagnose(
        write(session={"store": "redis", "redis": {"url": f"redis://127.0.0.1:{closed_port()}/0"}})
    )
    store = by_title(findings, "session store reachable")
    assert store.status == "fail" and "unreachable" in store.detail
    assert "session.redis" in store.fix
    assert by_title(findings, "session cookie size").status == "skip"


async def test_reachable_redis(write: Write, redis_server: RedisServer) -> None:
    findings = await diagnose(write(session={"store": "redis", "redis": {"url": redis_server.url}}))
    assert by_title(findings, "session store reachable").status == "ok"
