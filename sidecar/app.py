"""`create_app`: the one place sidecar's parts are built and wired together.

The request pipeline, outermost first, the first three in one middleware (`sidecar.pipeline`):

    request id, access-log fields  →  errors (SidecarError → page or JSON)
      →  limits (431/414 with a page)
      →  router: health under auth.prefix | auth endpoints (added by sidecar.auth) | catch-all
           catch-all: gate (app[keys.GATE]) → build upstream headers → Forwarder

Long-lived resources (the pooled upstream client and the forwarder using it) live in a cleanup
context, so they are made inside the running loop and closed on shutdown. Parser limits and the
access logger travel in `handler_args`, so every runner of this app (sidecar's server or a test
server) enforces and logs the same way. `serve` (re-exported from `sidecar.server`) runs it.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import AsyncIterator, Callable

from aiohttp import web

from sidecar import keys
from sidecar.carry_over import CarryOver
from sidecar.config.model import SidecarConfig
from sidecar.gating import open_gate, read_foreign_cookies, request_cookies
from sidecar.observability.access import ACCESS_LOGGER_NAME, AccessLogger, make_request_id_echo
from sidecar.observability.health import add_health_routes
from sidecar.observability.metrics import METRICS_PATH, Metrics, add_metrics_route
from sidecar.pipeline import make_pipeline_middleware
from sidecar.proxy.forward import Forwarder, create_upstream_client
from sidecar.proxy.headers import build_header_plan, build_upstream_headers
from sidecar.request_limits import parser_limits

AuthSetup = Callable[[web.Application, SidecarConfig, Callable[[], float]], None]
"""`sidecar.auth.setup(app, config, clock)`: called by create_app when a provider is configured."""

__all__ = ["build_handler_args", "create_app", "serve"]


def build_handler_args(config: SidecarConfig) -> dict[str, object]:
    """Per-connection settings for aiohttp's protocol: parser limits and sidecar's access log."""
    server = config.server
    return {
        **parser_limits(server),
        "access_log_class": AccessLogger,
        "access_log": logging.getLogger(ACCESS_LOGGER_NAME),
    }


async def handle_proxy(request: web.Request) -> web.StreamResponse:
    """Everything that is not sidecar's own: through the gate, then to the upstream."""
    app = request.app
    result = await app[keys.GATE](request)
    fields = request[keys.ACCESS_LOG_FIELDS]
    fields.update(result.log_fields)
    forwarder = app[keys.FORWARDER]
    upstream = forwarder.select(request.path)
    fields["upstream"] = upstream.url
    headers = build_upstream_headers(
        request.headers.items(),
        plan=app[keys.HEADER_PLAN],
        peer=request.remote,
        scheme=request.scheme,
        host=request.host,
        request_id=request[keys.REQUEST_ID],
        identity_headers=result.identity_headers,
        cookie=request_cookies(request).upstream,
        upstream_host=forwarder.upstream_host(upstream),
        drop=result.drop_request_headers,
    )
    return await forwarder.forward(request, headers, extra_response_headers=result.response_headers)


def _upstream_context(config: SidecarConfig) -> Callable[[web.Application], AsyncIterator[None]]:
    async def upstream_client(app: web.Application) -> AsyncIterator[None]:
        client = create_upstream_client()
        app[keys.HTTP_CLIENT] = client
        forwarder = Forwarder(client, config.upstreams, max_body_bytes=config.server.max_body_bytes)
        app[keys.FORWARDER] = forwarder
        try:
            yield
        finally:
            forwarder.close()
            await client.close()

    return upstream_client


def create_app(
    config: SidecarConfig,
    *,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    carry_over: CarryOver | None = None,
) -> web.Application:
    """Build the whole application for `config`; nothing is built anywhere else. `metrics` and
    `carry_over` are given when the app replaces another on a config reload, else new."""
    server = config.server
    metrics = metrics if metrics is not None else Metrics()
    app = web.Application(
        middlewares=[
            make_pipeline_middleware(
                server, templates_dir=config.auth.templates_dir, metrics=metrics
            )
        ],
        handler_args=build_handler_args(config),
        client_max_size=server.max_body_bytes or 1024**2,
    )
    app[keys.CONFIG] = config
    app[keys.CLOCK] = clock
    app[keys.METRICS] = metrics
    app[keys.CARRY_OVER] = carry_over if carry_over is not None else CarryOver()
    app[keys.HEADER_PLAN] = build_header_plan(config)
    app[keys.GATE] = open_gate
    app[keys.COOKIE_READER] = read_foreign_cookies
    app[keys.READINESS] = []
    app.on_response_prepare.append(make_request_id_echo(server.request_id_header))
    app.cleanup_ctx.append(_upstream_context(config))

    add_health_routes(app, config.auth.prefix)
    if server.metrics_on_main_port:
        add_metrics_route(app, config.auth.prefix + METRICS_PATH)
    if config.provider is not None:
        # The seam for sign-in: sidecar.auth.setup replaces the gate, sets COOKIE_READER, adds its
        # routes under auth.prefix, its readiness check and its own cleanup contexts.
        setup_auth: AuthSetup = importlib.import_module("sidecar.auth").setup
        setup_auth(app, config, clock)
    app.router.add_route("*", "/{tail:.*}", handle_proxy)
    return app


def create_health_app(config: SidecarConfig, main_app: web.Application) -> web.Application:
    """The app on `server.internal_listen`: /healthz, /readyz and /metrics at the root."""
    app = web.Application(handler_args=build_handler_args(config))
    app[keys.CONFIG] = config
    app[keys.READINESS] = main_app[keys.READINESS]
    app[keys.METRICS] = main_app[keys.METRICS]
    add_health_routes(app, "")
    add_metrics_route(app, METRICS_PATH)
    return app


def serve(config: SidecarConfig, config_path: str | None = None) -> int:
    """Run sidecar until SIGTERM/SIGINT; see `sidecar.server.serve`."""
    from sidecar.server import serve as _serve

    return _serve(config, config_path)
