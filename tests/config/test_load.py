"""Loading the YAML config: what a user sees for good and bad files (sidecar.config.load)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from sidecar.config.load import allowed_keys, load_config, parse_config_text, submodel
from sidecar.config.model import SidecarConfig
from sidecar.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
COOKIE_SECRET = "c" * 43
BASE = f"""\
version: 1
upstream: http://127.0.0.1:8080
provider:
  issuer: https://login.example.com
  client_id: sidecar
  client_secret: s3cret-client-value
session:
  secret: {COOKIE_SECRET}
"""


def parse(text: str, *, env: dict[str, str] | None = None, base_dir: Path = REPO) -> SidecarConfig:
    return parse_config_text(
        textwrap.dedent(text), source="config.yaml", env=env or {}, base_dir=base_dir
    )


def problems(text: str, *, env: dict[str, str] | None = None, base_dir: Path = REPO) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse(text, env=env, base_dir=base_dir)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_valid_config_loads_into_typed_frozen_objects() -> None:
    config = parse(BASE)
    assert config.upstreams[0].url == "http://127.0.0.1:8080"
    assert config.provider is not None
    assert config.provider.client_secret is not None
    assert config.provider.client_secret.get_secret_value() == "s3cret-client-value"
    assert config.session is not None
    assert config.session.secrets[0].get_secret_value() == COOKIE_SECRET


def test_error_names_file_line_and_path_of_a_list_item_key() -> None:
    text = """\
    version: 1
    upstreams:
      - path: /
        url: http://127.0.0.1:8080
      - path: /api
        url: ftp://backend
    """
    assert problems(text) == ["config.yaml:6: upstreams[1].url: not an http(s) URL"]


def test_error_on_a_list_item_names_the_item_line() -> None:
    text = """\
    version: 1
    upstream: http://127.0.0.1:8080
    server:
      trusted_proxies:
        - 10.0.0.0/8
        - not-a-network
    """
    assert problems(text) == [
        "config.yaml:6: server.trusted_proxies[1]: "
        "not an IP address or CIDR range (e.g. 10.0.0.0/8)"
    ]


def test_every_problem_is_reported_at_once_in_line_order() -> None:
    text = """\
    version: 1
    server:
      listen: nowhere
      workers: 0
    upstreams:
      - path: api
        url: http://127.0.0.1:8080
    logging:
      format: xml
    """
    assert problems(text) == [
        "config.yaml:3: server.listen: expected host:port, e.g. 0.0.0.0:4180",
        "config.yaml:4: server.workers: should be greater than or equal to 1",
        "config.yaml:6: upstreams[0].path: must start with /",
        "config.yaml:9: logging.format: should be 'json' or 'text'",
    ]


def test_unknown_key_suggests_the_closest_valid_key() -> None:
    text = """\
    version: 1
    upstream: http://127.0.0.1:8080
    server:
      lisen: 0.0.0.0:4180
    """
    assert problems(text) == ["config.yaml:4: server.lisen: unknown key (did you mean 'listen'?)"]


def test_unknown_key_suggests_the_file_form_of_a_secret() -> None:
    text = BASE.replace("client_secret:", "client_secret_fil:")
    assert (
        "config.yaml:6: provider.client_secret_fil: "
        "unknown key (did you mean 'client_secret_file'?)" in problems(text)
    )


def test_unknown_key_without_a_close_match_lists_the_allowed_keys() -> None:
    text = """\
    version: 1
    upstream: http://127.0.0.1:8080
    logging:
      zzz: 1
    """
    assert problems(text) == [
        "config.yaml:4: logging.zzz: unknown key (allowed here: level, format)"
    ]


def test_missing_required_key_points_at_its_section() -> None:
    text = BASE.replace("  client_id: sidecar\n", "")
    assert problems(text) == ["config.yaml:3: provider.client_id: required key is missing"]


def test_cross_field_rule_points_at_the_section() -> None:
    text = BASE.replace("  client_secret: s3cret-client-value\n", "")
    assert problems(text) == [
        "config.yaml:3: provider: client_secret_basic needs client_secret or client_secret_file"
    ]


def test_top_level_rule_has_no_key_path() -> None:
    assert problems("version: 1\n") == [
        "config.yaml:1: an upstream is required (upstream: URL, or upstreams: [...])"
    ]


def test_wrong_shapes_are_explained_in_words() -> None:
    text = """\
    version: 2
    upstream: http://127.0.0.1:8080
    server: 0.0.0.0:4180
    headers:
      strip: X-Debug
    """
    assert problems(text) == [
        "config.yaml:1: version: should be 1",
        "config.yaml:3: server: should be a mapping (indented key: value lines)",
        "config.yaml:5: headers.strip: should be a list",
    ]


def test_duplicate_key_is_an_error_naming_both_lines() -> None:
    text = """\
    version: 1
    upstream: http://127.0.0.1:8080
    logging:
      level: info
      format: json
      level: debug
    """
    assert problems(text) == ["config.yaml:6: logging.level: duplicate key (first given at line 4)"]


def test_yaml_syntax_error_names_its_line() -> None:
    text = """\
    version: 1
    upstream: http://127.0.0.1:8080
    server:
      listen: "0.0.0.0:4180
    logging:
      level: info
    """
    assert problems(text) == [
        "config.yaml:4: YAML syntax error: a quoted value is never closed "
        "(found unexpected end of stream at line 7)"
    ]


def test_yaml_syntax_error_line_for_bad_indentation() -> None:
    text = "version: 1\nserver:\n  listen: a\n bad: 1\n"
    (problem,) = problems(text)
    assert problem.startswith("config.yaml:4: YAML syntax error:")
    assert problem.endswith("check the indentation")


def test_yaml_tab_indentation_is_explained() -> None:
    assert problems("version: 1\nserver:\n\tlisten: a\n") == [
        "config.yaml:3: YAML syntax error: found character '\\t' that cannot start any token; "
        "indent with spaces, not tabs"
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "config.yaml: the file is empty; it starts with `version: 1`"),
        ("# only a comment\n", "config.yaml: the file is empty; it starts with `version: 1`"),
        ("- version: 1\n", "config.yaml:1: the top level must be a mapping (version: 1, ...)"),
        ("just words\n", "config.yaml:1: the top level must be a mapping (version: 1, ...)"),
    ],
)
def test_empty_or_non_mapping_file_is_a_clean_error(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_env_vars_are_expanded_with_defaults() -> None:
    text = """\
    version: 1
    upstream: ${BACKEND:-http://127.0.0.1:9000}
    server:
      listen: ${HOST}:${PORT}
      workers: ${WORKERS:-2}
    """
    config = parse(text, env={"HOST": "127.0.0.1", "PORT": "5000"})
    assert config.server.listen == "127.0.0.1:5000"
    assert config.server.workers == 2
    assert config.upstreams[0].url == "http://127.0.0.1:9000"


def test_missing_env_var_is_an_error_naming_it_and_its_line() -> None:
    text = BASE.replace("issuer: https://login.example.com", "issuer: ${OIDC_ISSUER}")
    assert problems(text) == [
        "config.yaml:4: provider.issuer: environment variable OIDC_ISSUER is not set "
        "(set it, or write ${OIDC_ISSUER:-default})"
    ]


def test_double_dollar_escapes_a_reference() -> None:
    text = BASE + "auth:\n  provider_name: $${NOT_A_VAR}\n"
    assert parse(text).auth.provider_name == "${NOT_A_VAR}"


def test_env_var_in_a_key_is_not_expanded() -> None:
    text = BASE + "headers:\n  claims:\n    X-${NAME}: user\n"
    assert problems(text, env={"NAME": "User"}) == [
        "config.yaml:10: headers.claims: 'X-${NAME}' is not a valid HTTP header name"
    ]


def test_secret_is_read_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client").write_text("from-a-file\n")
    (tmp_path / "keys").write_text(f"{'n' * 40}\n\n  {'o' * 40}  \n")
    text = BASE.replace("client_secret: s3cret-client-value", "client_secret_file: secrets/client")
    text = text.replace(f"secret: {COOKIE_SECRET}", "secrets_file: keys")
    (tmp_path / "sidecar.yaml").write_text(text)
    config = load_config(tmp_path / "sidecar.yaml", env={})
    assert config.provider is not None and config.provider.client_secret is not None
    assert config.provider.client_secret.get_secret_value() == "from-a-file"
    assert config.session is not None
    assert [s.get_secret_value() for s in config.session.secrets] == ["n" * 40, "o" * 40]


def test_secret_file_is_the_file_form_of_the_session_secret_shorthand(tmp_path: Path) -> None:
    (tmp_path / "cookie").write_text(COOKIE_SECRET + "\n")
    text = BASE.replace(f"secret: {COOKIE_SECRET}", "secret_file: ${DIR}/cookie")
    config = parse(text, env={"DIR": str(tmp_path)}, base_dir=Path("/nonexistent"))
    assert config.session is not None
    assert config.session.secrets[0].get_secret_value() == COOKIE_SECRET


def test_secret_from_file_is_still_validated_and_named_as_written(tmp_path: Path) -> None:
    (tmp_path / "cookie").write_text("too-short\n")
    text = BASE.replace(f"secret: {COOKIE_SECRET}", "secret_file: cookie")
    assert problems(text, base_dir=tmp_path) == [
        "config.yaml:8: session.secret_file: each secret needs at least 32 characters "
        "(use `sidecar secret`)"
    ]


def test_both_a_secret_and_its_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("x\n")
    text = BASE.replace(
        "client_secret: s3cret-client-value",
        "client_secret: s3cret-client-value\n  client_secret_file: client",
    )
    assert problems(text, base_dir=tmp_path) == [
        "config.yaml:7: provider.client_secret_file: "
        "give client_secret or client_secret_file, not both"
    ]


def test_unreadable_secret_file_is_one_clean_error(tmp_path: Path) -> None:
    text = BASE.replace("client_secret: s3cret-client-value", "client_secret_file: nope")
    assert problems(text, base_dir=tmp_path) == [
        f"config.yaml:6: provider.client_secret_file: cannot read {tmp_path / 'nope'}: "
        "No such file or directory"
    ]


def test_empty_secret_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "client").write_text("\n")
    text = BASE.replace("client_secret: s3cret-client-value", "client_secret_file: client")
    assert problems(text, base_dir=tmp_path) == [
        f"config.yaml:6: provider.client_secret_file: {tmp_path / 'client'} is empty"
    ]


def test_missing_config_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.yaml")
    assert caught.value.problems == [f"{tmp_path / 'absent.yaml'}: no such file"]


def test_directory_as_config_file_is_a_clean_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path)
    assert caught.value.problems == [f"{tmp_path}: is a directory, not a file"]


def test_non_utf8_config_file_is_a_clean_error(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_bytes(b"version: 1\nupstream: \xff\n")
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert caught.value.problems == [f"{tmp_path / 'c.yaml'}: not UTF-8 text"]


def test_merge_keys_share_settings_and_local_keys_win() -> None:
    text = """\
    version: 1
    upstreams:
      - &api {path: /api, url: "http://127.0.0.1:9000", read_timeout_seconds: 5}
      - <<: *api
        path: /api/v2
    """
    config = parse(text)
    assert [(u.path, u.url, u.read_timeout_seconds) for u in config.upstreams] == [
        ("/api", "http://127.0.0.1:9000", 5.0),
        ("/api/v2", "http://127.0.0.1:9000", 5.0),
    ]


def test_example_config_stays_valid(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client_secret").write_text("example-client-secret\n")
    (tmp_path / "config.yaml").write_text((REPO / "config.example.yaml").read_text())
    config = load_config(tmp_path / "config.yaml", env={"SIDECAR_COOKIE_SECRET": COOKIE_SECRET})
    assert config.provider is not None
    assert config.server.public_url == "https://app.example.com"


def test_example_config_mentions_every_key_of_the_model() -> None:
    example = (REPO / "config.example.yaml").read_text()
    missing = []

    def visit(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            if f"{name}:" not in example and f"{name}_file:" not in example:
                missing.append(prefix + name)
            inner = submodel(info.annotation)
            if inner is not None:
                visit(inner[0], f"{prefix}{name}.")

    visit(SidecarConfig, "")
    assert missing == []
    assert allowed_keys(SidecarConfig)


# Secrets never appear in messages, whatever else is wrong with the file.

_secret_text = st.text(
    alphabet=st.characters(
        min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="'\"\\#:{}[],&*!|>%@`$"
    ),
    min_size=8,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(secret=_secret_text, breakage=st.sampled_from(range(6)))
def test_secret_values_never_appear_in_error_messages(secret: str, breakage: int) -> None:
    lines = [
        "version: 1",
        "upstream: http://127.0.0.1:8080",
        "provider:",
        "  issuer: https://login.example.com",
        "  client_id: sidecar",
        f"  client_secret: '{secret}'",
        "session:",
        f"  secrets: ['{secret}']",  # too short unless 32+ characters: an error about a secret
    ]
    broken = [
        lambda: lines.append(f"  client_secret: '{secret}'"),  # duplicate key
        lambda: lines.__setitem__(5, f"  client_secret: 12{secret}: x"),  # YAML error on its line
        lambda: lines.__setitem__(5, f"  client_secert: '{secret}'"),  # typo in the key
        lambda: lines.__setitem__(5, f"  client_secret: ['{secret}']"),  # wrong type
        lambda: lines.__setitem__(7, f"  secrets: '{secret}'"),  # wrong type
        lambda: lines.__setitem__(3, f"  issuer: '{secret}'"),  # the secret somewhere else
    ]
    broken[breakage]()
    try:
        parse("\n".join(lines) + "\n")
    except ConfigError as exc:
        assert exc.problems
        assert secret not in str(exc)
    else:
        pytest.fail("a broken file was accepted")


_yaml_fragments = st.sampled_from(
    [
        "version: 1\n",
        "upstream: http://127.0.0.1:1\n",
        "server:\n",
        "  listen: x\n",
        "- a\n",
        "  - b: 1\n",
        "!!int abc",
        "!!bool maybe",
        "!!timestamp x",
        "&a ",
        "*a",
        "<<: *a\n",
        "[",
        "]",
        "{",
        "}",
        ": ",
        "? ",
        '"',
        "'",
        "\t",
        "${X}",
        "${",
        "$${",
        "secret_file: /\n",
        "\n",
        " ",
        "session:\n  secrets_file: nope\n",
        "provider: {client_secret: 1}\n",
        "%YAML 1.1\n---\n",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_yaml_fragments, max_size=12).map("".join), st.text()))
def test_any_text_is_a_config_or_a_config_error(text: str) -> None:
    try:
        parse_config_text(text, source="c.yaml", env={}, base_dir=REPO)
    except ConfigError as exc:
        assert exc.problems
        assert all(problem.startswith("c.yaml") for problem in exc.problems)
        assert "Traceback" not in str(exc)


def test_shorthand_secret_errors_are_named_as_written() -> None:
    text = BASE.replace(f"secret: {COOKIE_SECRET}", "secret: [a, b]")
    assert problems(text) == ["config.yaml:8: session.secret: should be a valid string"]
