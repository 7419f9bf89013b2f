"""YAML text to plain data, with the line of every key and list item and `${VAR}` expanded.

`parse_document` composes the YAML node graph with PyYAML's safe loader (never arbitrary tags),
then walks it once to build plain dicts, lists and scalars together with a table from key path
(`("upstreams", 0, "url")`) to 1-based line number, so that every later complaint can name its
line. Duplicate keys are errors, not "last one wins". In string scalars, `${VAR}` and
`${VAR:-default}` are expanded from the given environment (`:-` also applies when the variable is
empty) and `$${` stands for a literal `${`. Problems are collected, not raised one by one; messages
never quote values, since a value may be a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{")
_MERGE_TAG = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")
_MAX_NODES = 100_000  # aliases can multiply a small file; a config is never this big


@dataclass
class Document:
    """Plain data from YAML plus where each key path was written, and what went wrong."""

    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[tuple[int, KeyPath, str]] = field(default_factory=list)


class DocumentError(Exception):
    """The text is not YAML at all (syntax error); `line` is 1-based or None."""

    def __init__(self, line: int | None, message: str) -> None:
        self.line = line
        self.message = message
        super().__init__(message)


def format_path(path: KeyPath) -> str:
    """`("upstreams", 0, "url")` -> `upstreams[0].url`."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def expand_env(value: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand `${VAR}`, `${VAR:-default}` and `$${`; return the result and the problems found."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name is None:
            problems.append("malformed ${...} reference: use ${NAME} or ${NAME:-default}")
            return text
        found = env.get(name)
        if found is not None and (found != "" or default is None):
            return found
        if default is not None:
            return default
        problems.append(
            f"environment variable {name} is not set (set it, or write ${{{name}:-default}})"
        )
        return ""

    return _REFERENCE.sub(replace, value), problems


def parse_document(text: str, env: Mapping[str, str]) -> Document:
    """Parse one YAML document. Syntax errors raise DocumentError; the rest land in `problems`."""
    try:
        loader = yaml.SafeLoader(text)  # the reader checks the characters right here
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:
        line = text[: exc.position].count("\n") + 1
        message = f"YAML syntax error: the character U+{exc.character:04X} is not allowed"
        raise DocumentError(line, message) from None
    except yaml.MarkedYAMLError as exc:
        raise DocumentError(*_describe_syntax_error(exc)) from None
    except yaml.YAMLError as exc:
        raise DocumentError(None, f"YAML error: {type(exc).__name__}") from None
    if node is None:
        return Document(data=None)
    walker = _Walker(loader, env)
    doc = walker.doc
    doc.lines[()] = node.start_mark.line + 1
    doc.data = walker.build(node, ())
    return doc


def _describe_syntax_error(exc: yaml.MarkedYAMLError) -> tuple[int | None, str]:
    # Built from the problem text only: str(exc) quotes the offending line, which may hold a secret.
    problem = exc.problem or "not valid YAML"
    mark = exc.problem_mark
    context = exc.context_mark
    if context is not None and exc.context and "quoted scalar" in exc.context:
        # An unclosed quote fails at the end of the file; the quote is what needs fixing.
        problem = (
            f"a quoted value is never closed ({problem} at line {mark.line + 1})"
            if mark
            else ("a quoted value is never closed")
        )
        mark = context
    elif context is not None and exc.context and mark is not None and context.line != mark.line:
        problem = f"{problem} ({exc.context} at line {context.line + 1})"
    if "<block" in problem:
        problem += "; check the indentation"
    if "'\\t'" in problem:
        problem += "; indent with spaces, not tabs"
    mark = mark or context
    return (mark.line + 1 if mark else None), f"YAML syntax error: {problem}"


class _Walker:
    def __init__(self, loader: yaml.SafeLoader, env: Mapping[str, str]) -> None:
        self.loader = loader
        self.env = env
        self.doc = Document(data=None)
        self.active: set[int] = set()
        self.count = 0

    def problem(self, node: yaml.Node, path: KeyPath, message: str) -> None:
        self.doc.problems.append((node.start_mark.line + 1, path, message))

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.count += 1
        if self.count == _MAX_NODES:
            self.problem(node, path, "document too large (check anchors and aliases)")
        if self.count >= _MAX_NODES:
            return None
        if id(node) in self.active:
            self.problem(node, path, "an alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
                tag = node.tag.replace("tag:yaml.org,2002:", "!!")
                self.problem(node, path, f"the tag {tag} is not supported here")
                return None
            if isinstance(node, yaml.MappingNode):
                return self.build_mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self.build_sequence(node, path)
            return self.build_scalar(node, path)
        finally:
            self.active.discard(id(node))

    def build_sequence(self, node: yaml.SequenceNode, path: KeyPath) -> list[Any]:
        items = []
        for index, item in enumerate(node.value):
            self.doc.lines.setdefault((*path, index), item.start_mark.line + 1)
            items.append(self.build(item, (*path, index)))
        return items

    def build_mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        first_line: dict[str, int] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                merges.append(value_node)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                self.problem(key_node, path, "a key must be a plain word, not a list or mapping")
                continue
            key = str(key_node.value)  # as written: `null: x` is the key "null", not None
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(
                    key_node, (*path, key), f"duplicate key (first given at line {first_line[key]})"
                )
                continue
            first_line[key] = line
            self.doc.lines.setdefault((*path, key), line)
            result[key] = self.build(value_node, (*path, key))
        # `<<: *base` merges: keys written here win over merged ones.
        for merge in merges:
            sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    self.problem(source, path, "<< (merge) needs a mapping or a list of mappings")
                    continue
                merged = self.build(source, path)
                if isinstance(merged, dict):
                    for key, value in merged.items():
                        result.setdefault(key, value)
        return result

    def build_scalar(self, node: yaml.Node, path: KeyPath) -> Any:
        try:
            value = self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or "cannot read this value"
            self.problem(node, path, str(problem))
            return None
        except (ValueError, TypeError, AttributeError, LookupError, ArithmeticError):
            # An explicit tag on a value that does not fit it (`!!int abc`) fails in Python code.
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self.problem(node, path, f"not a valid {tag} value")
            return None
        if isinstance(value, str) and "${" in value:
            value, problems = expand_env(value, self.env)
            for message in problems:
                self.problem(node, path, message)
        return value
