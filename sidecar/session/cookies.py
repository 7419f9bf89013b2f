"""Sidecar's cookies on the wire: names, attributes, chunking and Set-Cookie header values.

`CookiePolicy` is built once from the config. The session cookie is called
`__Host-<cookie_name>` whenever the browser allows that prefix (Secure, Path=/, no Domain), else
`<cookie_name>`. A value too large for one cookie is split into chunks named `<name>`, `<name>_1`,
`<name>_2`, ...; each whole Set-Cookie header value (name, value and attributes) stays within
`max_cookie_bytes`, under the browsers' 4096-byte limit. Login attempts use `<name>_login_<id>`
(see `sidecar.session.attempts`). `is_own_cookie` recognises all of these, with or without the
`__Host-` prefix (so cookies from before a configuration change are stripped too), and nothing
else: the provider's `_session` and `_interaction` cookies on the same host are not ours. Values
are base64url, so no quoting is needed.

A request's Cookie headers are read once, in one pass, by `read_request_cookies`: sidecar's own
cookies (by name, as aiohttp's `request.cookies` would read them), whether a session cookie name
comes twice with different values (cookie tossing), and the Cookie header value for the upstream
without sidecar's cookies. Other cookies are passed on as they came: only the pieces between `;`
are trimmed, nothing is unquoted or re-encoded.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from sidecar.config.model import SidecarConfig

HOST_PREFIX = "__Host-"
MAX_CHUNKS = 64
"""Most chunks a value may span; larger values are refused (browsers cap cookies per host)."""

SameSite = Literal["Lax", "Strict", "None"]

_COOKIE_VALUE = re.compile(r"[A-Za-z0-9_-]*")
_DOMAIN = re.compile(r"\.?[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9-]+)*")
_MAX_AGE_DIGITS = 10  # budget for "Max-Age=" up to 9,999,999,999 seconds
_CHUNK_SUFFIX = f"_{MAX_CHUNKS}"


@dataclass(frozen=True)
class CookiePolicy:
    """Name and attributes of sidecar's cookies, decided once from the configuration."""

    name: str
    secure: bool
    same_site: SameSite = "Lax"
    domain: str | None = None
    max_cookie_bytes: int = 3800
    login_timeout_seconds: int = 600
    """Max-Age of login-attempt cookies (`session.login_timeout_seconds`)."""
    path: str = field(default="/", init=False)
    http_only: bool = field(default=True, init=False)
    _chunk: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _own: re.Pattern[str] = field(init=False, repr=False, compare=False)
    _base: str = field(init=False, repr=False, compare=False)
    """`name` without `__Host-`: every name `is_own_cookie` accepts contains it."""
    _own_starts: tuple[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = self.name.removeprefix(HOST_PREFIX)
        if not re.fullmatch(r"[A-Za-z0-9_]+", base):
            raise ValueError("cookie name: letters, digits and _ only")
        if self.name.startswith(HOST_PREFIX) and not (self.secure and self.domain is None):
            raise ValueError("the __Host- prefix needs Secure and no Domain")
        if self.domain is not None and not _DOMAIN.fullmatch(self.domain):
            raise ValueError("cookie domain must be a host name such as .example.com")
        if self.same_site == "None" and not self.secure:
            raise ValueError("SameSite=None cookies must be Secure (browsers drop them otherwise)")
        chunk = rf"{re.escape(self.name)}(?:_([1-9][0-9]*))?"
        suffix = r"(?:_[1-9][0-9]*|_login_[A-Za-z0-9_-]+)?"
        own = rf"(?:{re.escape(HOST_PREFIX)})?{re.escape(base)}{suffix}"
        object.__setattr__(self, "_chunk", re.compile(chunk))
        object.__setattr__(self, "_own", re.compile(own))
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_own_starts", (base, HOST_PREFIX + base))
        if self.chunk_value_bytes(self.name + _CHUNK_SUFFIX) < 100:
            raise ValueError("max_cookie_bytes leaves no room for a value")

    @classmethod
    def from_config(cls, config: SidecarConfig) -> CookiePolicy:
        session = config.session
        if session is None:
            raise ValueError("cookies need the session section of the configuration")
        secure = config.cookie_secure
        host_only = session.cookie_domain is None
        name = HOST_PREFIX + session.cookie_name if secure and host_only else session.cookie_name
        return cls(
            name=name,
            secure=secure,
            same_site=session.cookie_samesite,
            domain=session.cookie_domain,
            max_cookie_bytes=session.max_cookie_bytes,
            login_timeout_seconds=session.login_timeout_seconds,
        )

    def attributes(self, max_age_seconds: int | None, *, same_site: SameSite | None = None) -> str:
        """The `; Path=/; ...` tail of a Set-Cookie header value."""
        parts = [f"; Path={self.path}"]
        if self.domain is not None:
            parts.append(f"; Domain={self.domain}")
        if max_age_seconds is not None:
            parts.append(f"; Max-Age={max(0, max_age_seconds)}")
        if self.secure:
            parts.append("; Secure")
        parts.append("; HttpOnly")
        parts.append(f"; SameSite={same_site or self.same_site}")
        return "".join(parts)

    def chunk_value_bytes(self, longest_name: str) -> int:
        """Room for a value in one cookie named up to `longest_name`, with the longest Max-Age."""
        overhead = len(longest_name) + 1 + len(self.attributes(10**_MAX_AGE_DIGITS - 1))
        return self.max_cookie_bytes - overhead

    def chunk_index(self, name: str) -> int | None:
        """0 for `<name>`, k for `<name>_k`, None for any other cookie name."""
        match = self._chunk.fullmatch(name)
        if match is None:
            return None
        return int(match.group(1) or 0)


def chunk_name(policy: CookiePolicy, index: int, name: str | None = None) -> str:
    base = policy.name if name is None else name
    return base if index == 0 else f"{base}_{index}"


def split_value(value: str, max_bytes: int) -> list[str]:
    """Cut `value` (ASCII, base64url) into pieces of at most `max_bytes`; "" gives [""]."""
    if max_bytes < 1:
        raise ValueError("max_bytes must be positive")
    if not value:
        return [""]
    chunks = [value[i : i + max_bytes] for i in range(0, len(value), max_bytes)]
    if len(chunks) > MAX_CHUNKS:
        raise ValueError(f"value needs {len(chunks)} cookies; at most {MAX_CHUNKS} are allowed")
    return chunks


def join_chunks(policy: CookiePolicy, cookies: Mapping[str, str]) -> str | None:
    """The value split across the session cookie's chunks, or None when absent or inconsistent.

    The chunks must be exactly `<name>`, `<name>_1`, ... `<name>_n` with no gap and nothing beyond.
    (A chunk from another value passes here but fails authentication in the codec.)
    """
    first = cookies.get(policy.name)
    if first is None:
        return None
    if len(cookies) == 1:
        return first  # the common case: one cookie, and it is the first chunk
    indices = []
    for name in cookies:
        index = policy.chunk_index(name)
        if index is not None:
            indices.append(index)
    count = len(indices)
    if count > MAX_CHUNKS or sorted(indices) != list(range(count)):
        return None
    if count == 1:
        return first
    return "".join(cookies[chunk_name(policy, i)] for i in range(count))


def build_set_cookie(
    policy: CookiePolicy,
    name: str,
    value: str,
    *,
    max_age_seconds: int | None,
    same_site: SameSite | None = None,
) -> str:
    """One Set-Cookie header value with the policy's attributes (Max-Age None: browser session)."""
    if not _COOKIE_VALUE.fullmatch(value):
        raise ValueError("cookie values must be base64url")
    return f"{name}={value}{policy.attributes(max_age_seconds, same_site=same_site)}"


def build_delete_cookie(policy: CookiePolicy, name: str) -> str:
    """A Set-Cookie header value that removes cookie `name` (same Path/Domain/Secure, Max-Age=0)."""
    return f"{name}={policy.attributes(0)}"


def build_set_cookies(
    policy: CookiePolicy,
    name: str,
    value: str,
    present_names: Iterable[str],
    *,
    max_age_seconds: int | None = None,
) -> list[str]:
    """Set-Cookie values storing `value` under `name`, `name_1`, ...; deletes leftover chunks.

    `present_names` are the cookie names the request carried: chunks beyond the new count (from a
    larger old value) are deleted so they can never be joined to the new value.
    """
    chunks = split_value(value, policy.chunk_value_bytes(name + _CHUNK_SUFFIX))
    headers = [
        build_set_cookie(
            policy, chunk_name(policy, i, name), chunk, max_age_seconds=max_age_seconds
        )
        for i, chunk in enumerate(chunks)
    ]
    leftovers = _chunk_indices(name, present_names)
    headers.extend(
        build_delete_cookie(policy, chunk_name(policy, i, name))
        for i in sorted(leftovers)
        if i >= len(chunks)
    )
    return headers


def build_clear_cookies(policy: CookiePolicy, present_names: Iterable[str]) -> list[str]:
    """Set-Cookie values deleting every sidecar cookie present: session chunks and login attempts.

    This is sign-out. To drop only a bad session (keeping sign-ins in progress in other tabs), use
    `build_clear_session_cookies`.
    """
    return [
        build_delete_cookie(policy, n) for n in _unique(present_names) if is_own_cookie(policy, n)
    ]


def build_clear_session_cookies(policy: CookiePolicy, present_names: Iterable[str]) -> list[str]:
    """Set-Cookie values deleting the session cookie's chunks that are present, nothing else."""
    return [
        build_delete_cookie(policy, n)
        for n in _unique(present_names)
        if policy.chunk_index(n) is not None
    ]


def is_own_cookie(policy: CookiePolicy, name: str) -> bool:
    """True for sidecar's cookies (session chunks, login attempts): they never reach the backend."""
    return name.startswith(policy._own_starts) and policy._own.fullmatch(name) is not None


@dataclass(frozen=True, slots=True)
class RequestCookies:
    """One request's Cookie headers as sidecar needs them, read once (`read_request_cookies`)."""

    own: Mapping[str, str] | None
    """Sidecar's cookies (session chunks, login attempts) by name, read from the first Cookie
    header exactly as aiohttp's `request.cookies` reads it (the last of a repeated name wins).
    None when that header is too irregular to be sure without aiohttp's parser (a `"` anywhere,
    or whitespace, control or non-ASCII characters in a piece holding our cookie name): the
    caller then reads `request.cookies`."""
    duplicated: bool
    """A session cookie name came twice with different values, in any Cookie header: a copy
    tossed in by a sibling subdomain beside sidecar's own. Which is ours cannot be told, so
    neither may be used."""
    upstream: str
    """Every Cookie header, sidecar's cookies removed, joined with "; " ("" when none is left).
    A header holding none of ours is passed on trimmed, else its other pieces as they came."""


NO_COOKIES = RequestCookies(own={}, duplicated=False, upstream="")


def read_request_cookies(
    policy: CookiePolicy | None, cookie_headers: Sequence[str]
) -> RequestCookies:
    """Read a request's Cookie headers in one pass (see `RequestCookies`); `policy` None: sidecar
    has no cookies of its own (no provider), so everything goes upstream."""
    if not cookie_headers:
        return NO_COOKIES
    upstream: list[str] = []
    own: dict[str, str] | None = {}
    seen: dict[str, str] = {}
    duplicated = False
    for position, header in enumerate(cookie_headers):
        if policy is None or policy._base not in header:
            # None of ours can be in it (every name of ours contains the base name).
            trimmed = header.strip()
            if trimmed:
                upstream.append(trimmed)
            continue
        base = policy._base
        starts = policy._own_starts
        # aiohttp reads only the first Cookie header. Without a `"` in it, aiohttp reads each piece
        # between `;` on its own, and a plain piece (see `_plain`) exactly as split here.
        reading = position == 0 and '"' not in header
        if position == 0 and not reading:
            own = None
        kept: list[str] = []
        dropped = False
        start = 0
        length = len(header)
        while start <= length:
            # str.find jumps to the next ";" far faster than str.split walks a long filler cookie.
            end = header.find(";", start)
            if end < 0:
                end = length
            piece = header[start:end]
            start = end + 1
            stripped = piece.strip()
            if not stripped:
                continue
            if not (
                stripped.startswith(starts)
                and is_own_cookie(policy, stripped.partition("=")[0].strip())
            ):
                if own is not None and reading and base in stripped and not _plain(piece, stripped):
                    own = None  # aiohttp might find one of ours inside it
                kept.append(stripped)
                continue
            dropped = True
            name, sep, value = stripped.partition("=")
            if sep and policy._chunk.fullmatch(name) is not None:
                trimmed = value.strip()
                if seen.setdefault(name, trimmed) != trimmed:
                    duplicated = True
            if own is not None and reading:
                if _plain(piece, stripped):
                    own[name.strip()] = value.strip()
                else:
                    own = None
        if not dropped:
            upstream.append(header.strip())
        elif kept:
            upstream.append("; ".join(kept))
    return RequestCookies(own=own, duplicated=duplicated, upstream="; ".join(upstream))


def _plain(piece: str, stripped: str) -> bool:
    """Whether aiohttp reads `piece` (text between two `;`, no `"`) as the one cookie `name[=value]`
    that splitting at the first `=` and trimming gives: no whitespace inside, and none at the
    ends but spaces and tabs (`stripped` is `piece.strip()`)."""
    return (
        len(piece.strip(" \t")) == len(stripped)
        and " " not in stripped
        and "\t" not in stripped
        and "\n" not in stripped
        and "\r" not in stripped
        and "\f" not in stripped
        and "\v" not in stripped
    )


def _chunk_indices(name: str, present_names: Iterable[str]) -> set[int]:
    pattern = re.compile(rf"{re.escape(name)}(?:_([1-9][0-9]*))?")
    found = set()
    for present in present_names:
        match = pattern.fullmatch(present)
        if match is not None:
            found.add(int(match.group(1) or 0))
    return found


def _unique(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(names))
