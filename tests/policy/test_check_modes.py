"""A check's `mode` in its policy (`client_id_header: {mode: audit}`), config `policies.check_modes` over it, and
the one rule every consumer reads (`resolve_check_mode`): the compiler, hot reload, `policy explain`, OpenAPI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.cli import main
from gateway.config import Settings, resolve_check_mode
from gateway.policy.loader import PolicyError, load_policies
from gateway.policy.reload import PolicyReloader
from gateway.runtime import build_runtime
from gateway.sandbox.openapi import MTLS, OAUTH, document
from tests.conftest import ROOT, SHIPPED_POLICIES, StartServer, make_settings
from tests.policy.test_enforcement import ISSUER, REGISTER, Bank

TRUST = {"token_issuers": {"bank": {"issuer": "https://as", "jwks_uri": "http://127.0.0.1:9/jwks"}}}


@pytest.fixture(autouse=True)
def _process_logging_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run in this process: they must not reconfigure its logging (structlog bound to capsys)."""
    monkeypatch.setattr("gateway.policy.cli.configure_logging", lambda *_: None)


def services(**policies: Any):
    return build_runtime(Settings.model_validate({"trust": TRUST, "policies": policies}), None).services


def shipped_copy(tmp_path: Path, *, dcr: str | None = None, src: Path = SHIPPED_POLICIES) -> Path:
    """The shipped policy directory in tmp_path, its dcr.yaml edited by `dcr(text)` when given."""
    directory = tmp_path / "policies"
    directory.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.yaml"):
        shutil.copy(f, directory / f.name)
    if dcr is not None:
        (directory / "dcr.yaml").write_text(dcr)
    return directory


def audit_client_id(text: str) -> str:
    """dcr.yaml with `client_id_header` in audit mode in every policy (the policy author's edit)."""
    assert "client_id_header: {}" in text
    return text.replace("client_id_header: {}", "client_id_header: {mode: audit}")


DCR = (SHIPPED_POLICIES / "dcr.yaml").read_text()


@pytest.mark.parametrize(
    ("policy", "config", "pinned", "mode", "source"),
    [
        (None, None, (), "enforce", "default"),
        ("audit", None, (), "audit", "policy"),
        ("enforce", None, (), "enforce", "policy"),
        ("enforce", "audit", (), "audit", "config"),  # the operator forces audit (an incident)
        ("audit", "enforce", (), "enforce", "config"),  # the operator forces enforcement
        (None, "audit", (), "audit", "config"),
        ("audit", None, ("x",), "enforce", "profile"),  # the profile's authenticating check
        (None, "audit", ("x",), "enforce", "profile"),
    ],
)
def test_precedence(policy, config, pinned, mode, source):
    """The profile's checks are enforced; else config check_modes wins; else the policy; else enforce."""
    resolved = resolve_check_mode("x", policy, {"x": config} if config else {}, pinned)
    assert (resolved.mode, resolved.source, resolved.policy) == (mode, source, policy)


def test_describe_names_both_sources():
    """The explain text says the mode, where it comes from, and what the policy says when overridden."""
    assert resolve_check_mode("x", "enforce", {"x": "audit"}).describe() == \
        "audit (policies.check_modes in the config; policy says enforce)"
    assert resolve_check_mode("x", "audit", {}).describe() == "audit (policy)"
    assert resolve_check_mode("x", None, {}).describe() == "enforce"
    assert "always enforces" in resolve_check_mode("x", "audit", {}, ("x",)).describe()


def test_a_policy_puts_one_check_in_audit_mode(tmp_path):
    """`client_id_header: {mode: audit}` compiles to the same switch config check_modes sets (audit_only)."""
    policy_set = load_policies(shipped_copy(tmp_path, dcr=audit_client_id(DCR)), services())
    for policy in policy_set.policies:
        for check, mode in zip(policy.checks, policy.modes, strict=True):
            assert check.audit_only is (check.name == "client_id_header"), (policy.name, check.name)
            assert mode.source == ("policy" if check.name == "client_id_header" else "default")
    # The operator's check_modes wins over the policy, both ways.
    forced = load_policies(shipped_copy(tmp_path, dcr=audit_client_id(DCR)),
                           services(check_modes={"client_id_header": "enforce", "bearer_token": "audit"}))
    checks = {c.name: c.audit_only for p in forced.policies for c in p.checks}
    assert checks["client_id_header"] is False and checks["bearer_token"] is True


