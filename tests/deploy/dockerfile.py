"""Reads the repository's Dockerfile into stages of (instruction, arguments) for the deploy tests.

Just enough of the format for our own file: comments, `\\` line continuations, `FROM ... AS name`
starting a stage. Anything cleverer (heredocs, parser directives other than `syntax`) is not used
by the Dockerfile and not supported here.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        """Arguments of every `keyword` instruction in this stage, in order."""
        return [args for key, args in self.instructions if key == keyword.upper()]

    def one(self, keyword: str) -> str:
        found = self.all(keyword)
        assert len(found) == 1, f"expected one {keyword} in stage {self.name or self.base}: {found}"
        return found[0]

    def env(self) -> dict[str, str]:
        """Variables set by ENV KEY=VALUE instructions (values unquoted, $PATH left as written)."""
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for item in shlex.split(args):
                key, _, value = item.partition("=")
                values[key] = value
        return values


def logical_lines(text: str) -> list[str]:
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    assert not current, "the Dockerfile ends inside a continued line"
    return lines


def read_stages(path: Path = DOCKERFILE) -> list[Stage]:
    stages: list[Stage] = []
    for line in logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        args = args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form ENTRYPOINT/CMD (or a HEALTHCHECK's CMD part)."""
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def healthcheck_command(stage: Stage) -> tuple[dict[str, str], list[str]]:
    """A HEALTHCHECK's --options and its exec-form command."""
    args = stage.one("HEALTHCHECK")
    options: dict[str, str] = {}
    words = args.split(" ")
    while words and words[0].startswith("--"):
        key, _, value = words.pop(0)[2:].partition("=")
        options[key] = value
    while words and not words[0]:
        words.pop(0)
    assert words[0] == "CMD", f"HEALTHCHECK without CMD: {args}"
    return options, exec_form(" ".join(words[1:]))


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as a regex (Go filepath.Match plus `**`; `*` stops at `/`)."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out)


def dockerignore_rules(path: Path = REPO / ".dockerignore") -> list[tuple[bool, re.Pattern[str]]]:
    rules = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        keep = line.startswith("!")
        pattern = line[1:] if keep else line
        rules.append((keep, _pattern_regex(pattern.strip("/"))))
    return rules


def is_dockerignored(relpath: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `relpath` out of the build context: the last matching rule wins, and
    a rule matching a parent directory matches everything below it."""
    parts = relpath.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for keep, regex in rules:
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            ignored = not keep
    return ignored


def build_builder_context(dest: Path) -> Path:
    """Lay out in `dest` what the builder stage's COPY lines put in its WORKDIR, taking files from
    the repository as Docker would (minus .dockerignore'd ones). Returns `dest`."""
    builder = read_stages()[0]
    assert builder.one("WORKDIR") == "/src"
    rules = dockerignore_rules()
    for args in builder.all("COPY"):
        words = args.split()
        assert not words[0].startswith("--"), f"unsupported COPY option: {args}"
        sources, target = words[:-1], words[-1]
        for source in sources:
            origin = REPO / source
            assert origin.exists(), f"COPY {source}: not in the repository"
            assert not is_dockerignored(source, rules), f"COPY {source}: .dockerignore drops it"
            if origin.is_dir():
                base = dest / target
                for file in sorted(origin.rglob("*")):
                    rel = file.relative_to(REPO).as_posix()
                    if file.is_file() and not is_dockerignored(rel, rules):
                        copy_to = base / file.relative_to(origin)
                        copy_to.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(file, copy_to)
            else:
                copy_to = dest / target / origin.name if target.endswith("/") else dest / target
                copy_to.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, copy_to)
    return dest
