"""The audit examples in README.md and docs/audit.md are real events: schema-valid, with hashes that verify."""

from __future__ import annotations

import json
import re

import jsonschema

from gateway.observability.audit import event_hash, verify_lines
from tests.conftest import ROOT

SCHEMA = json.loads((ROOT / "docs" / "audit.schema.json").read_text())
AUDIT_DOC = (ROOT / "docs" / "audit.md").read_text()


def audit_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip().startswith('{"kind":"dcr_gateway_audit"')]


def test_readme_operations_shows_a_valid_audit_line():
    """README's Operations section has an example decision event that matches the schema and its own hash."""
    readme = (ROOT / "README.md").read_text()
    operations = readme.split("## Operations", 1)[1].split("\n## ", 1)[0]
    [line] = audit_lines(operations)
    event = json.loads(line)
    jsonschema.validate(event, SCHEMA)
    assert event["event"] == "decision" and event_hash(event) == event["hash"]


def test_audit_doc_example_chain_verifies():
    """docs/audit.md's example is a chain start that `audit verify` accepts, every event schema-valid."""
    lines = audit_lines(AUDIT_DOC)
    assert len(lines) >= 2
    for line in lines:
        jsonschema.validate(json.loads(line), SCHEMA)
    result = verify_lines(lines)
    assert result.ok and result.events == len(lines) and result.chains == 1
    tampered = [lines[0], lines[1].replace('"status":200', '"status":201')]
    assert not verify_lines(tampered).ok


def test_audit_doc_describes_every_field():
    """Every field of the schema (envelope and decision) has a row in docs/audit.md."""
    described = set()
    for cell in re.findall(r"^\| ([^|]+) \|", AUDIT_DOC, re.MULTILINE):
        described |= set(re.findall(r"`([a-z0-9_]+)`", cell))
    decision = SCHEMA["allOf"][0]["then"]["properties"]
    assert set(SCHEMA["properties"]) | set(decision) <= described
