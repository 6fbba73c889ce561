"""The Dockerfile and .dockerignore, read as text (no Docker engine here): the image rules the chart relies on."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import helm_python as helm
import pytest

from .render import REPO, gateway_cli, render

COMPILERS = re.compile(r"\b(gcc|g\+\+|cc|c\+\+|clang|build-essential|make|cmake|rustc|cargo|python3?-dev|"
                       r"libc6-dev|apt-get|apt|apk)\b")


@dataclass
class Instruction:
    """One Dockerfile instruction: keyword, its argument text (continuations joined), heredoc bodies."""

    keyword: str
    args: str
    heredocs: list[str] = field(default_factory=list)

    def exec_form(self) -> list[str]:
        """The JSON (exec) form of ENTRYPOINT / CMD."""
        value = json.loads(self.args)
        assert isinstance(value, list)
        return [str(v) for v in value]


@dataclass
class Stage:
    """A FROM and what follows it."""

    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        """Instructions of a keyword."""
        return [i for i in self.instructions if i.keyword == keyword]


def parse(text: str) -> tuple[list[str], dict[str, str], list[Stage]]:
    """(parser directives, global ARG defaults, stages) of a Dockerfile."""
    lines = text.splitlines()
    directives = []
    while lines and lines[0].startswith("# ") and "=" in lines[0]:
        directives.append(lines.pop(0)[2:].strip())
    instructions: list[Instruction] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        while line.endswith("\\"):
            line = line[:-1]
            while i < len(lines) and lines[i].lstrip().startswith("#"):  # comments inside continuations
                i += 1
            line += " " + lines[i].strip()
            i += 1
        keyword, _, args = line.strip().partition(" ")
        instruction = Instruction(keyword.upper(), args.strip())
        for marker in re.findall(r"<<-?'?\"?(\w+)'?\"?", args):
            body = []
            while lines[i] != marker:
                body.append(lines[i])
                i += 1
            i += 1
            instruction.heredocs.append("\n".join(body) + "\n")
        instructions.append(instruction)
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            parts = ins.args.split()
            base = re.sub(r"\$\{(\w+)\}", lambda m: global_args.get(m[1], m[0]), parts[0])
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(base, name, []))
        elif not stages and ins.keyword == "ARG":
            key, _, default = ins.args.partition("=")
            global_args[key] = default
        elif stages:
            stages[-1].instructions.append(ins)
    return directives, global_args, stages


DOCKERFILE = (REPO / "Dockerfile").read_text()
DIRECTIVES, GLOBAL_ARGS, STAGES = parse(DOCKERFILE)
FINAL = STAGES[-1]


def test_buildkit_syntax_directive() -> None:
    """The heredoc COPY and RUN --mount need the BuildKit Dockerfile frontend, declared on line one."""
    assert DIRECTIVES[0] == "syntax=docker/dockerfile:1"


def test_multi_stage_on_slim_python_311() -> None:
    """A build stage and a final stage, both from python:3.11-slim."""
    assert len(STAGES) >= 2
    assert STAGES[0].name == "build"
    for stage in STAGES:
        assert stage.base.startswith("python:3.11-slim"), stage.base


def test_build_stage_builds_wheels() -> None:
    """The build stage makes wheels with `pip wheel` (the gateway's with the speed extra, and its dependencies)."""
    runs = " ".join(r.args for r in STAGES[0].all("RUN"))
    assert "pip wheel" in runs
    assert "[speed]" in runs


def test_final_stage_installs_the_wheel_offline_with_speed() -> None:
    """The final stage installs dcr-gateway[speed] from the build stage's wheels only (--no-index)."""
    (install,) = [r for r in FINAL.all("RUN") if "pip install" in r.args]
    assert "--mount=type=bind,from=build" in install.args
    assert "--no-index" in install.args
    assert '"dcr-gateway[speed]"' in install.args
    assert "pip uninstall --yes pip" in install.args
    assert not any("COPY" == i.keyword and "--from=build" in i.args for i in FINAL.instructions), \
        "wheels copied into the final stage would stay in a layer"


def test_no_compilers_in_the_final_stage() -> None:
    """Nothing in the final stage installs a toolchain (no package manager runs there at all)."""
    for run in FINAL.all("RUN"):
        assert not COMPILERS.search(run.args), run.args


def test_runs_as_numeric_non_root_user_matching_the_chart(chart: helm.Chart) -> None:
    """USER is a numeric uid:gid other than 0, the same ids the chart's securityContext asserts."""
    (user,) = FINAL.all("USER")
    uid, _, gid = user.args.partition(":")
    assert uid.isdigit() and gid.isdigit()
    assert int(uid) != 0 and int(gid) != 0
    pod_sc = render(chart).pod["securityContext"]
    assert (pod_sc["runAsUser"], pod_sc["runAsGroup"]) == (int(uid), int(gid))
    useradd = " ".join(r.args for r in FINAL.all("RUN"))
    assert f"--uid {uid}" in useradd and f"--gid {gid}" in useradd


def test_entrypoint_cmd_and_ports() -> None:
    """ENTRYPOINT dcr-gateway, CMD serve --config /etc/dcr-gateway/config.yaml, ports 8080 and 9090."""
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    (cmd,) = FINAL.all("CMD")
    assert entrypoint.exec_form() == ["dcr-gateway"]
    assert cmd.exec_form() == ["serve", "--config", "/etc/dcr-gateway/config.yaml"]
    exposed = {p for e in FINAL.all("EXPOSE") for p in e.args.split()}
    assert exposed == {"8080", "9090"}
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    assert "dcr-gateway" in scripts


def test_policies_are_the_default_policy_dir() -> None:
    """The shipped policies are copied to /etc/dcr-gateway/policies."""
    copies = [shlex.split(c.args) for c in FINAL.all("COPY")]
    assert ["policies/", "/etc/dcr-gateway/policies/"] in copies


def _default_config() -> str:
    (copy,) = [c for c in FINAL.all("COPY") if c.args.endswith("/etc/dcr-gateway/config.yaml")]
    (body,) = copy.heredocs
    return body


def test_image_default_config_passes_config_check_and_lints_the_policies(tmp_path: Path) -> None:
    """The config baked into the image is valid and the shipped policies lint against its trust anchors."""
    config = tmp_path / "config.yaml"
    config.write_text(_default_config())
    result = gateway_cli("config", "check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lint = gateway_cli("policy", "lint", str(REPO / "policies"), "--config", str(config))
    assert lint.returncode == 0, lint.stderr


def test_image_default_config_listens_on_all_interfaces() -> None:
    """Inside a container 127.0.0.1 is unreachable from outside: both listeners bind 0.0.0.0."""
    assert "public: {host: 0.0.0.0, port: 8080}" in _default_config()
    assert "admin: {host: 0.0.0.0, port: 9090}" in _default_config()


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or one of its parents decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        options = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(c, p) for c in candidates for p in options):
            ignored = not negate
    return ignored


DOCKERIGNORE = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/HEAD", ".sandbox/store.db", ".bench/run.json",
                                  ".pytest_cache/v/cache", ".mypy_cache/3.11/x.json", "tests/test_config.py",
                                  "gateway/__pycache__/cli.cpython-311.pyc", "helm/dcr-gateway/values.yaml",
                                  "dcr_gateway.egg-info/PKG-INFO", "bench/cli.py"])
def test_dockerignore_keeps_local_state_out(path: str) -> None:
    """Virtualenvs, git data, sandbox state, caches, tests and the chart never reach the build context."""
    assert _ignored(path, DOCKERIGNORE)


def test_dockerignore_keeps_what_the_dockerfile_copies() -> None:
    """Every COPY source from the context is in the context."""
    sources = []
    for stage in STAGES:
        for copy in stage.all("COPY"):
            words = [w for w in shlex.split(copy.args) if not w.startswith("--") and not w.startswith("<<")]
            sources.extend(words[:-1])
    assert sources
    for source in sources:
        assert not _ignored(source.rstrip("/") + ("/cli.py" if source == "gateway/" else ""), DOCKERIGNORE), source
    assert not _ignored("policies/dcr.yaml", DOCKERIGNORE)
