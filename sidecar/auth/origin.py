"""Sidecar's public origin: the `scheme://host[:port]` browsers use to reach it.

The origin fixes the OAuth redirect URI (`<origin><prefix>/callback`), the absolute
post-logout URI, and the origin redirect targets must stay on. `server.public_url` decides it when
set; otherwise it comes from the request: its own scheme and Host, or `X-Forwarded-Proto` /
`X-Forwarded-Host` when (and only when) the direct peer is a trusted proxy. A Host that is not a
plain `host[:port]` gives None: nothing is built from a malformed header. Pure: no aiohttp.
"""

from __future__ import annotations

import re

_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
    r"[A-Za-z0-9])?)*|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?"
)


def _first(value: str | None) -> str | None:
    """The first (client-most) entry of a comma-separated forwarding header, stripped."""
    if value is None:
        return None
    first = value.split(",", 1)[0].strip()
    return first or None


def build_origin(
    *,
    public_url: str | None,
    scheme: str,
    host: str | None,
    forwarded_proto: str | None = None,
    forwarded_host: str | None = None,
    peer_trusted: bool = False,
) -> str | None:
    """The public origin, or None when the request does not name a usable host."""
    if public_url is not None:
        return public_url.rstrip("/")
    if peer_trusted:
        scheme = (_first(forwarded_proto) or scheme).lower()
        host = _first(forwarded_host) or host
    scheme = scheme.lower()
    if scheme not in ("http", "https") or not host or not _HOST.fullmatch(host):
        return None
    host = host.lower()
    default = ":443" if scheme == "https" else ":80"
    if host.endswith(default) and not host.endswith("]"):
        host = host.removesuffix(default)
    return f"{scheme}://{host}"
