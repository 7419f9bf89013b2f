"""A browser-like test client: an aiohttp session with a cookie jar that follows redirects by hand
and returns every hop (`Hop`), so tests can look at each Location and Set-Cookie like a browser's
network panel."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import aiohttp
from multidict import CIMultiDictProxy

SESSION_COOKIE = "_sidecar"


@dataclass
class Hop:
    method: str
    url: str
    status: int
    headers: CIMultiDictProxy[str]
    text: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    @property
    def set_cookies(self) -> list[str]:
        return self.headers.getall("Set-Cookie", [])

    def json(self) -> Any:
        return json.loads(self.text)


@dataclass
class Browser:
    """A browser-like client: a cookie jar, redirects followed by hand, every hop recorded."""

    http: aiohttp.ClientSession
    default_headers: dict[str, str] = field(
        default_factory=lambda: {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    )

    async def request(
        self, method: str, url: str, *, headers: Mapping[str, str] | None = None, **kwargs: Any
    ) -> Hop:
        sent = {**self.default_headers, **(headers or {})}
        async with self.http.request(
            method, url, headers=sent, allow_redirects=False, **kwargs
        ) as response:
            text = await response.text(errors="replace")
            return Hop(method, url, response.status, response.headers, text)

    async def follow(
        self, url: str, *, method: str = "GET", max_hops: int = 10, **kwargs: Any
    ) -> list[Hop]:
        """Request `url` and follow redirects (as GET) until a non-redirect answer."""
        hops = [await self.request(method, url, **kwargs)]
        while hops[-1].status in (301, 302, 303, 307, 308) and len(hops) < max_hops:
            url = urljoin(hops[-1].url, hops[-1].location)
            hops.append(await self.request("GET", url))
        return hops

    def cookie_names(self) -> set[str]:
        return {cookie.key for cookie in self.http.cookie_jar}

    def cookies(self) -> dict[str, str]:
        return {cookie.key: cookie.value for cookie in self.http.cookie_jar}

    def has_session(self) -> bool:
        return SESSION_COOKIE in self.cookie_names()
