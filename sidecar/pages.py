"""The pages sidecar shows people: rendering of built-in or user-supplied HTML templates.

Templates are `string.Template` files with `$name` placeholders; every value is HTML-escaped before
it is put in, so nothing a request carries can inject markup. The one exception is `$style`: the
built-in stylesheet (`templates/page.css`, trusted, never request data), which every built-in page
puts in its `<style>` element. `auth.templates_dir` may hold the operator's own `error.html` /
`sign_in.html` (and the other page names), which replace the built-in ones; such a template may use
`$style` to look like the built-in pages or leave it out and bring its own styling (a placeholder a
custom template does not use or does not know is left as written, never an error). `wants_json`
decides, from the request alone, whether a client is a program that wants JSON rather than a page.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from functools import lru_cache
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from string import Template

ERROR_TEMPLATE = "error.html"
SIGN_IN_TEMPLATE = "sign_in.html"
STYLESHEET = "page.css"
STYLE_PLACEHOLDER = "style"


def _builtin_text(name: str) -> str:
    return resources.files("sidecar").joinpath("templates", name).read_text(encoding="utf-8")


@lru_cache(maxsize=32)
def load_template(name: str, templates_dir: str | None) -> Template:
    """The template `name` from `templates_dir` when it has one, else the built-in; read once."""
    if templates_dir is not None:
        custom = Path(templates_dir) / name
        if custom.is_file():
            return Template(custom.read_text(encoding="utf-8"))
    return Template(_builtin_text(name))


@lru_cache(maxsize=1)
def load_stylesheet() -> str:
    """The built-in pages' shared CSS, put in unescaped as `$style`; read once."""
    return _builtin_text(STYLESHEET)


def render_page(template_name: str, *, templates_dir: str | None = None, **values: object) -> str:
    """Fill a template; every value is converted to text and HTML-escaped (quotes included).

    `$style` is reserved for the trusted built-in stylesheet, so no caller's value can take it.
    """
    if STYLE_PLACEHOLDER in values:
        raise ValueError(f"${STYLE_PLACEHOLDER} is reserved for the built-in stylesheet")
    escaped = {key: html.escape(str(value), quote=True) for key, value in values.items()}
    escaped[STYLE_PLACEHOLDER] = load_stylesheet()
    return load_template(template_name, templates_dir).safe_substitute(escaped)


def status_title(status: int) -> str:
    """`Bad Gateway` for 502; a generic title for codes Python does not name."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def render_error(
    status: int,
    code: str,
    message: str,
    *,
    templates_dir: str | None = None,
    request_id: str = "",
    home_url: str = "/",
) -> str:
    """The error page: status, title, the safe message, the request id to quote to support."""
    return render_page(
        ERROR_TEMPLATE,
        templates_dir=templates_dir,
        status=status,
        title=status_title(status),
        code=code,
        message=message,
        request_id=request_id or "-",
        home_url=home_url,
    )


def _media_ranges(accept: str) -> list[tuple[str, float]]:
    ranges = []
    for item in accept.split(","):
        media, _, params = item.strip().partition(";")
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media:
            ranges.append((media.strip().lower(), quality))
    return ranges


def wants_json(headers: Mapping[str, str], method: str) -> bool:
    """True for clients that cannot use an HTML page (or a login redirect): programs, not browsers.

    That is: Accept prefers application/json over text/html, or X-Requested-With is present, or an
    Authorization header is sent without asking for text/html, or the method is not GET/HEAD and
    Accept does not mention text/html. `headers` must be looked up
    case-insensitively (aiohttp's request headers are).
    """
    accept = headers.get("Accept", "")
    ranges = _media_ranges(accept)
    json_q = max(
        (q for m, q in ranges if m == "application/json" or m.endswith("+json")), default=0.0
    )
    html_q = max((q for m, q in ranges if m in ("text/html", "application/xhtml+xml")), default=0.0)
    if json_q > 0 and json_q >= html_q:
        return True
    if headers.get("X-Requested-With"):
        return True
    if headers.get("Authorization") and html_q == 0:
        return True  # a client presenting its own credential is a program, not a browser
    return method.upper() not in ("GET", "HEAD") and html_q == 0
