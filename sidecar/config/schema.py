"""The JSON Schema of the configuration file, for YAML editors (`sidecar config-schema`).

Built from `SidecarConfig` (pydantic's validation schema, with the field descriptions), then
widened to what the loader accepts on top of the model: `<name>_file` for every secret field and
the `secret` / `secret_file` shorthand of `session`. Numbers and booleans stay typed, so a `${VAR}`
written in their place passes the loader but not the schema. Keys stay closed
(`additionalProperties: false`), so editors flag typos just as `check-config` does.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from sidecar.config.load import SHORTHANDS, secret_fields, submodel
from sidecar.config.model import SidecarConfig

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def build_json_schema() -> dict[str, Any]:
    """The schema as a JSON-ready dict."""
    schema = SidecarConfig.model_json_schema(mode="validation")
    definitions: dict[str, Any] = schema.get("$defs", {})
    for model in _models(SidecarConfig):
        target = schema if model is SidecarConfig else definitions.get(model.__name__)
        if target is not None:
            _add_alternatives(target, model)
    return {
        "$schema": SCHEMA_DIALECT,
        **schema,
        "title": "sidecar configuration",
        "description": (
            "Configuration file of sidecar, the authentication sidecar proxy. "
            "Check a file with `sidecar check-config -c FILE`."
        ),
    }


def _models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for info in model.model_fields.values():
        inner = submodel(info.annotation)
        if inner is not None and inner[0] not in found:
            found.extend(m for m in _models(inner[0]) if m not in found)
    return found


def _add_alternatives(target: dict[str, Any], model: type[BaseModel]) -> None:
    properties: dict[str, Any] = target.setdefault("properties", {})
    required: list[str] = target.get("required", [])
    shorthands = SHORTHANDS.get(model, {})
    for short, field_name in shorthands.items():
        properties[short] = {
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "title": short.replace("_", " ").title(),
            "description": f"Shorthand for a single-item `{field_name}` list.",
        }
    for name in secret_fields(model):
        properties[f"{name}_file"] = {
            "type": "string",
            "title": f"{name.replace('_', ' ').title()} File",
            "description": (
                f"Path of a file holding `{name}` (relative to the config file's directory), "
                "e.g. a mounted Kubernetes Secret. Give this or the key itself, not both."
            ),
        }
    for name in [n for n in required if n in secret_fields(model)]:
        # A required secret may come from any of its spellings: require one of them.
        spellings = [name, f"{name}_file"]
        spellings += [s for s, f in shorthands.items() if f == name]
        spellings += [f"{s}_file" for s, f in shorthands.items() if f == name]
        required.remove(name)
        target["anyOf"] = [{"required": [spelling]} for spelling in spellings]
    if "required" in target and not required:
        del target["required"]
