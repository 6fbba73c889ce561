"""The audit trail: one schema-valid, hash-chained event per request; `audit verify` finds tampering."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from gateway.observability import clock
from gateway.observability.audit import AuditLog, verify_file
from tests.conftest import ROOT, SHIPPED_POLICIES
from tests.policy.test_enforcement import REGISTER, auth

SCHEMA = json.loads((ROOT / "docs" / "audit.schema.json").read_text())


def audit_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_one_valid_event_per_request(bank_gw_audit, tmp_path):
    """Mixed traffic yields exactly one decision event per request, each valid against the JSON Schema."""
    bank, gw, path = await bank_gw_audit()
    token = bank.token()
    requests = [
        ("GET", f"{REGISTER}/client-a", auth(token)),          # allow
        ("GET", f"{REGISTER}/client-a", {}),                    # deny: no token
        ("GET", f"{REGISTER}/client-a", auth(token, "x")),      # deny: client_id mismatch
        ("GET", "/nowhere", {}),                                # deny: no policy
        ("PATCH", f"{REGISTER}/client-a", {}),                  # deny: method
        ("DELETE", f"{REGISTER}/client-a", auth(token)),        # allow, 204, revokes
        ("GET", f"{REGISTER}/client-a", auth(token)),           # deny: revoked
    ]
    for method, url, headers in requests:
        resp = await gw.client.request(method, url, headers=headers)
        await resp.read()
    gw.audit.close()
    events = audit_events(path)
    for event in events:
        jsonschema.validate(event, SCHEMA)
    decisions = [e for e in events if e["event"] == "decision"]
    assert len(decisions) == len(requests)
    assert [e["decision"] for e in decisions] == ["allow", "deny", "deny", "deny", "deny", "allow", "deny"]
    assert [e["reason"] for e in decisions] == [None, "token_missing", "client_id_mismatch", "no_policy",
                                               "method_not_allowed", None, "token_revoked"]
    first = decisions[0]
    assert first["client_id"] == "client-a" and first["token_jti"] and first["upstream_status"] == 200
    assert first["route"] == "/open-banking/v3.1/register/{ClientId}" and first["policy"] == "dcr_register_read"
    assert decisions[5]["upstream_status"] == 204
    assert verify_file(path).ok
    # The token itself never appears.
    assert token not in path.read_text()


@pytest.fixture
def bank_gw_audit(tmp_path, start_server, running_gateway):
    from tests.policy.test_enforcement import ISSUER, Bank

    async def make():
        bank = Bank()
        server = await start_server(bank.app)
        base = str(server.make_url("")).rstrip("/")
        trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "audiences": ["dcr"],
                                            "token_types": ["at+jwt"]}}}
        path = tmp_path / "audit.log"
        gw = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust, audit_path=path)
        return bank, gw, path

    return make


def write_chain(path: Path, n: int = 6) -> list[str]:
    log = AuditLog("file", str(path))
    for i in range(n):
        log.emit({"interaction_id": f"i{i}", "decision": "allow"})
    log.close()
    return path.read_text().splitlines(keepends=True)


def test_verify_accepts_an_intact_file_with_interleaved_log_lines(tmp_path):
    """Audit lines captured among other log lines (stdout sink) still verify."""
    lines = write_chain(tmp_path / "a.log")
    mixed = tmp_path / "mixed.log"
    mixed.write_text("".join(f'{{"event":"request","level":"info"}}\n{line}' for line in lines))
    result = verify_file(mixed)
    assert result.ok and result.events == len(lines) and result.chains == 1


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (lambda ls: [*ls[:3], ls[3].replace('"decision":"allow"', '"decision":"deny"'), *ls[4:]], "altered"),
        (lambda ls: ls[:3] + ls[4:], "events missing: seq 4..4"),
        (lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], "events out of order: seq 4 of chain"),
        (lambda ls: [*ls[:4], ls[2], *ls[4:]], "out of order"),
        (lambda ls: ls[1:], "events missing: seq 1..1"),
        (lambda ls: [*ls[:3], "{not json " + "dcr_gateway_audit\n", *ls[3:]], "unparseable"),
    ],
    ids=["edited", "deleted", "reordered", "replayed", "head-deleted", "garbage"],
)
def test_verify_finds_the_first_tampered_event(tmp_path, tamper, problem):
    """An edited, deleted, reordered or replayed line is reported with its line number."""
    lines = write_chain(tmp_path / "a.log")
    bad = tmp_path / "bad.log"
    bad.write_text("".join(tamper(lines)))
    result = verify_file(bad)
    assert not result.ok
    assert problem in (result.problem or "")
    assert result.line is not None


@pytest.mark.parametrize(
    ("tamper", "problem", "line"),
    [
        (lambda ls: [*ls[:2], ls[3], ls[2], *ls[4:]], "seq 4 of chain {chain} comes before seq 3 (line 4)", 3),
        (lambda ls: [*ls[:2], *ls[4:], ls[2], ls[3]], "seq 5 of chain {chain} comes before seq 3 (line 7)", 3),
        (lambda ls: [ls[1], ls[0], *ls[2:]], "seq 2 of chain {chain} comes before seq 1 (line 2)", 1),
    ],
    ids=["swapped", "moved-to-the-end", "first-two-swapped"],
)
def test_swapped_events_are_reported_as_out_of_order_not_missing(tmp_path, tamper, problem, line):
    """Events that are all there, in another order, are said to be out of order, with both lines."""
    lines = write_chain(tmp_path / "a.log")
    chain = json.loads(lines[0])["chain"][:8]
    bad = tmp_path / "bad.log"
    bad.write_text("".join(tamper(lines)))
    result = verify_file(bad)
    assert not result.ok
    assert result.problem == "events out of order: " + problem.format(chain=chain)
    assert result.line == line


def test_recomputed_hash_still_breaks_the_chain(tmp_path):
    """An attacker who edits a line and recomputes its hash still breaks the next event's `prev`."""
    from gateway.observability.audit import event_hash

    lines = write_chain(tmp_path / "a.log")
    event = json.loads(lines[2])
    event["decision"] = "deny"
    event["hash"] = event_hash(event)
    lines[2] = json.dumps(event) + "\n"
    bad = tmp_path / "bad.log"
    bad.write_text("".join(lines))
    result = verify_file(bad)
    assert not result.ok and "does not follow its predecessor" in (result.problem or "") and result.line == 4


