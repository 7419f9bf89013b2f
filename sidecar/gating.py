"""The seam between sidecar's catch-all route and the auth gate.

A gate is `async (request) -> GateResult`. It lets a request through by returning the identity
headers to add upstream, headers to add to the response (e.g. Set-Cookie from a refresh), client
headers to leave out upstream and fields for the access log; it stops a request by raising (a
`SidecarError` such as `NotAuthenticatedError`, or an aiohttp `HTTPFound` redirect to sign-in).
The app holds exactly one gate in `app[keys.GATE]`; without a provider it is `open_gate`, which
lets everything through with no identity. The request's Cookie headers are read once, by whichever
of the gate and the catch-all route asks first (`request_cookies`), with the app's reader
(`app[keys.COOKIE_READER]`: sidecar's own cookies are known only once sign-in is set up).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from sidecar import keys
from sidecar.session.cookies import RequestCookies, read_request_cookies


@dataclass(frozen=True)
class GateResult:
    identity_headers: Sequence[tuple[str, str]] = ()
    response_headers: Sequence[tuple[str, str]] = ()
    log_fields: Mapping[str, str] = field(default_factory=dict)
    drop_request_headers: frozenset[str] = frozenset()
    """Lower-case names of client headers not to send upstream for this request only (the
    `Authorization` header that carried sidecar's own credential, such as Basic)."""


Gate = Callable[[web.Request], Awaitable[GateResult]]

OPEN = GateResult(log_fields={"decision": "allow", "reasons": "no-provider"})


async def open_gate(request: web.Request) -> GateResult:
    """The gate without a provider: everyone passes, nobody is identified."""
    return OPEN


def read_foreign_cookies(cookie_headers: Sequence[str]) -> RequestCookies:
    """The cookie reader without sessions: sidecar has no cookies of its own, all go upstream."""
    return read_request_cookies(None, cookie_headers)


def request_cookies(request: web.Request) -> RequestCookies:
    """This request's Cookie headers, read once (see `sidecar.session.cookies.RequestCookies`)."""
    cookies = request.get(keys.REQUEST_COOKIES)
    if cookies is None:
        read = request.app[keys.COOKIE_READER]
        cookies = request[keys.REQUEST_COOKIES] = read(request.headers.getall(hdrs.COOKIE, ()))
    return cookies
