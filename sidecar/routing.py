"""Route matching: the request path as the backend will see it, and the compiled route table.

`normalize_path(raw_path)` turns the raw request target into the one spelling route matching uses
(or None: sidecar answers 400). The query string is split off first and never looked at.
Percent-escapes of unreserved characters (ALPHA DIGIT - . _ ~) are decoded, every other escape is
kept with upper-case hex, so nothing is ever decoded twice (`%252e` stays `%252e`); dot segments,
plain or encoded (`%2e%2e`), are resolved (`..` never climbs above `/`); duplicate slashes are
collapsed (a trailing slash is kept). Refused as ambiguous, because backends disagree on them:
an encoded slash or backslash (`%2f`, `%5c`), a raw backslash, a raw or encoded control character
(NUL included), a space or `#`, raw non-ASCII bytes (browsers always percent-encode them), an
invalid percent-escape, percent-escapes that are not valid UTF-8 (overlong forms of `.` and `/`
included), a `;` path parameter on a dot segment (`/public/..;/admin`, which Java servers
read as `..`), and a `..` after a duplicate slash (`/a//../b` is `/a/b` to servers that resolve
dot segments first and `/b` to those that merge slashes first).

`RouteTable.from_config(config)` compiles the ordered `routes` once; `match(method, host, path)`
returns the first route that matches, or the default route (sign-in required) when none does.
Prefix routes match whole segments (`/static` matches `/static` and `/static/x`, never
`/staticfoo`); routes are indexed by their first path segment so a table of thousands stays fast.
A path that still carries `;` path parameters is matched twice, as written and with the
parameters removed (as Java servers read it); when the two readings reach different routes,
`match` returns None and sidecar answers 400, so `/admin;x/secret` cannot slip past an `/admin`
route. `resolve(method, host, raw_path)` is what the gate calls: it also refuses a path whose
literal spelling (as a backend that normalises nothing reads it) reaches a different route than
its normalised form, so `/static/../admin` and `//admin` are refused rather than trusted to be
read the same way by every backend. It refuses, for the same reason, a path that another common
reading sends to a different route: case folded (Express, IIS and Windows servers match paths
case-insensitively, so `/ADMIN` must not slip past an `/admin` route), trailing dots and spaces
trimmed from segments (IIS and Windows read `/admin.` and `/admin%20` as `/admin`), and `%3B`
read as a `;` path parameter. Pure: no aiohttp.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from sidecar.policy import Policy

if TYPE_CHECKING:
    from sidecar.config.model import RouteConfig, SidecarConfig

Access = Literal["public", "authenticated", "policy"]

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")
_MEMO_MAX = 4096
_MEMO_PATH_MAX = 512  # longer paths are resolved every time, not remembered
# Besides controls and non-ASCII, printable characters a path may not carry raw: backslash (a
# separator on Windows and in some frameworks), `#` (a fragment to some parsers) and space.
_REFUSED_RAW = frozenset("\\# ")
# Bytes that must never appear percent-encoded: `/` and `\` (separators to some backends), and
# control characters (NUL truncates paths in C-based servers).
_REFUSED_ENCODED = frozenset([0x2F, 0x5C, 0x7F, *range(0x20)])


def normalize_path(raw_path: str) -> str | None:
    """The path the route table matches, or None when the path is ambiguous (answer 400).

    See the module docstring for every rule. The result is idempotent (normalising it again
    gives it back) and never contains `//`, a `.` or `..` segment, or a lower-case escape.
    """
    path = raw_path.partition("?")[0]
    if not path.startswith("/"):
        return None
    decoded = _decode_unreserved(path)
    if decoded is None:
        return None
    segments = decoded.split("/")[1:]
    out: list[str] = []
    after_empty = False
    for segment in segments:
        if not segment:
            after_empty = True
            continue
        if ";" in segment and segment.partition(";")[0] in (".", ".."):
            return None
        if segment == ".":
            continue
        if segment == "..":
            if after_empty:
                # `/a//../b`: `..` removes the empty segment for servers that resolve first
                # (RFC 3986) and `a` for those that merge slashes first (nginx, Tomcat).
                return None
            if out:
                out.pop()
            continue
        out.append(segment)
    if not out:
        return "/"
    trailing = segments[-1] in ("", ".", "..")
    return "/" + "/".join(out) + ("/" if trailing else "")


def _decode_unreserved(path: str) -> str | None:
    """Decode escapes of unreserved characters, upper-case the rest; None when refused."""
    if "%" not in path:
        for char in path:
            if not " " < char < "\x7f" or char in _REFUSED_RAW:
                return None
        return path
    out: list[str] = []
    octets = bytearray()  # the fully decoded path, to check that it is UTF-8
    index = 0
    length = len(path)
    while index < length:
        char = path[index]
        if char == "%":
            hex_digits = path[index + 1 : index + 3]
            if len(hex_digits) != 2 or not set(hex_digits) <= _HEX:
                return None
            value = int(hex_digits, 16)
            if value in _REFUSED_ENCODED:
                return None
            decoded = chr(value)
            out.append(decoded if decoded in _UNRESERVED else "%" + hex_digits.upper())
            octets.append(value)
            index += 3
            continue
        if not " " < char < "\x7f" or char in _REFUSED_RAW:
            return None
        out.append(char)
        octets.append(ord(char))
        index += 1
    try:
        octets.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return "".join(out)


def strip_path_parameters(path: str) -> str:
    """`path` (normalised) as servers that drop `;` parameters read it: `/a;x/b;y` -> `/a/b`."""
    segments = [segment.partition(";")[0] for segment in path.split("/")]
    trailing = segments[-1] == ""  # `/a/` and `/a/;x` both end in a directory
    kept = [segment for segment in segments if segment]
    if not kept:
        return "/"
    return "/" + "/".join(kept) + ("/" if trailing else "")


_TRIMMED_SUFFIXES = (".", "%20")


def _trim_segment(segment: str) -> str:
    """A segment without trailing dots and spaces, as IIS and Windows read it (`.`, `..` kept)."""
    if segment in (".", ".."):
        return segment
    trimmed = segment
    while trimmed.endswith(_TRIMMED_SUFFIXES):
        trimmed = trimmed.removesuffix(".").removesuffix("%20")
    return trimmed


def other_readings(raw_path: str) -> Iterator[str | None]:
    """Normalised spellings of `raw_path` as other backends read it: trailing dots and spaces
    trimmed from each segment, and `%3B` read as `;`. Only spellings that differ are given; None
    for one that is itself ambiguous. (Case folding is the route table's job: its patterns fold
    too.)"""
    decoded = _decode_unreserved(raw_path.partition("?")[0])
    if decoded is None:
        return
    segments = decoded.split("/")
    trimmed = [_trim_segment(segment) for segment in segments]
    if trimmed != segments:
        yield normalize_path("/".join(trimmed))
    if "%3B" in decoded.upper():
        yield normalize_path(re.sub("%3[Bb]", ";", decoded))


def host_name(host: str) -> str:
    """A Host header's name part, lower-case, without port or trailing dot (`[::1]` kept)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    name, sep, port = host.rpartition(":")
    if sep and port.isdigit():
        host = name
    return host.rstrip(".")


