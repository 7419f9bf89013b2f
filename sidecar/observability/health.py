"""Liveness and readiness: what `/oauth2/healthz` and `/oauth2/readyz` answer.

Liveness says only that the process serves requests (always 200). Readiness runs every registered
check; a check is a plain callable returning a `CheckResult(name, ok, detail)`, registered by the
component that owns the dependency (the auth package registers the provider check) in
`app[keys.READINESS]` while the app is built. 200 when all pass, else 503 naming what fails.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from aiohttp import web

from sidecar import keys


class CheckResult(NamedTuple):
    name: str
    ok: bool
    detail: str = ""


ReadinessCheck = Callable[[], CheckResult]


def build_readiness_report(results: Sequence[CheckResult]) -> tuple[int, dict[str, Any]]:
    """Status code and JSON body for a set of check results (no checks: ready)."""
    ready = all(result.ok for result in results)
    body: dict[str, Any] = {
        "status": "ok" if ready else "unavailable",
        "checks": {r.name: {"ok": r.ok, "detail": r.detail} for r in results},
    }
    if not ready:
        body["failing"] = [r.name for r in results if not r.ok]
    return (200 if ready else 503), body


def run_checks(checks: Sequence[ReadinessCheck]) -> list[CheckResult]:
    """Run each check; one that raises counts as failing (its error type is the detail)."""
    results = []
    for check in checks:
        try:
            results.append(check())
        except Exception as exc:
            name = getattr(check, "__name__", "check")
            results.append(CheckResult(name, False, f"check raised {type(exc).__name__}"))
    return results


_NO_STORE = {"Cache-Control": "no-store"}


async def handle_healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=_NO_STORE)


async def handle_readyz(request: web.Request) -> web.Response:
    checks: list[ReadinessCheck] = request.app[keys.READINESS]
    status, body = build_readiness_report(run_checks(checks))
    return web.json_response(body, status=status, headers=_NO_STORE)


def add_health_routes(app: web.Application, prefix: str) -> None:
    """Register `<prefix>/healthz` and `<prefix>/readyz` (prefix may be '' on the internal port)."""
    from sidecar.endpoints import HEALTHZ, READYZ

    app.router.add_get(prefix + HEALTHZ, handle_healthz, allow_head=True)
    app.router.add_get(prefix + READYZ, handle_readyz, allow_head=True)
