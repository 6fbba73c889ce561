"""Policy directory → validated, compiled PolicySet; every error names file, line and key."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..checks import REGISTRY, ParamError
from ..checks.base import Check
from ..checks.services import Services
from ..config import CheckMode
from ..config.schema import iter_errors, key_path
from ..config.yamlsource import YamlDocument, YamlSourceError, parse_yaml
from .engine import BodyLimits, CommonCheckParams, CompiledPolicy, PolicySet, StoreErrorMode, split_common
from .model import PolicyFile
from .router import Router, Template, TemplateError

TEST_SUFFIXES = ("_test.yaml", "_test.yml")


class PolicyError(Exception):
    """The policy set is invalid; `messages` are `file:line: key: problem` lines."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


@dataclass(frozen=True, slots=True)
class PolicySource:
    """The raw files of a policy directory, read in one go (so a reload sees one consistent snapshot)."""

    directory: Path
    files: tuple[tuple[Path, str], ...]  # (path, text) of policy files, sorted
    tests: tuple[tuple[Path, str], ...]  # (path, text) of *_test.yaml files

    @property
    def version(self) -> str:
        """Content hash of the policy files: the policy-set version in metrics and audit events."""
        h = hashlib.sha256()
        for path, text in self.files:
            h.update(path.name.encode())
            h.update(b"\0")
            h.update(text.encode())
            h.update(b"\0")
        return h.hexdigest()[:12]


def read_source(directory: Path) -> PolicySource:
    """Read every *.yaml / *.yml file directly in `directory` (hidden entries, e.g. ConfigMap `..data`, skipped)."""
    if not directory.is_dir():
        raise PolicyError([f"{directory}: policy directory not found"])
    files: list[tuple[Path, str]] = []
    tests: list[tuple[Path, str]] = []
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or path.suffix not in (".yaml", ".yml") or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError([f"{path}: cannot read: {exc}"]) from None
        (tests if path.name.endswith(TEST_SUFFIXES) else files).append((path, text))
    return PolicySource(directory, tuple(files), tuple(tests))


def _err(doc: YamlDocument, loc: Sequence[str | int], message: str) -> str:
    line = doc.line_of(loc)
    return f"{doc.path}:{line or 1}: {key_path(loc)}: {message}"


@dataclass(frozen=True, slots=True)
class _Built:
    check: Check  # type: ignore[type-arg]
    on_store_error: StoreErrorMode
    mode: CheckMode


def _build_check(
    doc: YamlDocument, loc: list[str | int], entry: Any, services: Services, errors: list[str]
) -> _Built | None:
    if not isinstance(entry, dict) or len(entry) != 1:
        errors.append(_err(doc, loc, "expected a one-key mapping `check_name: {parameters}`"))
        return None
    (name, raw), = entry.items()
    cls = REGISTRY.get(name)
    if cls is None:
        errors.append(_err(doc, [*loc, name], f"unknown check; valid checks: {', '.join(sorted(REGISTRY))}"))
        return None
    own, common_raw = split_common(raw if raw is not None else {})
    try:
        params = cls.Params.model_validate(own)
        common = CommonCheckParams.model_validate(common_raw)
    except ValidationError as exc:
        for dotted, line, msg in iter_errors(exc, doc, base_loc=[*loc, name]):
            errors.append(f"{doc.path}:{line or 1}: {dotted}: {msg}")
        return None
    if common.on_store_error == "fail_open" and not cls.store_fail_open:
        allowed = ", ".join(sorted(n for n, c in REGISTRY.items() if c.store_fail_open)) or "none"
        errors.append(_err(doc, [*loc, name, "on_store_error"],
                           f"fail_open is not allowed for {name}: a store failure there must refuse the request "
                           f"(checks that allow fail_open: {allowed})"))
        return None
    mode = services.check_mode(name, common.mode)
    if mode.source == "profile" and common.mode == "audit":
        errors.append(_err(doc, [*loc, name, "mode"],
                           f"{name} cannot run in audit mode in this profile: it authenticates the requests "
                           "(config policies.profile; docs/policies.md#profiles)"))
        return None
    try:
        check = cls(params, services)
    except ParamError as exc:
        errors.append(_err(doc, [*loc, name, *exc.loc], exc.message))
        return None
    check.audit_only = mode.audit  # the one audit-mode switch the engine reads (as config check_modes sets it)
    return _Built(check, common.on_store_error, mode)


