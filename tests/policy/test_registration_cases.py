"""`policy test` cases carrying a signed registration request, SSA and client certificate: the runner builds
them with keys generated for the run, and a wrong expectation or an impossible case is reported as a failure."""

from __future__ import annotations

import shutil
from pathlib import Path

from gateway.config import Settings, load_settings
from gateway.policy.testing import run_cases
from tests.conftest import ROOT, SHIPPED_POLICIES

CASE = """cases:
  - name: {name}
    request:
      method: POST
      path: /open-banking/v3.1/register
      headers: {{client_id: app-1}}
      token: {{issuer: bank, claims: {{client_id: app-1}}}}
{extra}
    expect: {expect}
"""


def _dir(tmp_path: Path, name: str, extra: str, expect: str) -> Path:
    for f in SHIPPED_POLICIES.glob("*.yaml"):
        if not f.name.endswith("_test.yaml"):
            shutil.copy(f, tmp_path / f.name)
    (tmp_path / "case_test.yaml").write_text(CASE.format(name=name, extra=extra, expect=expect))
    return tmp_path


def _settings() -> Settings:
    return load_settings(ROOT / "config.yaml", env={})


async def test_a_wrong_expectation_on_a_registration_case_fails(tmp_path):
    """An attacker-signed SSA expected to pass: the case fails and says what was decided instead."""
    d = _dir(tmp_path, "wrong on purpose", "      registration: {ssa: {signed_by: attacker}}",
             "{decision: allow}")
    (result,) = await run_cases(_settings(), d)
    assert not result.ok
    assert "decision: expected 'allow', got 'deny'" in result.detail


async def test_the_same_case_with_the_right_expectation_passes(tmp_path):
    """The same request, expected to be refused for its SSA signature, passes."""
    d = _dir(tmp_path, "right", "      registration: {ssa: {signed_by: attacker}}",
             "{decision: deny, reason: ssa_bad_signature}")
    (result,) = await run_cases(_settings(), d)
    assert result.ok, result.detail


async def test_body_and_registration_together_is_a_file_error(tmp_path):
    """A case cannot have both a literal body and a built registration request."""
    d = _dir(tmp_path, "both", "      registration: {}\n      body: x", "{decision: allow}")
    (result,) = await run_cases(_settings(), d)
    assert not result.ok and "either body or registration" in result.detail


async def test_replayed_needs_a_request_that_verifies(tmp_path):
    """`replayed: true` on a request that cannot verify is reported, not silently passed."""
    d = _dir(tmp_path, "replay of junk", "      registration: {replayed: true, signed_by: attacker}",
             "{decision: deny}")
    (result,) = await run_cases(_settings(), d)
    assert not result.ok and "does not verify" in result.detail


async def test_registration_cases_need_a_directory_in_config(tmp_path):
    """Without config trust.directories there is no key to sign the SSA with: the case says so."""
    d = _dir(tmp_path, "no directory", "      registration: {}", "{decision: deny}")
    data = _settings().model_dump()
    data["trust"]["directories"] = {}
    (result,) = await run_cases(Settings.model_validate(data), d)
    assert not result.ok and "trust.directories is empty" in result.detail


async def test_policy_test_stays_offline_when_the_config_names_redis():
    """`policy test` runs the shipped cases on an in-memory store even when the config's backend is Redis (here
    one that cannot be reached: with it, replay and revocation would fail closed and the cases would fail)."""
    settings = load_settings(ROOT / "config.yaml", env={"DCRGW_STATE__BACKEND": "redis",
                                                        "DCRGW_STATE__REDIS__URL": "redis://127.0.0.1:1/0"})
    results = await run_cases(settings, SHIPPED_POLICIES)
    assert results and [(r.name, r.detail) for r in results if not r.ok] == []


def _enforced(settings: Settings, proxies: tuple[str, ...] | None = None) -> Settings:
    """`settings` with client_certificate enforced (no check_modes), and other trusted proxies if given."""
    policies = settings.policies.model_copy(update={"check_modes": {}})
    update: dict[str, object] = {"policies": policies}
    if proxies is not None:
        cert = settings.trust.client_certificate.model_copy(update={"trusted_proxies": proxies})
        update["trust"] = settings.trust.model_copy(update={"client_certificate": cert})
    return settings.model_copy(update=update)


async def test_refused_is_deny_where_enforced_and_audit_deny_in_audit_mode_never_allow(tmp_path):
    """`decision: refused` holds under the sandbox's audit mode and an enforcing config, and fails an allow."""
    missing = "{decision: refused, reason: client_cert_missing}"
    d = _dir(tmp_path, "no certificate", "      registration: {}", missing)
    for settings, outcome in ((_settings(), "audit_deny"), (_enforced(_settings()), "deny")):
        (result,) = await run_cases(settings, d)
        assert result.ok and f"decision={outcome}" in result.detail, result.detail
    (tmp_path / "allowed").mkdir()
    allowed = _dir(tmp_path / "allowed", "allowed", "      registration: {}\n      client_cert: {}", "{decision: refused}")
    (result,) = await run_cases(_enforced(_settings()), allowed)
    assert not result.ok and "decision: expected 'refused', got 'allow'" in result.detail


async def test_a_case_without_peer_comes_from_the_configured_ingress(tmp_path):
    """The forwarded certificate is believed from the first trusted proxy (here not 127.0.0.1), and refused from
    a peer the case names outside it."""
    settings = _enforced(_settings(), ("10.244.0.0/16",))
    d = _dir(tmp_path, "from the ingress", "      registration: {}\n      client_cert: {}", "{decision: allow}")
    (result,) = await run_cases(settings, d)
    assert result.ok, result.detail
    (tmp_path / "elsewhere").mkdir()
    e = _dir(tmp_path / "elsewhere", "from elsewhere",
             "      registration: {}\n      client_cert: {}\n      peer: 127.0.0.1",
             "{decision: deny, reason: client_cert_untrusted_proxy}")
    (result,) = await run_cases(settings, e)
    assert result.ok, result.detail
