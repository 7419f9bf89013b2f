"""Log lines: JSON and text formats, and redaction as the last line of defence."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from aiohttp.http_exceptions import LineTooLong

from sidecar.config.model import LoggingConfig
from sidecar.observability.logging import (
    ParserErrorFilter,
    RedactionFilter,
    build_handler,
    configure_logging,
    redact,
)

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlLWJ5dGVz"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"token was {JWT} ok", JWT),
        ("Authorization: Bearer abc.def-ghi", "abc.def-ghi"),
        ("authorization=basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("GET /oauth2/callback?code=SplxlOBeZQ&state=af0ifjsldkj", "SplxlOBeZQ"),
        ("GET /oauth2/callback?code=SplxlOBeZQ&state=af0ifjsldkj", "af0ifjsldkj"),
        ("refresh_token=8xLOxBtZp8&grant_type=refresh_token", "8xLOxBtZp8"),
        ("client_secret=s3cr3t", "s3cr3t"),
        ("Cookie: _sidecar=AAAABBBB; other=1", "AAAABBBB"),
        ("Set-Cookie: _sidecar_1=CCCCDDDD; Path=/", "CCCCDDDD"),
        ("headers {'cookie': 'a=EEEEFFFF'}", "EEEEFFFF"),
    ],
)
def test_redact_masks_credentials(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert "[redacted]" in masked


def test_redact_keeps_ordinary_text() -> None:
    text = "GET /reports/2024 200 in 12 ms from 10.0.0.1 (user alice)"
    assert redact(text) == text


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("sidecar.test_logging")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    log.handlers.clear()
    log.propagate = True


def test_json_format_is_one_object_per_line_with_extra_fields(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(build_handler(LoggingConfig(format="json"), stream))
    logger.info("hello %s", "world", extra={"request_id": "r1", "status": 200})
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "info"
    assert entry["logger"] == "sidecar.test_logging"
    assert entry["time"].endswith("Z")
    assert entry["request_id"] == "r1" and entry["status"] == 200


def test_json_format_redacts_message_extras_and_traceback(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(build_handler(LoggingConfig(format="json"), stream))
    try:
        raise ValueError(f"bad token {JWT}")
    except ValueError:
        logger.exception("failed with Bearer abcdef", extra={"detail": f"id_token={JWT}"})
    output = stream.getvalue()
    (line,) = output.splitlines()
    entry = json.loads(line)
    assert JWT not in output and "abcdef" not in output
    assert "ValueError" in entry["exception"]


def test_text_format_is_readable(logger: logging.Logger) -> None:
    stream = io.StringIO()
    logger.addHandler(build_handler(LoggingConfig(format="text"), stream))
    logger.warning("upstream slow", extra={"upstream": "http://app:8080", "empty": ""})
    line = stream.getvalue().strip()
    assert " WARNING sidecar.test_logging upstream slow upstream=http://app:8080" in line
    assert "empty=" not in line


def test_parser_error_becomes_one_line_without_the_header(logger: logging.Logger) -> None:
    record = logging.LogRecord(
        "aiohttp.server",
        logging.ERROR,
        __file__,
        1,
        "Error handling request from %s",
        ("10.0.0.9",),
        (LineTooLong, LineTooLong(b"Cookie: session=SECRETVALUE", 8190), None),
    )
    ParserErrorFilter().filter(record)
    RedactionFilter().filter(record)
    assert record.exc_info is None and not record.exc_text
    assert record.levelno == logging.WARNING
    assert record.getMessage() == "rejected a malformed request from 10.0.0.9: LineTooLong (400)"


def test_configure_logging_replaces_its_own_handler() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    try:
        first = configure_logging(LoggingConfig(level="warning"))
        second = configure_logging(LoggingConfig(level="debug", format="text"))
        assert first not in root.handlers and second in root.handlers
        assert root.level == logging.DEBUG
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
        root.setLevel(level)
        logging.getLogger("aiohttp.access").propagate = True