def run_order(checks: Sequence[Check]) -> list[int]:  # type: ignore[type-arg]
    """The order the engine runs a policy's checks in, as positions in the file: verifying checks first, then
    those that write state when they refuse, then those that consume state when they pass (`replay`), each
    group in the file's order. So state is only written for a request every verifying check passed, whatever
    order the file lists them in."""
    return sorted(range(len(checks)), key=lambda j: checks[j].records_state)


def compile_policies(source: PolicySource, services: Services, *, unmatched_status: int = 404) -> PolicySet:
    """Validate and compile a whole policy directory; raise PolicyError listing every problem."""
    errors: list[str] = []
    compiled: list[CompiledPolicy] = []
    router: Router[CompiledPolicy] = Router()
    names: dict[str, str] = {}
    if not source.files:
        raise PolicyError([f"{source.directory}: no policy files (*.yaml)"])
    unknown = sorted(set(services.check_modes) - set(REGISTRY))
    if unknown:
        raise PolicyError([f"config policies.check_modes: unknown check {', '.join(unknown)}; "
                           f"valid checks: {', '.join(sorted(REGISTRY))}"])
    for path, text in source.files:
        try:
            doc = parse_yaml(text, path)
        except YamlSourceError as exc:
            errors.append(str(exc))
            continue
        try:
            spec = PolicyFile.model_validate(doc.data if doc.data is not None else {})
        except ValidationError as exc:
            errors.extend(f"{path}:{line or 1}: {dotted}: {msg}" for dotted, line, msg in iter_errors(exc, doc))
            continue
        for i, policy in enumerate(spec.policies):
            ploc: list[str | int] = ["policies", i]
            where = f"{path}:{doc.line_of(ploc) or 1}"
            if policy.name in names:
                first = names[policy.name]
                errors.append(_err(doc, [*ploc, "name"], f"duplicate policy name (first defined at {first})"))
                continue
            names[policy.name] = where
            built = [
                _build_check(doc, [*ploc, "checks", j], entry, services, errors)
                for j, entry in enumerate(policy.checks)
            ]
            checks = [b for b in built if b is not None]
            if len(checks) != len(built):
                continue
            stream = policy.stream_body
            if stream is not None and any(b.check.needs_body for b in checks):
                errors.append(_err(doc, [*ploc, "stream_body"],
                                   "a policy that streams its body cannot have a check that reads the body"))
                continue
            order = run_order([b.check for b in checks])
            checks = [checks[j] for j in order]
            try:
                template = Template.parse(policy.match.path)
            except TemplateError as exc:
                errors.append(_err(doc, [*ploc, "match", "path"], str(exc)))
                continue
            cp = CompiledPolicy(
                name=policy.name,
                description=policy.description,
                mode=policy.mode,
                template=template.text,
                methods=tuple(policy.match.methods),
                checks=tuple(b.check for b in checks),
                source=where,
                on_store_error=tuple(b.on_store_error for b in checks),
                modes=tuple(b.mode for b in checks),
                declared=tuple(order),
                stream_body=None if stream is None else BodyLimits(stream.max_bytes, stream.idle_seconds,
                                                                   stream.total_seconds),
                content_codings=frozenset(c.lower() for c in policy.accept_content_encoding),
                allow_body_on=frozenset(policy.allow_body_on),
            )
            try:
                router.add(template, cp.methods, cp)
            except TemplateError as exc:
                errors.append(_err(doc, [*ploc, "match"], f"route {exc}"))
                continue
            compiled.append(cp)
    if errors:
        raise PolicyError(errors)
    return PolicySet(source.version, tuple(compiled), router, unmatched_status)


def load_policies(directory: Path, services: Services, *, unmatched_status: int = 404) -> PolicySet:
    """Read and compile a policy directory."""
    return compile_policies(read_source(directory), services, unmatched_status=unmatched_status)
