"""docs/: the configuration reference is generated from the model and must be current; the guides
point at files and commands that exist."""

from __future__ import annotations

import re
import types
from pathlib import Path
from typing import Union, get_args, get_origin

from pydantic import BaseModel

from sidecar.cli import COMMANDS
from sidecar.config.model import SidecarConfig
from sidecar.docs import REFERENCE_PATH, REGENERATE, build_reference, describe_type, main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GUIDES = ["kubernetes.md", "docker.md", "migrating-from-oauth2-proxy.md", "troubleshooting.md"]


def test_configuration_reference_is_current() -> None:
    committed = REFERENCE_PATH.read_text(encoding="utf-8") if REFERENCE_PATH.exists() else ""
    assert committed == build_reference(), (
        f"docs/configuration.md is stale: the config model changed. Run `{REGENERATE}` and "
        "commit the result with the model change."
    )


def _key_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        path = prefix + name
        paths.append(path)
        annotation = info.annotation
        for inner, joiner in _nested(annotation):
            paths += _key_paths(inner, f"{path}{joiner}.")
    return paths


def _nested(annotation: object) -> list[tuple[type[BaseModel], str]]:
    found = []
    union = get_origin(annotation) in (Union, types.UnionType)
    for arg in get_args(annotation) if union else (annotation,):
        joiner = ""
        inner = arg
        args = get_args(arg)
        origin = get_origin(arg)
        if origin is tuple and args:
            inner, joiner = args[0], "[]"
        elif origin is dict and len(args) == 2:
            inner, joiner = args[1], ".<name>"
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            found.append((inner, joiner))
    return found


def test_every_key_path_of_the_model_is_documented() -> None:
    reference = build_reference()
    documented = set(re.findall(r"^\| `([^`]+)` \|", reference, flags=re.MULTILINE))
    missing = [path for path in _key_paths(SidecarConfig) if path not in documented]
    assert missing == []
    assert "`session.secrets`" in reference and "secret_file" in reference
    assert "`provider.client_secret`" in reference and "client_secret_file" in reference


def test_types_read_like_words() -> None:
    from sidecar.config.model import ServerConfig, SessionConfig

    assert describe_type(ServerConfig.model_fields["listen"].annotation) == "string"
    assert describe_type(ServerConfig.model_fields["public_url"].annotation) == "string or null"
    assert describe_type(ServerConfig.model_fields["trusted_proxies"].annotation) == (
        "list of IP networks"
    )
    assert describe_type(SessionConfig.model_fields["cookie_samesite"].annotation) == (
        "one of `Lax` \\| `Strict` \\| `None`"
    )


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    target = tmp_path / "configuration.md"
    assert main(["--output", str(target)]) == 0
    assert main(["--check", "--output", str(target)]) == 0
    target.write_text(target.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert main(["--check", "--output", str(target)]) == 1


def test_guides_exist_and_their_repository_links_resolve() -> None:
    for name in GUIDES:
        text = (DOCS / name).read_text(encoding="utf-8")
        assert text.startswith("# ")
        for link in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
            if link.startswith(("http://", "https://", "mailto:")):
                continue
            assert (DOCS / link).resolve().exists(), f"{name} links to missing {link}"


def test_guides_name_only_commands_that_exist() -> None:
    for name in GUIDES:
        text = (DOCS / name).read_text(encoding="utf-8")
        inline = re.findall(r"`sidecar ([a-z][a-z-]*)", text)
        blocks = "\n".join(re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.M))
        lines = re.findall(r"^\s*sidecar ([a-z][a-z-]*)", blocks, flags=re.MULTILINE)
        for command in inline + lines:
            assert command in COMMANDS, f"{name} mentions `sidecar {command}`"


def test_migration_table_maps_flags_to_documented_keys() -> None:
    reference = build_reference()
    documented = set(re.findall(r"^\| `([^`]+)` \|", reference, flags=re.MULTILINE))
    text = (DOCS / "migrating-from-oauth2-proxy.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `--([a-z0-9-]+)` \| ([^|]*) \|", text, flags=re.MULTILINE)
    assert len(rows) >= 40
    for flag, target in rows:
        for key in re.findall(r"`([a-z_]+(?:\[\]|\.<name>)?(?:\.[a-z_]+(?:\[\])?)+)`", target):
            assert key in documented, f"--{flag} maps to undocumented key {key}"
