"""Prometheus metrics: what sidecar counts, with labels of bounded cardinality, and `/metrics`.

`Metrics` owns one `CollectorRegistry` (never prometheus-client's global one), built by
`create_app` and kept across live config reloads, so counters do not reset when routes change.
It is fed from three places: the access-log path (`observe_request`, once per request after the
response was sent: requests by route, method and status class, the latency histogram, upstream
errors and policy denials, all read from the request's access-log fields), the sign-in events of
`sidecar.auth.sign_in.log_event` (`sign_in_event`), the refresh of a session's tokens
(`refresh`) and the provider directory (`provider_fetch_error`). Labels never carry a raw path
or a user-supplied value: the route label is the matched route's name (`routes[2]`, `default`,
`sign-in-callback`) or the path pattern of sidecar's own endpoint, methods outside the standard
set count as `other`, and every label holds at most `MAX_LABEL_VALUES` distinct values (then
`other`), so no client can blow up the series count. `add_metrics_route` serves the text format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

from sidecar import __version__, keys

# The classic text format every Prometheus version reads (all of sidecar's names are legacy-safe).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH = "/metrics"  # on internal_listen; under auth.prefix with metrics_on_main_port
MAX_LABEL_VALUES = 200
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE"}
)
_REASON = re.compile(r"^[A-Za-z0-9_.:\[\]-]{1,100}$")
_ROUTE = re.compile(r"^[^\x00-\x1f\x7f]{1,100}$")
_UPSTREAM_ERRORS = {"upstream_unavailable": "unavailable", "upstream_timeout": "timeout"}
_GENERIC_DENIAL_REASONS = frozenset({"user-unauthorized"})


class _BoundedLabel:
    """Admits at most `limit` distinct values of one label; later newcomers become `other`."""

    def __init__(self, pattern: re.Pattern[str], limit: int = MAX_LABEL_VALUES) -> None:
        self._pattern = pattern
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) >= self._limit or not self._pattern.match(value):
            return OTHER
        self._seen.add(value)
        return value


def status_class(status: int) -> str:
    """`2xx` for 204, ...; anything outside 100-599 is `other`."""
    return f"{status // 100}xx" if 100 <= status <= 599 else OTHER


class Metrics:
    """sidecar's metrics in a registry of their own (see the module docstring)."""

    def __init__(self) -> None:
        registry = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "sidecar_requests",
            "Requests answered, by route, method and status class.",
            ["route", "method", "status_class"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "sidecar_request_duration_seconds",
            "Time from the request's arrival to the last byte of the response, by route.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "sidecar_upstream_errors",
            "Requests the upstream did not answer: unavailable (refused, reset) or timeout.",
            ["kind"],
            registry=registry,
        )
        self.sign_ins_started = Counter(
            "sidecar_sign_ins_started", "Sign-ins sent to the provider.", registry=registry
        )
        self.sign_ins_completed = Counter(
            "sidecar_sign_ins_completed", "Sign-ins that created a session.", registry=registry
        )
        self.sign_ins_failed = Counter(
            "sidecar_sign_ins_failed",
            "Sign-in callbacks that created no session, by reason code.",
            ["reason"],
            registry=registry,
        )
        self.refreshes = Counter(
            "sidecar_refreshes",
            "Token refreshes at the provider by outcome: refreshed, rejected (the session ends), "
            "provider_unavailable (the old tokens are kept while still valid).",
            ["outcome"],
            registry=registry,
        )
        self.policy_denials = Counter(
            "sidecar_policy_denials",
            "Signed-in requests a route's policy refused (403), by route and failed rule; a "
            "request failing two rules counts under both.",
            ["route", "reason"],
            registry=registry,
        )
        self.provider_fetch_errors = Counter(
            "sidecar_provider_fetch_errors",
            "Failed fetches of the provider's discovery document or JWKS.",
            ["kind"],
            registry=registry,
        )
        self.config_reloads = Counter(
            "sidecar_config_reloads",
            "Live configuration reloads by outcome: applied, invalid, not_ready, failed.",
            ["outcome"],
            registry=registry,
        )
        self.config_loaded_at = Gauge(
            "sidecar_config_loaded_timestamp_seconds",
            "When the configuration in use was loaded (Unix time).",
            registry=registry,
        )
        self.build_info = Gauge(
            "sidecar_build_info",
            "Always 1; the version is a label.",
            ["version"],
            registry=registry,
        )
        self.build_info.labels(version=__version__).set(1)
        self.config_loaded_at.set_to_current_time()
        self._route = _BoundedLabel(_ROUTE)
        self._reason = _BoundedLabel(_REASON)
        # The labelled children each answered request feeds, looked up once per label set
        # (prometheus-client's labels() validates and locks on every call). Bounded like the
        # labels: routes x methods x status classes.
        self._request_children: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}

    # -- feeding -----------------------------------------------------------------------------

    def observe_request(
        self,
        *,
        route: str,
        method: str,
        status: int,
        duration_seconds: float,
        fields: Mapping[str, str],
    ) -> None:
        """One answered request; `fields` are its access-log fields (error, decision, reasons)."""
        route = self._route(route)
        method = method if method in _METHODS else OTHER
        key = (route, method, status_class(status))
        children = self._request_children.get(key)
        if children is None:
            children = self._request_children[key] = (
                self.requests.labels(*key),
                self.request_duration.labels(route),
            )
        children[0].inc()
        children[1].observe(max(duration_seconds, 0.0))
        kind = _UPSTREAM_ERRORS.get(fields.get("error", ""))
        if kind is not None:
            self.upstream_errors.labels(kind).inc()
        if fields.get("decision") == "forbidden":
            reasons = [r for r in fields.get("reasons", "").split(",") if r]
            specific = [r for r in reasons if r.startswith("policy")]
            for reason in specific or [r for r in reasons if r in _GENERIC_DENIAL_REASONS]:
                self.policy_denials.labels(route, self._reason(reason)).inc()

    def sign_in_event(self, event: str, reason: str | None = None) -> None:
        """`sign_in_started`, `sign_in_completed` or `sign_in_failed` (others are ignored)."""
        if event == "sign_in_started":
            self.sign_ins_started.inc()
        elif event == "sign_in_completed":
            self.sign_ins_completed.inc()
        elif event == "sign_in_failed":
            self.sign_ins_failed.labels(self._reason(reason or "unknown")).inc()

    def refresh(self, outcome: str) -> None:
        self.refreshes.labels(self._reason(outcome)).inc()

    def provider_fetch_error(self, kind: str) -> None:
        """`discovery` or `jwks`."""
        self.provider_fetch_errors.labels(self._reason(kind)).inc()

    def config_reload(self, outcome: str) -> None:
        self.config_reloads.labels(self._reason(outcome)).inc()
        if outcome == "applied":
            self.config_loaded_at.set_to_current_time()

    # -- reading -----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


def route_label(request: web.BaseRequest, fields: Mapping[str, str]) -> str:
    """The route label of a request: the route name the gate or a handler logged, else the path
    pattern of the aiohttp resource that served it (`/oauth2/healthz`), `default` for the
    catch-all, `unmatched` when nothing matched. Never the raw path."""
    named = fields.get("route")
    if named:
        return named
    match_info = request.match_info if isinstance(request, web.Request) else None
    resource = match_info.route.resource if match_info is not None else None
    if resource is None:
        return "unmatched"
    canonical = resource.canonical
    return "default" if "{" in canonical else canonical


async def handle_metrics(request: web.Request) -> web.Response:
    metrics = request.app[keys.METRICS]
    return web.Response(
        body=metrics.render(),
        headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"},
    )


def add_metrics_route(app: web.Application, path: str) -> None:
    """Serve `app[keys.METRICS]` at `path` (GET and HEAD)."""
    app.router.add_get(path, handle_metrics, allow_head=True)
