"""The request pipeline's one middleware: request id and log fields, size limits, errors.

What used to be three middlewares (observability, errors, limits) is one function, so a request
pays for one middleware layer instead of three. In order, for every request sidecar serves:
its id (the client's `X-Request-Id` only from a trusted proxy, else a new one from
`RequestIds`), an empty access-log field dict and the metrics to feed; then the configured size
limits (431/414, `sidecar.request_limits`); then the router's handler. A `SidecarError` from the
limits or the handler becomes its page or JSON, any other exception a 500
(`sidecar.error_adapter`); aiohttp's own `HTTPException`s pass through. A request the client
abandons (its handler is cancelled) gets its access-log line here as 499, since aiohttp logs none.
Everything that depends only on the configuration is looked up once, when the app is built.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sidecar import keys
from sidecar.config.model import ServerConfig
from sidecar.error_adapter import answer_error, answer_unexpected
from sidecar.errors import SidecarError
from sidecar.observability.access import (
    ACCESS_LOGGER_NAME,
    CLIENT_CLOSED_REQUEST,
    RequestIds,
    choose_request_id,
    log_request,
    peer_is_trusted,
)
from sidecar.observability.metrics import Metrics
from sidecar.request_limits import check_request_size


def make_pipeline_middleware(
    server: ServerConfig, *, templates_dir: str | None, metrics: Metrics | None = None
) -> Middleware:
    """The app's only middleware (see the module docstring)."""
    access_logger = logging.getLogger(ACCESS_LOGGER_NAME)
    trusted_proxies = server.trusted_proxies
    request_id_header = server.request_id_header
    new_id = RequestIds()
    request_id_key = keys.REQUEST_ID
    fields_key = keys.ACCESS_LOG_FIELDS
    metrics_key = keys.REQUEST_METRICS

    @web.middleware
    async def pipeline(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Without trusted proxies no peer is trusted: skip the address and header look-ups.
        trusted = bool(trusted_proxies) and peer_is_trusted(request.remote, trusted_proxies)
        offered = request.headers.get(request_id_header) if trusted else None
        request[request_id_key] = choose_request_id(offered, peer_trusted=trusted, new_id=new_id)
        request[fields_key] = {}
        if metrics is not None:
            request[metrics_key] = metrics
        started = time.monotonic()
        try:
            check_request_size(request.raw_path, request.raw_headers, server)
            return await handler(request)
        except web.HTTPException:
            raise
        except SidecarError as exc:
            response = answer_error(request, exc, templates_dir=templates_dir)
            if response is None:
                raise
            return response
        except ConnectionResetError:
            # The client went away mid-response: nothing to answer, nothing to alarm anyone about.
            raise
        except asyncio.CancelledError:
            # The client went away; aiohttp will not log this request, so we do.
            log_request(
                access_logger, request, CLIENT_CLOSED_REQUEST, 0, time.monotonic() - started
            )
            raise
        except Exception:
            response = answer_unexpected(request, templates_dir=templates_dir)
            if response is None:
                raise
            return response

    return pipeline
