"""The reason registries: every check declares its reasons in one table, denials come only from them, and
docs/policies.md lists exactly the registered reasons with their status and error code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from gateway.checks import REGISTRY
from gateway.checks.body_size import BodySize, BodySizeParams
from gateway.config import resolve_check_mode
from gateway.reasons import (
    JOSE_CODES,
    REFUSALS,
    Answer,
    BodyRefusals,
    Challenge,
    Reason,
    Reasons,
    StoreRefusals,
    UnregisteredReason,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "policies.md"
SECTION = "## Reason codes"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:_[a-z0-9]+)*$")

Row = tuple[str, str, int, str, Challenge, bool]
"""(check, reason, status, error, WWW-Authenticate, answer set by a setting)."""
_CHALLENGES = {Challenge.NONE: "—", Challenge.BEARER: "`Bearer`, no error", Challenge.BEARER_ERROR: "`Bearer`, `error`"}
_WHO = {StoreRefusals: "(the check whose store failed)", BodyRefusals: "(none: an error answer)"}


def registries() -> list[tuple[str, type[Reasons]]]:
    """Every reason table: each check kind's, then those of the refusals made outside checks."""
    tables = [(name, kind.reasons) for name, kind in sorted(REGISTRY.items())]
    return tables + [(table.check, table) for table in REFUSALS]


def registered() -> set[Row]:
    """Every registered reason as a doc row."""
    return {(check, r.name, r.status, r.error, r.answer.challenge, bool(r.configurable))
            for check, table in registries() for r in table.all()}


def render() -> str:
    """The reason table docs/policies.md should hold (printed by a failing test, to paste)."""
    lines = ["| check | reason | status | error | WWW-Authenticate |", "| --- | --- | --- | --- | --- |"]
    for check, table in registries():
        who = f"`{check}`" if check else _WHO[table]
        groups: dict[tuple[Answer, str], list[str]] = {}
        for r in table.all():
            if r.jose is None:
                groups.setdefault((r.answer, r.configurable), []).append(r.name)
        for (answer, param), names in groups.items():
            lines.append(_row(who, ", ".join(f"`{n}`" for n in names), answer, param))
        for family in table.families():
            but = ", ".join(f"`{c}`" for c in sorted(family.excluded))
            cell = f"`{family.prefix}<code>` for every [JOSE code](#jose-codes)" + (f" but {but}" if but else "")
            lines.append(_row(who, cell, family.answer, ""))
    return "\n".join(lines)


def _row(who: str, reasons: str, answer: Answer, param: str) -> str:
    status, error, challenge = str(answer.status), f"`{answer.error}`", _CHALLENGES[answer.challenge]
    if param:
        status += " (set by " + ", ".join(f"`{p.strip()}`" for p in param.split(",")) + ")"
        error += " (default)"
    return f"| {who} | {reasons} | {status} | {error} | {challenge} |"


def _section(text: str) -> str:
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    return text[start:] if end < 0 else text[start:end]


def documented() -> tuple[set[Row], list[str]]:
    """The rows of the reason table of docs/policies.md, the JOSE-family rows expanded; and the JOSE codes its
    `JOSE codes` table lists."""
    section = _section(DOC.read_text(encoding="utf-8"))
    rows: set[Row] = set()
    codes: list[str] = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
        if len(cells) == 5 and not set(cells[0]) <= {"-", " "} and cells[0] != "check":
            who = re.fullmatch(r"`([a-z_]+)`", cells[0])
            check = who.group(1) if who else ""
            status = int(re.findall(r"\b\d{3}\b", cells[2])[0])
            error = re.findall(r"`([a-z_]+)`", cells[3])[0]
            challenge = {v: k for k, v in _CHALLENGES.items()}[cells[4]]
            param = "set by" in cells[2]
            head, _, but = cells[1].partition(" but ")
            names = re.findall(r"`([a-z0-9_]+)`", head)
            family = re.search(r"`([a-z0-9_]+)<code>`", head)
            if family:
                excluded = set(re.findall(r"`([a-z0-9_]+)`", but))
                names += [family.group(1) + c for c in JOSE_CODES if c not in excluded]
            rows.update((check, n, status, error, challenge, param) for n in names)
        elif len(cells) == 2 and cells[0].startswith("`"):
            codes.append(cells[0].strip("`"))
    return rows, codes


def test_every_check_kind_declares_its_reasons() -> None:
    """Each check kind has a reason table with snake_case names and at least one reason."""
    for name, kind in REGISTRY.items():
        assert issubclass(kind.reasons, Reasons), name
        assert kind.reasons.by_name, name
    for _, table in registries():
        for r in table.all():
            assert _NAME.match(r.name), r.name
            assert r.error and _NAME.match(r.error), r
            assert 400 <= r.status <= 599, r


