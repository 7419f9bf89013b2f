"""The demo backend shows what sidecar sent it, escaped, as HTML or JSON."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sidecar.dev.backend import create_backend_app

MakeClient = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def backend(aiohttp_client: MakeClient) -> TestClient[Any, Any]:
    return await aiohttp_client(create_backend_app())


async def test_page_greets_the_user_and_lists_identity_headers(
    backend: TestClient[Any, Any],
) -> None:
    response = await backend.get(
        "/any/path?x=1",
        headers={
            "X-Forwarded-User": "u-123",
            "X-Forwarded-Email": "alice@example.org",
            "X-Forwarded-Preferred-Username": "alice",
            "X-Forwarded-Groups": "admins,users",
        },
    )
    page = await response.text()
    assert response.status == 200
    assert "<h1>Hello, alice</h1>" in page
    assert "alice@example.org" in page
    assert "admins,users" in page
    assert "/any/path?x=1" in page
    assert 'href="/oauth2/sign_out"' in page


async def test_header_values_are_escaped(backend: TestClient[Any, Any]) -> None:
    response = await backend.post(
        "/",
        headers={
            "X-Forwarded-Preferred-Username": "<script>alert(1)</script>",
            "X-Custom": '"><img src=x onerror=alert(2)>',
        },
    )
    page = await response.text()
    assert "<script>alert(1)" not in page
    assert "<img" not in page
    assert "Hello, &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(2)&gt;" in page


async def test_without_identity_headers_the_page_says_so(backend: TestClient[Any, Any]) -> None:
    page = await (await backend.get("/")).text()
    assert "Hello, stranger" in page
    assert "not sent" in page


async def test_token_headers_are_shortened(backend: TestClient[Any, Any]) -> None:
    token = "eyJhbGciOiJSUzI1NiJ9." + "a" * 200
    page = await (await backend.get("/", headers={"Authorization": f"Bearer {token}"})).text()
    assert token not in page
    assert "characters)" in page


async def test_json_when_the_client_asks_for_it(backend: TestClient[Any, Any]) -> None:
    response = await backend.get(
        "/api/me",
        headers={
            "Accept": "application/json",
            "X-Forwarded-User": "u-1",
            "X-Forwarded-Email": "e@x",
        },
    )
    body = await response.json()
    assert body["user"] == "u-1"
    assert body["identity"]["X-Forwarded-Email"] == "e@x"
    assert body["identity"]["X-Forwarded-Groups"] is None
    assert body["path"] == "/api/me"
    assert ["X-Forwarded-User", "u-1"] in body["headers"]


async def test_sign_out_path_is_configurable(aiohttp_client: MakeClient) -> None:
    client = await aiohttp_client(create_backend_app(sign_out_path="/auth/sign_out"))
    assert 'href="/auth/sign_out"' in await (await client.get("/")).text()
