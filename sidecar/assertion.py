"""The signed identity assertion: a short-lived JWT telling the backend who the user is.

Plain identity headers are only as safe as the network path to the backend; the assertion can be
verified. `AssertionSigner` is built once from `identity_assertion` (keys parsed and checked at
start-up: EC P-256 → ES256 by default, P-384 → ES384, RSA ≥ 2048 bits → RS256, Ed25519 → EdDSA).
The first key signs; every key is published, each under its `kid` (configured, else its RFC 7638
thumbprint), as the JWKS served at `<auth.prefix>/jwks` (`add_jwks_route`), so keys rotate by
putting a new one first. `assertion_for(identity, issuer=, audience=)` gives the compact JWS
with `iss` (sidecar's public origin), `aud` (the upstream URL unless configured), `sub`, `user`,
`email`, `email_verified`, `preferred_username`, `groups`, `iat` and `exp = iat + ttl_seconds`.
The gate adds it to the identity headers, the one list the upstream header builder adds; the
builder strips any client-sent copy of the header first.

Signing is done straight with `cryptography` (30-50 µs for ES256, against about 160 µs through
a general JOSE library), and an assertion is reused for `REUSE_SECONDS` for the same identity and
audience (bounded LRU), so a busy user's requests mostly cost a dictionary lookup. A reused
assertion is at most `REUSE_SECONDS` older than a fresh one; its `exp` is unchanged.
"""

from __future__ import annotations

import base64
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from joserfc.jwk import ECKey, OKPKey, RSAKey

from sidecar.session.model import Identity

if TYPE_CHECKING:
    from aiohttp import web

    from sidecar.config.model import IdentityAssertionConfig

REUSE_SECONDS = 5.0
REUSE_MAX_ENTRIES = 4096
JWKS_MAX_AGE_SECONDS = 300
MIN_RSA_BITS = 2048

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
_EC = {"secp256r1": ("ES256", hashes.SHA256, 32), "secp384r1": ("ES384", hashes.SHA384, 48)}


def load_signing_key(pem: str) -> tuple[PrivateKey, str]:
    """The private key in `pem` and its JWS algorithm; ValueError (secret-free) when unusable."""
    try:
        private = load_pem_private_key(pem.encode("utf-8"), password=None)
    except (ValueError, TypeError, UnicodeError):
        raise ValueError("not an unencrypted PEM private key") from None
    if isinstance(private, ec.EllipticCurvePrivateKey):
        if private.curve.name not in _EC:
            raise ValueError("EC keys must use P-256 (ES256) or P-384 (ES384)")
        return private, _EC[private.curve.name][0]
    if isinstance(private, rsa.RSAPrivateKey):
        if private.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        return private, "RS256"
    if isinstance(private, ed25519.Ed25519PrivateKey):
        return private, "EdDSA"
    raise ValueError("use an EC P-256/P-384, RSA or Ed25519 key")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _public_jwk(private: PrivateKey) -> dict[str, Any]:
    public = private.public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        return dict(ECKey.import_key(public).as_dict(private=False))
    if isinstance(public, rsa.RSAPublicKey):
        return dict(RSAKey.import_key(public).as_dict(private=False))
    return dict(OKPKey.import_key(public).as_dict(private=False))


@dataclass(frozen=True)
class SigningKey:
    """One parsed key: the private half, its algorithm, its kid and its public JWK."""

    private: PrivateKey
    alg: str
    kid: str
    public_jwk: Mapping[str, Any]

    @classmethod
    def from_pem(cls, pem: str, key_id: str | None = None) -> SigningKey:
        private, alg = load_signing_key(pem)
        jwk = _public_jwk(private)
        if isinstance(private, ec.EllipticCurvePrivateKey):
            kid = key_id or ECKey.import_key(private.public_key()).thumbprint()
        elif isinstance(private, rsa.RSAPrivateKey):
            kid = key_id or RSAKey.import_key(private.public_key()).thumbprint()
        else:
            kid = key_id or OKPKey.import_key(private.public_key()).thumbprint()
        jwk.update(kid=kid, alg=alg, use="sig")
        return cls(private, alg, kid, jwk)

    def sign(self, signing_input: bytes) -> bytes:
        """The JWS signature of `signing_input` (RFC 7518: ECDSA as raw r || s)."""
        private = self.private
        if isinstance(private, ec.EllipticCurvePrivateKey):
            _, hash_type, size = _EC[private.curve.name]
            der = private.sign(signing_input, ec.ECDSA(hash_type()))
            r, s = decode_dss_signature(der)
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if isinstance(private, rsa.RSAPrivateKey):
            return private.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return private.sign(signing_input)


