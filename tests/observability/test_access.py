"""Request ids and access-log fields (pure parts; the app tests cover the middleware)."""

from __future__ import annotations

import ipaddress

import pytest

from sidecar.observability.access import (
    RequestIds,
    build_access_fields,
    choose_request_id,
    new_request_id,
    peer_is_trusted,
)

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


@pytest.mark.parametrize(
    ("peer", "expected"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),
        ("::1", True),
        ("11.0.0.1", False),
        ("not-an-ip", False),
        (None, False),
        ("", False),
    ],
)
def test_peer_is_trusted(peer: str | None, expected: bool) -> None:
    assert peer_is_trusted(peer, TRUSTED) is expected


def test_nobody_is_trusted_without_trusted_proxies() -> None:
    assert not peer_is_trusted("127.0.0.1", ())


@pytest.mark.parametrize(
    ("offered", "trusted", "expected"),
    [
        ("abc-123", True, "abc-123"),
        ("abc-123", False, "NEW"),
        (None, True, "NEW"),
        ("", True, "NEW"),
        ("has space", True, "NEW"),
        ("x" * 129, True, "NEW"),
        ("line\r\nbreak", True, "NEW"),
    ],
)
def test_choose_request_id(offered: str | None, trusted: bool, expected: str) -> None:
    assert choose_request_id(offered, peer_trusted=trusted, new_id=lambda: "NEW") == expected


def test_request_ids_are_32_hex_digits_unique_within_a_process() -> None:
    ids = RequestIds()
    made = [ids() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in made)


def test_request_ids_of_two_processes_differ_by_their_random_half() -> None:
    first = RequestIds(token_bytes=lambda n: b"\x01" * n)
    second = RequestIds(token_bytes=lambda n: b"\x02" * n)
    assert first() == "0101010101010101" + "0" * 16
    assert first() == "0101010101010101" + "0" * 15 + "1"
    assert second() == "0202020202020202" + "0" * 16


def test_new_request_ids_are_unique_hex() -> None:
    ids = {new_request_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)


def test_access_fields_keep_core_fields_over_extras() -> None:
    fields = build_access_fields(
        request_id="r1",
        method="GET",
        path="/a",
        status=200,
        bytes_sent=10,
        duration_seconds=0.0123,
        remote="10.0.0.1",
        user_agent=None,
        extra={"status": "999", "user": "alice", "upstream": "http://app:8080"},
    )
    assert fields["status"] == 200
    assert fields["user"] == "alice"
    assert fields["upstream"] == "http://app:8080"
    assert fields["duration_ms"] == 12.3
    assert fields["user_agent"] == ""
    assert list(fields)[:9] == [
        "request_id", "method", "path", "status", "bytes", "duration_ms", "upstream", "remote",
        "user_agent",
    ]  # fmt: skip
