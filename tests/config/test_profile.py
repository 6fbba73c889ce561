"""One switch per profile: `policies.profile: ob_standard` picks the OB standard policies and enforces the certificate
check that authenticates its registrations, whatever the sandbox's `check_modes` override says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load_settings
from gateway.config.consistency import Finding, findings
from gateway.policy.loader import compile_policies, read_source
from gateway.runtime import build_runtime
from tests.checks.world import REGISTER, make_world

ROOT = Path(__file__).resolve().parent.parent.parent
OB_STANDARD = ROOT / "policies" / "ob_standard"
PROFILE_ENV = {"DCRGW_POLICIES__PROFILE": "ob_standard"}


def _certificate_checks(settings) -> dict[str, bool]:
    """policy name → audit_only of its client_certificate check, as the gateway compiles the profile's set."""
    directory = settings.resolve_path(settings.policies.dir)
    policy_set = compile_policies(read_source(directory), build_runtime(settings, None).services)
    return {p.name: c.audit_only for p in policy_set.policies for c in p.checks if c.name == "client_certificate"}


def test_shipped_config_is_the_bank_profile():
    """config.yaml: the bank's profile, its policies, the certificate check reported only (no mTLS on a laptop)."""
    s = load_settings(ROOT / "config.yaml", env={})
    assert s.policies.profile == "bank"
    assert s.resolve_path(s.policies.dir) == ROOT / "policies"
    assert s.policies.check_modes == {"client_certificate": "audit"}
    assert set(_certificate_checks(s).values()) == {True}


def test_one_setting_switches_to_ob_standard():
    """Only the profile changes: the ob_standard policies, client_certificate enforced in every one of them."""
    s = load_settings(ROOT / "config.yaml", env=PROFILE_ENV)
    assert s.resolve_path(s.policies.dir) == OB_STANDARD
    assert s.policies.check_modes == {"client_certificate": "enforce"}
    assert s.policies.ignored_check_modes == ("client_certificate",)
    checks = _certificate_checks(s)
    assert "dcr_register_create" in checks and set(checks.values()) == {False}
    assert build_runtime(s, None).services.check_modes["client_certificate"] == "enforce"


def test_the_override_is_reported_not_silently_dropped():
    """config check warns that the sandbox's audit override does not apply in the profile (with its key path)."""
    s = load_settings(ROOT / "config.yaml", env=PROFILE_ENV)
    assert findings(s) == [Finding("warning", "policies.check_modes.client_certificate",
                                   "audit is ignored: the ob_standard profile authenticates requests with "
                                   "client_certificate, so it is always enforced")]


def test_the_profile_without_signed_facts_is_reported(tmp_path):
    """ob_standard with no sandbox and no signed facts works, but config check says what the backend cannot see."""
    path = tmp_path / "config.yaml"
    path.write_text("policies: {profile: ob_standard}\n")
    assert [f.key for f in findings(load_settings(path, env={}))] == ["upstream.signed_facts.enabled"]
    path.write_text("policies: {profile: ob_standard}\nupstream: {signed_facts: {enabled: true}}\n")
    assert findings(load_settings(path, env={})) == []


def test_other_check_modes_still_apply_in_the_profile(tmp_path):
    """Only the profile's authenticating check is forced; other audit overrides are kept."""
    path = tmp_path / "config.yaml"
    path.write_text("policies: {profile: ob_standard, check_modes: {client_certificate: audit, content_type: audit}}\n")
    s = load_settings(path, env={})
    assert s.policies.check_modes == {"client_certificate": "enforce", "content_type": "audit"}
    assert s.policies.dir == "policies/ob_standard"


def test_an_explicit_dir_wins_over_the_profile(tmp_path):
    """A bank's own copy of the profile: `dir` as written, the certificate check still enforced."""
    path = tmp_path / "config.yaml"
    path.write_text("policies: {profile: ob_standard, dir: bank-policies, check_modes: {client_certificate: audit}}\n")
    s = load_settings(path, env={})
    assert s.policies.dir == "bank-policies"
    assert s.policies.check_modes == {"client_certificate": "enforce"}


def test_an_unknown_profile_is_an_error(tmp_path):
    """A misspelt profile is refused with the valid names, the key path and the line."""
    path = tmp_path / "config.yaml"
    path.write_text("policies:\n  profile: ob-standard\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert info.value.messages == [
        f"{path}: policies.profile: expected 'bank' or 'ob_standard', got \"ob-standard\" (line 2)"]


async def test_the_profile_refuses_a_registration_the_override_would_forward(start_server, running_gateway):
    """With the sandbox's override, the bank profile forwards a certificate-less POST to the OB policies; the
    ob_standard profile refuses it (400 client_cert_missing) and the backend never sees it."""
    override = {"check_modes": {"client_certificate": "audit"}}
    audited = await make_world(start_server, running_gateway, policy_dir=OB_STANDARD, policies=override)
    profiled = await make_world(start_server, running_gateway, policy_dir=OB_STANDARD,
                                policies={"profile": "ob_standard", **override})
    try:
        resp = await audited.gw.client.post(REGISTER, data=audited.request(),
                                            headers={"Content-Type": "application/jose"})
        assert resp.status == 201, await resp.text()
        resp = await profiled.gw.client.post(REGISTER, data=profiled.request(),
                                             headers={"Content-Type": "application/jose"})
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_client_metadata"
        assert profiled.denials("client_cert_missing") == 1 and profiled.registrations() == 0
    finally:
        await audited.session.close()
        await profiled.session.close()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args, "--config", str(ROOT / "config.yaml")],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", **PROFILE_ENV})


@pytest.mark.process
def test_config_check_and_policy_test_pass_on_the_profile():
    """`config check` passes on the profile (one warning: the ignored override) and checks the OB policies;
    `policy test` runs the profile's own cases with its effective settings, all passing."""
    check = _cli("config", "check")
    assert check.returncode == 0, check.stderr
    assert check.stderr.strip().startswith("warning: ") and "policies.check_modes.client_certificate" in check.stderr
    assert f"{OB_STANDARD}: 7 policies ok" in check.stdout
    proc = _cli("policy", "test")
    assert proc.returncode == 0, proc.stdout
    passed, failed = (int(x.split()[0]) for x in proc.stdout.strip().splitlines()[-1].split(", "))
    assert failed == 0 and passed >= 20
