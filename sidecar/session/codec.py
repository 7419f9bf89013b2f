"""The cookie codec: authenticated encryption of small payloads with a key ring.

`SessionCodec` turns bytes into a cookie-safe string and back. The format (version 1) is

    base64url-nopad( version(1) || key_id(4) || nonce(12) || AES-256-GCM(plaintext) )
    plaintext = issued_at_ms (8, big-endian) || zlib(payload)
    AAD       = version || key_id || purpose (UTF-8)

Keys. Each secret from `session.secrets` becomes a 32-byte master key: a `sidecar secret` string
(`generate_secret()`: base64url of 32 random bytes, 43 characters) is decoded as is; any other
string of at least 32 characters is run through HKDF-SHA256 (fixed salt, no stretching, so such a
passphrase must itself be high-entropy: prefer `sidecar secret`). From each master key HKDF derives
the AES-256-GCM key, and the key id is the first 4 bytes of a (domain-separated) SHA-256 of the
master key, so `decode` goes straight to the right key. The first secret encrypts, all decrypt:
put a new key first to rotate, keep the old one second until old cookies have expired.

Purposes. One key encrypts several kinds of cookie (session, login attempt). The purpose string is
part of the AAD, so a cookie made for one purpose never decodes as another; there are no per-purpose
subkeys.

Failures. Every failure (bad base64, unknown version, unknown key, tag mismatch, oversized or
corrupt compressed data, expired or future `issued_at`) raises the one `SessionDecodeError`. Its
`reason` is for operator logs only and never contains key or cookie material.

Nonces are 96 random bits per message, which is safe for far more cookies than one key will ever
encrypt (the GCM bound is about 2**32 messages per key).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
import zlib
from collections.abc import Callable, Sequence
from secrets import token_bytes as _system_random

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from sidecar.errors import SidecarError

VERSION = 1
MAX_PAYLOAD_BYTES = 1024 * 1024
"""Largest decompressed payload accepted (and produced): guards against decompression bombs."""
MAX_TOKEN_CHARS = 1024 * 1024
"""Longest encoded token looked at; anything longer is refused before any work is done."""
FUTURE_SKEW_SECONDS = 60.0
"""How far in the future an `issued_at` may be (clock differences between replicas)."""
MIN_SECRET_CHARS = 32

_VERSION_BYTE = bytes([VERSION])
_KEY_ID_BYTES = 4
_NONCE_BYTES = 12
_HEADER_BYTES = 1 + _KEY_ID_BYTES + _NONCE_BYTES
_TAG_BYTES = 16
_ISSUED_AT = struct.Struct(">Q")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_GENERATED_SECRET = re.compile(r"[A-Za-z0-9_-]{43}=?")
_PASSPHRASE_SALT = b"sidecar/session-secret/v1"
_AEAD_INFO = b"sidecar/cookie/aes-256-gcm/v1"
_KEY_ID_PREFIX = b"sidecar/cookie/key-id/v1\x00"


class SessionDecodeError(SidecarError):
    """A cookie value that does not decode: one opaque error for every cause (`reason`: logs)."""

    status = 400
    code = "invalid_cookie"
    message = "Your sign-in cookie is not valid. Please sign in again."


def generate_secret(token_bytes: Callable[[int], bytes] = _system_random) -> str:
    """A fresh session key for `session.secrets`: base64url (no padding) of 32 random bytes."""
    return _b64encode(token_bytes(32))


def master_key(secret: str) -> bytes:
    """The 32-byte master key for one configured secret (see the module docstring)."""
    if len(secret) < MIN_SECRET_CHARS:
        raise ValueError(f"a session secret needs at least {MIN_SECRET_CHARS} characters")
    if _GENERATED_SECRET.fullmatch(secret):
        text = secret.rstrip("=")
        raw = _b64decode(text)
        if raw is not None and len(raw) == 32:
            return raw
    return _hkdf(secret.encode("utf-8"), salt=_PASSPHRASE_SALT, info=b"passphrase")


class _Key:
    __slots__ = ("aead", "key_id")

    def __init__(self, master: bytes) -> None:
        self.key_id = hashlib.sha256(_KEY_ID_PREFIX + master).digest()[:_KEY_ID_BYTES]
        self.aead = AESGCM(_hkdf(master, salt=b"", info=_AEAD_INFO))


class SessionCodec:
    """Encrypts with the first secret, decrypts with any. Keys are derived once, here."""

    def __init__(
        self,
        secrets: Sequence[str],
        *,
        token_bytes: Callable[[int], bytes] = _system_random,
    ) -> None:
        if isinstance(secrets, str):
            raise TypeError("secrets must be a sequence of strings, not one string")
        if not secrets:
            raise ValueError("at least one session secret is required")
        keys = [_Key(master_key(secret)) for secret in secrets]
        self._encrypting = keys[0]
        self._by_id: dict[bytes, list[_Key]] = {}
        for key in keys:
            self._by_id.setdefault(key.key_id, []).append(key)
        self._token_bytes = token_bytes

    def __repr__(self) -> str:
        return f"<SessionCodec keys={sum(len(k) for k in self._by_id.values())}>"

    def encode(self, payload: bytes, *, purpose: str, now: float) -> str:
        """Encrypt `payload` for `purpose`, stamped with `now`: base64url without padding."""
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise ValueError("payload too large for a cookie")
        if now < 0:
            raise ValueError("now must be epoch seconds")
        key = self._encrypting
        nonce = self._token_bytes(_NONCE_BYTES)
        if len(nonce) != _NONCE_BYTES:
            raise ValueError("token_bytes returned the wrong number of bytes")
        header = _VERSION_BYTE + key.key_id
        plaintext = _ISSUED_AT.pack(int(now * 1000)) + zlib.compress(payload)
        ciphertext = key.aead.encrypt(nonce, plaintext, header + purpose.encode("utf-8"))
        return _b64encode(header + nonce + ciphertext)

    def decode(self, token: str, *, purpose: str, now: float, max_age_seconds: float) -> bytes:
        """The payload of `token` made for `purpose`, if issued within `max_age_seconds` of `now`.

        Raises `SessionDecodeError` for anything else.
        """
        if len(token) > MAX_TOKEN_CHARS:
            raise SessionDecodeError(reason="token too long")
        raw = _b64decode(token)
        if raw is None:
            raise SessionDecodeError(reason="not base64url")
        if len(raw) < _HEADER_BYTES + _TAG_BYTES + _ISSUED_AT.size:
            raise SessionDecodeError(reason="too short")
        if raw[0] != VERSION:
            raise SessionDecodeError(reason="unknown format version")
        key_id = raw[1 : 1 + _KEY_ID_BYTES]
        candidates = self._by_id.get(key_id)
        if not candidates:
            raise SessionDecodeError(reason="unknown key id (foreign or retired key)")
        nonce = raw[1 + _KEY_ID_BYTES : _HEADER_BYTES]
        aad = raw[: 1 + _KEY_ID_BYTES] + purpose.encode("utf-8")
        plaintext = _decrypt(candidates, nonce, raw[_HEADER_BYTES:], aad)
        issued_at = _ISSUED_AT.unpack_from(plaintext)[0] / 1000.0
        if issued_at > now + FUTURE_SKEW_SECONDS:
            raise SessionDecodeError(reason="issued in the future")
        if now - issued_at > max_age_seconds:
            raise SessionDecodeError(reason="expired")
        return _decompress(plaintext[_ISSUED_AT.size :])


def _decrypt(candidates: list[_Key], nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    for key in candidates:
        try:
            return key.aead.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            continue
    raise SessionDecodeError(reason="authentication failed (tampered, wrong purpose or wrong key)")


def _decompress(data: bytes) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, MAX_PAYLOAD_BYTES + 1)
    except zlib.error as exc:
        raise SessionDecodeError(reason="corrupt compressed payload") from exc
    if len(out) > MAX_PAYLOAD_BYTES or inflater.unconsumed_tail:
        raise SessionDecodeError(reason="payload too large")
    if not inflater.eof or inflater.unused_data:
        raise SessionDecodeError(reason="corrupt compressed payload")
    return out


def _hkdf(ikm: bytes, *, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(ikm)


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    """Strict, canonical base64url without padding (so no two strings decode alike)."""
    if len(text) % 4 == 1 or not _B64URL.fullmatch(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if _b64encode(raw) != text:
        return None
    return raw
