"""Open-redirect payloads: published bypasses of oauth2-proxy's `rd`, mod_auth_openidc's logout
parameter, and the usual browser URL-parsing tricks. `{origin}` and `{host}` are filled in with
sidecar's own origin and host:port, for payloads that dress an evil URL up as the good one.

Each entry is the *decoded* parameter value the attacker wants sidecar to receive; the suite
percent-encodes it for the query, as a link or a form would.
"""

from __future__ import annotations

EVIL = "evil.example"

OPEN_REDIRECT_PAYLOADS: tuple[str, ...] = (
    # absolute and scheme-relative
    f"http://{EVIL}/",
    f"https://{EVIL}",
    f"HTTPS://{EVIL.upper()}/",
    f"//{EVIL}",
    f"//{EVIL}/path",
    f"///{EVIL}",
    f"////{EVIL}",
    f"//{EVIL}%2f@{{host}}",  # oauth2-proxy rd: percent-slash before @good
    f"//{EVIL}%2F%2F@{{host}}",
    f"http://{EVIL}%2f@{{host}}/",
    f"http://{{host}}@{EVIL}/",  # user-info is the good host
    f"http://{{host}}.{EVIL}/",
    f"http://{EVIL}?.{{host}}/",
    f"http://{EVIL}#.{{host}}/",
    f"http://{EVIL}\\@{{host}}/",
    f"http://{EVIL}\\.{{host}}/",
    f"http://{EVIL}%23@{{host}}/",
    # backslashes: browsers read \ as / in http(s) URLs
    f"/\\{EVIL}",
    f"\\/{EVIL}",
    f"\\\\{EVIL}",
    f"/\\\\{EVIL}",
    f"/\\/{EVIL}",
    f"\\/\\/{EVIL}",
    f"http:\\\\{EVIL}",
    f"https:\\/\\/{EVIL}",
    f"http:/\\{EVIL}",
    # scheme without slashes
    f"https:{EVIL}",
    f"http:{EVIL}",
    f"https:/{EVIL}",
    f"http:///{EVIL}",
    # percent-encoded separators (decoded once by a server, again by a browser)
    f"/%5c{EVIL}",
    f"/%5C%5C{EVIL}",
    f"%5c%5c{EVIL}",
    f"/%2f{EVIL}",
    f"%2f%2f{EVIL}",
    f"/%252f%252f{EVIL}",
    f"/%2e%2e//{EVIL}",
    f"/.//{EVIL}",
    f"/..//{EVIL}",
    f"/./%2f{EVIL}",
    # whitespace and controls the browser strips (mod_auth_openidc CVE-2019-14857, -2021-32786)
    f"/\t/{EVIL}",
    f"/%09/{EVIL}",
    f"/\n/{EVIL}",
    f"/%0a/{EVIL}",
    f"/\r/{EVIL}",
    f"/%0d/{EVIL}",
    f"/%0D%0A/{EVIL}",
    f"\t//{EVIL}",
    f" //{EVIL}",
    f"/ /{EVIL}",
    f"%20//{EVIL}",
    f"/%00/{EVIL}",
    f"\x00//{EVIL}",
    f"/\x0b/{EVIL}",
    f"/\x0c/{EVIL}",
    f"/%E2%80%8B/{EVIL}",  # zero-width space
    # header injection through the Location header
    "/%0d%0aSet-Cookie:%20pwned=1",
    "/\r\nSet-Cookie: pwned=1",
    # unicode and IDN look-alikes
    "//evil\u3002example",  # ideographic full stop: a dot to IDNA
    "//evil%E3%80%82example",
    "http://\uff45\uff56\uff49\uff4c.example/",  # fullwidth letters
    f"/\uff0f{EVIL}",  # fullwidth solidus
    f"/\u2215{EVIL}",  # division slash
    f"/\u2044{EVIL}",  # fraction slash
    f"/\uff3c{EVIL}",  # fullwidth reverse solidus
    f"//{EVIL}\u2025",
    f"http://xn--{EVIL}/",
    # other schemes
    "javascript:alert(document.domain)",
    "JaVaScRiPt:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    f"ftp://{EVIL}/",
    "mailto:attacker@evil.example",
    # relative forms a browser resolves against the callback's URL
    f"{EVIL}",
    f".{EVIL}",
    f"@{EVIL}",
    f"?x=//{EVIL}",
    f"#//{EVIL}",
)
"""Every one must leave the browser on sidecar's origin."""

ALLOWED_DOMAIN = ".good.example"
"""Configured in `auth.allowed_redirect_domains` for the allow-list bypass cases."""

ALLOW_LIST_BYPASSES: tuple[str, ...] = (
    "https://evil.example?.good.example/",
    "https://evil.example#.good.example",
    "https://evil.example/.good.example",
    "https://evil.example\\.good.example/",
    "https://good.example@evil.example/",
    "https://app.good.example@evil.example/",
    "https://evil.example%2f.good.example/",
    "https://evil.example%23.good.example/",
    "https://good.example.evil.example/",
    "https://evilgood.example/",
    "https://good.example%2eevil.example/",
    "https://good.example./",  # trailing dot: another spelling, not on the list
    "https://app.good.example:8443@evil.example/",
    "//evil.example\\.good.example",
    "https:\\\\app.good.example",  # would be fine as https://, but \\ is never accepted
)
"""Must be refused although each mentions the allowed domain."""

ALLOWED_TARGETS: tuple[str, ...] = (
    "/",
    "/docs/page?x=1#top",
    "https://app.good.example/welcome",
    "https://good.example/",
)
"""Positive controls: the validator is not simply refusing everything."""