def test_docs_list_exactly_the_registered_reasons() -> None:
    """docs/policies.md's reason table names every registered reason, with its status and error code, and no other."""
    rows, _ = documented()
    expected = registered()
    assert rows == expected, (
        f"\nmissing from the doc: {sorted(expected - rows)}\nnot registered: {sorted(rows - expected)}\n"
        f"the table should be:\n{render()}"
    )


def test_docs_list_the_jose_codes() -> None:
    """The doc's JOSE code table is gateway/jose/errors.py's closed set, in its order."""
    _, codes = documented()
    assert codes == list(JOSE_CODES)


def _sources() -> str:
    """The gateway's code but gateway/reasons.py (where the reasons are declared, not used)."""
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "gateway").rglob("*.py"))
                     if p != ROOT / "gateway" / "reasons.py")


def test_every_reason_is_produced_somewhere() -> None:
    """Each declared reason is used by name in the gateway's code; a reason of a JOSE family is reachable only
    through its code, and the family itself is looked up somewhere (`R.token[exc.reason]`)."""
    code = _sources()
    unused = []
    for check, table in registries():
        for family in table.families():
            if not re.search(rf"\.{family.attr}\[", code):
                unused.append(f"{check}: family {family.attr}")
        for r in table.all():
            if r.jose is not None:
                continue  # documented as `<prefix><code>`: reachable only through a JOSE error code
            if not re.search(rf"\.{r.name}\b(?! *=)", code):
                unused.append(f"{check}: {r.name}")
    assert not unused


def test_only_the_registries_build_denials() -> None:
    """No module builds a Denial itself: Check.deny and denial_for (gateway/checks/base.py) are the only ways."""
    offenders = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "gateway").rglob("*.py"))
                 if p.name != "base.py" and re.search(r"\bDenial\(", p.read_text(encoding="utf-8"))]
    assert offenders == []


def _check() -> BodySize:
    services = type("S", (), {"check_mode": lambda self, check, policy=None: resolve_check_mode(check, policy, {})})()
    return BodySize(BodySizeParams(max_bytes=10), services)  # type: ignore[arg-type]


def test_deny_refuses_a_reason_its_check_does_not_declare() -> None:
    """A reason of another table (even one with the same name) fails loudly, never becomes a denial."""
    check = _check()
    foreign = REGISTRY["client_id_header"].reasons.by_name["token_missing"]
    with pytest.raises(UnregisteredReason):
        check.deny(foreign, "x")
    same_name = Reason(413, "request_too_large", name="body_too_large")
    with pytest.raises(UnregisteredReason):
        check.deny(same_name, "x")


def test_deny_keeps_a_fixed_answer_fixed() -> None:
    """Only a reason whose answer a parameter sets takes another answer."""
    check = _check()
    reason = check.reasons.by_name["body_missing"]
    with pytest.raises(UnregisteredReason):
        check.deny(reason, "x", answer=Answer(401, "invalid_token"))
    denial = check.deny(reason, "request body is required")
    assert (denial.status, denial.error, denial.reason, denial.check) == (400, "invalid_request", "body_missing",
                                                                         "body_size")


def test_a_jose_family_answers_every_code_but_those_it_excludes() -> None:
    """`token_<code>` exists for every JOSE code except jwks_unavailable (answered 503 by the check)."""
    table = REGISTRY["bearer_token"].reasons
    family = table.families()[0]
    assert set(family.by_code) == set(JOSE_CODES) - {"jwks_unavailable"}
    assert family["expired"] is table.by_name["token_expired"]
    assert family["malformed"] is table.by_name["token_malformed"]  # declared once, also a JOSE code
    with pytest.raises(KeyError):
        family["jwks_unavailable"]


def _expectations(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        found = [node["expect"]] if isinstance(node.get("expect"), dict) else []
        return found + [e for v in node.values() for e in _expectations(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expectations(v)]
    return []


def test_shipped_policy_tests_expect_registered_reasons() -> None:
    """Every `reason` a shipped policy test case expects is registered (of its `check`, when the case names one),
    with the status and error code the case expects."""
    wrong, checked = [], 0
    for path in sorted((ROOT / "policies").rglob("*_test.yaml")):
        for expect in _expectations(yaml.safe_load(path.read_text(encoding="utf-8"))):
            if "reason" not in expect:
                continue
            checked += 1
            candidates = [r for check, table in registries() if expect.get("check", check) == check
                          for r in table.all() if r.name == expect["reason"]]
            if not any(r.configurable or (expect.get("status", r.status) == r.status
                                          and expect.get("error", r.error) == r.error) for r in candidates):
                wrong.append(f"{path.name}: {expect}")
    assert checked > 20 and not wrong, (checked, wrong)
