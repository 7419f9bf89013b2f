"""The one builder of headers crossing sidecar: request headers upstream, response headers back.

Upstream request headers are built in two steps, in this order: strip, then add. Stripping removes
hop-by-hop headers (RFC 9110 section 7.6.1) and every header a `Connection` header names, every
client-sent copy of an identity header (compared case-insensitively with `_` read as `-`, so
`x_forwarded_email` goes too), `X-Auth-Request-*`, the configured `headers.strip`, sidecar's own
cookies from `Cookie`, and forwarding headers from untrusted peers. Adding then sets
`X-Forwarded-For/-Proto/-Host`, `Host`, the request id and, last of all, the identity headers, so
nothing a client sends can remove or duplicate what sidecar adds. Everything that depends only on
the configuration is computed once in `HeaderPlan`; the per-request functions are one pass over the
headers. Pure: no aiohttp.web, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from multidict import CIMultiDict

from sidecar.config.model import IPNetwork, SidecarConfig
from sidecar.endpoints import (
    HOP_BY_HOP,
    X_AUTH_REQUEST_HEADERS,
    X_FORWARDED_ACCESS_TOKEN,
    X_FORWARDED_FOR,
    X_FORWARDED_HOST,
    X_FORWARDED_PROTO,
)

_X_AUTH_REQUEST_PREFIX = "x-auth-request-"
# Headers that describe the client's connection: believed only from trusted proxies.
_FORWARDING = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})
# More headers that backends believe about the client or the original URL (X-Original-URL can
# re-route a request past the path the gate checked): dropped unless a trusted proxy sent them.
_FORWARDING_UNTRUSTED_ONLY = frozenset(
    {
        "forwarded",
        "x-real-ip",
        "x-forwarded-port",
        "x-forwarded-prefix",
        "x-forwarded-server",
        "x-original-url",
        "x-rewrite-url",
    }
)
_TRUST_CACHE_MAX = 4096


def normalize_header_name(name: str) -> str:
    """Lower case with `_` read as `-`: the spelling under which two header names are the same."""
    lowered = name.lower()
    return lowered.replace("_", "-") if "_" in lowered else lowered


@dataclass(frozen=True, slots=True)
class HeaderPlan:
    """Everything about header building that depends only on the configuration, computed once."""

    strip: frozenset[str]
    """Normalised names of client headers always removed (identity headers, headers.strip, ...)."""
    strip_prefixes: tuple[str, ...]
    """Normalised name prefixes always removed (`x-auth-request-`)."""
    trusted: tuple[IPNetwork, ...]
    """Networks of proxies whose forwarding headers are believed and appended to."""
    request_id_header: str = "X-Request-Id"
    _trust_cache: dict[str, bool] = field(default_factory=dict, compare=False, repr=False)

    def is_trusted(self, peer: str | None) -> bool:
        """Whether `peer` (an IP address as text) is one of the trusted proxies."""
        if peer is None or not self.trusted:
            return False
        cache = self._trust_cache
        known = cache.get(peer)
        if known is not None:
            return known
        try:
            address = ipaddress.ip_address(peer.partition("%")[0])
        except ValueError:
            result = False
        else:
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                mapped: ipaddress.IPv4Address | ipaddress.IPv6Address = address.ipv4_mapped
            else:
                mapped = address
            result = any(mapped in network for network in self.trusted)
        if len(cache) >= _TRUST_CACHE_MAX:
            cache.clear()
        cache[peer] = result
        return result


def build_header_plan(config: SidecarConfig) -> HeaderPlan:
    """Build the header plan once at start-up from the configuration."""
    headers = config.headers
    names: list[str] = [*headers.claims, X_FORWARDED_ACCESS_TOKEN, *X_AUTH_REQUEST_HEADERS]
    names.extend(headers.strip)
    if headers.authorization:
        names.append("Authorization")
    names.append(config.server.request_id_header)
    # Host is always set by sidecar (passed through or replaced), never copied blindly.
    names.append("Host")
    return HeaderPlan(
        strip=frozenset(normalize_header_name(name) for name in names),
        strip_prefixes=(_X_AUTH_REQUEST_PREFIX,),
        trusted=tuple(config.server.trusted_proxies),
        request_id_header=config.server.request_id_header,
    )


def _connection_tokens(lowered: Sequence[tuple[str, str, str]]) -> frozenset[str]:
    """Lower-cased names listed in every Connection header (comma lists, several headers)."""
    tokens: set[str] = set()
    for lname, _name, value in lowered:
        if lname == "connection":
            for token in value.split(","):
                token = token.strip().lower()
                if token:
                    tokens.add(token)
    return frozenset(tokens)


def _filter_cookie(value: str, drop: Callable[[str], bool]) -> str:
    """The Cookie header value without the cookies `drop` selects (unchanged when none is)."""
    kept: list[str] = []
    dropped = False
    for pair in value.split(";"):
        stripped = pair.strip()
        if not stripped:
            continue
        name = stripped.partition("=")[0].strip()
        if drop(name):
            dropped = True
        else:
            kept.append(stripped)
    if not dropped:
        return value.strip()
    return "; ".join(kept)


def build_upstream_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    plan: HeaderPlan,
    peer: str | None,
    scheme: str,
    host: str,
    request_id: str,
    identity_headers: Sequence[tuple[str, str]],
    cookie_names_to_drop: Callable[[str], bool],
    upstream_host: str | None,
) -> CIMultiDict[str]:
    """The headers sent upstream: the client's minus what must not pass, plus what sidecar adds.

    `host` is the request's Host; it is sent on unless `upstream_host` is given (the upstream's
    `host:port`, for `preserve_host: false`). `identity_headers` are added last.
    """
    lowered = [(name.lower(), name, value) for name, value in incoming]
    connection = _connection_tokens(lowered)
    trusted = plan.is_trusted(peer)
    strip = plan.strip
    prefixes = plan.strip_prefixes

    out: CIMultiDict[str] = CIMultiDict()
    spelling: dict[str, str] = {}
    cookies: list[str] = []
    forwarded_for: list[str] = []
    forwarded_proto: str | None = None
    forwarded_host: str | None = None
    for lname, name, value in lowered:
        if lname in HOP_BY_HOP or lname in connection:
            continue
        key = lname.replace("_", "-") if "_" in lname else lname
        if key in strip or key.startswith(prefixes):
            continue
        if key in _FORWARDING:
            if trusted and key == lname:
                if lname == "x-forwarded-for":
                    forwarded_for.append(value)
                elif lname == "x-forwarded-proto":
                    forwarded_proto = forwarded_proto or value
                else:
                    forwarded_host = forwarded_host or value
            continue
        if key in _FORWARDING_UNTRUSTED_ONLY and not trusted:
            continue
        if lname == "cookie":
            cookies.append(_filter_cookie(value, cookie_names_to_drop))
            continue
        # Repeats keep the first spelling: aiohttp's client merges `X-A` and `x-a` into one.
        out.add(spelling.setdefault(lname, name), value)

    cookie = "; ".join(c for c in cookies if c)
    if cookie:
        out["Cookie"] = cookie
    out["Host"] = upstream_host if upstream_host is not None else host
    if peer is not None:
        forwarded_for.append(peer)
    if forwarded_for:
        out[X_FORWARDED_FOR] = ", ".join(forwarded_for)
    out[X_FORWARDED_PROTO] = forwarded_proto or scheme
    out[X_FORWARDED_HOST] = forwarded_host or host
    out[plan.request_id_header] = request_id
    for name, value in identity_headers:
        out.add(name, value)
    return out


def build_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; everything else (Set-Cookie) as is."""
    items = list(upstream_headers)
    connection: set[str] = set()
    for name, value in items:
        if name.lower() == "connection":
            connection.update(t.strip().lower() for t in value.split(","))
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in items:
        lname = name.lower()
        if lname in HOP_BY_HOP or lname in connection:
            continue
        out.add(name, value)
    return out
