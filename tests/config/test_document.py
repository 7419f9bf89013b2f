"""YAML to data with lines, and ${VAR} expansion (sidecar.config.document)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from sidecar.config.document import (
    DocumentError,
    KeyPath,
    expand_env,
    format_path,
    parse_document,
)


def test_format_path_reads_like_the_yaml() -> None:
    assert format_path(("upstreams", 0, "url")) == "upstreams[0].url"
    assert format_path(("server",)) == "server"
    assert format_path(()) == ""


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-}", {}, ""),
        ("${A}", {"A": ""}, ""),
        ("$${A}", {"A": "x"}, "${A}"),
        ("$A and $ and $$", {"A": "x"}, "$A and $ and $$"),
        ("${A}${B:-2}", {"A": "1"}, "12"),
    ],
)
def test_expand_env(value: str, env: dict[str, str], expected: str) -> None:
    assert expand_env(value, env) == (expected, [])


def test_expand_env_reports_every_missing_variable() -> None:
    _, problems = expand_env("${A}/${B}", {})
    assert problems == [
        "environment variable A is not set (set it, or write ${A:-default})",
        "environment variable B is not set (set it, or write ${B:-default})",
    ]


@pytest.mark.parametrize("value", ["${", "${1A}", "${A", "${A:default}", "${}"])
def test_expand_env_rejects_malformed_references(value: str) -> None:
    _, problems = expand_env(value, {"A": "x"})
    assert problems == ["malformed ${...} reference: use ${NAME} or ${NAME:-default}"]


@given(st.text(alphabet="${}:-AB x"))
def test_escaping_every_reference_gives_the_text_back(text: str) -> None:
    assert expand_env(text.replace("${", "$${"), {"A": "no", "B": "no"}) == (text, [])


@given(st.text())
def test_expanded_values_are_not_expanded_again(value: str) -> None:
    assert expand_env("${V}", {"V": value}) == (value, [])


_keys = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)
_scalars = st.one_of(
    st.integers(), st.booleans(), st.text(alphabet="abcxyz /:.", min_size=1, max_size=10)
)
_data = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, min_size=1, max_size=3),
        st.dictionaries(_keys, inner, min_size=1, max_size=3),
    ),
    max_leaves=12,
)


def _paths(data: Any, prefix: KeyPath = ()) -> list[KeyPath]:
    found: list[KeyPath] = []
    if isinstance(data, dict):
        items: list[tuple[str | int, Any]] = list(data.items())
    elif isinstance(data, list):
        items = list(enumerate(data))
    else:
        return found
    for key, value in items:
        found.append((*prefix, key))
        found.extend(_paths(value, (*prefix, key)))
    return found


@given(st.dictionaries(_keys, _data, min_size=1, max_size=4), st.booleans())
def test_every_key_and_item_gets_the_line_it_is_written_on(
    data: dict[str, Any], flow: bool
) -> None:
    text = yaml.safe_dump(data, default_flow_style=None if flow else False)
    doc = parse_document(text, {})
    assert doc.data == data
    assert doc.problems == []
    lines = text.splitlines()
    for path in _paths(data):
        written = lines[doc.lines[path] - 1]
        last = path[-1]
        if isinstance(last, str):
            assert f"{last}:" in written
        elif not flow:
            assert written.lstrip().startswith("-") or written.lstrip().startswith(f"{path[-2]}:")


def test_lines_of_nested_keys_and_list_items() -> None:
    text = "a:\n  b:\n    - x\n    - c: 1\n      d: 2\n"
    doc = parse_document(text, {})
    assert doc.lines[("a",)] == 1
    assert doc.lines[("a", "b")] == 2
    assert doc.lines[("a", "b", 0)] == 3
    assert doc.lines[("a", "b", 1)] == 4
    assert doc.lines[("a", "b", 1, "d")] == 5


def test_duplicate_keys_are_problems_at_every_repeat() -> None:
    doc = parse_document("a: 1\nb: 2\na: 3\na: 4\n", {})
    assert doc.data == {"a": 1, "b": 2}
    assert doc.problems == [
        (3, ("a",), "duplicate key (first given at line 1)"),
        (4, ("a",), "duplicate key (first given at line 1)"),
    ]


def test_python_tags_are_refused_not_executed() -> None:
    doc = parse_document("a: !!python/object/apply:os.getcwd []\n", {})
    assert doc.data == {"a": None}
    assert doc.problems[0][:2] == (1, ("a",))


def test_recursive_alias_is_a_problem_not_a_hang() -> None:
    doc = parse_document("a: &x [1, *x]\n", {})
    assert doc.problems == [(1, ("a", 1), "an alias refers to itself")]


def test_alias_bomb_is_cut_short() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    for n in range(1, 8):
        text += (
            f"b{n}: &b{n} [*{'a' if n == 1 else f'b{n - 1}'}"
            + f", *{'a' if n == 1 else f'b{n - 1}'}" * 9
            + "]\n"
        )
    doc = parse_document(text, {})
    assert any("document too large" in message for _, _, message in doc.problems)


def test_syntax_error_carries_its_line() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document("a: 1\nb: [1, 2\n", {})
    assert caught.value.line == 3
    assert caught.value.message.startswith("YAML syntax error:")


def test_empty_text_is_no_data() -> None:
    assert parse_document("", {}).data is None


def test_control_character_is_a_syntax_error_with_its_line() -> None:
    with pytest.raises(DocumentError) as caught:
        parse_document("a: 1\nb: x\x08y\n", {})
    assert (caught.value.line, caught.value.message) == (
        2,
        "YAML syntax error: the character U+0008 is not allowed",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: !!int abc\n", "not a valid !!int value"),
        ("a: !!bool maybe\n", "not a valid !!bool value"),
        ("a: !!timestamp x\n", "not a valid !!timestamp value"),
    ],
)
def test_value_that_does_not_fit_its_tag_is_a_problem(text: str, message: str) -> None:
    assert parse_document(text, {}).problems == [(1, ("a",), message)]


def test_keys_are_taken_as_written() -> None:
    assert parse_document("null: 1\n1: 2\ntrue: 3\n", {}).data == {"null": 1, "1": 2, "true": 3}
