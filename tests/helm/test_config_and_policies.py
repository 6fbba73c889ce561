"""What the ConfigMaps carry: a config and a policy set the real gateway CLI accepts, and the shipped policies
single-sourced from the repository's policies/ (files/policies is a symlink Helm resolves)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from gateway.config import load_settings
from gateway.observability.metrics import Metrics
from gateway.policy.loader import load_policies
from gateway.policy.reload import PolicyHolder, PolicyReloader
from gateway.runtime import build_runtime

from .render import CHART, CI_VALUES, RELEASE, REPO, ci_values, gateway_cli, pod_env, render, write_mounts

SHIPPED = {p.name: p.read_text() for p in sorted((REPO / "policies").glob("*.yaml")) if not p.stem.endswith("_test")}


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_rendered_config_passes_config_check(chart: helm.Chart, values_file: str, tmp_path: Path) -> None:
    """`dcr-gateway config check` accepts the rendered config.yaml in the pod's environment (the Redis URL
    from its Secret where redis.enabled), with no warning: its URLs agree with server.public_url."""
    r = render(chart, ci_values(values_file))
    config, _ = write_mounts(r, tmp_path)
    result = gateway_cli("config", "check", "--config", str(config), env=pod_env(r))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_rendered_policies_pass_policy_lint(chart: helm.Chart, values_file: str, tmp_path: Path) -> None:
    """`dcr-gateway policy lint` accepts the rendered policy directory with the rendered config's trust anchors."""
    r = render(chart, ci_values(values_file))
    config, policies = write_mounts(r, tmp_path)
    result = gateway_cli("policy", "lint", str(policies), "--config", str(config), env=pod_env(r))
    assert result.returncode == 0, result.stderr
    assert "policies ok" in result.stdout


