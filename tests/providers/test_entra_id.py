"""Microsoft Entra ID quirks against its replayed shape: tenants, the groups overage, v1 issuers.

The multi-tenant document (`/organizations/v2.0`) names its issuer `.../{tenantid}/v2.0`; sidecar
must admit only the tenants listed, by each token's own `tid`: ID tokens at sign-in, bearer access
tokens of API clients, and back-channel logout tokens alike. A user in too many groups gets
`_claim_names` / `hasgroups` instead of `groups`: sidecar fetches them from (the replayed)
Microsoft Graph, or refuses sign-in, as configured.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import pytest

from .conftest import (
    CLIENT_ID,
    ShapeStack,
    ShapeStackFactory,
    entra_document_for,
    load,
    seen_headers,
)

TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"
OTHER_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
API = "5e2b9d1c-3a4f-4b6e-8d7c-9f0a1b2c3d4e"  # an API's Application ID: v2 access tokens' aud
GRAPH_GROUPS = (
    "0c8e1d4a-3f6b-4e2a-9d7c-5b1a2e3f4d6c,7a2b9c4d-1e5f-4a6b-8c3d-2e1f0a9b8c7d,"
    "fee2c45b-915a-4a64-b130-f4eb9e75525e,4fe90ae7-065a-478b-9400-e0a0e1cbd540"
)
# The overage shape of Microsoft's 'groups overage claim' documentation.
OVERAGE = {
    "_claim_names": {"groups": "src1"},
    "_claim_sources": {
        "src1": {
            "endpoint": f"https://graph.windows.net/{TENANT}/users/"
            "00000000-0000-0000-66f3-3332eca7ea81/getMemberObjects"
        }
    },
}


def multi_tenant() -> Any:
    return entra_document_for(load("entra-id"), "organizations")


def single_tenant() -> Any:
    return entra_document_for(load("entra-id"), TENANT)


def user(**changes: Any) -> dict[str, Any]:
    base = {k: v for k, v in load("entra-id").user.items() if k != "groups"}
    return {**base, **changes}


def failure_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        f"{getattr(r, 'reason', '')}: {getattr(r, 'detail', '')}"
        for r in caplog.records
        if r.getMessage() == "sign in failed"
    ]


async def sign_in_fails(stack: ShapeStack) -> int:
    browser = await stack.browser()
    hops = await browser.follow(stack.url("/echo"))
    assert "_sidecar" not in browser.cookie_names()
    return hops[-1].status


async def test_multi_tenant_admits_a_listed_tenant_by_its_own_issuer(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("entra-id", variant="multi-tenant", shape=multi_tenant())
    assert stack.services.require_directory().metadata().issuer_template == (
        stack.provider.issuer + "/{tenantid}/v2.0"
    )
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    assert seen_headers(hops[-1])["x-forwarded-user"] == load("entra-id").user["sub"]


async def test_multi_tenant_refuses_a_tenant_not_listed(
    make_shape_stack: ShapeStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_shape_stack(
        "entra-id", variant="multi-tenant", shape=multi_tenant(), user=user(tid=OTHER_TENANT)
    )
    assert await sign_in_fails(stack) == 400
    assert failure_reasons(caplog) == [
        f"id_token_invalid: tid: tenant {OTHER_TENANT} is not in provider.entra.allowed_tenants"
    ]


async def test_multi_tenant_any_admits_every_tenant(make_shape_stack: ShapeStackFactory) -> None:
    def allow_any(data: dict[str, Any]) -> None:
        data["provider"]["entra"]["allowed_tenants"] = ["any"]

    stack = await make_shape_stack(
        "entra-id",
        variant="multi-tenant",
        shape=multi_tenant(),
        user=user(tid=OTHER_TENANT),
        edit=allow_any,
    )
    browser = await stack.browser()
    await stack.sign_in(browser)


async def test_multi_tenant_refuses_a_token_without_tid(
    make_shape_stack: ShapeStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    without_tid = {k: v for k, v in user().items() if k != "tid"}
    stack = await make_shape_stack(
        "entra-id", variant="multi-tenant", shape=multi_tenant(), user=without_tid
    )
    assert await sign_in_fails(stack) == 400
    assert failure_reasons(caplog) == [
        "id_token_invalid: tid: missing or not a tenant id (multi-tenant issuer)"
    ]


async def test_multi_tenant_refuses_an_issuer_of_another_provider(
    make_shape_stack: ShapeStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    stack = await make_shape_stack("entra-id", variant="multi-tenant", shape=multi_tenant())
    stack.provider.faults.wrong_issuer = True
    assert await sign_in_fails(stack) == 400
    assert [reason.split(":")[0] for reason in failure_reasons(caplog)] == ["id_token_invalid"]


def accept_bearer_tokens(data: dict[str, Any]) -> None:
    data["api"] = {"bearer": {"enabled": True, "audiences": [API]}}


def tenant_issuer(stack: ShapeStack, tenant: str) -> str:
    return f"{stack.provider.issuer}/{tenant}/v2.0"


async def test_multi_tenant_bearer_token_of_a_listed_tenant_reaches_the_backend(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack(
        "entra-id", variant="multi-tenant", shape=multi_tenant(), edit=accept_bearer_tokens
    )
    token = stack.provider.mint_access_token(API, scope="access_as_user")
    browser = await stack.browser()
    hop = await browser.request(
        "GET", stack.url("/echo"), headers={"Authorization": f"Bearer {token}"}
    )
    assert hop.status == 200, hop.text[:300]
    seen = seen_headers(hop)
    assert seen["x-forwarded-user"] == load("entra-id").user["sub"]
    assert seen["x-forwarded-email"] == "AbeLi@microsoft.com"
    assert seen["authorization"] == f"Bearer {token}"


def bearer_refusals(stack: ShapeStack) -> dict[str, str]:
    provider = stack.provider
    return {
        "tenant not listed": provider.mint_access_token(API, user=user(tid=OTHER_TENANT)),
        "iss of another tenant than tid": provider.mint_access_token(
            API, changes={"iss": tenant_issuer(stack, OTHER_TENANT)}
        ),
        "tid missing": provider.mint_access_token(API, changes={"tid": None}),
    }


async def test_multi_tenant_bearer_tokens_of_other_tenants_get_401_json(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack(
        "entra-id", variant="multi-tenant", shape=multi_tenant(), edit=accept_bearer_tokens
    )
    browser = await stack.browser()
    for case, token in bearer_refusals(stack).items():
        hop = await browser.request(
            "GET", stack.url("/echo"), headers={"Authorization": f"Bearer {token}"}
        )
        assert hop.status == 401, case
        assert hop.headers["Content-Type"].startswith("application/json"), case
        assert 'error="invalid_token"' in hop.headers["WWW-Authenticate"], case
        assert "headers" not in hop.json(), case  # the echo backend never saw it


async def post_logout_token(stack: ShapeStack, token: str) -> int:
    browser = await stack.browser()  # the provider's server, not the user's browser
    hop = await browser.request(
        "POST", stack.url("/oauth2/backchannel_logout"), data={"logout_token": token}
    )
    return hop.status


async def still_signed_in(stack: ShapeStack, browser: Any) -> bool:
    return (await browser.request("GET", stack.url("/echo"))).status == 200


async def test_multi_tenant_logout_token_ends_the_session(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("entra-id", variant="multi-tenant", shape=multi_tenant())
    browser = await stack.browser()
    await stack.sign_in(browser)
    token = stack.provider.mint_logout_token(CLIENT_ID)
    assert token.count(".") == 2
    assert await post_logout_token(stack, token) == 200
    assert not await still_signed_in(stack, browser)


@pytest.mark.parametrize(
    "changes",
    [{"tid": OTHER_TENANT}, {"tid": None}, {"iss": "other"}, {"iss": "common"}],
    ids=["tid-not-listed", "tid-missing", "iss-of-another-tenant", "iss-common"],
)
async def test_multi_tenant_logout_token_naming_another_tenant_is_refused(
    make_shape_stack: ShapeStackFactory, changes: Mapping[str, Any]
) -> None:
    stack = await make_shape_stack("entra-id", variant="multi-tenant", shape=multi_tenant())
    browser = await stack.browser()
    await stack.sign_in(browser)
    named = {
        "other": tenant_issuer(stack, OTHER_TENANT),
        "common": f"{stack.provider.issuer}/organizations/v2.0",
    }
    if "iss" in changes:
        changes = {"iss": named[changes["iss"]]}
    if changes.get("tid") == OTHER_TENANT:  # the other tenant's own token: iss and tid agree
        token = stack.provider.mint_logout_token(CLIENT_ID, user=user(tid=OTHER_TENANT))
    else:
        token = stack.provider.mint_logout_token(CLIENT_ID, changes=changes)
    assert await post_logout_token(stack, token) == 400
    assert await still_signed_in(stack, browser)


@pytest.mark.parametrize("tenants", [None, []])
async def test_multi_tenant_without_allowed_tenants_is_not_ready(
    make_shape_stack: ShapeStackFactory, tenants: list[str] | None
) -> None:
    def configure(data: dict[str, Any]) -> None:
        if tenants is None:
            del data["provider"]["entra"]
        else:
            data["provider"]["entra"]["allowed_tenants"] = tenants

    stack = await make_shape_stack(
        "entra-id", variant="multi-tenant", shape=multi_tenant(), edit=configure, wait_ready=False
    )
    browser = await stack.browser()
    for _ in range(200):  # each request lets the background discovery make progress
        ready = await browser.request("GET", stack.url("/oauth2/readyz"))
        if "multi-tenant" in ready.text:
            break
    assert ready.status == 503
    assert "is multi-tenant" in ready.text and "allowed_tenants" in ready.text


async def test_groups_overage_is_read_from_microsoft_graph(
    make_shape_stack: ShapeStackFactory,
) -> None:
    stack = await make_shape_stack("entra-id", shape=single_tenant(), user=user(**OVERAGE))
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    assert seen_headers(hops[-1])["x-forwarded-groups"] == GRAPH_GROUPS
    assert stack.provider.counters.api_calls == 1


@pytest.mark.parametrize("marker", [OVERAGE, {"hasgroups": True}], ids=["claim_names", "hasgroups"])
async def test_groups_overage_denied_with_a_named_reason(
    make_shape_stack: ShapeStackFactory,
    caplog: pytest.LogCaptureFixture,
    marker: dict[str, Any],
) -> None:
    stack = await make_shape_stack(
        "entra-id", variant="multi-tenant", shape=multi_tenant(), user=user(**marker)
    )
    caplog.set_level(logging.INFO)
    assert await sign_in_fails(stack) == 400
    (reason,) = failure_reasons(caplog)
    assert reason.startswith("groups_overage: groups overage: the user is in more groups")
    assert stack.provider.counters.api_calls == 0


async def test_groups_overage_graph_refusal_is_a_sign_in_failure(
    make_shape_stack: ShapeStackFactory, caplog: pytest.LogCaptureFixture
) -> None:
    def wrong_graph(data: dict[str, Any]) -> None:
        data["provider"]["entra"]["graph_url"] = "https://graph.microsoft.com/nowhere"

    stack = await make_shape_stack(
        "entra-id", shape=single_tenant(), user=user(**OVERAGE), edit=wrong_graph
    )
    assert await sign_in_fails(stack) == 400
    (reason,) = failure_reasons(caplog)
    assert "getMemberGroups answered HTTP 404" in reason


async def test_v1_issuer_on_sts_windows_net_signs_in(make_shape_stack: ShapeStackFactory) -> None:
    stack = await make_shape_stack("entra-id", variant="v1", shape=load("entra-id-v1"))
    assert stack.config.provider is not None
    assert stack.config.provider.issuer == stack.provider.issuer + f"/{TENANT}/"
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    assert seen_headers(hops[-1])["x-forwarded-email"] == "AbeLi@microsoft.com"
    assert stack.provider.counters.userinfo == 0  # use_userinfo: false, as the guide says


async def test_v1_multi_tenant_issuer_is_filled_per_tenant(
    make_shape_stack: ShapeStackFactory,
) -> None:
    """v1's `common` document names `https://sts.windows.net/{tenantid}/`: the same rule."""
    v1 = load("entra-id-v1")
    text = json.dumps(v1.discovery).replace(TENANT, "common")
    text = text.replace("https://sts.windows.net/common/", "https://sts.windows.net/{tenantid}/")
    common = replace(
        v1,
        discovery=json.loads(text),
        discovery_url="https://login.microsoftonline.com/common/.well-known/openid-configuration",
    )

    def common_issuer(data: dict[str, Any]) -> None:
        data["provider"]["issuer"] = "https://login.microsoftonline.com/common/"
        data["provider"]["entra"] = {"allowed_tenants": [TENANT]}

    stack = await make_shape_stack("entra-id", variant="v1", shape=common, edit=common_issuer)
    metadata = stack.services.require_directory().metadata()
    assert metadata.issuer_template == stack.provider.issuer + "/{tenantid}/"
    browser = await stack.browser()
    hops = await stack.sign_in(browser)
    assert seen_headers(hops[-1])["x-forwarded-email"] == "AbeLi@microsoft.com"
