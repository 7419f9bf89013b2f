"""The benchmark's scripted browser: signs in to a proxy through the real provider's forms.

`sign_in(start_url, login)` does what a person in a browser does, with an aiohttp client and a
cookie jar that, like a browser, scopes cookies by host and not by port: it asks the proxy for a
page, follows every redirect by hand, fills oidc-provider's devInteractions login form (any login
and password) and consent form, and stops once the proxy serves the backend's page. It returns
the time taken and the cookies the proxy set (its session), found by watching the proxy's own
Set-Cookie headers, so the provider's cookies on the same host are never taken for the session.
Lighter than a real browser and enough here: both proxies see the same requests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookies import SimpleCookie
from urllib.parse import urljoin, urlsplit

import aiohttp
from yarl import URL

BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) sidecar-bench/1",
    "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "Accept-Language": "en",
    "Sec-Fetch-Mode": "navigate",
    "Sec-Fetch-Dest": "document",
}
MAX_STEPS = 30
STEP_TIMEOUT_SECONDS = 30.0


class _BrowserJar(aiohttp.CookieJar):
    """aiohttp's jar without its Cookie-header cap (8190 bytes in aiohttp 3.14), which would drop
    chunks of a large session that browsers do send (they cap each cookie, not the header)."""

    _limits_enabled = False


class SignInError(Exception):
    """The scripted sign-in did not end on the backend's page."""


@dataclass(frozen=True)
class SignIn:
    """A finished sign-in: how long it took, the proxy's cookies, and the final page."""

    seconds: float
    cookies: dict[str, str]
    final_body: str

    def cookie_header(self) -> str:
        return "; ".join(f"{name}={value}" for name, value in self.cookies.items())


@dataclass
class _Form:
    action: str
    method: str
    fields: dict[str, str]


class _FormParser(HTMLParser):
    """Collects the first <form> of a page: its action, method and named inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.form: _Form | None = None
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and self.form is None:
            self.form = _Form(values.get("action", ""), values.get("method", "get").lower(), {})
            self._inside = True
        elif tag == "input" and self._inside and self.form is not None and "name" in values:
            self.form.fields[values["name"]] = values.get("value", "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def _parse_form(html: str) -> _Form | None:
    parser = _FormParser()
    parser.feed(html)
    return parser.form


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


async def sign_in(
    start_url: str,
    login: str,
    *,
    password: str = "bench-password",
    expect_body: str | None = None,
) -> SignIn:
    """Sign in at the proxy serving `start_url` as `login`; see the module docstring."""
    proxy_origin = _origin(start_url)
    jar = _BrowserJar(unsafe=True)  # unsafe: accept cookies for an IP address (127.0.0.1)
    timeout = aiohttp.ClientTimeout(total=STEP_TIMEOUT_SECONDS)
    proxy_cookie_names: list[str] = []
    started = time.perf_counter()
    async with aiohttp.ClientSession(
        cookie_jar=jar, headers=BROWSER_HEADERS, timeout=timeout
    ) as http:
        method, url, data = "GET", start_url, None
        for _ in range(MAX_STEPS):
            async with http.request(method, url, data=data, allow_redirects=False) as response:
                body = await response.text(errors="replace")
                status = response.status
                location = response.headers.get("Location")
                if _origin(url) == proxy_origin:
                    for header in response.headers.getall("Set-Cookie", ()):
                        for name in SimpleCookie(header):
                            if name not in proxy_cookie_names:
                                proxy_cookie_names.append(name)
            if status in (301, 302, 303, 307, 308) and location:
                if status in (307, 308):
                    url = urljoin(url, location)
                else:
                    method, url, data = "GET", urljoin(url, location), None
                continue
            form = _parse_form(body) if status == 200 else None
            if form is not None and form.fields.get("prompt") in ("login", "consent"):
                fields = dict(form.fields)
                if "login" in fields:
                    fields["login"] = login
                    fields["password"] = password
                method, url, data = form.method.upper(), urljoin(url, form.action), fields
                continue
            if _origin(url) != proxy_origin or status != 200:
                raise SignInError(f"sign-in ended at {url} with status {status}: {body[:300]!r}")
            if expect_body is not None and body != expect_body:
                raise SignInError(f"sign-in ended on an unexpected page at {url}: {body[:300]!r}")
            seconds = time.perf_counter() - started
            present = {n: m.value for n, m in jar.filter_cookies(URL(start_url)).items()}
            cookies = {name: present[name] for name in proxy_cookie_names if name in present}
            if not cookies:
                raise SignInError(f"signed in at {url} but the proxy left no cookie")
            return SignIn(seconds=seconds, cookies=cookies, final_body=body)
    raise SignInError(f"sign-in did not finish within {MAX_STEPS} steps (last: {url})")
