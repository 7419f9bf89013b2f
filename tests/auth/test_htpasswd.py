"""htpasswd users: only bcrypt is accepted (a config error names the offending line), credentials
are checked in constant shape, and Basic headers are parsed without ever crashing."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from shutil import which

import bcrypt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.auth.htpasswd import (
    HtpasswdError,
    HtpasswdUsers,
    parse_basic_credentials,
    parse_htpasswd,
)
from sidecar.config.load import load_config
from sidecar.errors import ConfigError

PASSWORD = "s3cret-p4ss"
HASH_2B = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
HASH_2Y = "$2y$" + HASH_2B[4:]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@given(st.text(max_size=500))
def test_parse_htpasswd_accepts_or_names_a_line_never_crashes(text: str) -> None:
    try:
        users = parse_htpasswd(text)
    except HtpasswdError as exc:
        assert str(exc).startswith("line ")
    else:
        assert all(hashed.startswith((b"$2y$", b"$2b$")) for hashed in users.values())


def test_parse_accepts_2y_and_2b_and_skips_comments() -> None:
    text = f"# machine users\n\nci:{HASH_2Y}\ndeploy:{HASH_2B}\n"
    users = parse_htpasswd(text)
    assert set(users) == {"ci", "deploy"}


@pytest.mark.parametrize(
    ("hashed", "named"),
    [
        ("$apr1$abc$0123456789012345678901", "MD5 ($apr1$)"),
        ("{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "SHA-1 ({SHA})"),
        ("$6$salt$hash", "SHA-512-crypt ($6$)"),
        ("$2a$04$" + "a" * 53, "bcrypt $2a$"),
        ("rL0Y20zC+Fzt72VPzMSk2A", "crypt or plain text"),
        ("plaintext-password", "crypt or plain text"),
    ],
)
def test_parse_refuses_other_hash_types_naming_the_line(hashed: str, named: str) -> None:
    text = f"ci:{HASH_2B}\n# comment\nbob:{hashed}\n"
    with pytest.raises(HtpasswdError) as caught:
        parse_htpasswd(text)
    message = str(caught.value)
    assert message.startswith("line 3 (user 'bob'):")
    assert named in message
    assert hashed not in message  # the hash itself is never shown


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("no-colon-here\n", "line 1: expected user:hash"),
        (f"ci:{HASH_2B}\nci:{HASH_2B}\n", "line 2: user 'ci' is listed twice"),
        (f"ci:{HASH_2B[:-5]}\n", "line 1 (user 'ci'): not a complete bcrypt hash"),
    ],
)
def test_parse_refuses_malformed_lines(text: str, expected: str) -> None:
    with pytest.raises(HtpasswdError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        parse_htpasswd(text)


@pytest.mark.skipif(which("htpasswd") is None, reason="apache2-utils not installed")
def test_parse_reads_a_file_written_by_htpasswd_b(tmp_path: Path) -> None:
    path = tmp_path / "htpasswd"
    subprocess.run(
        ["htpasswd", "-B", "-C", "4", "-b", "-c", str(path), "ci", PASSWORD],
        check=True,
        capture_output=True,
    )
    users = HtpasswdUsers.from_text(path.read_text(), clock=Clock())
    assert users.check("ci", PASSWORD)
    assert not users.check("ci", PASSWORD + "x")


def test_check_known_unknown_and_overlong() -> None:
    users = HtpasswdUsers({"ci": HASH_2Y.encode()}, {"ci": ["deployers"]}, clock=Clock())
    assert users.check("ci", PASSWORD)
    assert not users.check("ci", "wrong")
    assert not users.check("nobody", PASSWORD)
    assert not users.check("ci", PASSWORD + "x" * 100)  # over bcrypt's 72 bytes: refused


async def test_verify_gives_the_identity_with_groups() -> None:
    users = HtpasswdUsers({"ci": HASH_2B.encode()}, {"ci": ["deployers"]}, clock=Clock())
    identity = await users.verify("ci", PASSWORD)
    assert identity is not None
    assert (identity.sub, identity.user, identity.email, identity.groups) == (
        "ci",
        "ci",
        None,
        ("deployers",),
    )
    assert await users.verify("ci", "wrong") is None


async def test_verify_remembers_success_for_a_minute_only() -> None:
    clock = Clock()
    users = HtpasswdUsers({"ci": HASH_2B.encode()}, clock=clock)
    assert await users.verify("ci", PASSWORD) is not None
    users._users["ci"] = bcrypt.hashpw(b"changed", bcrypt.gensalt(rounds=4))  # file replaced
    assert await users.verify("ci", PASSWORD) is not None  # remembered
    clock.now += 61
    assert await users.verify("ci", PASSWORD) is None  # checked again against the new hash
    assert await users.verify("ci", "wrong") is None  # failures are never remembered


def test_unknown_user_costs_a_bcrypt_check_of_the_same_cost() -> None:
    users = HtpasswdUsers({"ci": bcrypt.hashpw(b"x", bcrypt.gensalt(rounds=5))}, clock=Clock())
    assert users._dummy.startswith(b"$2b$05$")


def _basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_basic(b"ci:pw"), ("ci", "pw")),
        (_basic(b"ci:pw:with:colons"), ("ci", "pw:with:colons")),
        ("basic " + base64.b64encode(b"ci:").decode(), ("ci", "")),
        (_basic("jos\u00e9:p\u00e4ss".encode()), ("jos\u00e9", "p\u00e4ss")),
        (_basic(b"no-colon"), None),
        (_basic(b":pw"), None),
        (_basic(b"\xff\xfe:pw"), None),
        ("Basic not-base64!", None),
        ("Bearer abc", None),
        ("Basic", None),
    ],
)
def test_parse_basic_credentials(value: str, expected: tuple[str, str] | None) -> None:
    assert parse_basic_credentials(value) == expected


@given(st.text(max_size=200))
def test_parse_basic_credentials_never_crashes(value: str) -> None:
    parsed = parse_basic_credentials(value)
    assert parsed is None or (parsed[0] and isinstance(parsed[1], str))


_UTF8 = st.characters(exclude_categories=("Cs",))


@given(
    st.text(alphabet=st.characters(exclude_characters=":", exclude_categories=("Cs",)), min_size=1),
    st.text(alphabet=_UTF8),
)
def test_parse_basic_credentials_round_trips(user: str, password: str) -> None:
    assert parse_basic_credentials(_basic(f"{user}:{password}".encode())) == (user, password)


def _config(tmp_path: Path, htpasswd: str) -> Path:
    (tmp_path / "htpasswd").write_text(htpasswd)
    path = tmp_path / "sidecar.yaml"
    path.write_text(
        "version: 1\n"
        "upstream: http://127.0.0.1:8080\n"
        "provider:\n"
        "  issuer: http://127.0.0.1:9000\n"
        "  client_id: sidecar\n"
        "  client_secret: secret\n"
        "session:\n"
        "  secret: a-session-secret-of-at-least-32-characters\n"
        "api:\n"
        "  htpasswd_file: htpasswd\n"
        "  htpasswd_groups:\n"
        "    ci: [deployers]\n"
    )
    return path


def test_config_loads_htpasswd_file_relative_to_the_config(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, f"ci:{HASH_2Y}\n"))
    assert config.api.htpasswd is not None
    assert HASH_2Y not in repr(config.api)  # hashes are kept out of reprs and logs


def test_config_refuses_an_md5_htpasswd_naming_the_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, f"ci:{HASH_2Y}\nold:$apr1$x$y\n"))
    (problem,) = caught.value.problems
    assert "api.htpasswd_file" in problem
    assert "line 2 (user 'old'): MD5 ($apr1$) hashes are not accepted" in problem
    assert "$apr1$x$y" not in problem


def test_config_refuses_groups_for_users_not_in_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_config(tmp_path, f"deploy:{HASH_2Y}\n"))
    assert "htpasswd_groups names users not in htpasswd: ['ci']" in caught.value.problems[0]