@pytest.mark.parametrize("value", ["sometimes", "AUDIT", "true", "{}"])
def test_an_unknown_mode_is_refused_with_file_line_and_the_valid_modes(tmp_path, value):
    """A mode other than enforce or audit rejects the set, naming file, line, key and the valid values."""
    text = DCR.replace("client_id_header: {}", f"client_id_header: {{mode: {value}}}", 1)
    with pytest.raises(PolicyError) as info:
        load_policies(shipped_copy(tmp_path, dcr=text), services())
    [message] = info.value.messages
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "mode: " + value in t)
    assert message.startswith(f"{tmp_path / 'policies' / 'dcr.yaml'}:{line}: ")
    assert ".client_id_header.mode:" in message and "'enforce'" in message and "'audit'" in message


def test_the_ob_standard_profile_refuses_auditing_its_authentication(tmp_path):
    """ob_standard authenticates POST by the certificate alone: a policy cannot put client_certificate in audit."""
    src = ROOT / "policies" / "ob_standard"
    text = (src / "dcr.yaml").read_text()
    assert "- client_certificate: {" in text
    edited = text.replace("- client_certificate: {", "- client_certificate: {mode: audit, ", 1)
    directory = shipped_copy(tmp_path, dcr=edited, src=src)
    load_policies(directory, services())  # the bank profile allows it
    with pytest.raises(PolicyError) as info:
        load_policies(directory, services(profile="ob_standard"))
    assert "client_certificate cannot run in audit mode in this profile" in info.value.messages[0]
    assert ".client_certificate.mode" in info.value.messages[0]


async def _gateway(start_server: StartServer, running_gateway, policy_dir: Path, audit_path: Path | None = None,
                   **policies: Any):
    bank = Bank()
    server = await start_server(bank.app)
    base = str(server.make_url("")).rstrip("/")
    trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "token_types": ["at+jwt"]}}}
    gw = await running_gateway(base, policy_dir=policy_dir, trust=trust, policies=policies, audit_path=audit_path)
    return bank, gw


async def _decide_without_client_id(gw, bank) -> tuple[int, float]:
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={"Authorization": f"Bearer {bank.token()}"})
    sample = gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                        "decision": "audit_deny", "check": "client_id_header",
                                                        "reason": "client_id_missing"})
    return resp.status, sample


async def test_policy_audit_behaves_as_check_modes_audit(tmp_path, start_server: StartServer, running_gateway):
    """A policy's per-check audit and config check_modes audit give the same answer, metric and audit event."""
    events: dict[str, dict[str, Any]] = {}
    for how in ("policy", "config"):
        log = tmp_path / f"{how}.log"
        if how == "policy":
            policy_dir = shipped_copy(tmp_path / how, dcr=audit_client_id(DCR))
            bank, gw = await _gateway(start_server, running_gateway, policy_dir, log)
        else:
            bank, gw = await _gateway(start_server, running_gateway, SHIPPED_POLICIES, log,
                                      check_modes={"client_id_header": "audit"})
        assert await _decide_without_client_id(gw, bank) == (200, 1)
        assert gw.audit is not None
        gw.audit.close()
        [event] = [json.loads(line) for line in log.read_text().splitlines() if "dcr_register_read" in line]
        events[how] = {k: event[k] for k in ("policy", "mode", "decision", "check", "reason", "denials", "status")}
    assert events["policy"] == events["config"]
    assert events["policy"]["decision"] == "audit_deny" and events["policy"]["denials"] == [
        "client_id_header:client_id_missing"]


async def test_a_mode_edit_is_hot_reloaded(tmp_path, start_server: StartServer, running_gateway):
    """Putting a check in audit mode (and back) takes effect on reload, without a restart."""
    policy_dir = shipped_copy(tmp_path)
    bank, gw = await _gateway(start_server, running_gateway, policy_dir)
    reloader = PolicyReloader(policy_dir, gw.services, gw.holder, gw.metrics, unmatched_status=404, interval=0)
    assert (await _decide_without_client_id(gw, bank))[0] == 401
    (policy_dir / "dcr.yaml").write_text(audit_client_id(DCR))
    assert await reloader.reload() is True
    assert await _decide_without_client_id(gw, bank) == (200, 1)
    (policy_dir / "dcr.yaml").write_text(DCR.replace("client_id_header: {}", "client_id_header: {mode: maybe}"))
    assert await reloader.reload() is False  # rejected: the last good set keeps serving
    assert "client_id_header.mode" in reloader.last_error[0]
    assert gw.sample("dcr_gateway_policy_reloads_total", {"result": "failure"}) == 1
    (policy_dir / "dcr.yaml").write_text(DCR)
    assert await reloader.reload() is True
    assert (await _decide_without_client_id(gw, bank))[0] == 401


