"""Shared pieces of the configuration model: the frozen `Model` base and small validators."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_TENANT = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}


class Model(BaseModel):
    """Base for every config object: immutable, and a typo is an error, never ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


def _check_http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("not an http(s) URL")
    return value


def parse_listen(value: str) -> tuple[str, int]:
    """Split `host:port` (IPv6 as `[::1]:4180`; port 0 = any free port); ValueError if malformed."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError("expected host:port, e.g. 0.0.0.0:4180")
    host = host.strip("[]") or "0.0.0.0"  # noqa: S104 - listening on all interfaces is the default
    return host, int(port)


def is_loopback_url(url: str) -> bool:
    return (urlsplit(url).hostname or "") in _LOOPBACK_HOSTS
