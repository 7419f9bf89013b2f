"""The public origin: configured, from the request, or from trusted proxies only."""

from __future__ import annotations

import pytest

from sidecar.auth.origin import build_origin


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        ({"public_url": "https://app.example.com", "host": "ignored"}, "https://app.example.com"),
        ({"public_url": "https://app.example.com/", "host": None}, "https://app.example.com"),
        ({"host": "127.0.0.1:4180"}, "http://127.0.0.1:4180"),
        ({"host": "App.Example.COM"}, "http://app.example.com"),
        ({"host": "app.example.com:80"}, "http://app.example.com"),
        ({"scheme": "https", "host": "app.example.com:443"}, "https://app.example.com"),
        ({"scheme": "https", "host": "app.example.com:80"}, "https://app.example.com:80"),
        ({"host": "[::1]:4180"}, "http://[::1]:4180"),
        # forwarding headers only from trusted proxies
        (
            {"host": "internal:4180", "forwarded_proto": "https", "forwarded_host": "evil.test"},
            "http://internal:4180",
        ),
        (
            {
                "host": "internal:4180",
                "forwarded_proto": "https",
                "forwarded_host": "app.example.com, internal",
                "peer_trusted": True,
            },
            "https://app.example.com",
        ),
        (
            {"host": "internal", "forwarded_proto": "HTTPS", "peer_trusted": True},
            "https://internal",
        ),
        # hosts nothing may be built from
        ({"host": None}, None),
        ({"host": ""}, None),
        ({"host": "evil.test/path"}, None),
        ({"host": "user@evil.test"}, None),
        ({"host": "evil.test\r\nX: 1"}, None),
        ({"host": "good.test", "forwarded_host": "a/b", "peer_trusted": True}, None),
        ({"host": "good.test", "forwarded_proto": "ftp", "peer_trusted": True}, None),
    ],
)
def test_build_origin(arguments: dict[str, object], expected: str | None) -> None:
    values: dict[str, object] = {"public_url": None, "scheme": "http", **arguments}
    assert build_origin(**values) == expected  # type: ignore[arg-type]
