"""Redirect-target validation: the one gate every post-login and post-logout target passes.

`check_redirect` takes an untrusted target (the `rd` parameter, a stored attempt's target, a
configured default) and returns it only when a browser following it is certain to stay on
sidecar's own origin or on a configured allowed domain; otherwise `None`, and the caller falls back
to a safe default. It is deliberately strict: a small allow-list of characters, no backslashes, no
control or whitespace characters (raw or percent-encoded), no user-info, no scheme-relative or
scheme-only forms, no dot segments or doubled slashes in the path, ASCII host names only, and ports
that match. Relative targets must start with exactly one `/`. Pure: no I/O, no aiohttp.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

MAX_REDIRECT_LENGTH = 4096

_DEFAULT_PORTS = {"http": 80, "https": 443}

# Characters a target may contain literally: RFC 3986 unreserved, reserved, "%" and a few
# characters browsers leave unescaped in queries ({ } | ^). Never: space, controls, backslash,
# quotes, angle brackets, backtick, anything non-ASCII.
_ALLOWED_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%{}|^]*")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ABSOLUTE = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)", re.DOTALL)
_HOST_PORT = re.compile(
    r"(?P<host>[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*"
    r"|\[[0-9a-f:.]+\])"
    r"(?::(?P<port>[0-9]{1,5}))?"
)
# A slash, then nothing / whitespace / one or two dots, then a slash (either kind): `//`, `/./`,
# `/../`, `/ /`, `/\`. Checked on the percent-decoded path.
_SLASH_TRICK = re.compile(r"[/\\](?:\s*|\.{1,2})[/\\]")
_DOT_END = re.compile(r"/\.{1,2}$")


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int


@dataclass(frozen=True)
class _DomainRule:
    domain: str  # lower case, without the leading dot
    subdomains: bool
    port: int | None


def parse_origin(origin: str) -> tuple[str, str, int]:
    """Split `scheme://host[:port]` into lower-case scheme, host and effective port.

    Raises ValueError for anything that is not an http(s) origin.
    """
    parsed = _parse_origin(origin)
    return parsed.scheme, parsed.host, parsed.port


def _parse_origin(origin: str) -> _Origin:
    parts = urlsplit(origin.strip())
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("origin must be http(s)://host[:port]")
    host = parts.hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    return _Origin(scheme, host, parts.port or _DEFAULT_PORTS[scheme])


def _parse_rule(entry: str) -> _DomainRule | None:
    text = entry.strip().lower()
    subdomains = text.startswith(".")
    text = text.removeprefix(".")
    match = _HOST_PORT.fullmatch(text)
    if match is None:
        return None
    port = match.group("port")
    return _DomainRule(match.group("host"), subdomains, int(port) if port else None)


def _decoded_forms(text: str) -> list[str]:
    """`text` and its percent-decodings, repeated until stable (a few rounds at most)."""
    forms = [text]
    for _ in range(4):
        decoded = unquote(forms[-1], errors="strict")
        if decoded == forms[-1]:
            break
        forms.append(decoded)
    return forms


def _has_hidden_characters(text: str) -> bool:
    """Control, format or non-space whitespace characters, or a backslash."""
    for char in text:
        if char == " ":
            continue
        if char == "\\" or char.isspace():
            return True
        if unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp", "Zs"):
            return True
    return False


def _safe_path(path: str) -> bool:
    """A path (possibly empty) with no slash tricks, dot segments or hidden characters, decoded."""
    try:
        forms = _decoded_forms(path)
    except UnicodeDecodeError:
        return False
    for form in forms:
        if _has_hidden_characters(form):
            return False
        if _SLASH_TRICK.search(form) or _DOT_END.search(form) or form.startswith(("./", "../")):
            return False
    return True


def _safe_rest(text: str) -> bool:
    """Query and fragment: only checked for hidden characters, raw and decoded."""
    try:
        forms = _decoded_forms(text)
    except UnicodeDecodeError:
        return False
    return not any(_has_hidden_characters(form) for form in forms)


def _split_path(rest: str) -> tuple[str, str]:
    """Split `path?query#fragment` into the path and the remainder (starting with ? or #)."""
    cut = len(rest)
    for mark in ("?", "#"):
        index = rest.find(mark)
        if index != -1:
            cut = min(cut, index)
    return rest[:cut], rest[cut:]


def _host_allowed(
    scheme: str, host: str, port: int, origin: _Origin, rules: Iterable[_DomainRule]
) -> bool:
    if host == origin.host:
        return scheme == origin.scheme and port == origin.port
    if scheme != "https" and origin.scheme != "http":
        return False  # never downgrade an https deployment to plain http
    for rule in rules:
        if host == rule.domain or (rule.subdomains and host.endswith("." + rule.domain)):
            if rule.port is not None:
                if port == rule.port:
                    return True
            elif port in (_DEFAULT_PORTS[scheme], origin.port):
                return True
    return False


def check_redirect(target: str, *, origin: str, allowed_domains: Iterable[str]) -> str | None:
    """Return `target` if it is a safe redirect for `origin`, else None.

    Accepted: a relative reference starting with exactly one `/` (path, optional query and
    fragment), or an absolute `http(s)://host[:port]/...` URL whose host is the origin's host (same
    scheme and port) or matches `allowed_domains` (`.example.com` matches example.com and every
    subdomain; `example.com` only itself; an optional `:port` pins the port, else the scheme's
    default or the origin's port is required). Absolute results are returned normalised (lower-case
    scheme and host, `/` for an empty path).
    """
    if not isinstance(target, str) or not target or len(target) > MAX_REDIRECT_LENGTH:
        return None
    if not _ALLOWED_CHARS.fullmatch(target) or _BAD_PERCENT.search(target):
        return None
    try:
        parsed_origin = _parse_origin(origin)
    except ValueError:
        return None

    if target.startswith("/"):
        path, rest = _split_path(target)
        if not _safe_path(path) or not _safe_rest(rest):
            return None
        return target

    match = _ABSOLUTE.fullmatch(target)
    if match is None:
        return None  # relative paths without a leading slash, `https:evil.com`, `javascript:`...
    scheme = match.group("scheme").lower()
    if scheme not in _DEFAULT_PORTS:
        return None
    after = match.group("rest")
    authority_end = len(after)
    for mark in ("/", "?", "#"):
        index = after.find(mark)
        if index != -1:
            authority_end = min(authority_end, index)
    authority, remainder = after[:authority_end].lower(), after[authority_end:]
    host_port = _HOST_PORT.fullmatch(authority)
    if host_port is None:
        return None  # user@host, empty host (https:///x), percent signs, stray characters...
    host = host_port.group("host")
    port_text = host_port.group("port")
    port = int(port_text) if port_text else _DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        return None
    rules = [rule for rule in (_parse_rule(entry) for entry in allowed_domains) if rule is not None]
    if not _host_allowed(scheme, host, port, parsed_origin, rules):
        return None
    path, rest = _split_path(remainder)
    if not _safe_path(path) or not _safe_rest(rest):
        return None
    if not path:
        path = "/"
    netloc = host if port_text is None else f"{host}:{port_text}"
    return f"{scheme}://{netloc}{path}{rest}"
