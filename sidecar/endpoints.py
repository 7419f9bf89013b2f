"""Reserved paths and header-name constants, in one place.

Sidecar's own endpoints live under `auth.prefix` (default `/oauth2`, the name oauth2-proxy users
know); everything else belongs to the backend.
"""

from __future__ import annotations

from dataclasses import dataclass

START = "/start"
CALLBACK = "/callback"
SIGN_OUT = "/sign_out"
USERINFO = "/userinfo"
AUTH = "/auth"  # forward-auth (nginx auth_request, Traefik ForwardAuth)
HEALTHZ = "/healthz"  # liveness
READYZ = "/readyz"  # readiness
JWKS = "/jwks"  # sidecar's own public keys (signed identity assertions)
BACKCHANNEL_LOGOUT = "/backchannel_logout"  # OpenID Connect Back-Channel Logout 1.0


@dataclass(frozen=True)
class Endpoints:
    """Absolute paths of sidecar's endpoints for one prefix."""

    prefix: str

    @property
    def start(self) -> str:
        return self.prefix + START

    @property
    def callback(self) -> str:
        return self.prefix + CALLBACK

    @property
    def sign_out(self) -> str:
        return self.prefix + SIGN_OUT

    @property
    def userinfo(self) -> str:
        return self.prefix + USERINFO

    @property
    def auth(self) -> str:
        return self.prefix + AUTH

    @property
    def jwks(self) -> str:
        return self.prefix + JWKS

    @property
    def backchannel_logout(self) -> str:
        return self.prefix + BACKCHANNEL_LOGOUT

    @property
    def healthz(self) -> str:
        return self.prefix + HEALTHZ

    @property
    def readyz(self) -> str:
        return self.prefix + READYZ


# Hop-by-hop headers (RFC 9110 section 7.6.1), lower case; those named in Connection are too.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authenticate",
        "proxy-authorization",
    }
)

X_FORWARDED_FOR = "X-Forwarded-For"
X_FORWARDED_PROTO = "X-Forwarded-Proto"
X_FORWARDED_HOST = "X-Forwarded-Host"
X_FORWARDED_ACCESS_TOKEN = "X-Forwarded-Access-Token"  # noqa: S105 - a header name

# Forward-auth response headers (oauth2-proxy's names); always stripped from incoming requests.
X_AUTH_REQUEST_HEADERS = (
    "X-Auth-Request-User",
    "X-Auth-Request-Email",
    "X-Auth-Request-Groups",
    "X-Auth-Request-Preferred-Username",
    "X-Auth-Request-Access-Token",
)
# Forward-auth 401: where to sign in (`<prefix>/start?rd=<original URL>`, escaped by sidecar).
X_AUTH_REQUEST_SIGN_IN = "X-Auth-Request-Sign-In"
# Forward-auth: each Set-Cookie again as `<this>-1`, `-2`, ... (nginx passes on only one).
X_AUTH_REQUEST_SET_COOKIE = "X-Auth-Request-Set-Cookie"
