"""The JSON Schema for editors accepts what the loader accepts (sidecar.config.schema)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from sidecar.config.schema import build_json_schema

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = build_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(validator: jsonschema.protocols.Validator, data: Any) -> list[str]:
    return sorted(error.message for error in validator.iter_errors(data))


def test_schema_is_json_with_title_and_descriptions() -> None:
    schema = json.loads(json.dumps(build_json_schema()))
    assert schema["title"] == "sidecar configuration"
    listen = schema["$defs"]["ServerConfig"]["properties"]["listen"]
    assert listen["description"] == "Address and port sidecar serves on, as host:port."


def test_example_config_matches_the_schema(validator: jsonschema.protocols.Validator) -> None:
    data = yaml.safe_load((REPO / "config.example.yaml").read_text())
    assert errors(validator, data) == []


def test_secret_file_alternatives_are_allowed(validator: jsonschema.protocols.Validator) -> None:
    data = {
        "version": 1,
        "upstream": "http://127.0.0.1:8080",
        "provider": {"issuer": "https://a.example", "client_id": "x", "private_key_file": "k.pem"},
        "session": {"secrets_file": "keys"},
    }
    assert errors(validator, data) == []
    data["session"] = {"secret_file": "key"}
    assert errors(validator, data) == []


def test_session_needs_some_form_of_secret(validator: jsonschema.protocols.Validator) -> None:
    data = {"version": 1, "upstream": "http://x", "session": {"cookie_name": "s"}}
    assert errors(validator, data)


def test_unknown_keys_are_flagged(validator: jsonschema.protocols.Validator) -> None:
    data = {"version": 1, "upstream": "http://x", "server": {"lisen": "0.0.0.0:1"}}
    assert errors(validator, data) == [
        "Additional properties are not allowed ('lisen' was unexpected)"
    ]
