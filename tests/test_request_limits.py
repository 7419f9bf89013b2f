"""Configured size limits become 431/414 that sidecar renders itself."""

from __future__ import annotations

import pytest

from sidecar.config.model import ServerConfig
from sidecar.errors import HeadersTooLargeError, RequestTargetTooLongError
from sidecar.request_limits import PARSER_SLACK, check_request_size, parser_limits

SERVER = ServerConfig(max_header_bytes=1024, max_request_line_bytes=512, max_headers=20)


def test_parser_limits_leave_room_for_the_friendly_answer() -> None:
    assert parser_limits(SERVER) == {
        "max_line_size": 512 * PARSER_SLACK,
        "max_field_size": 1024 * PARSER_SLACK,
        "max_headers": 20,
    }


def test_within_limits_passes() -> None:
    check_request_size("/" + "a" * 510, [(b"Cookie", b"x" * (1024 - 6))], SERVER)


def test_one_header_field_over_the_limit_is_431() -> None:
    with pytest.raises(HeadersTooLargeError) as caught:
        check_request_size("/", [(b"Accept", b"*/*"), (b"Cookie", b"x" * 1019)], SERVER)
    assert caught.value.status == 431
    assert "x" * 20 not in caught.value.reason + caught.value.message


def test_long_request_target_is_414() -> None:
    with pytest.raises(RequestTargetTooLongError) as caught:
        check_request_size("/" + "a" * 512, [], SERVER)
    assert caught.value.status == 414
