"""The demo backend: an aiohttp app that greets the signed-in user and shows the headers it got.

Every path answers with a friendly page, "Hello, <user>", the identity headers sidecar added
(X-Forwarded-User, -Email, -Preferred-Username, -Groups), every other request header in a table
(all values HTML-escaped; token-bearing headers shortened) and a sign-out link; `Accept:
application/json` gets the same facts as JSON. It is what `sidecar demo` puts behind sidecar.
"""

from __future__ import annotations

import html

from aiohttp import web

from sidecar.endpoints import SIGN_OUT, X_FORWARDED_ACCESS_TOKEN

IDENTITY_HEADERS = (
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
)
# Shown shortened so a demo screen never displays a whole token.
_SHORTENED = frozenset({"authorization", X_FORWARDED_ACCESS_TOKEN.lower()})
_SHOWN_CHARS = 16

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 50rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
table { border-collapse: collapse; width: 100%; margin-bottom: 1.5rem; }
th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd;
         vertical-align: top; word-break: break-all; }
th { width: 16rem; }
.missing { color: #999; font-style: italic; }
"""


def create_backend_app(*, sign_out_path: str = "/oauth2" + SIGN_OUT) -> web.Application:
    """The demo backend application; `sign_out_path` is sidecar's sign-out endpoint."""
    app = web.Application()

    async def show(request: web.Request) -> web.Response:
        return render_response(request, sign_out_path=sign_out_path)

    app.router.add_route("*", "/{tail:.*}", show)
    return app


def render_response(request: web.Request, *, sign_out_path: str) -> web.Response:
    """The page (or JSON) for one request."""
    user = _user_of(request)
    identity = {name: request.headers.get(name) for name in IDENTITY_HEADERS}
    headers = [(name, _shown(name, value)) for name, value in request.headers.items()]
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response(
            {
                "user": user,
                "identity": identity,
                "method": request.method,
                "path": request.path,
                "query": request.query_string,
                "headers": headers,
            }
        )
    return web.Response(
        text=render_page(
            user=user,
            identity=identity,
            headers=headers,
            method=request.method,
            path_qs=request.path_qs,
            sign_out_path=sign_out_path,
        ),
        content_type="text/html",
    )


def render_page(
    *,
    user: str | None,
    identity: dict[str, str | None],
    headers: list[tuple[str, str]],
    method: str,
    path_qs: str,
    sign_out_path: str,
) -> str:
    """The HTML page; every value is escaped."""
    esc = html.escape
    greeting = f"Hello, {esc(user)}" if user else "Hello, stranger (no identity headers arrived)"
    identity_rows = "".join(
        f"<tr><th>{esc(name)}</th><td>"
        + (esc(value) if value is not None else '<span class="missing">not sent</span>')
        + "</td></tr>"
        for name, value in identity.items()
    )
    header_rows = "".join(
        f"<tr><th>{esc(name)}</th><td>{esc(value)}</td></tr>" for name, value in headers
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{greeting} - sidecar demo backend</title><style>{_STYLE}</style></head><body>"
        f"<h1>{greeting}</h1>"
        "<p>This page is the demo backend. It knows who you are only from the headers sidecar "
        f"added to <code>{esc(method)} {esc(path_qs)}</code>:</p>"
        f"<h2>Identity headers</h2><table>{identity_rows}</table>"
        f"<h2>All request headers</h2><table>{header_rows}</table>"
        f'<p><a href="{esc(sign_out_path)}">Sign out</a></p></body></html>\n'
    )


def _user_of(request: web.Request) -> str | None:
    for name in ("X-Forwarded-Preferred-Username", "X-Forwarded-User", "X-Forwarded-Email"):
        value = request.headers.get(name)
        if value:
            return value
    return None


def _shown(name: str, value: str) -> str:
    if name.lower() in _SHORTENED and len(value) > _SHOWN_CHARS:
        return value[:_SHOWN_CHARS] + f"... ({len(value)} characters)"
    return value
