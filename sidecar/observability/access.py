"""Request ids and the access log: one line per request, with who, what, how long and why.

Each request gets its id from the pipeline middleware (`sidecar.pipeline`): the client's
`X-Request-Id` only when the peer is a trusted proxy, else a fresh one from `RequestIds`, and an
empty `keys.ACCESS_LOG_FIELDS` dict that the gate, the handlers and the forwarder fill (user, sub,
email, route, decision, reasons, upstream). The id is echoed on every response (set when the
response is prepared, so streamed responses carry it too). `AccessLogger` writes the line after
the response is sent, when its byte count is known; aiohttp also calls it for requests it could
not even parse. The line never holds the query string, cookies or Authorization. The same path
feeds the request's metrics (`sidecar.observability.metrics`), even when the line is not logged.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
import os
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from sidecar import keys
from sidecar.config.model import IPNetwork
from sidecar.observability.metrics import route_label

ACCESS_LOGGER_NAME = "sidecar.access"
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that went away before the response

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:+/=-]{1,128}$")


def new_request_id() -> str:
    return uuid.uuid4().hex


class RequestIds:
    """Request ids of one serving process: 32 hex digits like a uuid4's, unique but not secret.

    64 random bits drawn once, then a counter, so a request costs no `os.urandom` call. An app
    builds its own when it is built, which is in each serving process after the fork, so
    workers never share the random half.
    """

    def __init__(self, token_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._prefix = token_bytes(8).hex()
        self._count = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._count):016x}"


def peer_is_trusted(peer: str | None, trusted: Sequence[IPNetwork]) -> bool:
    """Whether the direct peer's address is inside one of the trusted proxy networks."""
    if not peer or not trusted:
        return False
    try:
        address = ipaddress.ip_address(peer)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in trusted)


def choose_request_id(
    offered: str | None, *, peer_trusted: bool, new_id: Callable[[], str] = new_request_id
) -> str:
    """The offered id when it comes from a trusted proxy and looks like an id, else a new one."""
    if peer_trusted and offered and _REQUEST_ID.match(offered):
        return offered
    return new_id()


def build_access_fields(
    *,
    request_id: str,
    method: str,
    path: str,
    status: int,
    bytes_sent: int,
    duration_seconds: float,
    remote: str | None,
    user_agent: str | None,
    extra: dict[str, str],
) -> dict[str, object]:
    """The fields of one access log line, in a stable order; `extra` cannot override the core."""
    fields: dict[str, object] = {
        "request_id": request_id,
        "method": method,
        "path": path,
        "status": status,
        "bytes": bytes_sent,
        "duration_ms": round(duration_seconds * 1000, 2),
        "upstream": extra.get("upstream", ""),
        "remote": remote or "",
        "user_agent": user_agent or "",
    }
    for key, value in extra.items():
        fields.setdefault(key, value)
    return fields


def log_request(
    logger: logging.Logger,
    request: web.BaseRequest,
    status: int,
    bytes_sent: int,
    duration_seconds: float,
) -> None:
    extra = request.get(keys.ACCESS_LOG_FIELDS) or {}
    metrics = request.get(keys.REQUEST_METRICS)
    if metrics is not None:
        metrics.observe_request(
            route=route_label(request, extra),
            method=request.method,
            status=status,
            duration_seconds=duration_seconds,
            fields=extra,
        )
    if not logger.isEnabledFor(logging.INFO):
        return
    request_id = request.get(keys.REQUEST_ID) or new_request_id()
    fields = build_access_fields(
        request_id=request_id,
        method=request.method,
        path=request.path,  # never the query string
        status=status,
        bytes_sent=bytes_sent,
        duration_seconds=duration_seconds,
        remote=request.remote,
        user_agent=request.headers.get("User-Agent"),
        extra=extra,
    )
    logger.info("%s %s %s", request.method, request.path, status, extra=fields)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access-log hook, writing sidecar's line to the `sidecar.access` logger."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        log_request(self.logger, request, response.status, response.body_length, time)

    @property
    def enabled(self) -> bool:
        # Always: metrics are fed from here too; the line itself is skipped below INFO.
        return True


def make_request_id_echo(
    request_id_header: str,
) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """An `on_response_prepare` hook that puts the request id on every response before it leaves."""

    async def echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
        request_id = request.get(keys.REQUEST_ID)
        if request_id:
            response.headers[request_id_header] = request_id

    return echo_request_id
