"""The provider guides keep their promise: register, configure (three values), pitfalls.

Every guide has the three sections, every configuration block in it is valid as written (with
only the environment's two secrets supplied) and marks exactly three values to change.
"""

from __future__ import annotations

import re

import pytest

from sidecar.config.load import parse_config_text

from .conftest import ENV, GUIDES

NAMES = ["auth0", "entra-id", "forgerock", "github", "google", "keycloak", "okta"]
_YAML_BLOCK = re.compile(r"```yaml\n(.*?)```", re.DOTALL)


def config_blocks(name: str) -> list[str]:
    text = (GUIDES / f"{name}.md").read_text(encoding="utf-8")
    return [
        block
        for block in _YAML_BLOCK.findall(text)
        if block.lstrip().startswith(("version:", "# variant:"))
    ]


def test_every_provider_has_a_guide_listed_in_the_index() -> None:
    index = (GUIDES / "README.md").read_text(encoding="utf-8")
    assert sorted(path.stem for path in GUIDES.glob("*.md") if path.stem != "README") == NAMES
    for name in NAMES:
        assert f"({name}.md)" in index


@pytest.mark.parametrize("name", NAMES)
def test_guide_has_register_config_and_pitfalls(name: str) -> None:
    text = (GUIDES / f"{name}.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings[0].startswith("Register sidecar at")
    assert headings[1].startswith("Sidecar configuration")
    assert headings[-1] == "Pitfalls"
    assert "https://app.example.com/oauth2/callback" in text


@pytest.mark.parametrize("name", NAMES)
def test_every_config_is_valid_as_written_and_marks_three_values(name: str) -> None:
    blocks = config_blocks(name)
    assert blocks
    for block in blocks:
        assert block.count("# <- change") == 3, block
        config = parse_config_text(block, source=f"docs/providers/{name}.md", env=ENV)
        assert config.provider is not None
        assert config.server.public_url == "https://app.example.com"
