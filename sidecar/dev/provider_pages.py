"""HTML pages of the development OpenID provider: sign-in form, error page, signed-out page.

Every page carries a "NOT FOR PRODUCTION" banner so nobody mistakes the development provider for a
real one. All values are HTML-escaped; the sign-in form carries the authorization request along
in hidden fields so that its POST can complete it.
"""

from __future__ import annotations

import html
from collections.abc import Mapping

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 34rem; margin: 2rem auto; padding: 0 1rem;
       color: #222; }
.banner { background: #b00020; color: #fff; padding: .6rem 1rem; border-radius: .4rem;
          font-weight: bold; }
label { display: block; margin-top: 1rem; }
input[type=text], input[type=email] { width: 100%; padding: .4rem; box-sizing: border-box; }
button { margin-top: 1.2rem; padding: .5rem 1.4rem; }
.hint { color: #666; font-size: .9rem; }
"""

NOT_FOR_PRODUCTION = "development OpenID provider - NOT FOR PRODUCTION"
BANNER = "Development OpenID provider &mdash; NOT FOR PRODUCTION: it accepts any name, no password."


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)} (dev provider, NOT FOR PRODUCTION)</title>"
        f"<style>{_STYLE}</style></head><body>"
        f'<p class="banner" role="alert">{BANNER}</p>{body}</body></html>\n'
    )


def render_login_form(
    *, action: str, client_id: str, request_params: Mapping[str, str], default_name: str = ""
) -> str:
    """The sign-in form: any user name; email and groups optional (prefilled from the name)."""
    hidden = "".join(
        f'<input type="hidden" name="{html.escape(name)}" value="{html.escape(value)}">'
        for name, value in request_params.items()
    )
    name = html.escape(default_name)
    script = (
        "<script>const n=document.getElementById('username'),e=document.getElementById('email');"
        "let touched=false;e.addEventListener('input',()=>{touched=true});"
        "n.addEventListener('input',()=>{if(!touched){e.value=n.value?n.value+'@example.com':''}});"
        "</script>"
    )
    body = (
        "<h1>Sign in</h1>"
        f'<p class="hint">to <strong>{html.escape(client_id)}</strong>. '
        "Any user name works; there is no password.</p>"
        f'<form method="post" action="{html.escape(action)}">{hidden}'
        '<label for="username">User name</label>'
        f'<input type="text" id="username" name="username" value="{name}" required autofocus>'
        '<label for="email">Email <span class="hint">(optional; default NAME@example.com)'
        "</span></label>"
        '<input type="email" id="email" name="email" value="">'
        '<label for="groups">Groups <span class="hint">(optional, comma separated)</span></label>'
        '<input type="text" id="groups" name="groups" value="users">'
        '<button type="submit">Sign in</button></form>' + script
    )
    return _page("Sign in", body)


def render_error(title: str, message: str) -> str:
    """A page for requests that cannot be redirected back to the client (e.g. bad redirect_uri)."""
    return _page(title, f"<h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>")


def render_signed_out() -> str:
    """Shown by end_session when there is no (valid) post_logout_redirect_uri."""
    return _page("Signed out", "<h1>Signed out</h1><p>You are signed out of the dev provider.</p>")
