"""The one adapter from errors to HTTP responses: a page for browsers, JSON for programs.

Deep code raises `SidecarError` subclasses; the pipeline middleware (`sidecar.pipeline`) hands
them to `answer_error`, which turns them into their status with the error's safe message, as the
readable error page for browsers or `{"error": code, "message": ..., "request_id": ...}` for API
clients (see `pages.wants_json`). Any other exception becomes a 500 the same way
(`answer_unexpected`) and is logged with its traceback (the log's redaction filter masks
credentials). aiohttp's own `HTTPException`s (redirects, 404s) pass through. When the response
has already begun, there is nothing left to answer: both give None and the caller re-raises.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from aiohttp import web

from sidecar import keys
from sidecar.errors import SidecarError
from sidecar.pages import render_error, wants_json

logger = logging.getLogger("sidecar.errors")

_NO_STORE = ("Cache-Control", "no-store")


def build_error_response(
    request: web.Request,
    *,
    status: int,
    code: str,
    message: str,
    headers: Sequence[tuple[str, str]] = (),
    templates_dir: str | None = None,
) -> web.Response:
    """The response for an error: JSON or HTML by what the client wants, never cached."""
    request_id = request.get(keys.REQUEST_ID, "")
    if wants_json(request.headers, request.method):
        response: web.Response = web.json_response(
            {"error": code, "message": message, "request_id": request_id}, status=status
        )
    else:
        page = render_error(
            status, code, message, templates_dir=templates_dir, request_id=request_id
        )
        response = web.Response(status=status, text=page, content_type="text/html")
    response.headers[_NO_STORE[0]] = _NO_STORE[1]
    for name, value in headers:
        response.headers.add(name, value)
    if status == 401 and "WWW-Authenticate" not in response.headers:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sidecar"'
    return response


def _already_sent(request: web.Request) -> bool:
    return getattr(request.writer, "output_size", 0) > 0


def answer_error(
    request: web.Request, exc: SidecarError, *, templates_dir: str | None
) -> web.Response | None:
    """Log `exc` and build its response; None when the response has already begun."""
    request[keys.ACCESS_LOG_FIELDS].setdefault("error", exc.code)
    logger.log(
        logging.ERROR if exc.status >= 500 else logging.INFO,
        "%s: %s",
        exc.code,
        exc.reason or exc.message,
        extra={"request_id": request.get(keys.REQUEST_ID, ""), "error": exc.code},
    )
    if _already_sent(request):
        return None
    return build_error_response(
        request,
        status=exc.status,
        code=exc.code,
        message=exc.message,
        headers=exc.headers,
        templates_dir=templates_dir,
    )


def answer_unexpected(request: web.Request, *, templates_dir: str | None) -> web.Response | None:
    """Log the exception being handled, with its traceback, and build the 500; None when the
    response has already begun. Call it only from an `except` block."""
    request[keys.ACCESS_LOG_FIELDS].setdefault("error", SidecarError.code)
    logger.exception(
        "unhandled error while serving %s %s",
        request.method,
        request.path,
        extra={"request_id": request.get(keys.REQUEST_ID, ""), "error": SidecarError.code},
    )
    if _already_sent(request):
        return None
    return build_error_response(
        request,
        status=500,
        code=SidecarError.code,
        message=SidecarError.message,
        templates_dir=templates_dir,
    )
