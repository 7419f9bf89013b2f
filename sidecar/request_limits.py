"""Request size limits that sidecar answers itself, with a readable 431/414 instead of a bare 400.

aiohttp's parser refuses oversized requests with a plain 400 before sidecar sees them. So the
parser's hard limits are set to `PARSER_SLACK` times the configured ones, and the pipeline
middleware (`sidecar.pipeline`) enforces the configured limits exactly with `check_request_size`:
a header field over `server.max_header_bytes` (typically a cookie grown too big) gets 431 and the
error page, a request target over `server.max_request_line_bytes` gets 414. Only requests beyond
the hard limits get aiohttp's 400.
"""

from __future__ import annotations

from collections.abc import Iterable

from sidecar.config.model import ServerConfig
from sidecar.errors import HeadersTooLargeError, RequestTargetTooLongError

PARSER_SLACK = 4


def parser_limits(server: ServerConfig) -> dict[str, int]:
    """The hard limits for aiohttp's parser: generous, the middleware enforces the real ones."""
    return {
        "max_line_size": server.max_request_line_bytes * PARSER_SLACK,
        "max_field_size": server.max_header_bytes * PARSER_SLACK,
        "max_headers": server.max_headers,
    }


def check_request_size(
    target: bytes | str, raw_headers: Iterable[tuple[bytes, bytes]], server: ServerConfig
) -> None:
    """Raise the matching error when the target or one header field exceeds the configured limit."""
    if len(target) > server.max_request_line_bytes:
        raise RequestTargetTooLongError(reason=f"request target of {len(target)} bytes")
    limit = server.max_header_bytes
    for name, value in raw_headers:
        size = len(name) + len(value)
        if size > limit:
            raise HeadersTooLargeError(
                "The request headers are too large. Clearing this site's cookies may help.",
                reason=f"header field of {size} bytes (limit {limit})",
            )
