"""The production example deploys: ci/production-values.yaml trusts the real Open Banking Directory, fits an
ingress-nginx install, passes `config check`, `policy lint` and `policy test` as rendered (nothing leaves the
process: `policy test` signs with keys generated for the configured issuers and directories), and NOTES.txt
names every placeholder it still carries, flagging those that keep readiness down."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from .render import REPO, ci_values, gateway_cli, pod_env, render, write_mounts

OB_PRODUCTION_KEYSTORE = "https://keystore.openbanking.org.uk/keystore/openbanking.jwks"
OB_SANDBOX_KEYSTORE = "https://keystore.openbankingtest.org.uk/keystore/openbanking.jwks"

PLACEHOLDER = re.compile(r"(?i)((\.invalid|\.example|(^|[./@])example\.(com|net|org))([:/\]]|$))"
                         r"|^(192\.0\.2|198\.51\.100|203\.0\.113)\.|^2001:db8:|CHANGEME")
"""The chart's placeholder rule (_helpers.tpl "dcr-gateway.placeholderPattern"), as the test's oracle."""


def _strings(node: Any, path: str = "") -> list[tuple[str, str]]:
    """(dotted path, value) of every string in a values tree, paths as NOTES.txt prints them."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in _strings(v, f"{path}.{k}" if path else str(k))]
    if isinstance(node, list):
        return [s for i, v in enumerate(node) for s in _strings(v, f"{path}[{i}]")]
    return [(path, node)] if isinstance(node, str) else []


def test_the_example_trusts_the_open_banking_directory_behind_ingress_nginx(chart: helm.Chart) -> None:
    """The production directory's keystore (the sandbox directory's named for pre-production), TPP key sets only
    from that keystore, the certificate as ingress-nginx forwards it, believed from a pod CIDR, on an mTLS
    Ingress; audiences on the gateway's URL and the authorization server's issuer."""
    text = (REPO / "helm/dcr-gateway/ci/production-values.yaml").read_text()
    assert OB_SANDBOX_KEYSTORE in text  # the pre-production alternative, in the comment
    assert "WHAT A BANK MUST STILL FILL IN" in text
    r = render(chart, ci_values("production-values"))
    trust = r.config["trust"]
    assert trust["directories"] == {"openbanking": {"issuer": "OpenBanking Ltd", "jwks_uri": OB_PRODUCTION_KEYSTORE}}
    assert trust["software_jwks"] == {"allowed_hosts": ["keystore.openbanking.org.uk"]}
    cert = trust["client_certificate"]
    assert (cert["header"], cert["format"]) == ("ssl-client-cert", "nginx")
    assert cert["trusted_proxies"] and r.config["server"]["trusted_proxies"] == cert["trusted_proxies"]
    annotations = r.one("Ingress")["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream"] == "true"
    assert trust["token_issuers"]["bank"]["audiences"] == [r.config["server"]["public_url"]]
    assert trust["registration_audiences"][0] == trust["token_issuers"]["bank"]["issuer"]


@pytest.mark.process
def test_rendered_example_passes_config_check_policy_lint_and_policy_test(chart: helm.Chart, tmp_path: Path) -> None:
    """The real CLI on the rendered ConfigMaps in the pod's environment: `config check` with no warning, `policy
    lint`, and the shipped test cases (`policy test`) against the production config as rendered — its trust
    anchors, its enforced client certificate (the cases' `refused`), its ingress as the cases' peer. Keys are
    generated for the run; nothing is fetched."""
    r = render(chart, ci_values("production-values"))
    config, policies = write_mounts(r, tmp_path)
    env = pod_env(r)
    check = gateway_cli("config", "check", "--config", str(config), env=env)
    assert check.returncode == 0 and check.stderr == "", check.stderr
    lint = gateway_cli("policy", "lint", str(policies), "--config", str(config), env=env)
    assert lint.returncode == 0, lint.stderr
    test = gateway_cli("policy", "test", str(REPO / "policies"), "--config", str(config), env=env)
    assert test.returncode == 0, test.stdout + test.stderr
    assert test.stdout.strip().endswith(" passed, 0 failed")
    # The certificate is enforced there: the cases that expect `refused` got `deny`, none `audit_deny`.
    explain = gateway_cli("policy", "explain", str(REPO / "policies"), "--config", str(config), "--method", "POST",
                          "--path", "/open-banking/v3.1/register", env=env)
    assert explain.returncode == 0, explain.stderr
    assert "client_certificate" in explain.stdout and "mode: audit" not in explain.stdout, explain.stdout


def test_notes_name_every_placeholder_of_the_example(chart: helm.Chart) -> None:
    """Every value of the example on a reserved example name, a documentation address or marked CHANGEME is in
    NOTES.txt with its path, the real OB keystore is not, and what keeps readiness down is named: the issuer's
    key set on a placeholder, and the placeholder egress to the key-set hosts (the directory's real one is not)."""
    values = ci_values("production-values")
    notes = render(chart, values).notes
    expected = [(p, v) for p, v in _strings(values) if PLACEHOLDER.search(v)]
    assert len(expected) >= 10
    for path, value in expected:
        assert f"  {path}: {value}\n" in notes, (path, value)
    assert "keystore.openbanking.org.uk" not in notes
    assert "CHANGEMEobOrgId" in notes  # the bank's OB organisation id
    (readiness,) = [line for line in notes.split("\n\n") if "will not become ready" in line]
    assert "config.trust.token_issuers.bank.jwks_uri" in readiness
    assert "networkPolicy.egress.jwks.cidrs[0]" in readiness  # the NetworkPolicy would block the keystore
    assert "directories" not in readiness


def test_a_filled_in_example_has_no_placeholders_left(chart: helm.Chart) -> None:
    """The same example with each placeholder replaced: NOTES lists none and warns of no readiness gap, so the
    list above is of placeholders only."""
    text = (REPO / "helm/dcr-gateway/ci/production-values.yaml").read_text()
    filled = yaml.safe_load(re.sub(r"\.example\b", ".bank-one.co.uk", text)
                            .replace("203.0.113.", "192.168.50.").replace("CHANGEMEobOrgId", "0015800001041RHAAY"))
    notes = render(chart, filled).notes
    assert "PLACEHOLDERS" not in notes and "will not become ready" not in notes
    assert "10.244.0.0/16" in notes  # the trusted proxies are always shown, to be checked against the cluster


def test_notes_flag_the_default_placeholders_and_an_empty_trusted_proxy_list(chart: helm.Chart) -> None:
    """The chart's own defaults (`.invalid`) are placeholders too, each key set among them blocks readiness, and
    no trusted proxy means no certificate is believed."""
    notes = render(chart).notes
    for path in ("config.server.public_url", "config.upstream.url", "config.trust.token_issuers.bank.jwks_uri",
                 "config.trust.directories.openbanking.jwks_uri", "config.trust.registration_audiences[0]"):
        assert f"  {path}: https://" in notes, path
    (readiness,) = [line for line in notes.split("\n\n") if "will not become ready" in line]
    assert "config.trust.directories.openbanking.jwks_uri" in readiness
    assert "trusted_proxies is empty" in notes
    sandbox = render(chart, ci_values("sandbox-values")).notes  # the chart sets the sandbox's own URLs
    assert "config.upstream.url" not in sandbox and "trusted_proxies is empty" not in sandbox
