"""Microsoft Entra ID quirks as plain decisions: multi-tenant issuers and the groups overage.

A multi-tenant app discovers `https://login.microsoftonline.com/common/v2.0` (or `organizations`,
or v1's `.../common/`) whose document's issuer is a template, `.../{tenantid}/v2.0`. Every ID token
then names its own tenant: `expected_issuer` fills the template with the token's `tid` (only for
tenants in `provider.entra.allowed_tenants`), and the ID token check requires exactly that `iss`;
so do bearer access tokens (`sidecar.auth.bearer`) and back-channel logout tokens
(`sidecar.auth.backchannel`): one rule for every token the provider signs.
A user in more groups than fit in a token gets `_claim_names.groups` (or `hasgroups`) instead of
`groups`: `has_groups_overage` spots it, and `parse_member_groups` reads Microsoft Graph's
`getMemberGroups` answer. Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from sidecar.config.model import EntraConfig
from sidecar.errors import IdTokenError

TENANT_PLACEHOLDER = "{tenantid}"
MEMBER_GROUPS_PATH = "/v1.0/me/getMemberGroups"
_TENANT_ID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_OVERAGE_MARKERS = ("_claim_names", "_claim_sources", "hasgroups")
MAX_GROUPS = 5000


def is_tenant_template(issuer: Any) -> bool:
    """True for a discovered issuer carrying the `{tenantid}` placeholder."""
    return isinstance(issuer, str) and TENANT_PLACEHOLDER in issuer


def check_tenant_template(discovered: str, config: EntraConfig | None) -> str | None:
    """None when a multi-tenant (`{tenantid}`) issuer may be used; else why not (for readiness)."""
    if config is None:
        return (
            f"the discovered issuer {discovered} is multi-tenant: configure "
            "provider.entra.allowed_tenants (tenant ids, or [any])"
        )
    if not config.allowed_tenants:
        return (
            f"the discovered issuer {discovered} is multi-tenant and "
            "provider.entra.allowed_tenants is empty: list the tenant ids (or [any])"
        )
    if discovered.count(TENANT_PLACEHOLDER) != 1:
        return f"the discovered issuer {discovered} has more than one {TENANT_PLACEHOLDER}"
    return None


def fits_tenant_template(template: str, issuer: str) -> bool:
    """True when `issuer` has the template's shape (any tenant segment): a token that may be the
    multi-tenant provider's, to be checked with `expected_issuer`. Never a decision by itself."""
    prefix, _, suffix = template.partition(TENANT_PLACEHOLDER)
    return (
        len(issuer) > len(prefix) + len(suffix)
        and issuer.startswith(prefix)
        and issuer.endswith(suffix)
    )


def read_unverified_claims(token: str) -> dict[str, Any]:
    """A JWT's payload before its signature is checked: only to learn which `tid` to expect."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    try:
        payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def expected_issuer(template: str, claims: Mapping[str, Any], config: EntraConfig | None) -> str:
    """The `iss` an ID token from a multi-tenant issuer must carry: the template with the
    token's `tid`, when that tenant is allowed. Raises `IdTokenError` otherwise."""
    tid = claims.get("tid")
    if not isinstance(tid, str) or not _TENANT_ID.fullmatch(tid):
        raise IdTokenError(reason="tid: missing or not a tenant id (multi-tenant issuer)")
    allowed = config.allowed_tenants if config is not None else ()
    if "any" not in allowed and tid.lower() not in allowed:
        raise IdTokenError(reason=f"tid: tenant {tid} is not in provider.entra.allowed_tenants")
    return template.replace(TENANT_PLACEHOLDER, tid)


def has_groups_overage(claims: Mapping[str, Any]) -> bool:
    """True when the token says the groups did not fit (`_claim_names.groups` or `hasgroups`)."""
    names = claims.get("_claim_names")
    if isinstance(names, Mapping) and "groups" in names:
        return True
    return claims.get("hasgroups") in (True, "true")


def without_overage_markers(claims: Mapping[str, Any]) -> dict[str, Any]:
    """The claims without the overage pointers (they name a deprecated Azure AD Graph URL)."""
    return {name: value for name, value in claims.items() if name not in _OVERAGE_MARKERS}


def build_member_groups_request(config: EntraConfig) -> tuple[str, dict[str, Any]]:
    """URL and JSON body of Microsoft Graph's `POST /me/getMemberGroups`."""
    return config.graph_url + MEMBER_GROUPS_PATH, {
        "securityEnabledOnly": config.graph_security_groups_only
    }


def parse_member_groups(doc: Any) -> tuple[str, ...]:
    """The group ids of a `getMemberGroups` answer (`{"value": [...]}`); ValueError otherwise."""
    value = doc.get("value") if isinstance(doc, dict) else None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("Graph getMemberGroups answer has no list of group ids in value")
    if len(value) > MAX_GROUPS:
        raise ValueError(f"Graph getMemberGroups answered more than {MAX_GROUPS} groups")
    return tuple(value)
