"""Every typed application and request key, so no module invents string keys.

Each component that needs per-app state (the upstream client, the provider directory, the session
store, ...) adds its key here, next to the others.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from sidecar.config.model import SidecarConfig

if TYPE_CHECKING:
    from sidecar.auth.services import AuthServices
    from sidecar.carry_over import CarryOver
    from sidecar.gating import Gate
    from sidecar.observability.health import ReadinessCheck
    from sidecar.observability.metrics import Metrics
    from sidecar.proxy.forward import Forwarder
    from sidecar.proxy.headers import HeaderPlan
    from sidecar.session.cookies import RequestCookies

CONFIG: web.AppKey[SidecarConfig] = web.AppKey("config", SidecarConfig)
CLOCK: web.AppKey[Callable[[], float]] = web.AppKey("clock", Callable[[], float])  # type: ignore[arg-type]

REQUEST_ID: web.RequestKey[str] = web.RequestKey("request_id", str)

# Request pipeline (built by sidecar.app.create_app).
HTTP_CLIENT: web.AppKey[aiohttp.ClientSession] = web.AppKey("http_client", aiohttp.ClientSession)
"""The pooled upstream client (no cookie jar, no decompression); lives in a cleanup context."""
FORWARDER: web.AppKey[Forwarder] = web.AppKey("forwarder")
HEADER_PLAN: web.AppKey[HeaderPlan] = web.AppKey("header_plan")
GATE: web.AppKey[Gate] = web.AppKey("gate")
"""The auth gate the catch-all route calls before forwarding (default: sidecar.gating.open_gate)."""
COOKIE_READER: web.AppKey[Callable[[Sequence[str]], RequestCookies]] = web.AppKey("cookie_reader")
"""Reads a request's Cookie headers once: sidecar's own cookies, which never go upstream, and the
rest (default: sidecar.gating.read_foreign_cookies; sign-in sets one knowing the cookie policy)."""
REQUEST_COOKIES: web.RequestKey[RequestCookies] = web.RequestKey("request_cookies")
"""This request's Cookie headers as read by COOKIE_READER (sidecar.gating.request_cookies)."""
READINESS: web.AppKey[list[ReadinessCheck]] = web.AppKey("readiness")
"""Readiness checks run by /readyz; components append theirs while the app is built."""
AUTH_SERVICES: web.AppKey[AuthServices] = web.AppKey("auth_services")
"""Sign-in's long-lived objects (session store, provider directory and client), set by
sidecar.auth.setup when a provider is configured; tests and diagnostics read it."""

ACCESS_LOG_FIELDS: web.RequestKey[dict[str, str]] = web.RequestKey("access_log_fields", dict)
"""Fields added to this request's access log line (user, sub, email, route, decision, reasons,
upstream, ...). The pipeline middleware puts an empty dict here first; anyone may add to it."""

METRICS: web.AppKey[Metrics] = web.AppKey("metrics")
"""The Prometheus metrics (sidecar.observability.metrics), one per server, kept across reloads."""
CARRY_OVER: web.AppKey[CarryOver] = web.AppKey("carry_over")
"""Process-lifetime objects every configuration generation shares (sidecar.carry_over)."""
REQUEST_METRICS: web.RequestKey[Metrics] = web.RequestKey("request_metrics")
"""The metrics the access-log path feeds for this request (set by the pipeline middleware)."""
