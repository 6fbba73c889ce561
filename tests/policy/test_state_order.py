"""Checks that record state run after every verifying check (issue 13): a registration refused for its
certificate does not burn its jti, whatever the order the policy file lists the checks in; a token is only
revoked for a request that proved everything else; audit mode records nothing for a request it would refuse.
Real gateways, real keys and certificates, a real JWKS on 127.0.0.1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.checks.base import Recording
from gateway.config import load_settings
from gateway.jose import cert_thumbprint_s256
from gateway.policy.loader import load_policies
from gateway.runtime import build_runtime
from tests.checks.world import CERT_HEADER, REGISTER, World, keys
from tests.conftest import ROOT, SHIPPED_POLICIES

OB_STANDARD = SHIPPED_POLICIES / "ob_standard"

# The create policy of the bank's profile, written in the "wrong" order: replay first of the body checks.
WRONG_ORDER = """
policies:
  - name: register_wrong_order
    match: {methods: [POST], path: /open-banking/v3.1/register}
    checks:
      - bearer_token: {issuers: [bank]}
      - client_id_header: {}
      - content_type: {allowed: [application/jose]}
      - body_size: {max_bytes: 65536, required: true}
      - software_statement: {}
      - registration_request: {algorithms: [PS256]}
      - replay: {}
      - client_certificate: {match_software_jwks: true, match_tls_client_auth_dn: true}
      - registration_metadata: {}
  - name: read_wrong_order
    match: {methods: [GET], path: "/open-banking/v3.1/register/{ClientId}"}
    checks:
      - client_ownership: {}
      - bearer_token: {issuers: [bank]}
      - client_certificate: {match_software_jwks: false, match_tls_client_auth_dn: false, status: 401}
"""


def _policy_dir(tmp_path: Path, text: str = WRONG_ORDER, mode: str | None = None) -> Path:
    if mode is not None:
        text = text.replace("    match:", f"    mode: {mode}\n    match:")
    (tmp_path / "p.yaml").write_text(text)
    return tmp_path


def _offline_policies(directory: Path):  # type: ignore[no-untyped-def]
    settings = load_settings(ROOT / "config.yaml", env={})
    return load_policies(directory, build_runtime(settings, None).services)


# -- the compiled order ----------------------------------------------------------------------------------

def test_the_compiler_moves_state_recording_checks_after_the_verifying_ones(tmp_path: Path):
    """replay (listed 7th of 9) runs last; client_ownership (listed 1st) runs after bearer_token and the
    certificate; everything else keeps the file's order. `declared` says where each was listed."""
    policies = {p.name: p for p in _offline_policies(_policy_dir(tmp_path)).policies}
    create = policies["register_wrong_order"]
    assert [c.name for c in create.checks] == [
        "bearer_token", "client_id_header", "content_type", "body_size", "software_statement",
        "registration_request", "client_certificate", "registration_metadata", "replay"]
    assert create.declared == (0, 1, 2, 3, 4, 5, 7, 8, 6)
    read = policies["read_wrong_order"]
    assert [c.name for c in read.checks] == ["bearer_token", "client_certificate", "client_ownership"]
    assert read.declared == (1, 2, 0)


def test_replay_runs_after_client_ownership_whatever_the_file_says(tmp_path: Path):
    """A check that writes when it refuses (client_ownership revokes) runs before one that consumes when it
    passes (replay): a PUT refused for ownership does not burn its jti."""
    text = """
policies:
  - name: update
    match: {methods: [PUT], path: "/r/{ClientId}"}
    checks:
      - replay: {}
      - client_ownership: {}
      - registration_request: {}
      - bearer_token: {issuers: [bank]}
      - rate_limit: {limit: 5}
"""
    (policy,) = _offline_policies(_policy_dir(tmp_path, text)).policies
    assert [c.name for c in policy.checks] == [
        "registration_request", "bearer_token", "rate_limit", "client_ownership", "replay"]


def test_client_ownership_without_revocation_stays_where_it_is_listed(tmp_path: Path):
    """revoke_on_mismatch: false writes nothing when it refuses: a plain verifying check, not moved."""
    text = WRONG_ORDER.replace("- client_ownership: {}", "- client_ownership: {revoke_on_mismatch: false}")
    read = {p.name: p for p in _offline_policies(_policy_dir(tmp_path, text)).policies}["read_wrong_order"]
    assert [c.name for c in read.checks] == ["client_ownership", "bearer_token", "client_certificate"]


@pytest.mark.parametrize("directory", [SHIPPED_POLICIES, OB_STANDARD], ids=["bank", "ob_standard"])
def test_shipped_policies_run_state_recording_checks_last(directory: Path):
    """In every shipped policy the checks run verifying first, then revoking, then consuming; replay, where
    present, after client_certificate."""
    for policy in _offline_policies(directory).policies:
        phases = [c.records_state for c in policy.checks]
        assert phases == sorted(phases), policy.name
        names = [c.name for c in policy.checks]
        if "replay" in names:
            assert names[-1] == "replay" and names.index("client_certificate") < names.index("replay"), policy.name
    create = {p.name: p for p in _offline_policies(directory).policies}["dcr_register_create"]
    assert create.checks[-1].records_state is Recording.ON_PASS