def first_segment(path: str) -> str:
    """`/a/b` -> `a`; `/` -> ``."""
    return path[1:].partition("/")[0]


MatchKind = Literal["prefix", "exact", "regex", "default"]


@dataclass(frozen=True, eq=False)
class Route:
    """One compiled route: what it matches and what it requires.

    `access` is `public`, `authenticated` or `policy` (then `policy` is set). `bearer`,
    `identity_assertion` (None: the global default) and `cors_preflight` are read by the bearer
    token, signed assertion and CORS parts of the pipeline.
    """

    name: str
    access: Access = "authenticated"
    policy: Policy | None = None
    kind: MatchKind = "default"
    pattern: str = ""
    methods: frozenset[str] | None = None
    host: str | None = None
    bearer: bool | None = None
    cors_preflight: bool = False
    identity_assertion: bool | None = None
    _regex: re.Pattern[str] | None = field(default=None, repr=False)
    _prefix_slash: str = field(default="", repr=False)

    @classmethod
    def from_config(cls, index: int, config: RouteConfig, policy: Policy | None) -> Route:
        kind: MatchKind
        regex = None
        prefix_slash = ""
        if config.path is not None:
            kind, pattern = "prefix", config.path.rstrip("/") or "/"
            prefix_slash = pattern if pattern == "/" else pattern + "/"
        elif config.exact is not None:
            kind, pattern = "exact", config.exact
        else:
            assert config.regex is not None  # the model requires exactly one of the three
            kind, pattern = "regex", config.regex
            regex = re.compile(pattern)
        return cls(
            name=config.name or f"routes[{index}]",
            access="policy" if policy is not None else config.access,
            policy=policy,
            kind=kind,
            pattern=pattern,
            methods=frozenset(config.methods) if config.methods is not None else None,
            host=config.host,
            bearer=config.bearer,
            cors_preflight=config.cors_preflight,
            identity_assertion=config.identity_assertion,
            _regex=regex,
            _prefix_slash=prefix_slash,
        )

    @property
    def index_segment(self) -> str | None:
        """The first path segment every path this route matches has, None when it varies."""
        if self.kind == "exact":
            return first_segment(self.pattern)
        if self.kind == "prefix" and self.pattern != "/":
            return first_segment(self.pattern)
        return None

    def matches_path(self, path: str) -> bool:
        kind = self.kind
        if kind == "prefix":
            return path == self.pattern or path.startswith(self._prefix_slash)
        if kind == "exact":
            return path == self.pattern
        if kind == "regex":
            assert self._regex is not None
            return self._regex.fullmatch(path) is not None
        return True

    def matches_host(self, host: str) -> bool:
        wanted = self.host
        if wanted is None:
            return True
        if wanted.startswith("*."):
            return host.endswith(wanted[1:]) and len(host) > len(wanted) - 1
        return host == wanted


