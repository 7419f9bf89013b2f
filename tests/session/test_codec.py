"""The cookie codec: round trips, rejection of every kind of tampering, rotation and expiry."""

from __future__ import annotations

import base64
import itertools
import re
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.session.codec import (
    MAX_PAYLOAD_BYTES,
    SessionCodec,
    SessionDecodeError,
    generate_secret,
    master_key,
)

NOW = 1_800_000_000.0
DAY = 86_400.0
KEY_A = "q0J7tB9y4kKz0mJ2pA7c2oU8x5nV1rW3eT6yH9sD4fG"  # 43 chars, like `sidecar secret`
KEY_B = "another deployment's passphrase, long enough to count"
KEY_C = generate_secret()


def counter_bytes() -> Callable[[int], bytes]:
    """A deterministic `token_bytes` for tests: 0, 1, 2, ... so every nonce differs."""
    counter = itertools.count()

    def token_bytes(n: int) -> bytes:
        return next(counter).to_bytes(n, "big")

    return token_bytes


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


codec_a = SessionCodec([KEY_A])

payloads = st.binary(max_size=4096)
purposes = st.text(max_size=40)


@given(payload=payloads, purpose=purposes)
def test_decode_returns_what_encode_was_given(payload: bytes, purpose: str) -> None:
    token = codec_a.encode(payload, purpose=purpose, now=NOW)
    assert codec_a.decode(token, purpose=purpose, now=NOW, max_age_seconds=60) == payload


@given(payload=payloads)
def test_encoded_token_is_cookie_safe(payload: bytes) -> None:
    token = codec_a.encode(payload, purpose="session", now=NOW)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


def test_encode_uses_fresh_nonce_each_time() -> None:
    a = codec_a.encode(b"same", purpose="session", now=NOW)
    b = codec_a.encode(b"same", purpose="session", now=NOW)
    assert a != b


def test_injected_randomness_makes_output_repeatable() -> None:
    one = SessionCodec([KEY_A], token_bytes=counter_bytes())
    two = SessionCodec([KEY_A], token_bytes=counter_bytes())
    assert one.encode(b"x", purpose="p", now=NOW) == two.encode(b"x", purpose="p", now=NOW)


@settings(max_examples=300)
@given(
    payload=st.binary(max_size=300),
    position=st.integers(min_value=0),
    replacement=st.sampled_from("ABCabc019-_"),
)
def test_decode_rejects_any_single_character_mutation(
    payload: bytes, position: int, replacement: str
) -> None:
    token = codec_a.encode(payload, purpose="session", now=NOW)
    index = position % len(token)
    if token[index] == replacement:
        return
    mutated = token[:index] + replacement + token[index + 1 :]
    with pytest.raises(SessionDecodeError):
        codec_a.decode(mutated, purpose="session", now=NOW, max_age_seconds=60)


@settings(max_examples=300)
@given(payload=st.binary(max_size=300), position=st.integers(min_value=0), bit=st.integers(0, 7))
def test_decode_rejects_any_flipped_bit(payload: bytes, position: int, bit: int) -> None:
    raw = bytearray(unb64(codec_a.encode(payload, purpose="session", now=NOW)))
    raw[position % len(raw)] ^= 1 << bit
    with pytest.raises(SessionDecodeError):
        codec_a.decode(b64(bytes(raw)), purpose="session", now=NOW, max_age_seconds=60)


@given(payload=st.binary(max_size=300), keep=st.integers(min_value=0))
def test_decode_rejects_any_truncation(payload: bytes, keep: int) -> None:
    token = codec_a.encode(payload, purpose="session", now=NOW)
    truncated = token[: keep % len(token)]
    with pytest.raises(SessionDecodeError):
        codec_a.decode(truncated, purpose="session", now=NOW, max_age_seconds=60)


@given(payload=st.binary(max_size=100), extra=st.text("A-_z9", min_size=1, max_size=8))
def test_decode_rejects_appended_characters(payload: bytes, extra: str) -> None:
    token = codec_a.encode(payload, purpose="session", now=NOW)
    with pytest.raises(SessionDecodeError):
        codec_a.decode(token + extra, purpose="session", now=NOW, max_age_seconds=60)


@given(payload=payloads, purpose=purposes, other=purposes)
def test_decode_rejects_cookie_made_for_another_purpose(
    payload: bytes, purpose: str, other: str
) -> None:
    if purpose == other:
        return
    token = codec_a.encode(payload, purpose=purpose, now=NOW)
    with pytest.raises(SessionDecodeError):
        codec_a.decode(token, purpose=other, now=NOW, max_age_seconds=60)


@pytest.mark.parametrize(
    "token",
    ["", "!!!!", "a", "abc=", "abc def", "ä" * 40, "A" * 200, "=" * 8, "A" * 2_000_000],
)
def test_decode_rejects_garbage(token: str) -> None:
    with pytest.raises(SessionDecodeError):
        codec_a.decode(token, purpose="session", now=NOW, max_age_seconds=60)


def test_decode_rejects_unknown_format_version() -> None:
    raw = bytearray(unb64(codec_a.encode(b"hi", purpose="session", now=NOW)))
    raw[0] = 2
    with pytest.raises(SessionDecodeError) as caught:
        codec_a.decode(b64(bytes(raw)), purpose="session", now=NOW, max_age_seconds=60)
    assert "version" in caught.value.reason


def test_decode_accepts_cookie_from_retired_key_listed_second() -> None:
    old = SessionCodec([KEY_A])
    rotated = SessionCodec([KEY_C, KEY_A])
    token = old.encode(b"before rotation", purpose="session", now=NOW)
    assert rotated.decode(token, purpose="session", now=NOW, max_age_seconds=60) == (
        b"before rotation"
    )


