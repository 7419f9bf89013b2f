"""Configuration of identity headers (`headers`) and sign-in endpoints and pages (`auth`)."""

from __future__ import annotations

import re

from pydantic import (
    Field,
    field_validator,
)

from sidecar.config.model.base import _HEADER_NAME, Model


class HeadersConfig(Model):
    """Identity headers sent to the backend. Client-sent copies are always removed first."""

    claims: dict[str, str] = Field(
        default_factory=lambda: {
            "X-Forwarded-User": "user",
            "X-Forwarded-Email": "email",
            "X-Forwarded-Preferred-Username": "username",
            "X-Forwarded-Groups": "groups",
        },
        description=(
            "Header name -> identity field (user, email, username, groups) or claim name (dotted "
            "paths reach nested claims). Lists are comma-joined."
        ),
    )
    access_token: bool = Field(False, description="Send X-Forwarded-Access-Token.")
    authorization: bool = Field(
        False, description="Send Authorization: Bearer <access token> (replacing the client's)."
    )
    strip: tuple[str, ...] = Field(
        (), description="More header names to remove from every incoming request."
    )

    @field_validator("claims")
    @classmethod
    def _names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a valid HTTP header name")
        return value


class AuthConfig(Model):
    """Sign-in behaviour and sidecar's own endpoints."""

    prefix: str = Field(
        "/oauth2", description="Path prefix of sidecar's endpoints (start, callback, ...)."
    )
    allowed_redirect_domains: tuple[str, ...] = Field(
        (),
        description=(
            "Hosts that post-login/post-logout redirects may go to besides sidecar's own origin. "
            "A leading dot allows subdomains: .example.com."
        ),
    )
    sign_in_page: bool = Field(
        False, description="Show a 'Sign in with ...' page instead of redirecting at once."
    )
    provider_name: str = Field("your identity provider", description="Name shown on pages.")
    templates_dir: str | None = Field(
        None, description="Directory with sign_in.html / error.html replacing the built-in pages."
    )
    post_logout_redirect: str = Field("/", description="Where sign-out lands by default.")
    provider_logout: bool = Field(
        True,
        description="On sign-out also end the provider session (RP-initiated logout) if possible.",
    )

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
            raise ValueError("must look like /oauth2")
        return value