def test_policy_explain_shows_the_order_the_engine_runs(tmp_path: Path):
    """`policy explain` lists replay last and says where the file listed it."""
    proc = subprocess.run(
        [sys.executable, "-m", "gateway", "policy", "explain", "--config", str(ROOT / "config.yaml"),
         "--dir", str(_policy_dir(tmp_path)), "--method", "POST", "--path", REGISTER],
        capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    lines = [line.strip() for line in proc.stdout.splitlines() if line.strip()[:2] in {f"{i}." for i in range(10)}]
    assert [line.split()[1] for line in lines] == [
        "bearer_token", "client_id_header", "content_type", "body_size", "software_statement",
        "registration_request", "client_certificate", "registration_metadata", "replay"]
    assert "records state" in lines[-1] and "listed 7." in lines[-1]
    assert "records state" not in " ".join(lines[:-1])


# -- end to end --------------------------------------------------------------------------------------------

CERT_NOT_IN_JWKS = "client_cert_not_in_software_jwks"


def _wrong_cert(w: World) -> dict[str, str]:
    return {CERT_HEADER: w.cert_header(keys().other_cert)[CERT_HEADER]}


@pytest.mark.parametrize("where", ["wrong_order", "shipped"])
async def test_a_registration_refused_for_its_certificate_can_be_sent_again(dcr_world, tmp_path: Path, where: str):
    """The same signed registration request: refused over another certificate (jti not consumed), accepted over
    its own, then refused as a replay: the jti is recorded once, by the request that passed everything."""
    policy_dir = _policy_dir(tmp_path) if where == "wrong_order" else SHIPPED_POLICIES
    w = await dcr_world(policy_dir=policy_dir)
    body = w.request()
    refused = await w.post(body, **_wrong_cert(w))
    assert refused.status == 400, await refused.text()
    assert (await refused.json())["error"] == "invalid_software_statement"
    assert w.registrations() == 0 and w.denials("jti_replayed") == 0
    accepted = await w.post(body)
    assert accepted.status == 201, await accepted.text()
    replayed = await w.post(body)
    assert replayed.status == 400
    assert w.denials("jti_replayed") == 1 and w.registrations() == 1


async def test_a_registration_refused_for_its_metadata_can_be_sent_again_on_the_shipped_policy(dcr_world):
    """registration_metadata is listed after replay in the shipped file; its refusal burns nothing either."""
    w = await dcr_world()
    body = w.request(redirect_uris=["https://not-in-the-ssa.example/cb"])
    refused = await w.post(body)
    assert refused.status == 400, await refused.text()
    assert (await refused.json())["error"] == "invalid_redirect_uri"
    assert w.registrations() == 0
    # A corrected request with the same jti is not a replay.
    good = w.request(jti=_jti_of(body))
    assert (await w.post(good)).status == 201
    assert w.denials("jti_replayed") == 0


def _jti_of(compact: str) -> str:
    import base64
    import json

    payload = compact.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["jti"])


async def test_a_token_is_not_revoked_by_a_request_that_fails_its_certificate(dcr_world, tmp_path: Path):
    """client_ownership listed first: a certificate-bound token presented without its certificate for another
    client is refused for the certificate, and not revoked; its holder keeps using it."""
    w = await dcr_world(policy_dir=_policy_dir(tmp_path))
    bound = w.token("client-7", cnf={"x5t#S256": cert_thumbprint_s256(keys().cert)})
    thief = await w.gw.client.get(f"{REGISTER}/client-8", headers={"Authorization": f"Bearer {bound}"})
    assert thief.status == 401
    assert w.denials("token_cert_binding_missing") == 1 and w.denials("client_not_owned") == 0
    owner = {"Authorization": f"Bearer {bound}", **w.cert_header()}
    assert (await w.gw.client.get(f"{REGISTER}/client-7", headers=owner)).status == 200
    # Over its certificate, asking for another client: refused and revoked, as the bank's rule says.
    assert (await w.gw.client.get(f"{REGISTER}/client-8", headers=owner)).status == 401
    assert w.denials("client_not_owned") == 1
    assert (await w.gw.client.get(f"{REGISTER}/client-7", headers=owner)).status == 401
    assert w.denials("token_revoked") == 1


def _audit_denials(w: World, reason: str) -> float:
    total = 0.0
    for metric in w.gw.metrics.registry.collect():
        for s in metric.samples:
            if (s.name == "dcr_gateway_decisions_total" and s.labels.get("reason") == reason
                    and s.labels.get("decision") == "audit_deny"):
                total += s.value
    return total


async def test_audit_mode_records_no_jti_for_a_request_another_check_would_refuse(dcr_world, tmp_path: Path):
    """Policy in audit mode: a request with the wrong certificate is forwarded and reported, but its jti is
    not recorded; the corrected request is then clean, and only a true replay is reported as one."""
    w = await dcr_world(policy_dir=_policy_dir(tmp_path, mode="audit"))
    body = w.request()
    assert (await w.post(body, **_wrong_cert(w))).status == 201  # audit: forwarded
    assert _audit_denials(w, CERT_NOT_IN_JWKS) == 1
    assert _audit_denials(w, "jti_replayed") == 0
    assert (await w.post(body)).status == 201
    assert _audit_denials(w, "jti_replayed") == 0  # the first request did not burn it
    assert (await w.post(body)).status == 201
    assert _audit_denials(w, "jti_replayed") == 1  # the clean one did


async def test_an_audit_only_check_does_not_stop_recording_in_an_enforced_policy(dcr_world):
    """check_modes {client_certificate: audit}: its refusal is reported, the request is forwarded, so replay
    records the jti (else the forwarded registration could be replayed)."""
    w = await dcr_world(policies={"check_modes": {"client_certificate": "audit"}})
    body = w.request()
    assert (await w.post(body, cert=False)).status == 201
    replayed = await w.post(body)
    assert replayed.status == 400
    assert w.denials("jti_replayed") == 1 and w.registrations() == 1
