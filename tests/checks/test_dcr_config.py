"""Config and parameters of the DCR checks are validated at load time, with the key named."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, Settings, load_settings
from gateway.policy.loader import PolicyError, load_policies
from gateway.runtime import build_runtime

TRUST = {"directories": {"ob": {"issuer": "OpenBanking Ltd", "jwks_uri": "http://127.0.0.1:9/jwks"}}}


def _config_errors(tmp_path, text: str) -> list[str]:
    p = tmp_path / "config.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_settings(p, env={})
    return info.value.messages


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("trust:\n  directories:\n    a: {issuer: X, jwks_uri: 'http://h/j'}\n    b: {issuer: X, jwks_uri: 'http://h/k'}\n",
         "directories a and b have the same issuer"),
        ("trust:\n  directories:\n    a: {issuer: X, jwks_uri: 'ftp://h/j'}\n", "expected an http(s) URL"),
        ("trust:\n  directories:\n    a: {issuer: X, jwks_uri: 'http://h/j', algorithms: [HS256]}\n",
         "trust.directories.a.algorithms[0]"),
        ("trust:\n  client_certificate: {trusted_proxies: [not-an-ip]}\n", "expected an IP address or CIDR"),
        ("trust:\n  client_certificate: {format: apache}\n", "trust.client_certificate.format"),
        ("trust:\n  software_jwks: {allow_link_local: true}\n", "trust.software_jwks.allow_link_local: unknown key"),
        ("server:\n  trusted_proxies: [10.0.0.0/8, 'lb.internal']\n", "expected an IP address or CIDR, got 'lb.internal'"),
    ],
    ids=["duplicate-issuer", "bad-jwks-scheme", "hmac-alg", "bad-proxy", "bad-format", "no-link-local-knob",
         "bad-server-proxy"],
)
def test_invalid_trust_settings_are_named(tmp_path, text, expected):
    """Each invalid DCR trust setting is reported with its key path."""
    assert any(expected in m for m in _config_errors(tmp_path, text))


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ("software_statement: {directories: [nope]}",
         "software_statement.directories[0]: unknown directory 'nope' (config trust.directories: ob)"),
        ("registration_request: {algorithms: [HS256]}", "registration_request.algorithms[0]"),
        ("registration_request: {algorithms: [none]}", "registration_request.algorithms[0]"),
        ("client_certificate: {status: 500}", "client_certificate.status"),
        ("replay: {window: 10}", "replay.window: unknown key"),
    ],
)
def test_invalid_check_parameters_are_load_errors(tmp_path, check, expected):
    """Parameters of the DCR checks are validated when the policy set is built."""
    (tmp_path / "p.yaml").write_text(
        f"policies:\n  - name: a\n    match: {{methods: [POST], path: /r}}\n    checks:\n      - {check}\n")
    with pytest.raises(PolicyError) as info:
        load_policies(tmp_path, build_runtime(Settings.model_validate({"trust": TRUST}), None).services)
    assert any(expected in m for m in info.value.messages), info.value.messages


def test_shipped_config_carries_the_sandbox_trust_anchors():
    """config.yaml: the sandbox directory, http+loopback TPP key sets, aud = the gateway, audit-mode certificates."""
    from tests.conftest import ROOT

    s = load_settings(ROOT / "config.yaml", env={})
    (directory,) = s.trust.directories.values()
    assert (directory.issuer, directory.jwks_uri) == ("OpenBanking Ltd", "http://127.0.0.1:8081/directory/jwks")
    assert s.trust.software_jwks.allow_http and s.trust.software_jwks.allow_loopback
    assert not s.trust.software_jwks.allow_private
    assert s.trust.registration_audiences == (s.server.public_url,)
    assert s.policies.check_modes == {"client_certificate": "audit"}


def test_defaults_are_strict():
    """Without config, TPP key sets must be https on public addresses and no certificate header is trusted."""
    s = Settings()
    assert not (s.trust.software_jwks.allow_http or s.trust.software_jwks.allow_loopback
                or s.trust.software_jwks.allow_private)
    assert s.trust.client_certificate.trusted_proxies == ()
    assert s.trust.directories == {}