def test_shipped_policy_tests_pass_with_the_rendered_sandbox_config(chart: helm.Chart, tmp_path: Path) -> None:
    """The shipped policies' test cases (written for the sandbox profile: certificate checks in audit mode)
    pass with the chart's sandbox config (issuer and directory names and all)."""
    config, _ = write_mounts(render(chart, ci_values("sandbox-values")), tmp_path)
    result = gateway_cli("policy", "test", str(REPO / "policies"), "--config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checks_can_fail(chart: helm.Chart, tmp_path: Path) -> None:
    """A policy naming an issuer the rendered config lacks is caught by the same lint (the test above can fail)."""
    bad = {"policies": {"files": {"x.yaml": "policies:\n  - name: x\n    match: {methods: [GET], path: /x}\n"
                                            "    checks:\n      - bearer_token: {issuers: [nobody]}\n"}}}
    config, policies = write_mounts(render(chart, bad), tmp_path)
    result = gateway_cli("policy", "lint", str(policies), "--config", str(config))
    assert result.returncode == 1
    assert "nobody" in result.stderr


def test_files_policies_is_a_symlink_to_the_repository_policies() -> None:
    """One source of truth: the chart reads policies/ through a symlink, never a copy that could drift."""
    link = CHART / "files" / "policies"
    assert link.is_symlink()
    assert link.resolve() == (REPO / "policies").resolve()


def test_policies_configmap_holds_exactly_the_shipped_policies(chart: helm.Chart) -> None:
    """Every top-level policies/*.yaml, byte for byte; their *_test.yaml cases stay out of the cluster."""
    data = render(chart).configmap_data("policies")
    assert data == SHIPPED
    assert SHIPPED and not any(name.endswith("_test.yaml") for name in data)


def test_packaged_chart_carries_the_policy_files(tmp_path: Path) -> None:
    """`helm package` resolves the symlink: the archive holds the files and renders the same ConfigMap."""
    archive = Path(helm.package(CHART, destination=tmp_path))
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    for name in SHIPPED:
        member = members[f"dcr-gateway/files/policies/{name}"]
        assert member.isfile()
    assert not any(m.issym() for m in members.values())
    assert not any(name.startswith("dcr-gateway/ci/") for name in members)  # .helmignore
    with helm.Chart.load_archive(archive.read_bytes()) as packaged:
        assert render(packaged).configmap_data("policies") == SHIPPED


def test_extra_policy_files_and_replacing_a_shipped_one(chart: helm.Chart) -> None:
    """policies.files adds files and replaces a shipped file of the same name."""
    mine = "policies:\n  - name: mine\n    match: {methods: [GET], path: /mine}\n"
    data = render(chart, {"policies": {"files": {"mine.yaml": mine, "oauth.yaml": mine}}}).configmap_data("policies")
    assert data["mine.yaml"] == mine
    assert data["oauth.yaml"] == mine
    assert data["dcr.yaml"] == SHIPPED["dcr.yaml"]
    only_mine = render(chart, {"policies": {"shipped": False, "files": {"mine.yaml": mine}}})
    assert only_mine.configmap_data("policies") == {"mine.yaml": mine}


def test_no_policies_at_all_fails(chart: helm.Chart) -> None:
    """A gateway without policies would refuse every request: the install stops instead."""
    with pytest.raises(helm.HelmError, match="no policies"):
        render(chart, {"policies": {"shipped": False}})


def test_existing_policies_configmap(chart: helm.Chart) -> None:
    """policies.existingConfigMap: the chart mounts it and renders no policies ConfigMap of its own."""
    r = render(chart, {"policies": {"existingConfigMap": "bank-policies"}})
    names = {m["metadata"]["name"] for m in r.all("ConfigMap")}
    assert f"{RELEASE}-policies" not in names
    volume = next(v for v in r.pod["volumes"] if v["name"] == "policies")
    assert volume["configMap"]["name"] == "bank-policies"


def test_config_mirrors_values(chart: helm.Chart) -> None:
    """values `config` is config.yaml: a key set in values arrives unchanged, defaults stay alongside."""
    cfg = render(chart, {"config": {"upstream": {"url": "https://backend.example:8443"},
                                    "policies": {"check_modes": {"content_type": "audit"}}}}).config
    assert cfg["upstream"]["url"] == "https://backend.example:8443"
    assert cfg["upstream"]["timeouts"] == {"connect": 2, "read": 15, "total": 30}
    assert cfg["policies"]["check_modes"] == {"content_type": "audit"}
    assert cfg["logging"]["format"] == "json"


def test_chart_owned_keys_win(chart: helm.Chart) -> None:
    """policies.dir and the sandbox section follow the chart's mounts whatever `config` says."""
    cfg = render(chart, {"config": {"policies": {"dir": "/elsewhere"}, "sandbox": {"enabled": True}}}).config
    assert cfg["policies"]["dir"] == "/etc/dcr-gateway/policies"
    assert cfg["sandbox"] == {"enabled": False}


def test_values_config_defaults_match_the_repository_config_keys() -> None:
    """The values `config` block has the same sections as config.yaml (values = config)."""
    repo_cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    with helm.Chart.load(CHART) as c:
        values_cfg = c.values["config"]
    assert set(values_cfg) == set(repo_cfg) - {"sandbox"}


def _kubelet_volume(root: Path, data: dict[str, str], revision: str) -> None:
    """Write a ConfigMap revision as the kubelet does: a hidden timestamped dir, `..data` swapped atomically."""
    target = root / f"..{revision}"
    target.mkdir()
    for name, content in data.items():
        (target / name).write_text(content)
        if not (root / name).is_symlink():
            (root / name).symlink_to(f"..data/{name}")
    (root / "..data_tmp").symlink_to(target.name)
    os.replace(root / "..data_tmp", root / "..data")


async def test_helm_upgrade_of_policies_reaches_the_running_pod(chart: helm.Chart, tmp_path: Path) -> None:
    """An upgrade that only adds a policy leaves the pod alone, and the pod's reloader serves the new set."""
    extra = {"extra.yaml": "policies:\n  - name: extra\n    match: {methods: [GET], path: /extra}\n"}
    before, after = render(chart), render(chart, {"policies": {"files": extra}})
    assert before.deployment["spec"]["template"] == after.deployment["spec"]["template"]  # no restart

    volume = tmp_path / "policies"
    volume.mkdir()
    _kubelet_volume(volume, before.configmap_data("policies"), "2026_01_01_00_00_00.1")
    config = tmp_path / "config.yaml"
    config.write_text(before.configmap_data("config")["config.yaml"])
    settings = load_settings(config, env={"DCRGW_POLICIES__DIR": str(volume)})
    services = build_runtime(settings, None).services
    holder = PolicyHolder(load_policies(volume, services))
    reloader = PolicyReloader(volume, services, holder, Metrics(), unmatched_status=404, interval=1)
    assert holder.current.match("GET", "/extra") is None

    _kubelet_volume(volume, after.configmap_data("policies"), "2026_01_01_00_01_00.2")
    assert await reloader.reload() is True
    match = holder.current.match("GET", "/extra")
    assert match is not None and match.value is not None and match.value.name == "extra"
    assert {p.name for p in holder.current.policies} >= {"dcr_register_read", "extra"}
