"""Load the YAML configuration file into a `SidecarConfig`, or explain every problem at once.

`load_config(path)` reads the file; `parse_config_text(text, ...)` does the rest: YAML with a line
for every key (`sidecar.config.document`), `${VAR}` expansion, `<name>_file` for every secret field
of the model (a Kubernetes Secret mounted as a file; relative to the config file's directory; for
list fields one secret per non-empty line), then pydantic validation. Every problem becomes one
`FILE:LINE: key.path: message` line and all of them are raised together as
`ConfigError(problems)`. No message ever contains a configured value: values may be secrets.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr, ValidationError
from pydantic_core import ErrorDetails

from sidecar.config.document import DocumentError, KeyPath, format_path, parse_document
from sidecar.config.model import SessionConfig, SidecarConfig
from sidecar.errors import ConfigError

SecretKind = Literal["one", "many"]

# Keys a model accepts besides its fields, and the field they stand for (see SessionConfig).
SHORTHANDS: dict[type[BaseModel], dict[str, str]] = {SessionConfig: {"secret": "secrets"}}

# Stands in for a secret whose file could not be read, so that the model does not also complain
# that the secret is missing or too short: the read error already says what is wrong.
_UNREAD_SECRET = "unread secret file " + "-" * 32

_MESSAGES = {
    "missing": "required key is missing",
    "model_type": "should be a mapping (indented key: value lines)",
    "dict_type": "should be a mapping (indented key: value lines)",
    "tuple_type": "should be a list",
    "list_type": "should be a list",
    "ip_v4_network": "not an IP address or CIDR range (e.g. 10.0.0.0/8)",
    "ip_v6_network": "not an IP address or CIDR range (e.g. 10.0.0.0/8)",
}


def load_config(path: str | Path, env: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read and validate the config file at `path`; raise ConfigError listing every problem."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([f"{source}: no such file"]) from None
    except IsADirectoryError:
        raise ConfigError([f"{source}: is a directory, not a file"]) from None
    except OSError as exc:
        raise ConfigError([f"{source}: cannot read the file: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{source}: not UTF-8 text"]) from None
    return parse_config_text(text, source=source, env=env, base_dir=Path(path).parent)


def parse_config_text(
    text: str,
    *,
    source: str = "<config>",
    env: Mapping[str, str] | None = None,
    base_dir: str | Path = ".",
) -> SidecarConfig:
    """Validate config text; `source` names it in messages, `base_dir` anchors `*_file` paths."""
    try:
        doc = parse_document(text, os.environ if env is None else env)
    except DocumentError as exc:
        where = f"{source}:{exc.line}" if exc.line is not None else source
        raise ConfigError([f"{where}: {exc.message}"]) from None
    if doc.data is None:
        raise ConfigError([f"{source}: the file is empty; it starts with `version: 1`"])
    if not isinstance(doc.data, dict):
        raise ConfigError(
            [f"{source}:{doc.lines[()]}: the top level must be a mapping (version: 1, ...)"]
        )
    state = _State(lines=doc.lines, base_dir=Path(base_dir), problems=list(doc.problems))
    data = _resolve_secret_files(doc.data, SidecarConfig, (), state)
    config: SidecarConfig | None = None
    try:
        config = SidecarConfig.model_validate(data)
    except ValidationError as exc:
        state.add_validation_errors(exc, data)
    if state.problems or config is None:
        raise ConfigError(state.render(source))
    return config


@dataclass
class _State:
    lines: dict[KeyPath, int]
    base_dir: Path
    problems: list[tuple[int, KeyPath, str]]
    renames: dict[KeyPath, str] = field(default_factory=dict)
    singles: set[KeyPath] = field(default_factory=set)  # list fields the user gave as one value
    secrets: list[str] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int:
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return 1

    def add(self, path: KeyPath, message: str) -> None:
        self.problems.append((self.line_of(path), path, message))

    def display(self, path: KeyPath) -> str:
        """The key path as the user wrote it (`client_secret_file`, not `client_secret`)."""
        parts: list[str | int | None] = list(path)
        for end in range(1, len(path) + 1):
            if path[:end] in self.renames:
                parts[end - 1] = self.renames[path[:end]]
            if path[: end - 1] in self.singles and isinstance(path[end - 1], int):
                parts[end - 1] = None  # `secret: X` has no [0]
        return format_path(tuple(part for part in parts if part is not None))

    def add_validation_errors(self, exc: ValidationError, data: dict[str, Any]) -> None:
        known = [self.display(path) for _, path, _ in self.problems if path]
        merged: dict[KeyPath, list[str]] = {}
        for error in exc.errors(include_url=False, include_input=False, include_context=False):
            path = _clean_loc(error["loc"], data)
            shown = self.display(path)
            if any(shown == seen or shown.startswith((f"{seen}.", f"{seen}[")) for seen in known):
                continue  # already explained (e.g. an unset ${VAR} left this value empty)
            message = _message(error, path)
            if message not in merged.setdefault(path, []):
                merged[path].append(message)
        for path, messages in merged.items():
            self.add(path, " or ".join(messages))

    def render(self, source: str) -> list[str]:
        out: list[str] = []
        for line, path, message in sorted(self.problems, key=lambda p: p[0]):
            for secret in self.secrets:
                if len(secret) >= 8:  # shorter values would redact ordinary words
                    message = message.replace(secret, "[redacted]")
            text = (
                f"{source}:{line}: {self.display(path)}: {message}"
                if path
                else (f"{source}:{line}: {message}")
            )
            if text not in out:
                out.append(text)
        return out


def _unwrap_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def secret_kind(annotation: Any) -> SecretKind | None:
    """ "one" for a SecretStr field, "many" for tuple[SecretStr, ...], else None."""
    annotation = _unwrap_optional(annotation)
    if annotation is SecretStr:
        return "one"
    if get_origin(annotation) is tuple and get_args(annotation)[:1] == (SecretStr,):
        return "many"
    return None


def submodel(annotation: Any) -> tuple[type[BaseModel], bool] | None:
    """The config model a field holds and whether it is a list of them; None for plain values."""
    annotation = _unwrap_optional(annotation)
    many = get_origin(annotation) is tuple
    if many:
        annotation = get_args(annotation)[0]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, many
    return None


def secret_fields(model: type[BaseModel]) -> dict[str, SecretKind]:
    """Every key of `model` that may be given as `<key>_file`, shorthands included."""
    found: dict[str, SecretKind] = {}
    for name, info in model.model_fields.items():
        kind = secret_kind(info.annotation)
        if kind is not None:
            found[name] = kind
    for short, target in SHORTHANDS.get(model, {}).items():
        if target in found:
            found[short] = "one"
    return found


def allowed_keys(model: type[BaseModel]) -> list[str]:
    """What a user may write in a mapping for `model`: fields, shorthands and `*_file` forms."""
    keys = list(model.model_fields) + list(SHORTHANDS.get(model, {}))
    return keys + [f"{name}_file" for name in secret_fields(model)]


def _resolve_secret_files(
    data: dict[str, Any], model: type[BaseModel], path: KeyPath, state: _State
) -> dict[str, Any]:
    data = dict(data)
    for name, kind in secret_fields(model).items():
        file_key = f"{name}_file"
        if file_key in data:
            file_path = (*path, file_key)
            file_value = data.pop(file_key)
            if name in data:
                state.add(file_path, f"give {name} or {file_key}, not both")
            else:
                state.lines[(*path, name)] = state.line_of(file_path)
                state.renames[(*path, name)] = file_key
                data[name] = _read_secret_file(file_value, kind, file_path, state)
        value = data.get(name)
        if isinstance(value, str):
            state.secrets.append(value)
        elif isinstance(value, list):
            state.secrets.extend(item for item in value if isinstance(item, str))
    for short, target in SHORTHANDS.get(model, {}).items():
        if short in data and target not in data:
            state.lines.setdefault((*path, target), state.line_of((*path, short)))
            state.renames.setdefault((*path, target), state.renames.get((*path, short), short))
            state.singles.add((*path, target))
    for name, info in model.model_fields.items():
        inner = submodel(info.annotation)
        value = data.get(name)
        if inner is None or value is None:
            continue
        sub, many = inner
        if not many and isinstance(value, dict):
            data[name] = _resolve_secret_files(value, sub, (*path, name), state)
        elif many and isinstance(value, list):
            data[name] = [
                _resolve_secret_files(item, sub, (*path, name, index), state)
                if isinstance(item, dict)
                else item
                for index, item in enumerate(value)
            ]
    return data


def _read_secret_file(value: Any, kind: SecretKind, path: KeyPath, state: _State) -> Any:
    unread: Any = _UNREAD_SECRET if kind == "one" else [_UNREAD_SECRET]
    if not isinstance(value, str) or not value.strip():
        state.add(path, "should be the path of a file holding the secret")
        return unread
    file = state.base_dir / value
    try:
        text = file.read_text(encoding="utf-8-sig")
    except OSError as exc:
        state.add(path, f"cannot read {file}: {exc.strerror or type(exc).__name__}")
        return unread
    except UnicodeDecodeError:
        state.add(path, f"{file} is not UTF-8 text")
        return unread
    if kind == "one":
        secret = text.rstrip("\r\n")
        if not secret:
            state.add(path, f"{file} is empty")
            return unread
        return secret
    secrets = [line.strip() for line in text.splitlines() if line.strip()]
    if not secrets:
        state.add(path, f"{file} holds no secret (one per line)")
        return unread
    return secrets


def _clean_loc(loc: tuple[int | str, ...], data: Any) -> KeyPath:
    """Drop pydantic's union-member labels: keep a segment only where the data has keys or items."""
    out: list[str | int] = []
    current = data
    for segment in loc:
        if isinstance(segment, int):
            out.append(segment)
            ok = isinstance(current, list) and 0 <= segment < len(current)
            current = current[segment] if ok else None
        elif isinstance(current, dict) or current is None:
            out.append(segment)
            current = current.get(segment) if isinstance(current, dict) else None
    return tuple(out)


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    model: type[BaseModel] | None = SidecarConfig
    pending_list = False
    for segment in path:
        if model is None:
            return None
        if isinstance(segment, int):
            if not pending_list:
                return None
            pending_list = False
            continue
        info = model.model_fields.get(SHORTHANDS.get(model, {}).get(segment, segment))
        inner = submodel(info.annotation) if info is not None else None
        model, pending_list = inner if inner is not None else (None, False)
    return None if pending_list else model


def _message(error: ErrorDetails, path: KeyPath) -> str:
    kind = error["type"]
    if kind == "extra_forbidden" and path:
        model = _model_at(path[:-1])
        keys = allowed_keys(model) if model is not None else []
        close = difflib.get_close_matches(str(path[-1]), keys, n=1)
        if close:
            return f"unknown key (did you mean '{close[0]}'?)"
        return f"unknown key (allowed here: {', '.join(keys)})" if keys else "unknown key"
    if kind in _MESSAGES:
        return _MESSAGES[kind]
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if message.startswith("Input should be"):
        message = "should be" + message.removeprefix("Input should be")
    return message
