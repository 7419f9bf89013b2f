"""Static users from an htpasswd file, for simple machine clients using HTTP Basic credentials.

`parse_htpasswd(text)` reads `user:hash` lines (blank lines and `#` comments skipped) and accepts
bcrypt hashes only (`$2y$`, `$2b$`, as written by `htpasswd -B`); any other kind (`$apr1$` MD5,
`{SHA}`, crypt, SHA-crypt, plain text) is refused with `HtpasswdError` naming the line, so the
config check fails instead of a weak hash being trusted. `HtpasswdUsers.verify` checks a user and
password: an unknown user is checked against a dummy hash of the same cost, so the answer takes
as long as for a known one and does not reveal which names exist. bcrypt is slow on purpose (about
0.1 s at cost 10): `verify` runs it in a worker thread, and a successful check is remembered for
`SUCCESS_CACHE_SECONDS` under an HMAC of the credentials with a per-process random key (never the
password itself), so a client sending the same credentials on every request costs one bcrypt a
minute. The identity is the user name, with the groups `api.htpasswd_groups` gives it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import bcrypt

from sidecar.session.model import Identity

SUCCESS_CACHE_SECONDS = 60.0
SUCCESS_CACHE_MAX = 1024
MAX_PASSWORD_BYTES = 72  # bcrypt ignores (and the library refuses) anything longer
_BCRYPT_PREFIXES = ("$2y$", "$2b$")
_REFUSED_KINDS = (
    ("$2a$", "bcrypt $2a$ (an old variant with a known bug; re-create it with htpasswd -B)"),
    ("$apr1$", "MD5 ($apr1$)"),
    ("{SHA}", "SHA-1 ({SHA})"),
    ("$1$", "MD5-crypt ($1$)"),
    ("$5$", "SHA-256-crypt ($5$)"),
    ("$6$", "SHA-512-crypt ($6$)"),
)


class HtpasswdError(ValueError):
    """An htpasswd line sidecar refuses; the message names the line and never shows the hash."""


def _hash_kind(hashed: str) -> str:
    for prefix, name in _REFUSED_KINDS:
        if hashed.startswith(prefix):
            return name
    return "crypt or plain text"


def parse_htpasswd(text: str) -> dict[str, bytes]:
    """`user -> bcrypt hash` from htpasswd text; `HtpasswdError` for the first bad line."""
    users: dict[str, bytes] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user or not hashed:
            raise HtpasswdError(f"line {number}: expected user:hash")
        if not hashed.startswith(_BCRYPT_PREFIXES):
            raise HtpasswdError(
                f"line {number} (user {user!r}): {_hash_kind(hashed)} hashes are not accepted; "
                "use bcrypt (htpasswd -B)"
            )
        if len(hashed) != 60:
            raise HtpasswdError(f"line {number} (user {user!r}): not a complete bcrypt hash")
        if user in users:
            raise HtpasswdError(f"line {number}: user {user!r} is listed twice")
        users[user] = hashed.encode("ascii", "replace")
    return users


def parse_basic_credentials(value: str) -> tuple[str, str] | None:
    """`(user, password)` from an `Authorization: Basic ...` value, None when malformed."""
    scheme, _, encoded = value.strip().partition(" ")
    if scheme.lower() != "basic" or not encoded.strip():
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep or not user:
        return None
    return user, password


def _cost(hashed: bytes) -> int:
    try:
        return int(hashed[4:6])
    except ValueError:
        return 10


@dataclass(frozen=True)
class _Remembered:
    user: str
    until: float


class HtpasswdUsers:
    """The static users and their groups, built once at start-up."""

    def __init__(
        self,
        users: Mapping[str, bytes],
        groups: Mapping[str, Sequence[str]] | None = None,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._users = dict(users)
        self._groups = {user: tuple(names) for user, names in (groups or {}).items()}
        self._clock = clock
        cost = max((_cost(hashed) for hashed in self._users.values()), default=10)
        # A real bcrypt hash of a random password: unknown users cost as much as known ones.
        self._dummy = bcrypt.hashpw(secrets.token_bytes(16), bcrypt.gensalt(rounds=cost))
        self._cache_key = secrets.token_bytes(32)
        self._remembered: OrderedDict[bytes, _Remembered] = OrderedDict()

    @classmethod
    def from_text(
        cls,
        text: str,
        groups: Mapping[str, Sequence[str]] | None = None,
        *,
        clock: Callable[[], float],
    ) -> HtpasswdUsers:
        return cls(parse_htpasswd(text), groups, clock=clock)

    def __len__(self) -> int:
        return len(self._users)

    def identity(self, user: str) -> Identity:
        groups = self._groups.get(user, ())
        claims = {"sub": user, "preferred_username": user, "groups": list(groups)}
        return Identity(sub=user, user=user, username=user, groups=groups, claims=claims)

    def _fingerprint(self, user: str, password: str) -> bytes:
        message = user.encode("utf-8") + b"\x00" + password.encode("utf-8")
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()

    def check(self, user: str, password: str) -> bool:
        """The bcrypt check itself (slow, blocking); unknown users use the dummy hash."""
        secret = password.encode("utf-8")
        known = self._users.get(user)
        hashed = known if known is not None else self._dummy
        if len(secret) > MAX_PASSWORD_BYTES:
            secret = secret[:MAX_PASSWORD_BYTES]
            bcrypt.checkpw(secret, hashed)  # same time as any other answer
            return False
        try:
            matches = bcrypt.checkpw(secret, hashed)
        except ValueError:  # a malformed hash that slipped through: never a match
            return False
        return matches and known is not None

    async def verify(self, user: str, password: str) -> Identity | None:
        """The identity for correct credentials, else None (in about the same time)."""
        now = self._clock()
        fingerprint = self._fingerprint(user, password)
        remembered = self._remembered.get(fingerprint)
        if remembered is not None and remembered.until > now and remembered.user == user:
            return self.identity(user)
        ok = await asyncio.to_thread(self.check, user, password)
        if not ok:
            return None
        self._remembered[fingerprint] = _Remembered(user, now + SUCCESS_CACHE_SECONDS)
        self._remembered.move_to_end(fingerprint)
        while len(self._remembered) > SUCCESS_CACHE_MAX:
            self._remembered.popitem(last=False)
        return self.identity(user)
