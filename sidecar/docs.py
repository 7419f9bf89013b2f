"""The configuration reference (`docs/configuration.md`), generated from the config model.

`build_reference()` walks `SidecarConfig` and its sections and writes, for every key path
(`server.listen`, `upstreams[].url`, `policies.<name>.emails`), its type, default and the field's
description — the model is the one source, so the reference cannot drift from what the loader
accepts. Secret keys also list their `<key>_file` form; shorthands (`session.secret`) are noted.
`python -m sidecar.docs` rewrites the file; `python -m sidecar.docs --check` exits 1 when the
committed file is stale (the test suite runs the same comparison).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from sidecar.config.load import SHORTHANDS, secret_fields
from sidecar.config.model import SidecarConfig

REFERENCE_PATH = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
REGENERATE = "python -m sidecar.docs"

_HEADER = f"""# Configuration reference

<!-- Generated from sidecar/config/model/ by `{REGENERATE}`; do not edit by hand. -->

sidecar reads one YAML file (`sidecar run -c FILE`, or `$SIDECAR_CONFIG`). Keys are snake_case and
unknown keys are errors. `${{VAR}}` and `${{VAR:-default}}` in string values are taken from the
environment. Every secret may instead be read from a file with `<key>_file` (a path relative to
the config file's directory), which is how Kubernetes Secrets are mounted. Check a file with
`sidecar check-config -c FILE` (every problem, with its line), and a whole setup with
`sidecar doctor -c FILE`. Editors can validate while you type with the JSON Schema from
`sidecar config-schema`.

The smallest useful file:

```yaml
version: 1
upstream: http://127.0.0.1:8080
provider:
  issuer: https://login.example.com/realms/main
  client_id: my-app
  client_secret_file: /etc/sidecar/secrets/client_secret
session:
  secret_file: /etc/sidecar/secrets/session_secret   # from `sidecar secret`
server:
  public_url: https://app.example.com
```

Live reload: with `server.watch_config` (the default) sidecar re-reads this file within seconds of
a change, and on SIGHUP; an invalid file is refused and the running configuration kept. Keys marked
*restart* below only take effect after a restart.
"""

_RESTART_ONLY = {
    "server.listen",
    "server.internal_listen",
    "server.workers",
    "server.max_request_line_bytes",
    "server.max_header_bytes",
    "server.max_headers",
    "server.header_read_timeout_seconds",
    "server.shutdown_grace_seconds",
}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) != len(get_args(annotation)):
            inner = args[0] if len(args) == 1 else Union[tuple(args)]  # noqa: UP007
            return inner, True
    return annotation, False


def describe_type(annotation: Any) -> str:
    """A reader's name for a field type: string, integer, list of strings, one of a | b, ..."""
    annotation, optional = _unwrap_optional(annotation)
    text = _describe(annotation)
    return f"{text} or null" if optional else text


def _describe(annotation: Any) -> str:
    origin = get_origin(annotation)
    args = get_args(annotation)
    if annotation is str:
        return "string"
    if annotation is bool:
        return "boolean"
    if annotation is int:
        return "integer"
    if annotation is float:
        return "number"
    if annotation is SecretStr:
        return "secret string"
    if annotation in (ipaddress.IPv4Network, ipaddress.IPv6Network):
        return "IP network"
    if origin is Literal:
        return "one of " + " \\| ".join(f"`{value}`" for value in args)
    if origin is tuple:
        return f"list of {_plural(_describe(args[0]))}"
    if origin is dict:
        return f"mapping of {_describe(args[0])} to {_describe(args[1])}"
    if origin in (Union, types.UnionType):
        names = [_describe(arg) for arg in args]
        if set(names) == {"IP network"}:
            return "IP network"
        return " or ".join(dict.fromkeys(names))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return str(annotation).replace("typing.", "")


def _plural(name: str) -> str:
    if name.endswith(("mapping", "string", "integer", "number", "boolean", "network")):
        return name + "s"
    return name


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "*required*"
    factory = info.default_factory
    value = factory() if factory is not None else info.default  # type: ignore[call-arg]
    if value is PydanticUndefined:
        return "*required*"
    if isinstance(value, BaseModel):
        return "*see below*"
    if value is None:
        return "null"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value, default=str)}`"


def _model_of(annotation: Any) -> tuple[type[BaseModel], str] | None:
    """A section model held by a field and how its key path continues ('', '[]', '.<name>')."""
    annotation, _ = _unwrap_optional(annotation)
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, ""
    if origin is tuple:
        inner = get_args(annotation)[0]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, "[]"
    if origin is dict:
        inner = get_args(annotation)[1]
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            return inner, ".<name>"
    return None


def _rows(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, str, str, str]]:
    secrets = secret_fields(model)
    shorthands = SHORTHANDS.get(model, {})
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        description = " ".join((info.description or "").split())
        if name in secrets and f"{name}_file" not in description:
            description += f" Or `{name}_file`: a file holding it."
        for short, target in shorthands.items():
            if target == name and f"{short}_file" not in description:
                description += f" Shorthand: `{short}` (or `{short}_file`) for a single value."
        if path in _RESTART_ONLY:
            description += " *Restart* to change."
        description = description.replace("<", "&lt;").replace(">", "&gt;")
        yield path, describe_type(info.annotation), _default(info), description


def _sections(
    model: type[BaseModel], prefix: str, title: str
) -> Iterator[tuple[str, type[BaseModel], str]]:
    yield title, model, prefix
    for name, info in model.model_fields.items():
        found = _model_of(info.annotation)
        if found is not None:
            inner, joiner = found
            path = f"{prefix}{name}{joiner}"
            yield from _sections(inner, path + ".", path)


def build_reference() -> str:
    """The whole reference document (Markdown)."""
    out = [_HEADER]
    for title, model, prefix in _sections(SidecarConfig, "", "Top level"):
        out.append(f"\n## {title if prefix else 'Top level'}\n")
        doc = " ".join((model.__doc__ or "").split())
        if doc:
            out.append(f"{doc}\n")
        out.append("| Key | Type | Default | Description |")
        out.append("|---|---|---|---|")
        for path, type_name, default, description in _rows(model, prefix):
            cells = [f"`{path}`", type_name, default, description]
            out.append(
                "| "
                + " | ".join(cell.replace("|", "\\|").replace("\\\\|", "\\|") for cell in cells)
                + " |"
            )
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sidecar.docs", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    parser.add_argument("--output", type=Path, default=REFERENCE_PATH)
    args = parser.parse_args(argv)
    text = build_reference()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run `{REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