async def test_config_enforce_wins_over_a_policy_audit(tmp_path, start_server: StartServer, running_gateway):
    """check_modes {client_id_header: enforce}: the operator's word beats the policy's audit."""
    policy_dir = shipped_copy(tmp_path, dcr=audit_client_id(DCR))
    bank, gw = await _gateway(start_server, running_gateway, policy_dir, check_modes={"client_id_header": "enforce"})
    assert await _decide_without_client_id(gw, bank) == (401, 0)


def _explain(capsys, tmp_path: Path, policy_dir: Path, config: str, *dir_args: str) -> str:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(config)
    args = dir_args or ("--dir", str(policy_dir))
    assert main(["policy", "explain", "--config", str(cfg), "--method", "GET", "--path", f"{REGISTER}/abc",
                 *args]) == 0
    return capsys.readouterr().out


def _mode_line(out: str, check: str) -> str:
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.strip().split("  ")[0].endswith(f". {check}"))
    return lines[at + 1].strip()


def test_explain_shows_each_checks_mode_and_both_sources(tmp_path, capsys):
    """`policy explain` shows every check's mode, the config override and what the policy says."""
    policy_dir = shipped_copy(tmp_path, dcr=audit_client_id(DCR))
    trust = "trust: {token_issuers: {bank: {issuer: 'https://as', jwks_uri: 'http://127.0.0.1:9/jwks'}}}\n"
    out = _explain(capsys, tmp_path, policy_dir, trust)
    assert _mode_line(out, "client_id_header") == "mode: audit (policy)"
    assert _mode_line(out, "bearer_token") == "mode: enforce"
    out = _explain(capsys, tmp_path, policy_dir,
                   trust + "policies: {check_modes: {client_id_header: enforce, bearer_token: audit}}\n")
    assert _mode_line(out, "client_id_header") == "mode: enforce (policies.check_modes in the config; policy says audit)"
    assert _mode_line(out, "bearer_token") == "mode: audit (policies.check_modes in the config)"
    # The directory as a positional argument, as lint and test take it.
    assert _explain(capsys, tmp_path, policy_dir, trust, str(policy_dir)) == \
        _explain(capsys, tmp_path, policy_dir, trust, "--dir", str(policy_dir))


def test_openapi_leaves_out_a_check_the_policy_audits(tmp_path):
    """The OpenAPI document reads the per-check mode through the same rule: an audited certificate is not
    documented as required; check_modes enforce brings it back."""
    text = DCR.replace("- client_certificate: {", "- client_certificate: {mode: audit, ")
    assert text != DCR
    policy_dir = shipped_copy(tmp_path, dcr=text)

    def post_security(**policies: Any) -> set[str]:
        settings = make_settings("http://127.0.0.1:9", server={"public_url": "https://bank.test"},
                                 policies={"dir": str(policy_dir), **policies})
        return set(document(settings)["paths"][REGISTER]["post"]["security"][0])

    assert post_security() == {OAUTH}
    assert post_security(check_modes={"client_certificate": "enforce"}) == {OAUTH, MTLS}


def test_config_check_says_when_check_modes_overrules_a_policy(tmp_path, capsys, monkeypatch):
    """`config check` warns (exit 0) for each policy whose check mode the config overrules."""
    monkeypatch.setattr("gateway.cli.configure_logging", lambda *_: None)
    policy_dir = shipped_copy(tmp_path, dcr=audit_client_id(DCR))
    cfg = tmp_path / "config.yaml"
    trust = "trust: {token_issuers: {bank: {issuer: 'https://as', jwks_uri: 'http://127.0.0.1:9/jwks'}}}\n"
    cfg.write_text(trust + f"policies: {{dir: {policy_dir}, check_modes: {{client_id_header: enforce}}}}\n")
    assert main(["config", "check", "--config", str(cfg)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "overrides" in line]
    assert len(warnings) == DCR.count("client_id_header: {}")
    assert warnings[0].startswith(f"warning: {cfg}: policies.check_modes.client_id_header: enforce overrides "
                                  "`mode: audit` of policy dcr_register_")
    cfg.write_text(trust + f"policies: {{dir: {policy_dir}}}\n")
    assert main(["config", "check", "--config", str(cfg)]) == 0
    assert "overrides" not in capsys.readouterr().err
