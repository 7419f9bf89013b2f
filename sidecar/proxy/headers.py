"""The one builder of headers crossing sidecar: request headers upstream, response headers back.

Upstream request headers are built in two steps, in this order: strip, then add. Stripping removes
hop-by-hop headers (RFC 9110 section 7.6.1) and every header a `Connection` header names, every
client-sent copy of an identity header (compared case-insensitively with `_` read as `-`, so
`x_forwarded_email` goes too), `X-Auth-Request-*`, the configured `headers.strip`, sidecar's own
cookies from `Cookie` (found in the one reading of a request's cookies,
`sidecar.session.cookies.read_request_cookies`, which gives the value to send), and forwarding
headers from untrusted peers. Adding then sets `X-Forwarded-For/-Proto/-Host`, `Host`, the request
id and, last of all, the identity headers, so nothing a client sends can remove or duplicate what
sidecar adds. Everything that depends only on the configuration is computed once in `HeaderPlan`;
the per-request functions are one pass over the headers. Pure: no aiohttp.web, no I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Sequence
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
_NAME_CACHE_MAX = 4096
# What to do with a client header, by name (see HeaderPlan.classify).
_KEEP = "keep"
_DROP = "drop"
_COOKIE = "cookie"
_UNTRUSTED_ONLY = "untrusted-only"
_XFF = "x-forwarded-for"
_XF_PROTO = "x-forwarded-proto"
_XF_HOST = "x-forwarded-host"
_FORWARDING_KIND = {
    "x-forwarded-for": _XFF,
    "x-forwarded-proto": _XF_PROTO,
    "x-forwarded-host": _XF_HOST,
}
# Connection tokens that name no end-to-end header: the common `keep-alive`, `close`, `upgrade`.
_PLAIN_CONNECTION_TOKENS = frozenset({"keep-alive", "close", "upgrade"})


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
    _name_cache: dict[str, tuple[str, str]] = field(default_factory=dict, compare=False, repr=False)

    def classify(self, name: str) -> tuple[str, str]:
        """`(lower-cased name, what to do with it)` for a client header; memoised per spelling."""
        cache = self._name_cache
        known = cache.get(name)
        if known is not None:
            return known
        lname = name.lower()
        key = lname.replace("_", "-") if "_" in lname else lname
        kind: str
        if lname in HOP_BY_HOP or key in self.strip or key.startswith(self.strip_prefixes):
            kind = _DROP
        elif key in _FORWARDING:
            # Only the exact spelling is believed, and only from a trusted proxy.
            kind = _FORWARDING_KIND[key] if key == lname else _DROP
        elif key in _FORWARDING_UNTRUSTED_ONLY:
            kind = _UNTRUSTED_ONLY
        elif lname == "cookie":
            kind = _COOKIE
        else:
            kind = _KEEP
        if len(cache) >= _NAME_CACHE_MAX:
            cache.clear()  # a client inventing names cannot grow this without bound
        result = cache[name] = (lname, kind)
        return result

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
    # The signed identity assertion's header: only sidecar may send it, whether enabled or not.
    names.append(config.identity_assertion.header)
    # Host is always set by sidecar (passed through or replaced), never copied blindly.
    names.append("Host")
    return HeaderPlan(
        strip=frozenset(normalize_header_name(name) for name in names),
        strip_prefixes=(_X_AUTH_REQUEST_PREFIX,),
        trusted=tuple(config.server.trusted_proxies),
        request_id_header=config.server.request_id_header,
    )


def _connection_tokens(values: Sequence[str]) -> frozenset[str]:
    """Lower-cased header names listed in Connection headers, beyond keep-alive/close/upgrade."""
    tokens: set[str] = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token and token not in _PLAIN_CONNECTION_TOKENS:
                tokens.add(token)
    return frozenset(tokens)


def build_upstream_headers(
    incoming: Iterable[tuple[str, str]],
    *,
    plan: HeaderPlan,
    peer: str | None,
    scheme: str,
    host: str,
    request_id: str,
    identity_headers: Sequence[tuple[str, str]],
    cookie: str,
    upstream_host: str | None,
    drop: Collection[str] = (),
) -> CIMultiDict[str]:
    """The headers sent upstream: the client's minus what must not pass, plus what sidecar adds.

    `host` is the request's Host; it is sent on unless `upstream_host` is given (the upstream's
    `host:port`, for `preserve_host: false`). `cookie` is the value the client's Cookie headers
    become upstream, sidecar's own cookies removed (`RequestCookies.upstream`); it is sent when the
    client sent a Cookie header that passes (not named by `Connection`, not in `headers.strip`).
    `identity_headers` are added last. `drop` names (lower case) more client headers to leave out
    for this request only (an Authorization header that carried sidecar's own credential).
    """
    trusted = plan.is_trusted(peer)
    classify = plan.classify
    kept: list[tuple[str, str, str]] = []
    connection: list[str] = []
    send_cookie = False
    forwarded_for: list[str] = []
    forwarded_proto: str | None = None
    forwarded_host: str | None = None
    for name, value in incoming:
        lname, kind = classify(name)
        if kind == _KEEP:
            if drop and lname in drop:
                continue
            kept.append((lname, name, value))
        elif kind == _DROP:
            if lname == "connection":
                connection.append(value)
        elif kind == _COOKIE:
            send_cookie = True
        elif kind == _UNTRUSTED_ONLY:
            if trusted:
                kept.append((lname, name, value))
        elif trusted:
            if kind == _XFF:
                forwarded_for.append(value)
            elif kind == _XF_PROTO:
                forwarded_proto = forwarded_proto or value
            else:
                forwarded_host = forwarded_host or value

    if connection:
        named = _connection_tokens(connection)
        if named:
            if "x-forwarded-for" in named:
                forwarded_for = []
            if "x-forwarded-proto" in named:
                forwarded_proto = None
            if "x-forwarded-host" in named:
                forwarded_host = None
            if "cookie" in named:
                send_cookie = False
            kept = [entry for entry in kept if entry[0] not in named]

    # None of the names set below can be among `kept` (all are classified as not kept), so the
    # result is built from one list in one go.
    spelling: dict[str, str] = {}
    pairs: list[tuple[str, str]] = []
    for lname, name, value in kept:
        # Repeats keep the first spelling: aiohttp's client merges `X-A` and `x-a` into one.
        pairs.append((spelling.setdefault(lname, name), value))
    if send_cookie and cookie:
        pairs.append(("Cookie", cookie))
    pairs.append(("Host", upstream_host if upstream_host is not None else host))
    if peer is not None:
        forwarded_for.append(peer)
    if forwarded_for:
        pairs.append((X_FORWARDED_FOR, ", ".join(forwarded_for)))
    pairs.append((X_FORWARDED_PROTO, forwarded_proto or scheme))
    pairs.append((X_FORWARDED_HOST, forwarded_host or host))
    pairs.append((plan.request_id_header, request_id))
    pairs.extend(identity_headers)
    return CIMultiDict(pairs)


def build_response_headers(upstream_headers: Iterable[tuple[str, str]]) -> CIMultiDict[str]:
    """The upstream's response headers minus hop-by-hop ones; everything else (Set-Cookie) as is."""
    kept: list[tuple[str, str, str]] = []
    connection: list[str] = []
    for name, value in upstream_headers:
        lname = name.lower()
        if lname in HOP_BY_HOP:
            if lname == "connection":
                connection.append(value)
        else:
            kept.append((lname, name, value))
    named = _connection_tokens(connection) if connection else frozenset()
    return CIMultiDict([(name, value) for lname, name, value in kept if lname not in named])
