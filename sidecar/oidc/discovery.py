"""The provider's metadata and signing keys: discovered once, cached, retried until they load.

`ProviderDirectory` fetches `<issuer>/.well-known/openid-configuration` (the discovered issuer must
equal the configured one exactly; explicit endpoints in the config win) and the JWKS, which it
parses once into a joserfc `KeySet` of asymmetric signing keys. A provider that is down at start
never crashes sidecar: a background task retries with exponential backoff (1 s doubling to 60 s)
while `status()` tells readiness probes what is missing. A token signed with an unknown `kid`
makes `key_set()` re-fetch the JWKS, at most once per 30 seconds, so key rotation needs no restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, Key, KeySet

from sidecar.config.model import ProviderConfig, is_loopback_url
from sidecar.errors import ProviderUnavailableError
from sidecar.oidc.entra import check_tenant_template, is_tenant_template

log = logging.getLogger(__name__)

WELL_KNOWN_PATH = "/.well-known/openid-configuration"
JWKS_REFETCH_INTERVAL_SECONDS = 30.0
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
MAX_DOCUMENT_BYTES = 1024 * 1024

_SIGNING_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
_SIGNING_OKP_CURVES = frozenset({"Ed25519", "Ed448"})


class ProviderResponseError(Exception):
    """A provider answer sidecar cannot use; the message is a safe operator detail."""


class IssuerMismatchError(ProviderResponseError):
    """The discovered issuer is not the configured one (a misconfiguration or a mix-up)."""


@dataclass(frozen=True)
class ProviderMetadata:
    """What sidecar needs to know about the provider (from discovery and/or the config)."""

    issuer: str | None
    authorization_endpoint: str
    token_endpoint: str
    userinfo_endpoint: str | None = None
    jwks_uri: str | None = None
    end_session_endpoint: str | None = None
    revocation_endpoint: str | None = None
    introspection_endpoint: str | None = None
    code_challenge_methods_supported: tuple[str, ...] = ()
    id_token_signing_alg_values_supported: tuple[str, ...] = ()
    authorization_response_iss_parameter_supported: bool = False
    # Entra multi-tenant: the discovered issuer with {tenantid}; ID tokens carry it filled in.
    issuer_template: str | None = None


async def read_json(
    response: aiohttp.ClientResponse, *, limit_bytes: int = MAX_DOCUMENT_BYTES
) -> Any:
    """The response body parsed as JSON, refusing bodies over `limit_bytes`."""
    body = bytearray()
    async for chunk in response.content.iter_chunked(65536):
        body += chunk
        if len(body) > limit_bytes:
            raise ProviderResponseError(f"response larger than {limit_bytes} bytes")
    try:
        return json.loads(bytes(body))
    except ValueError as exc:
        raise ProviderResponseError("response is not JSON") from exc


def describe_http_failure(exc: BaseException, timeout_seconds: float) -> str:
    """A short, secret-free description of a failed provider call for status and logs."""
    if isinstance(exc, ProviderResponseError):
        return str(exc)
    if isinstance(exc, TimeoutError):
        return f"timed out after {timeout_seconds:g}s"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_error = exc.os_error
        if isinstance(os_error, ConnectionRefusedError):
            return "connection refused"
        return f"cannot connect ({type(os_error).__name__})"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status}"
    if isinstance(exc, aiohttp.ClientError):
        return f"connection failed ({type(exc).__name__})"
    return type(exc).__name__


def _optional_str(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ProviderResponseError(f"discovery document: {name} is not a string")
    return value


def _str_tuple(doc: Mapping[str, Any], name: str) -> tuple[str, ...]:
    value = doc.get(name)
    if isinstance(value, list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


def build_metadata(config: ProviderConfig, doc: Mapping[str, Any] | None) -> ProviderMetadata:
    """Metadata from a discovery document (or None: from the config alone); the config wins.

    Raises `ProviderResponseError` when the document's issuer differs from the configured one,
    an endpoint is missing, or an endpoint is plain http while the config does not allow it.
    """
    doc = doc or {}
    issuer_template: str | None = None
    if config.discovery:
        found = doc.get("issuer")
        if is_tenant_template(found) and found != config.issuer:
            problem = check_tenant_template(str(found), config.entra)
            if problem is not None:
                raise IssuerMismatchError(problem)
            issuer_template = str(found)
        elif found != config.issuer:
            raise IssuerMismatchError(f"issuer mismatch: expected {config.issuer}, got {found}")
    if config.is_oidc and not config.issuer:
        raise ProviderResponseError(
            "issuer is required to validate ID tokens (set provider.issuer)"
        )

    def pick(name: str) -> str | None:
        explicit: str | None = getattr(config, name)
        return explicit if explicit is not None else _optional_str(doc, name)

    authorization_endpoint = pick("authorization_endpoint")
    token_endpoint = pick("token_endpoint")
    jwks_uri = pick("jwks_uri")
    if not authorization_endpoint or not token_endpoint:
        raise ProviderResponseError(
            "discovery document lacks authorization_endpoint or token_endpoint"
        )
    if config.is_oidc and not jwks_uri:
        raise ProviderResponseError("discovery document lacks jwks_uri")
    meta = ProviderMetadata(
        issuer=config.issuer,
        authorization_endpoint=authorization_endpoint,
        token_endpoint=token_endpoint,
        userinfo_endpoint=pick("userinfo_endpoint"),
        jwks_uri=jwks_uri,
        end_session_endpoint=pick("end_session_endpoint"),
        revocation_endpoint=_optional_str(doc, "revocation_endpoint"),
        introspection_endpoint=_optional_str(doc, "introspection_endpoint"),
        code_challenge_methods_supported=_str_tuple(doc, "code_challenge_methods_supported"),
        id_token_signing_alg_values_supported=_str_tuple(
            doc, "id_token_signing_alg_values_supported"
        ),
        authorization_response_iss_parameter_supported=(
            doc.get("authorization_response_iss_parameter_supported") is True
        ),
        issuer_template=issuer_template,
    )
    if not config.insecure_allow_http:
        for name in ("authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri"):
            url = getattr(meta, name)
            if url and url.startswith("http:") and not is_loopback_url(url):
                raise ProviderResponseError(f"{name} {url} is plain http")
    return meta


def parse_jwks(doc: Any) -> KeySet:
    """The asymmetric signing keys of a JWKS (`use: enc`, `oct` and unknown keys skipped)."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ProviderResponseError("JWKS is not an object with a keys list")
    keys: list[Key] = []
    for entry in doc["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") not in _SIGNING_KEY_TYPES:
            continue
        if entry.get("use", "sig") != "sig":
            continue
        if entry["kty"] == "OKP" and entry.get("crv") not in _SIGNING_OKP_CURVES:
            continue
        try:
            keys.append(JWKRegistry.import_key(entry))
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            log.warning(
                "skipping unusable JWKS key kid=%r: %s", entry.get("kid"), type(exc).__name__
            )
    if not keys:
        raise ProviderResponseError("JWKS has no usable signing keys")
    return KeySet(keys)