DEFAULT_ROUTE = Route(name="default")
"""Where every request that matches no route goes: sign-in required."""


class RouteTable:
    """The ordered routes, compiled once; first match wins, else `DEFAULT_ROUTE`."""

    def __init__(
        self, routes: Iterable[Route], default: Route = DEFAULT_ROUTE, *, _folding: bool = False
    ) -> None:
        self.routes = tuple(routes)
        self.default = default
        self._uses_host = any(route.host is not None for route in self.routes)
        # Routes whose first segment varies are candidates for every path; the others only for
        # paths with their first segment. Each candidate list keeps configuration order.
        anywhere = [route for route in self.routes if route.index_segment is None]
        by_segment: dict[str, list[Route]] = {}
        for route in self.routes:
            segment = route.index_segment
            if segment is not None:
                by_segment.setdefault(segment, [])
        for route in self.routes:
            segment = route.index_segment
            if segment is None:
                for candidates in by_segment.values():
                    candidates.append(route)
            else:
                by_segment[segment].append(route)
        self._anywhere = tuple(anywhere)
        self._by_segment = {segment: tuple(routes) for segment, routes in by_segment.items()}
        # The same table read case-insensitively, each folded route mapped back to its own.
        self._folded: RouteTable | None = None
        self._unfold: dict[int, Route] = {}
        self._resolved: dict[tuple[str, str, str], Route | None] = {}
        if any(route.kind != "default" for route in self.routes) and not _folding:
            folded = [_fold(route) for route in self.routes]
            self._folded = RouteTable(folded, default, _folding=True)
            self._unfold = {id(f): route for f, route in zip(folded, self.routes, strict=True)}

    @classmethod
    def from_config(cls, config: SidecarConfig) -> RouteTable:
        policies = {name: Policy.from_config(name, body) for name, body in config.policies.items()}
        return cls(
            Route.from_config(index, route, policies[route.policy] if route.policy else None)
            for index, route in enumerate(config.routes)
        )

    def _first(self, method: str, host: str, path: str) -> Route:
        candidates = self._by_segment.get(first_segment(path), self._anywhere)
        for route in candidates:
            if route.methods is not None and method not in route.methods:
                continue
            if not route.matches_path(path):
                continue
            if route.host is not None and not route.matches_host(host):
                continue
            return route
        return self.default

    def match(self, method: str, host: str, normalized_path: str) -> Route | None:
        """The first route matching the request, the default route when none does, or None when
        the path's `;` parameters make it ambiguous (answer 400). `normalized_path` comes from
        `normalize_path`; `host` is the Host header (port and case do not matter)."""
        method = method.upper()
        host = host_name(host) if self._uses_host else ""
        route = self._first(method, host, normalized_path)
        if ";" in normalized_path:
            other = self._first(method, host, strip_path_parameters(normalized_path))
            if other is not route:
                return None
        return route

    def resolve(self, method: str, host: str, raw_path: str) -> Route | None:
        """The route for a request as it arrived (`raw_path` may carry the query), or None when
        it must be refused with 400: the path is ambiguous (`normalize_path` gives None), or it
        is not already normal and its literal spelling would reach a different route than the
        normalised one. Sidecar forwards the path as it arrived, and a backend that does not
        resolve `..` or `//` itself would read `/admin/../static/x` as a path under /admin.

        The answer depends only on the method, the host (when a route names one) and the path
        without its query, so it is remembered for paths of ordinary length (a bounded memo,
        emptied when full: a client inventing paths cannot grow it)."""
        target = raw_path.partition("?")[0]
        key = (method, host if self._uses_host else "", target)
        memo = self._resolved
        if key in memo:
            return memo[key]
        route = self._resolve(method, host, raw_path)
        if len(target) <= _MEMO_PATH_MAX:
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[key] = route
        return route

    def _resolve(self, method: str, host: str, raw_path: str) -> Route | None:
        path = normalize_path(raw_path)
        if path is None:
            return None
        route = self.match(method, host, path)
        if route is None:
            return None
        literal = raw_path.partition("?")[0]
        if literal != path:
            upper = method.upper()
            if self._first(upper, host_name(host) if self._uses_host else "", literal) is not route:
                return None
        for reading in (path, *other_readings(raw_path)):
            if reading is None:
                return None
            if reading is not path and self.match(method, host, reading) is not route:
                return None
            if self._folded is not None and reading != reading.lower():
                folded = self._folded.match(method, host, reading.lower())
                if folded is None or self._unfold.get(id(folded), folded) is not route:
                    return None
        return route


def _fold(route: Route) -> Route:
    """`route` matching case-insensitively: lower-case patterns (match them with lower-case
    paths), a case-insensitive regex."""
    regex = re.compile(route.pattern, re.IGNORECASE) if route._regex is not None else None
    return replace(
        route,
        pattern=route.pattern if regex is not None else route.pattern.lower(),
        _regex=regex,
        _prefix_slash=route._prefix_slash.lower(),
    )