def test_rotated_codec_encrypts_with_the_first_key() -> None:
    rotated = SessionCodec([KEY_C, KEY_A])
    token = rotated.encode(b"after rotation", purpose="session", now=NOW)
    assert SessionCodec([KEY_C]).decode(token, purpose="session", now=NOW, max_age_seconds=60)
    with pytest.raises(SessionDecodeError):
        SessionCodec([KEY_A]).decode(token, purpose="session", now=NOW, max_age_seconds=60)


def test_decode_rejects_cookie_from_removed_key() -> None:
    token = SessionCodec([KEY_A]).encode(b"x", purpose="session", now=NOW)
    with pytest.raises(SessionDecodeError) as caught:
        SessionCodec([KEY_C]).decode(token, purpose="session", now=NOW, max_age_seconds=60)
    assert "key id" in caught.value.reason


def test_decode_rejects_cookie_from_another_deployment() -> None:
    foreign = SessionCodec([KEY_B]).encode(b"x", purpose="session", now=NOW)
    with pytest.raises(SessionDecodeError):
        codec_a.decode(foreign, purpose="session", now=NOW, max_age_seconds=60)


def test_decode_rejects_forged_key_id_of_a_known_key() -> None:
    ours = unb64(codec_a.encode(b"x", purpose="session", now=NOW))
    theirs = bytearray(unb64(SessionCodec([KEY_B]).encode(b"x", purpose="session", now=NOW)))
    theirs[1:5] = ours[1:5]
    with pytest.raises(SessionDecodeError):
        codec_a.decode(b64(bytes(theirs)), purpose="session", now=NOW, max_age_seconds=60)


def test_decode_accepts_cookie_just_within_max_age() -> None:
    token = codec_a.encode(b"x", purpose="session", now=NOW)
    assert codec_a.decode(token, purpose="session", now=NOW + DAY, max_age_seconds=DAY) == b"x"


def test_decode_rejects_expired_cookie() -> None:
    token = codec_a.encode(b"x", purpose="session", now=NOW)
    with pytest.raises(SessionDecodeError) as caught:
        codec_a.decode(token, purpose="session", now=NOW + DAY + 1, max_age_seconds=DAY)
    assert caught.value.reason == "expired"


def test_decode_tolerates_small_clock_skew_between_replicas() -> None:
    token = codec_a.encode(b"x", purpose="session", now=NOW + 30)
    assert codec_a.decode(token, purpose="session", now=NOW, max_age_seconds=60) == b"x"


def test_decode_rejects_cookie_issued_in_the_future() -> None:
    token = codec_a.encode(b"x", purpose="session", now=NOW + 3600)
    with pytest.raises(SessionDecodeError):
        codec_a.decode(token, purpose="session", now=NOW, max_age_seconds=DAY)


def test_decode_refuses_decompression_bomb() -> None:
    # Build a well-authenticated token whose compressed payload inflates past the limit, as a
    # key holder could: the size limit must hold even for authentic data.
    bomb = zlib.compress(b"\0" * (MAX_PAYLOAD_BYTES + 10))

    class BombCodec(SessionCodec):
        def encode(self, payload: bytes, *, purpose: str, now: float) -> str:
            key = self._encrypting
            nonce = b"\1" * 12
            header = b"\1" + key.key_id
            plaintext = int(now * 1000).to_bytes(8, "big") + payload
            ct = key.aead.encrypt(nonce, plaintext, header + purpose.encode())
            return b64(header + nonce + ct)

    bomb_token = BombCodec([KEY_A]).encode(bomb, purpose="session", now=NOW)
    with pytest.raises(SessionDecodeError) as caught:
        codec_a.decode(bomb_token, purpose="session", now=NOW, max_age_seconds=60)
    assert caught.value.reason == "payload too large"


def test_encode_refuses_payload_over_the_limit() -> None:
    with pytest.raises(ValueError, match="too large"):
        codec_a.encode(b"\0" * (MAX_PAYLOAD_BYTES + 1), purpose="session", now=NOW)


def test_decode_error_tells_the_client_nothing() -> None:
    with pytest.raises(SessionDecodeError) as caught:
        codec_a.decode("garbage", purpose="session", now=NOW, max_age_seconds=60)
    error = caught.value
    assert error.message == SessionDecodeError.message
    assert "garbage" not in str(error)
    assert error.reason  # operators still learn why


def test_generate_secret_is_43_char_base64url_of_32_random_bytes() -> None:
    secret = generate_secret()
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)
    assert len(unb64(secret)) == 32
    assert generate_secret() != secret


def test_generated_secret_is_used_as_the_key_itself() -> None:
    secret = generate_secret(lambda n: bytes(range(n)))
    assert master_key(secret) == bytes(range(32))


def test_passphrase_secret_is_stretched_to_a_32_byte_key_deterministically() -> None:
    assert len(master_key(KEY_B)) == 32
    assert master_key(KEY_B) == master_key(KEY_B)
    assert master_key(KEY_B) != master_key(KEY_B + "!")


def test_same_passphrase_decodes_across_codec_instances() -> None:
    token = SessionCodec([KEY_B]).encode(b"x", purpose="p", now=NOW)
    assert SessionCodec([KEY_B]).decode(token, purpose="p", now=NOW, max_age_seconds=1) == b"x"


@pytest.mark.parametrize("secrets", [[], ["short"], "a string, not a list of secrets!"])
def test_codec_refuses_bad_key_ring(secrets: list[str]) -> None:
    with pytest.raises((ValueError, TypeError)):
        SessionCodec(secrets)


def test_codec_repr_shows_no_key_material() -> None:
    text = repr(SessionCodec([KEY_A, KEY_B]))
    assert KEY_A not in text and "keys=2" in text