def knows_kid(keys: KeySet, kid: str | None) -> bool:
    """Whether `keys` can verify a token naming `kid` (no kid: only a one-key set)."""
    if kid is None:
        return len(keys.keys) == 1
    return any(key.kid == kid for key in keys.keys)


class ProviderDirectory:
    """Provider metadata and JWKS, loaded in the background and cached for the app's lifetime."""

    def __init__(
        self,
        config: ProviderConfig,
        client: aiohttp.ClientSession,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_fetch_error: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._on_fetch_error = on_fetch_error  # told "discovery" or "jwks" (metrics)
        self._http = client
        self._clock = clock
        self._sleep = sleep
        self._timeout = aiohttp.ClientTimeout(total=config.http_timeout_seconds)
        self._metadata: ProviderMetadata | None = None
        self._keys = KeySet([])  # empty until the JWKS is loaded
        self._problem = "discovery not attempted yet"
        self._last_refetch_at: float | None = None
        self._refetch_lock = asyncio.Lock()
        self._ready_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def ready(self) -> bool:
        return self._metadata is not None and (bool(self._keys) or not self._needs_keys)

    @property
    def _needs_keys(self) -> bool:
        return self._metadata is not None and self._metadata.jwks_uri is not None

    def status(self) -> dict[str, str]:
        """`{"provider": "ready"}` or `{"provider": "<what is missing and why>"}` for /readyz."""
        return {"provider": "ready" if self.ready else self._problem}

    def metadata(self) -> ProviderMetadata:
        if self._metadata is None or not self.ready:
            raise ProviderUnavailableError(reason=f"provider not ready: {self._problem}")
        return self._metadata

    async def start(self) -> None:
        """Load metadata and keys in a background task, retrying until it succeeds. Never raises."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._load_until_ready())

    async def wait_ready(self) -> None:
        """Wait until metadata and keys are loaded (use with asyncio.timeout)."""
        await self._ready_event.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def key_set(self, kid: str | None) -> KeySet:
        """The provider's signing keys; re-fetched first (rate-limited) when `kid` is unknown."""
        if not self._keys or self._metadata is None or self._metadata.jwks_uri is None:
            raise ProviderUnavailableError(reason=f"provider keys not loaded: {self._problem}")
        if knows_kid(self._keys, kid):
            return self._keys
        jwks_uri = self._metadata.jwks_uri
        async with self._refetch_lock:
            if knows_kid(self._keys, kid):  # another request re-fetched while we waited
                return self._keys
            now = self._clock()
            last = self._last_refetch_at
            if last is not None and now - last < JWKS_REFETCH_INTERVAL_SECONDS:
                return self._keys
            self._last_refetch_at = now
            log.info("unknown signing key kid=%r: re-fetching the provider's JWKS", kid)
            try:
                self._keys = await self._fetch_keys(jwks_uri)
            except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
                if self._on_fetch_error is not None:
                    self._on_fetch_error("jwks")
                log.warning(
                    "JWKS re-fetch failed: %s",
                    describe_http_failure(exc, self._config.http_timeout_seconds),
                )
            return self._keys

    async def _load_until_ready(self) -> None:
        delay = BACKOFF_FIRST_SECONDS
        while True:
            try:
                loaded = await self._load_once()
            except Exception as exc:  # a bug must not silently end the retries: log, keep going
                log.exception("unexpected error while loading the provider")
                self._problem = f"provider loading failed: {type(exc).__name__}"
                loaded = False
            if loaded:
                self._ready_event.set()
                log.info("identity provider ready: %s", self._config.issuer or "explicit endpoints")
                return
            log.warning("identity provider not ready (%s); retrying in %gs", self._problem, delay)
            await self._sleep(delay)
            delay = min(delay * 2, BACKOFF_MAX_SECONDS)

    async def _load_once(self) -> bool:
        step = "discovery"
        try:
            if self._metadata is None:
                doc = await self._fetch_discovery() if self._config.discovery else None
                self._metadata = build_metadata(self._config, doc)
            step = "JWKS"
            if self._metadata.jwks_uri is not None and not self._keys:
                self._keys = await self._fetch_keys(self._metadata.jwks_uri)
        except (aiohttp.ClientError, TimeoutError, ProviderResponseError) as exc:
            detail = describe_http_failure(exc, self._config.http_timeout_seconds)
            mismatch = isinstance(exc, IssuerMismatchError)
            if self._on_fetch_error is not None:
                self._on_fetch_error("jwks" if step == "JWKS" else "discovery")
            self._problem = detail if mismatch else f"{step} failed: {detail}"
            return False
        return True

    async def _get_json(self, url: str) -> Any:
        async with self._http.get(
            url, timeout=self._timeout, headers={"Accept": "application/json"}
        ) as response:
            if response.status != 200:
                raise ProviderResponseError(f"HTTP {response.status} from {url}")
            return await read_json(response)

    async def _fetch_discovery(self) -> Mapping[str, Any]:
        assert self._config.issuer is not None  # the config model requires it with discovery
        url = self._config.issuer.rstrip("/") + WELL_KNOWN_PATH
        doc = await self._get_json(url)
        if not isinstance(doc, dict):
            raise ProviderResponseError("discovery document is not a JSON object")
        return doc

    async def _fetch_keys(self, jwks_uri: str) -> KeySet:
        return parse_jwks(await self._get_json(jwks_uri))
