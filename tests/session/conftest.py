"""Shared test support for the session package: a browser-like cookie jar and configurations."""

from __future__ import annotations

from typing import Any

import pytest

from sidecar.config.model import SidecarConfig

BROWSER_COOKIE_LIMIT = 4096


class Jar:
    """What a browser keeps from Set-Cookie header values (host-only, path /): name -> value."""

    def __init__(self, cookies: dict[str, str] | None = None) -> None:
        self.cookies: dict[str, str] = dict(cookies or {})
        self.attributes: dict[str, dict[str, str]] = {}

    def apply(self, set_cookies: list[str]) -> None:
        for header in set_cookies:
            assert len(header.encode()) < BROWSER_COOKIE_LIMIT, "browser would drop this cookie"
            pair, *attrs = header.split("; ")
            name, _, value = pair.partition("=")
            parsed = {}
            for attr in attrs:
                key, _, val = attr.partition("=")
                parsed[key.lower()] = val
            if name.startswith("__Host-"):
                assert "secure" in parsed and parsed.get("path") == "/" and "domain" not in parsed
            if parsed.get("max-age") == "0":
                self.cookies.pop(name, None)
                self.attributes.pop(name, None)
            else:
                self.cookies[name] = value
                self.attributes[name] = parsed


def make_config(**session: Any) -> SidecarConfig:
    public_url = session.pop("public_url", "https://app.example.com")
    data: dict[str, Any] = {
        "version": 1,
        "upstream": "http://127.0.0.1:9000",
        "server": {"public_url": public_url},
        "session": {"secrets": ["q0J7tB9y4kKz0mJ2pA7c2oU8x5nV1rW3eT6yH9sD4fG"], **session},
    }
    return SidecarConfig.model_validate(data)


@pytest.fixture
def jar() -> Jar:
    return Jar()