def test_audit_verify_cli(tmp_path):
    """`dcr-gateway audit verify` exits 0 on an intact file and 1 naming the line on a broken one."""
    lines = write_chain(tmp_path / "a.log")
    ok = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(tmp_path / "a.log")],
                        capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0 and "ok, 8 events" in ok.stdout
    (tmp_path / "b.log").write_text("".join(lines[:2] + lines[3:]))
    bad = subprocess.run([sys.executable, "-m", "gateway", "audit", "verify", str(tmp_path / "b.log")],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode == 1 and "b.log:3: events missing" in bad.stdout


async def test_a_failure_after_the_decision_names_its_reason(bank_gw_audit):
    """A request that fails on its way (here a body over server.max_body_bytes) is a `decision: error` event
    whose `reason` is the registered reason of the failure, as in the response body."""
    bank, gw, path = await bank_gw_audit()
    resp = await gw.client.post(REGISTER, data=b"x" * (8 * 1024 * 1024), headers={
        **auth(bank.token()), "Content-Type": "application/jose"})
    body = await resp.json()
    assert resp.status == 413
    gw.audit.close()
    (event,) = [e for e in audit_events(path) if e["event"] == "decision"]
    jsonschema.validate(event, SCHEMA)
    assert (event["decision"], event["check"], event["reason"]) == ("error", None, "body_too_large")
    assert body["error"] == "request_too_large"


@pytest.mark.parametrize(("ns", "text"), [(1765032846572268123, "2025-12-06T14:54:06.572268Z"),
                                          (1765032846000000999, "2025-12-06T14:54:06.000000Z")])
def test_event_time_is_utc_with_six_fraction_digits(tmp_path, monkeypatch, ns, text):
    """Always six digits, a whole second included (the log lines' timestamp drops them there; events do not)."""
    monkeypatch.setattr(clock.time, "time_ns", lambda: ns)
    log = AuditLog("file", str(tmp_path / "audit.log"))
    event = log.emit({"request_id": "1"})
    log.close()
    assert event["time"] == text
    assert audit_events(tmp_path / "audit.log")[1]["time"] == text
