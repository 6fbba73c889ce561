"""The Open Banking standard profile (policies/ob_standard): POST by mutual TLS alone, GET/PUT/DELETE by a
client_credentials token; its `policy test` cases pass, and it shares the oauth policies of the default profile."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml

from tests.checks.world import REGISTER, keys
from tests.conftest import ROOT, SHIPPED_POLICIES

OB_STANDARD = SHIPPED_POLICIES / "ob_standard"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "policy", *args, "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT, env={**os.environ, **(env or {})})


def test_policy_lint_and_test_pass_on_the_ob_standard_profile():
    """`policy lint` and `policy test` accept the profile and every one of its cases passes, with the profile
    selected (config policies.profile: ob_standard, where client_certificate is always enforced)."""
    lint = _cli("lint", str(OB_STANDARD))
    assert lint.returncode == 0, lint.stderr
    proc = _cli("test", str(OB_STANDARD), env={"DCRGW_POLICIES__PROFILE": "ob_standard"})
    assert proc.returncode == 0, proc.stdout
    passed, failed = (int(x.split()[0]) for x in proc.stdout.strip().splitlines()[-1].split(", "))
    assert failed == 0 and passed >= 20


def test_the_default_profile_does_not_read_the_subdirectory():
    """policies/ is the bank's profile: the ob_standard policies are not part of it (same names, no clash)."""
    proc = _cli("explain", "--method", "POST", "--path", REGISTER)
    assert "bearer_token" in proc.stdout and str(SHIPPED_POLICIES / "dcr.yaml") in proc.stdout


def test_oauth_policies_are_the_same_in_both_profiles():
    """The profile directory carries a copy of oauth.yaml and its tests; they must not drift."""
    for name in ("oauth.yaml", "oauth_test.yaml"):
        assert yaml.safe_load((OB_STANDARD / name).read_text()) == yaml.safe_load((SHIPPED_POLICIES / name).read_text())


async def test_post_by_mutual_tls_alone(dcr_world):
    """No token, no client_id header: a registration with the TPP's transport certificate is forwarded (201)."""
    w = await dcr_world(policy_dir=OB_STANDARD)
    headers = {"Content-Type": "application/jose", **w.cert_header()}
    resp = await w.gw.client.post(REGISTER, data=w.request(), headers=headers)
    assert resp.status == 201, await resp.text()
    forwarded = w.backend.hits[0][2]
    assert "X-DCR-Client-Id" not in forwarded and forwarded["X-DCR-Software-Id"] == "AttackTableSoftware1"


async def test_post_without_certificate_is_refused(dcr_world):
    """Without the transport certificate nothing authenticates the POST: 400 client_cert_missing."""
    w = await dcr_world(policy_dir=OB_STANDARD)
    resp = await w.gw.client.post(REGISTER, data=w.request(), headers={"Content-Type": "application/jose"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_client_metadata"
    assert w.denials("client_cert_missing") == 1 and w.registrations() == 0


async def test_post_with_another_softwares_certificate_is_refused(dcr_world):
    """A valid certificate that is not a `use: tls` key of the SSA's software JWKS: invalid_software_statement."""
    w = await dcr_world(policy_dir=OB_STANDARD)
    headers = {"Content-Type": "application/jose", **w.cert_header(keys().other_cert)}
    resp = await w.gw.client.post(REGISTER, data=w.request(), headers=headers)
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_software_statement"


async def test_read_update_delete_with_a_client_credentials_token(dcr_world):
    """GET/PUT/DELETE need the token of the client in the path; no client_id header in this profile."""
    w = await dcr_world(policy_dir=OB_STANDARD)
    token = {"Authorization": f"Bearer {w.token('client-7')}", **w.cert_header()}
    assert (await w.gw.client.get(f"{REGISTER}/client-7", headers=token)).status == 200
    put = await w.gw.client.put(f"{REGISTER}/client-7", data=w.request(client_id="client-7"),
                                headers={**token, "Content-Type": "application/jose"})
    assert put.status == 200, await put.text()
    assert (await w.gw.client.delete(f"{REGISTER}/client-8", headers=token)).status == 401
    assert (await w.gw.client.get(f"{REGISTER}/client-7", headers=w.cert_header())).status == 401
