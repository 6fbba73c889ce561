"""A client-wide revocation must outlive every token it revokes (issue 13): a policy set whose
`bearer_token.max_lifetime_seconds` (+ clock skew) exceeds `trust.revocation_ttl_seconds` is refused by
`config check`, `policy lint` and the loader, with an error naming both keys."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import load_settings
from gateway.policy.loader import PolicyError, load_policies
from gateway.runtime import build_runtime
from tests.conftest import ROOT

POLICY = """
policies:
  - name: read
    match: {methods: [GET], path: "/r/{ClientId}"}
    checks:
      - bearer_token: {issuers: [bank]%s}
      - client_ownership: {}
"""


def _write(tmp_path: Path, *, ttl: float, skew: float = 30, max_lifetime: float | None = None,
           policy: str | None = None) -> Path:
    (tmp_path / "pol").mkdir(exist_ok=True)
    extra = "" if max_lifetime is None else f", max_lifetime_seconds: {max_lifetime:g}"
    (tmp_path / "pol" / "p.yaml").write_text(policy if policy is not None else POLICY % extra)
    config = tmp_path / "config.yaml"
    config.write_text(f"""
policies: {{dir: pol, reload_interval_seconds: 0}}
sandbox: {{enabled: false}}
trust:
  clock_skew_seconds: {skew:g}
  revocation_ttl_seconds: {ttl:g}
  token_issuers:
    bank: {{issuer: "https://as.bank.test", jwks_uri: "https://as.bank.test/jwks"}}
""")
    return config


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={"PATH": "/usr/bin:/bin"})


def _load(config: Path) -> None:
    settings = load_settings(config, env={})
    load_policies(settings.resolve_path(settings.policies.dir), build_runtime(settings, None).services)


@pytest.mark.parametrize(("ttl", "skew", "max_lifetime"), [(3600, 30, 3600), (3629, 30, 3600), (600, 0, 601)])
def test_a_token_lifetime_that_outlasts_the_revocation_ttl_is_refused(tmp_path: Path, ttl, skew, max_lifetime):
    """The loader (start, reload, every tool) refuses it with file:line, the policy key and the config key."""
    config = _write(tmp_path, ttl=ttl, skew=skew, max_lifetime=max_lifetime)
    with pytest.raises(PolicyError) as exc:
        _load(config)
    (message,) = exc.value.messages
    assert message.startswith(f"{tmp_path / 'pol' / 'p.yaml'}:6: policies[0].checks[0].bearer_token.max_lifetime_seconds:")
    assert "trust.revocation_ttl_seconds" in message and f"at least {max_lifetime + skew:g}" in message


@pytest.mark.parametrize(("ttl", "skew", "max_lifetime"), [(3630, 30, 3600), (86400, 30, 3600), (600, 0, 600)])
def test_a_token_lifetime_within_the_revocation_ttl_loads(tmp_path: Path, ttl, skew, max_lifetime):
    """max_lifetime_seconds + clock skew <= revocation_ttl_seconds: accepted (the boundary included)."""
    _load(_write(tmp_path, ttl=ttl, skew=skew, max_lifetime=max_lifetime))


def test_config_check_refuses_it_naming_both_keys(tmp_path: Path):
    """`dcr-gateway config check` compiles the configured policies: exit 2, one clear error line."""
    config = _write(tmp_path, ttl=3600, max_lifetime=7200)
    proc = _cli("config", "check", "--config", str(config))
    assert proc.returncode == 2, proc.stdout
    assert "bearer_token.max_lifetime_seconds" in proc.stderr and "trust.revocation_ttl_seconds (3600 s)" in proc.stderr
    lint = _cli("policy", "lint", "--config", str(config))
    assert lint.returncode == 1
    assert "bearer_token.max_lifetime_seconds" in lint.stderr and "trust.revocation_ttl_seconds" in lint.stderr


def test_config_check_passes_when_the_ttl_is_long_enough(tmp_path: Path):
    """The same policy with a long enough TTL: config check says the config and the policies are ok."""
    config = _write(tmp_path, ttl=7230, max_lifetime=7200)
    proc = _cli("config", "check", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "1 policies ok" in proc.stdout


def test_config_check_reports_other_policy_errors_too(tmp_path: Path):
    """config check now loads the policies the config points at: an issuer the config does not define fails."""
    config = _write(tmp_path, ttl=86400, policy=(POLICY % "").replace("issuers: [bank]", "issuers: [elsewhere]"))
    proc = _cli("config", "check", "--config", str(config))
    assert proc.returncode == 2
    assert "unknown issuer 'elsewhere'" in proc.stderr


def test_config_check_without_the_policy_directory_checks_the_config_alone(tmp_path: Path):
    """A config rendered for a pod (policies mounted elsewhere) is still checkable; the output says the
    policies were not checked."""
    config = _write(tmp_path, ttl=86400)
    config.write_text(config.read_text().replace("dir: pol", "dir: /nonexistent/policies"))
    proc = _cli("config", "check", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert "not checked" in proc.stdout
