"""Configuration of routes and policies (`routes`, `policies`): who may reach which path."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    Field,
    field_validator,
    model_validator,
)

from sidecar.config.model.base import Model

ClaimValue = str | int | bool
"""A value a policy's `claims` rule accepts; compared by type and value."""

_POLICY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Z-]+")
_HOST_NAME = re.compile(r"(\*\.)?[a-z0-9_-]+(\.[a-z0-9_-]+)*|\[[0-9a-f:.]+\]")
_DOMAIN = re.compile(r"\.?[a-z0-9_-]+(\.[a-z0-9_-]+)*")


def _no_duplicates(values: tuple[str, ...]) -> tuple[str, ...]:
    seen: set[str] = set()
    for value in values:
        if not value:
            raise ValueError("empty entries are not allowed")
        if value in seen:
            raise ValueError(f"{value!r} is listed twice")
        seen.add(value)
    return values


class PolicyConfig(Model):
    """Who may reach a route that names this policy (`policy: NAME` on the route).

    Every rule kind listed must be satisfied (AND); a kind left out is not checked. `emails` and
    `email_domains` together form one rule, satisfied by either list. A policy with no rule at all
    is an error. Reasons for a denial (`policy:NAME:groups_any-missing`, ...) go to the access log.
    """

    emails: tuple[str, ...] = Field(
        (),
        description=(
            "Email addresses allowed (case-insensitive). Together with email_domains one rule: "
            "the user's verified email is listed here or has a listed domain."
        ),
    )
    email_domains: tuple[str, ...] = Field(
        (),
        description=(
            "Email domains allowed: the part after the last @, matched exactly (example.com "
            "never matches evil-example.com). A leading dot allows subdomains only "
            "(.example.com); * allows any verified email."
        ),
    )
    groups_any: tuple[str, ...] = Field(
        (), description="The user must be in at least one of these groups (exact names)."
    )
    groups_all: tuple[str, ...] = Field(
        (), description="The user must be in every one of these groups (exact names)."
    )
    claims: dict[str, tuple[ClaimValue, ...]] = Field(
        default_factory=dict,
        description=(
            "Claim path -> allowed values; every entry must be satisfied. The claim (a dotted "
            "path reaches nested claims: realm_access.roles) must equal one of the values or be a "
            "list holding one. Values compare by type: 3 matches the number, '3' the string."
        ),
    )
    require_email_verified: bool = Field(
        True,
        description=(
            "Email rules accept only an email the provider marked email_verified: true. Turn off "
            "only for a provider that never sends email_verified but verifies every address."
        ),
    )

    @field_validator("emails")
    @classmethod
    def _emails(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _no_duplicates(tuple(email.lower() for email in value))
        for email in value:
            local, at, domain = email.rpartition("@")
            if not (at and local and domain) or any(char.isspace() for char in email):
                raise ValueError(f"{email!r} is not an email address")
        return value

    @field_validator("email_domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        _no_duplicates(tuple(domain.lower() for domain in value))
        for domain in (domain.lower() for domain in value):
            if domain.startswith("*.") or domain.startswith("@"):
                hint = "." + domain[2:] if domain.startswith("*.") else domain[1:]
                raise ValueError(f"{domain!r}: write {hint!r}")
            if domain != "*" and not _DOMAIN.fullmatch(domain):
                raise ValueError(
                    f"{domain!r} is not a domain (example.com, .example.com for subdomains, or *)"
                )
        return value

    @field_validator("groups_any", "groups_all")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(value)

    @field_validator("claims")
    @classmethod
    def _claims(cls, value: dict[str, tuple[ClaimValue, ...]]) -> dict[str, tuple[ClaimValue, ...]]:
        for path, values in value.items():
            if not path or path.startswith(".") or path.endswith(".") or ".." in path:
                raise ValueError(f"{path!r} is not a claim name or dotted path")
            if path == "email":
                raise ValueError(
                    "use emails / email_domains for the email: they also require email_verified"
                )
            if not values:
                raise ValueError(f"{path}: list at least one allowed value")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> PolicyConfig:
        rules = (self.emails, self.email_domains, self.groups_any, self.groups_all, self.claims)
        if not any(rules):
            raise ValueError(
                "a policy needs at least one rule: emails, email_domains, groups_any, "
                "groups_all or claims"
            )
        return self


class RouteConfig(Model):
    """One entry of `routes`: which requests it matches and what they need.

    Exactly one of `path`, `exact` or `regex`. Matching sees the path as the backend will (dot
    segments and duplicate slashes resolved, unreserved characters decoded, no query string); a
    path sidecar cannot read unambiguously is refused with 400 before any route is matched.
    """

    name: str | None = Field(None, description="Name in the access log (default: routes[INDEX]).")
    path: str | None = Field(
        None,
        description=(
            "Path prefix, by whole segments: /static matches /static and /static/x, never "
            "/staticfoo. A trailing slash is ignored. / matches everything."
        ),
    )
    exact: str | None = Field(None, description="Exact path: /health matches only /health.")
    regex: str | None = Field(
        None,
        description=(
            "Python regular expression that must match the whole normalised path "
            "(e.g. /api/v[0-9]+/public/.*)."
        ),
    )
    methods: tuple[str, ...] | None = Field(
        None,
        description="HTTP methods matched (e.g. [GET, HEAD]); leave out to match every method.",
    )
    host: str | None = Field(
        None,
        description=(
            "Host matched (without port, case-insensitive): app.example.com, or *.example.com "
            "for every subdomain. Leave out to match every host."
        ),
    )
    access: Literal["public", "authenticated"] = Field(
        "authenticated",
        description=(
            "public: no sign-in (identity headers are still stripped). authenticated: any "
            "signed-in user. To require a policy, set `policy` instead."
        ),
    )
    policy: str | None = Field(
        None, description="Name of a policy (under `policies`) the user must satisfy."
    )
    bearer: bool | None = Field(
        None,
        description="Accept Authorization: Bearer tokens here (None: the global setting).",
    )
    cors_preflight: bool = Field(
        False,
        description="Let CORS preflight requests (OPTIONS with Access-Control-Request-Method) "
        "through to the backend without sign-in.",
    )
    identity_assertion: bool | None = Field(
        None,
        description="Send the signed identity assertion here (None: the global setting).",
    )

    @field_validator("path", "exact")
    @classmethod
    def _path(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Imported here: sidecar.routing imports sidecar.policy, which needs this module.
        from sidecar.routing import normalize_path

        if not value.startswith("/"):
            raise ValueError("must start with /")
        normal = normalize_path(value)
        if normal is None or "?" in value:
            raise ValueError(
                "not a path sidecar can match (no query, no encoded / or \\, no ;-hidden dot "
                "segments, escapes must be valid UTF-8)"
            )
        if normal != value:
            raise ValueError(f"write it as requests are matched: {normal}")
        return value

    @field_validator("regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("list at least one method, or leave methods out to match every one")
        upper = _no_duplicates(tuple(method.upper() for method in value))
        for method in upper:
            if not _METHOD.fullmatch(method):
                raise ValueError(f"{method!r} is not an HTTP method")
        return upper

    @field_validator("host")
    @classmethod
    def _host(cls, value: str | None) -> str | None:
        if value is None:
            return None
        host = value.lower().rstrip(".")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(
                "not a host name (app.example.com, or *.example.com; no scheme, port or path)"
            )
        return host

    @field_validator("policy")
    @classmethod
    def _policy_name(cls, value: str | None) -> str | None:
        if value is not None and not _POLICY_NAME.fullmatch(value):
            raise ValueError("policy names use letters, digits, _ . and - only")
        return value

    @model_validator(mode="after")
    def _one_matcher(self) -> RouteConfig:
        given = [key for key in ("path", "exact", "regex") if getattr(self, key) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"give exactly one of path, exact or regex (found: {found})")
        if self.policy is not None and self.access == "public":
            raise ValueError("a public route cannot name a policy (leave out access: public)")
        return self
