"""The exception tree. Deep code raises these; one middleware turns them into HTTP responses.

    SidecarError                     code, status, safe message (never a secret)
    ├── ConfigError                  invalid configuration (not an HTTP error: printed by the CLI)
    ├── BadRequestError              400: a request sidecar refuses to interpret
    │   └── LoginError               400: a sign-in callback that cannot complete (state, code)
    │       └── IdTokenError         400: the ID token failed a check of OpenID Connect Core 3.1.3.7
    ├── NotAuthenticatedError        401: API client without a valid session or token
    │   ├── RefreshRejectedError     401: the provider refused the refresh token (invalid_grant)
    │   └── InvalidTokenError        401: a bearer token or Basic credentials sidecar refused
    ├── ForbiddenError               403: signed in, but the policy says no
    ├── PayloadTooLargeError         413
    ├── RequestTargetTooLongError    414
    ├── HeadersTooLargeError         431
    ├── UpstreamUnavailableError     502: the backend refused or broke the connection
    ├── ProviderUnavailableError     503: the identity provider is unreachable or misbehaving
    ├── SessionStoreUnavailableError 503: the session store (Redis) is unreachable
    └── UpstreamTimeoutError         504: the backend did not answer in time

`code` is a stable machine-readable string (it goes to JSON bodies, logs and metrics); `message`
is shown to the user and must never contain a token, code, cookie or secret. `reason` is the
operator's detail: logged, never shown.
"""

from __future__ import annotations

from collections.abc import Sequence


class SidecarError(Exception):
    status: int = 500
    code: str = "internal_error"
    message: str = "Something went wrong inside sidecar."

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        reason: str = "",
        headers: Sequence[tuple[str, str]] = (),
    ) -> None:
        if message is not None:
            self.message = message
        if code is not None:
            self.code = code
        self.reason = reason
        # Response headers to send with the error (WWW-Authenticate, Set-Cookie clearing a session).
        self.headers = tuple(headers)
        super().__init__(self.message)


class ConfigError(SidecarError):
    """Raised with every problem of a config file at once; `problems` holds one line each."""

    code = "config_invalid"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class BadRequestError(SidecarError):
    status = 400
    code = "bad_request"
    message = "The request could not be understood."


class LoginError(BadRequestError):
    code = "login_failed"
    message = "Sign-in could not be completed. Please try again."


class IdTokenError(LoginError):
    """The ID token failed validation; `reason` names the failed check (for operators only)."""

    code = "id_token_invalid"


class NotAuthenticatedError(SidecarError):
    status = 401
    code = "unauthenticated"
    message = "Authentication required."


class RefreshRejectedError(NotAuthenticatedError):
    """The provider answered a refresh with invalid_grant: the session is over, sign in again.

    Distinct from `ProviderUnavailableError` (network, timeout, 5xx), which keeps the session until
    its tokens really expire.
    """

    code = "refresh_rejected"
    message = "Your session has ended. Please sign in again."


class InvalidTokenError(NotAuthenticatedError):
    """A bearer token (or Basic credentials) that failed a check; `reason` names it for operators.

    Always answered as JSON with `WWW-Authenticate: Bearer error="invalid_token"` (RFC 6750), never
    with a sign-in redirect: the client is a program.
    """

    code = "invalid_token"
    message = "The access token is invalid or has expired."


class ForbiddenError(SidecarError):
    status = 403
    code = "forbidden"
    message = "You are signed in, but not allowed to see this page."


class PayloadTooLargeError(SidecarError):
    status = 413
    code = "payload_too_large"
    message = "The request body is too large."


class RequestTargetTooLongError(SidecarError):
    status = 414
    code = "uri_too_long"
    message = "The requested address is too long."


class HeadersTooLargeError(SidecarError):
    status = 431
    code = "headers_too_large"
    message = "The request headers are too large."


class UpstreamUnavailableError(SidecarError):
    status = 502
    code = "upstream_unavailable"
    message = "The application behind sidecar is not reachable."


class ProviderUnavailableError(SidecarError):
    status = 503
    code = "provider_unavailable"
    message = "The identity provider is not reachable at the moment. Please try again shortly."


class SessionStoreUnavailableError(SidecarError):
    """Redis (the session store or the revocation list) did not answer: the session cannot be
    read or written. Not a reason to sign in again: the session is probably still there."""

    status = 503
    code = "session_store_unavailable"
    message = "The session store is not reachable at the moment. Please try again shortly."


class UpstreamTimeoutError(SidecarError):
    status = 504
    code = "upstream_timeout"
    message = "The application behind sidecar did not answer in time."
