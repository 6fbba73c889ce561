"""`config.policies.profile` in the chart: one value picks the profile's shipped policies, and the sandbox's
certificate-check override stays out of the OB standard profile (where it would authenticate nothing)."""

from __future__ import annotations

from pathlib import Path

import helm_python as helm
import pytest

from gateway.config import load_settings

from .render import REPO, ci_values, gateway_cli, pod_env, render, write_mounts

OB_STANDARD = REPO / "policies" / "ob_standard"
OB_SHIPPED = {p.name: p.read_text() for p in sorted(OB_STANDARD.glob("*.yaml")) if not p.stem.endswith("_test")}
PROFILE = {"config": {"policies": {"profile": "ob_standard"}}}


def _sandbox(profile: str) -> dict[str, object]:
    values = ci_values("sandbox-values")
    values["config"].setdefault("policies", {})["profile"] = profile
    return values


def test_the_profile_picks_its_shipped_policies(chart: helm.Chart) -> None:
    """profile ob_standard: the policies ConfigMap holds policies/ob_standard/*.yaml byte for byte, no test cases."""
    r = render(chart, PROFILE)
    assert r.configmap_data("policies") == OB_SHIPPED
    assert r.config["policies"]["profile"] == "ob_standard"
    assert r.config["policies"]["dir"] == "/etc/dcr-gateway/policies"


def test_policies_files_still_add_to_the_profile(chart: helm.Chart) -> None:
    """policies.files adds to (or replaces files of) the profile's set, as for the bank's."""
    mine = "policies:\n  - name: mine\n    match: {methods: [GET], path: /mine}\n"
    data = render(chart, {**PROFILE, "policies": {"files": {"mine.yaml": mine}}}).configmap_data("policies")
    assert data == {**OB_SHIPPED, "mine.yaml": mine}


@pytest.mark.parametrize(("profile", "modes"), [("bank", {"client_certificate": "audit"}), ("ob_standard", {})])
def test_the_sandbox_audits_the_certificate_only_in_the_bank_profile(chart: helm.Chart, profile: str,
                                                                       modes: dict[str, str]) -> None:
    """With the sandbox, the chart sets the certificate check to audit (no mTLS ingress in a demo) only where it
    is not what authenticates registrations."""
    assert render(chart, _sandbox(profile)).config["policies"]["check_modes"] == modes


def test_the_rendered_profile_enforces_the_certificate_check(chart: helm.Chart, tmp_path: Path) -> None:
    """The pod's effective settings: the ob_standard profile, client_certificate enforced, the URLs derived."""
    config, _ = write_mounts(render(chart, _sandbox("ob_standard")), tmp_path)
    s = load_settings(config, env={})
    assert s.policies.profile == "ob_standard"
    assert s.policies.check_modes.get("client_certificate", "enforce") == "enforce"
    assert s.trust.token_issuers["bank"].issuer == s.sandbox.issuer == "https://dcr-sandbox.bank.example"


@pytest.mark.process
def test_rendered_profile_passes_config_check(chart: helm.Chart, tmp_path: Path) -> None:
    """`config check` accepts the rendered OB standard sandbox config, silently, and `policy test` runs the
    profile's own cases against it, all passing."""
    r = render(chart, _sandbox("ob_standard"))
    config, _ = write_mounts(r, tmp_path)
    check = gateway_cli("config", "check", "--config", str(config), env=pod_env(r))
    assert check.returncode == 0, check.stderr
    assert check.stderr == ""
    test = gateway_cli("policy", "test", str(OB_STANDARD), "--config", str(config), env=pod_env(r))
    assert test.returncode == 0, test.stdout + test.stderr