def build_claims(
    identity: Identity, *, issuer: str, audience: str, now: float, ttl_seconds: int
) -> dict[str, Any]:
    """The assertion's claims for `identity` (absent values are left out)."""
    issued_at = int(now)
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": identity.sub,
        "iat": issued_at,
        "exp": issued_at + ttl_seconds,
    }
    if identity.user != identity.sub:
        claims["user"] = identity.user
    if identity.email:
        claims["email"] = identity.email
        if identity.email_verified is not None:
            claims["email_verified"] = identity.email_verified
    if identity.username:
        claims["preferred_username"] = identity.username
    claims["groups"] = list(identity.groups)
    return claims


def encode_assertion(claims: Mapping[str, Any], key: SigningKey) -> str:
    """A compact JWS of `claims` signed with `key`."""
    header = _b64(json.dumps({"alg": key.alg, "kid": key.kid, "typ": "JWT"}).encode())
    payload = _b64(json.dumps(claims, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    signing_input = f"{header}.{payload}"
    return f"{signing_input}.{_b64(key.sign(signing_input.encode('ascii')))}"


_CacheKey = tuple[str, str, str | None, bool | None, str | None, tuple[str, ...], str, str]


class AssertionSigner:
    """Signs identity assertions with the first configured key; publishes every key."""

    def __init__(
        self,
        keys: Sequence[SigningKey],
        *,
        header: str,
        ttl_seconds: int,
        audience: str | None,
        issuer: str | None,
        clock: Callable[[], float],
        default_on: bool = False,
    ) -> None:
        if not keys:
            raise ValueError("the identity assertion needs at least one key")
        self.keys = tuple(keys)
        self.header = header
        self.ttl_seconds = ttl_seconds
        self.audience = audience
        self.issuer = issuer
        self.default_on = default_on  # `identity_assertion.enabled`: routes that do not say
        self._clock = clock
        self._reuse: OrderedDict[_CacheKey, tuple[float, str]] = OrderedDict()
        self.signed = 0  # how many assertions were signed (not reused), for tests and metrics
        self.jwks_body = json.dumps({"keys": [dict(key.public_jwk) for key in self.keys]})

    @classmethod
    def from_config(
        cls, config: IdentityAssertionConfig, *, clock: Callable[[], float]
    ) -> AssertionSigner:
        return cls(
            [SigningKey.from_pem(k.key.get_secret_value(), k.key_id) for k in config.keys],
            header=config.header,
            ttl_seconds=config.ttl_seconds,
            audience=config.audience,
            issuer=config.issuer,
            clock=clock,
            default_on=config.enabled,
        )

    def assertion_for(self, identity: Identity, *, issuer: str, audience: str) -> str:
        """The assertion for `identity` (reused for a few seconds; see the module docstring).
        The configured issuer and audience, when set, win over the ones given."""
        issuer = self.issuer or issuer
        audience = self.audience or audience
        now = self._clock()
        cache_key: _CacheKey = (
            identity.sub,
            identity.user,
            identity.email,
            identity.email_verified,
            identity.username,
            identity.groups,
            issuer,
            audience,
        )
        reuse = self._reuse
        found = reuse.get(cache_key)
        if found is not None and 0 <= now - found[0] < REUSE_SECONDS:
            return found[1]
        claims = build_claims(
            identity, issuer=issuer, audience=audience, now=now, ttl_seconds=self.ttl_seconds
        )
        token = encode_assertion(claims, self.keys[0])
        self.signed += 1
        reuse[cache_key] = (now, token)
        reuse.move_to_end(cache_key)
        if len(reuse) > REUSE_MAX_ENTRIES:
            reuse.popitem(last=False)
        return token

    def headers_for(
        self, identity: Identity, *, wanted: bool | None, issuer: str, audience: str
    ) -> list[tuple[str, str]]:
        """`[(header, assertion)]` when a route asks for it (`wanted`; None: the global
        setting), else nothing."""
        if not (self.default_on if wanted is None else wanted):
            return []
        return [(self.header, self.assertion_for(identity, issuer=issuer, audience=audience))]


def add_jwks_route(app: web.Application, signer: AssertionSigner, path: str) -> None:
    """Serve the signer's public keys as a JWKS at `path` (cacheable for a few minutes)."""
    from aiohttp import web

    body = signer.jwks_body

    async def jwks(request: web.Request) -> web.Response:
        return web.Response(
            text=body,
            content_type="application/json",
            headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"},
        )

    app.router.add_get(path, jwks)
