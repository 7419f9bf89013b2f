"""Fixtures for the doctor's tests: the development provider with a registered client, and `write`,
which writes a good config (echo backend upstream) with sections replaced per test."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer

from sidecar.dev.provider import DevProvider
from sidecar.dev.provider_clients import DevClient
from sidecar.doctor.report import Finding
from sidecar.session.codec import generate_secret

CLIENT_ID = "doctor-tests"
CLIENT_SECRET = "client-secret-for-doctor-tests"
PUBLIC_URL = "https://app.example.com"
KEY = generate_secret()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def provider() -> AsyncIterator[DevProvider]:
    dev = DevProvider()
    await dev.start()
    dev.add_client(
        DevClient(CLIENT_ID, CLIENT_SECRET, redirect_uris=[PUBLIC_URL + "/oauth2/callback"])
    )
    yield dev
    await dev.stop()


Write = Callable[..., Path]


@pytest.fixture
def write(tmp_path: Path, provider: DevProvider, echo_server: TestServer) -> Write:
    """Write a good config, with sections or keys replaced by the keyword arguments."""

    def make(**changes: Any) -> Path:
        config: dict[str, Any] = {
            "version": 1,
            "server": {"public_url": PUBLIC_URL},
            "upstream": str(echo_server.make_url("")).rstrip("/"),
            "provider": {
                "issuer": provider.issuer,
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
            },
            "session": {"secret": KEY},
        }
        for key, value in changes.items():
            if isinstance(value, dict) and isinstance(config.get(key), dict):
                merged = {**config[key], **value}
                config[key] = {name: v for name, v in merged.items() if v is not None}
            elif value is None:
                config.pop(key, None)
            else:
                config[key] = value
        path = tmp_path / "sidecar.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        return path

    return make


def by_title(findings: list[Finding], start: str) -> Finding:
    matches = [f for f in findings if f.title.startswith(start)]
    assert matches, [f.title for f in findings]
    return matches[0]
