"""Log output: one JSON object (or one readable text line) per record, with secrets masked.

`configure_logging(config.logging)` installs a single stream handler on the root logger. Every
record becomes one line: `time`, `level`, `logger`, `message`, plus any `extra=` fields (the access
log puts its fields there). A `RedactionFilter` is the last line of defence: anything that looks
like a bearer token, a JWT, an OAuth `code=`/`state=`/token parameter or a cookie value is masked
before it is written, wherever it came from. `ParserErrorFilter` turns aiohttp's tracebacks for
malformed or oversized requests (whose text quotes the offending header) into one short line.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

from sidecar.config.model import LoggingConfig

REDACTED = "[redacted]"

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A JWT (header.payload.signature, base64url, header starting with {" -> eyJ).
    (re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), REDACTED),
    # Authorization: Bearer/Basic <credentials>.
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    # Query or form parameters that carry secrets.
    (
        re.compile(
            r"(?i)\b(code|state|nonce|code_verifier|id_token|access_token|refresh_token|"
            r"client_secret|client_assertion|id_token_hint|token|password|secret)=[^&\s\"',;]+"
        ),
        r"\1=" + REDACTED,
    ),
    # Cookie and Set-Cookie header values.
    (
        re.compile(r"(?i)\b((?:set-)?cookie)(['\"]?\s*[:=,]\s*['\"]?)[^\r\n'\"]+"),
        r"\1\2" + REDACTED,
    ),
)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys()
) | {"message", "asctime", "taskName"}

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def redact(text: str) -> str:
    """Mask anything in `text` that looks like a credential."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record, in the order they were given."""
    return {
        k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS and not k.startswith("_")
    }


class RedactionFilter(logging.Filter):
    """Rewrites each record so its message, traceback and string extras carry no credentials."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(record.getMessage())
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        for key, value in extra_fields(record).items():
            if isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class ParserErrorFilter(logging.Filter):
    """Shortens aiohttp's log of a request it could not parse (too long a line, too many headers).

    aiohttp logs these with a traceback whose text quotes part of the offending header (which may
    be a cookie). Such requests are the client's fault: one warning line without the header is
    what an operator needs.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if record.name.startswith("aiohttp") and isinstance(exc, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "-"
            record.msg = "rejected a malformed request from %s: %s (%s)"
            record.args = (remote, type(exc).__name__, exc.code)
            record.exc_info = None
            record.exc_text = None
            record.levelno = logging.WARNING
            record.levelname = "WARNING"
        return True


def _iso_time(created: float) -> str:
    return (
        datetime.fromtimestamp(created, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, extra fields, exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps(entry, default=str, ensure_ascii=False, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER MESSAGE key=value ...` for people reading a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_iso_time(record.created), record.levelname, record.name, record.getMessage()]
        parts += [f"{k}={v}" for k, v in extra_fields(record).items() if v not in (None, "")]
        line = " ".join(str(p) for p in parts)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        return line


def build_handler(config: LoggingConfig, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler with the configured format and both filters (redaction last)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if config.format == "json" else TextFormatter())
    handler.addFilter(ParserErrorFilter())
    handler.addFilter(RedactionFilter())
    return handler


def configure_logging(config: LoggingConfig, stream: TextIO | None = None) -> logging.Handler:
    """Send every log record through one handler on the root logger; return that handler."""
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_sidecar", False):
            root.removeHandler(old)
    handler = build_handler(config, stream)
    handler._sidecar = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_LEVELS[config.level])
    # aiohttp's own access log would duplicate ours.
    logging.getLogger("aiohttp.access").propagate = False
    return handler
