"""Provider-specific steps at the end of a sign-in, after the ID token and userinfo are read.

`complete_claims` is called once by `complete_sign_in` with the validated ID token claims and the
merged claims. In order: `provider.required_acr` (the ID token's `acr` must be listed, e.g. a
ForgeRock/PingAM MFA journey), the Microsoft Entra ID groups overage (the groups are fetched from
Microsoft Graph with the sign-in access token, or sign-in is refused, as `provider.entra` says),
and GitHub (identity, verified email, orgs and teams from its REST API). Each refusal is a
`LoginError` whose `reason` tells the operator what to change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sidecar.auth.services import AuthServices
from sidecar.config.model import EntraConfig
from sidecar.errors import LoginError
from sidecar.oidc.client import ProviderClient
from sidecar.oidc.entra import (
    build_member_groups_request,
    has_groups_overage,
    parse_member_groups,
    without_overage_markers,
)
from sidecar.oidc.github import fetch_github_claims

log = logging.getLogger("sidecar.auth")


def check_acr(id_claims: Mapping[str, Any], required: Sequence[str]) -> None:
    """Refuse (`LoginError`, code `acr_not_satisfied`) unless the ID token's acr is listed."""
    if not required:
        return
    acr = id_claims.get("acr")
    if not isinstance(acr, str) or acr not in required:
        shown = acr[:40] if isinstance(acr, str) else None
        raise LoginError(
            "Sign-in did not use the authentication method this site requires.",
            code="acr_not_satisfied",
            reason=f"ID token acr {shown!r} is not one of provider.required_acr",
        )


async def fetch_overage_groups(
    client: ProviderClient, config: EntraConfig, access_token: str
) -> tuple[str, ...]:
    """The user's group ids from Microsoft Graph (`POST /me/getMemberGroups`)."""
    url, body = build_member_groups_request(config)
    answer = await client.call_api(url, access_token, json_body=body)
    if answer.status != 200:
        raise LoginError(
            code="groups_overage",
            reason=(
                f"groups overage: Microsoft Graph getMemberGroups answered HTTP {answer.status} "
                "(the sign-in access token must be for Graph with GroupMember.Read.All)"
            ),
        )
    try:
        return parse_member_groups(answer.doc)
    except ValueError as exc:
        raise LoginError(code="groups_overage", reason=f"groups overage: {exc}") from exc


async def complete_claims(
    services: AuthServices,
    id_claims: Mapping[str, Any],
    claims: dict[str, Any],
    access_token: str,
) -> dict[str, Any]:
    """The claims to build the identity from, after the provider's own extra steps."""
    provider = services.provider
    check_acr(id_claims, provider.required_acr)
    entra = provider.entra
    if entra is not None and has_groups_overage(id_claims):
        if entra.groups_overage == "deny":
            raise LoginError(
                code="groups_overage",
                reason=(
                    "groups overage: the user is in more groups than fit in the ID token and "
                    "provider.entra.groups_overage is deny (set graph, or emit app roles or "
                    "'groups assigned to the application' instead)"
                ),
            )
        groups = await fetch_overage_groups(services.require_client(), entra, access_token)
        log.info("groups overage: %d groups read from Microsoft Graph", len(groups))
        claims = {**without_overage_markers(claims), "groups": list(groups)}
    if provider.github is not None:
        claims = await fetch_github_claims(
            services.require_client(), provider.github, claims, access_token
        )
    return claims
