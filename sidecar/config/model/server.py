"""Configuration of listening, trust, upstreams and logging (`server`, `upstreams`, `logging`)."""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    field_validator,
)

from sidecar.config.model.base import _HEADER_NAME, IPNetwork, Model, _check_http_url, parse_listen


class ServerConfig(Model):
    """How sidecar listens and what it trusts about the network in front of it."""

    listen: str = Field(
        "0.0.0.0:4180",
        description="Address and port sidecar serves on, as host:port.",
    )
    public_url: str | None = Field(
        None,
        description=(
            "External base URL that browsers see (scheme, host, optional port), e.g. "
            "https://app.example.com. Needed behind an ingress or TLS terminator; it fixes the "
            "redirect URI, the cookie Secure flag and the origin that redirects must stay on."
        ),
    )
    trusted_proxies: tuple[IPNetwork, ...] = Field(
        (),
        description=(
            "Addresses or CIDR ranges of proxies in front of sidecar whose X-Forwarded-For/-Proto/"
            "-Host and X-Request-Id are believed and appended to. From others they are replaced."
        ),
    )
    internal_listen: str | None = Field(
        None,
        description=(
            "Optional second host:port for health, readiness and metrics, apart from user traffic. "
            "Health endpoints are always also served under the auth prefix."
        ),
    )
    shutdown_grace_seconds: float = Field(
        15.0, ge=0, description="On SIGTERM, how long in-flight requests may take to finish."
    )
    max_request_line_bytes: int = Field(
        8190, ge=256, description="Longest request line accepted; longer gets 414/431."
    )
    max_header_bytes: int = Field(
        32768,
        ge=1024,
        description=(
            "Longest single header field accepted (the Cookie header of a large split session can "
            "reach 16 KB); larger gets 431."
        ),
    )
    max_headers: int = Field(100, ge=10, description="Most header fields in one request.")
    header_read_timeout_seconds: float = Field(
        20.0,
        gt=0,
        le=600,
        description=(
            "A connection whose request line and headers have not all arrived this long after "
            "it opened (or after the next request's first byte) is closed: slow-header clients "
            "(slowloris) cannot hold connections open. Idle keep-alive connections and bodies "
            "are not affected."
        ),
    )
    max_body_bytes: int | None = Field(
        None,
        ge=0,
        description="Largest request body passed upstream; larger gets 413. None: no limit.",
    )
    workers: int = Field(1, ge=1, description="Worker processes sharing the listening port.")
    metrics_on_main_port: bool = Field(
        False,
        description=(
            "Also serve Prometheus metrics at <auth.prefix>/metrics on the main port (reachable by "
            "anyone who reaches sidecar). Off: metrics only on internal_listen at /metrics."
        ),
    )
    watch_config: bool = Field(
        True,
        description=(
            "Poll the config file every 2 s and reload it live when it changes (a Kubernetes "
            "ConfigMap update included). SIGHUP always reloads. An invalid file is refused and "
            "the running configuration kept."
        ),
    )
    request_id_header: str = Field(
        "X-Request-Id",
        description="Header carrying the request id; generated, or taken from trusted proxies.",
    )

    @field_validator("listen", "internal_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            parse_listen(value)
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        _check_http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError("must be scheme://host[:port] only, without path, query or fragment")
        return f"{parts.scheme}://{parts.netloc}"

    @field_validator("request_id_header")
    @classmethod
    def _header_name(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("not a valid HTTP header name")
        return value

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]


class UpstreamConfig(Model):
    """One backend and the path prefix it serves."""

    path: str = Field("/", description="Path prefix this upstream serves; the longest prefix wins.")
    url: str = Field(description="Base URL of the backend, e.g. http://127.0.0.1:8080.")
    preserve_host: bool = Field(
        True,
        description="Pass the client's Host header through (true) or send the upstream's (false).",
    )
    connect_timeout_seconds: float = Field(
        5.0, gt=0, description="Timeout to connect upstream (504)."
    )
    read_timeout_seconds: float = Field(
        60.0,
        gt=0,
        description="Longest wait for the upstream between two reads (504 before a response).",
    )

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with /")
        return value

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        _check_http_url(value)
        parts = urlsplit(value)
        if parts.query or parts.fragment:
            raise ValueError("must not carry a query or fragment")
        return value.rstrip("/")


class LoggingConfig(Model):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["json", "text"] = Field(
        "json", description="json for machines, text for humans."
    )
