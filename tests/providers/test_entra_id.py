"""Microsoft Entra ID quirks against its replayed shape: tenants, the groups overage, v1 issuers.

The multi-tenant document (`/organizations/v2.0`) names its issuer `.../{tenantid}/v2.0`; sidecar
must admit only the tenants listed, by each ID token's own `tid`. A user in too many groups gets
`_claim_names` / `hasgroups` instead of `groups`: sidecar fetches them from (the replayed)
Microsoft Graph, or refuses sign-in, as configured.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest

from .conftest import ShapeStack, ShapeStackFactory, entra_document_for, load, seen_headers

TENANT = "b9419818-09af-49c2-b0c3-653adc1f376e"
OTHER_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
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
