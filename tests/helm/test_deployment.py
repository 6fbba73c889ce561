"""The rendered Deployment: hardened defaults, probes, graceful shutdown math, restarts, sandbox, secrets."""

from __future__ import annotations

import math
from typing import Any

import helm_python as helm
import pytest

from gateway.config.settings import ShutdownSettings

from .render import REPO, ci_values, render


def test_pod_runs_restricted_by_default(chart: helm.Chart) -> None:
    """Pod Security "restricted": non-root 10001, seccomp RuntimeDefault, no privilege, read-only root, no caps."""
    r = render(chart)
    pod_sc = r.pod["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] == 10001
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = r.container["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["runAsUser"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc.get("privileged", False) is False


def test_security_overrides_merge_over_the_hardened_default(chart: helm.Chart) -> None:
    """A value changes one field and keeps the rest of the hardened context."""
    r = render(chart, {"containerSecurityContext": {"runAsUser": 20000}})
    sc = r.container["securityContext"]
    assert sc["runAsUser"] == 20000
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}


def test_writable_paths_are_emptydirs(chart: helm.Chart) -> None:
    """The root filesystem is read-only: /tmp is an emptyDir, config and policies are read-only mounts."""
    r = render(chart)
    mounts = {m["mountPath"]: m for m in r.container["volumeMounts"]}
    volumes = {v["name"]: v for v in r.pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert mounts["/etc/dcr-gateway/config"]["readOnly"] is True
    assert mounts["/etc/dcr-gateway/policies"]["readOnly"] is True
    assert not any("subPath" in m for m in mounts.values())


def test_no_service_account_token(chart: helm.Chart) -> None:
    """The gateway never calls the Kubernetes API: no token mounted, neither by the pod nor the SA."""
    r = render(chart)
    assert r.pod["automountServiceAccountToken"] is False
    sa = r.one("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert r.pod["serviceAccountName"] == sa["metadata"]["name"]


def test_probes_hit_the_admin_port(chart: helm.Chart) -> None:
    """Liveness and startup on /healthz, readiness on /readyz, all on the admin port (9090)."""
    r = render(chart)
    c = r.container
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}


def test_container_ports_follow_the_config(chart: helm.Chart) -> None:
    """The listeners in config.yaml and the container ports cannot disagree."""
    r = render(chart, {"config": {"server": {"public": {"port": 8443}, "admin": {"port": 9443}}}})
    ports = {p["name"]: p["containerPort"] for p in r.container["ports"]}
    assert ports == {"http": 8443, "admin": 9443}
    assert r.config["server"]["public"]["port"] == 8443


def test_gateway_runs_the_mounted_config(chart: helm.Chart) -> None:
    """`dcr-gateway serve --config` on the mounted ConfigMap, with the policy dir the chart mounts."""
    r = render(chart)
    assert r.container["args"] == ["serve", "--config", "/etc/dcr-gateway/config/config.yaml"]
    assert r.config["policies"]["dir"] == "/etc/dcr-gateway/policies"


def _shutdown(r: Any) -> tuple[int, float, float, int]:
    hook = r.container.get("lifecycle", {}).get("preStop")
    if hook is None:
        sleep = 0
    elif "exec" in hook:
        assert hook["exec"]["command"][0] == "sleep"
        sleep = int(hook["exec"]["command"][1])
    else:
        sleep = hook["sleep"]["seconds"]
    shutdown = r.config["shutdown"]
    return sleep, shutdown["readiness_delay_seconds"], shutdown["drain_timeout_seconds"], \
        r.pod["terminationGracePeriodSeconds"]


@pytest.mark.parametrize(("values", "expected_sleep"), [
    ({}, 5),
    ({"config": {"shutdown": {"readiness_delay_seconds": 2.5, "drain_timeout_seconds": 40}}}, 3),
    ({"preStopSleepSeconds": 10}, 10),
    ({"preStopSleepSeconds": 0}, 0),
    ({"preStopSleepSeconds": 7, "preStopSleepAction": True}, 7),
])
def test_grace_period_outlasts_prestop_readiness_delay_and_drain(
    chart: helm.Chart, values: dict[str, Any], expected_sleep: int
) -> None:
    """terminationGracePeriodSeconds > preStop sleep + readiness delay + drain timeout (kubelet counts all three)."""
    sleep, delay, drain, grace = _shutdown(render(chart, values))
    assert sleep == expected_sleep
    assert grace > sleep + delay + drain
    assert grace == math.ceil(sleep + delay + drain) + 5  # the default margin


def test_prestop_defaults_to_the_readiness_delay(chart: helm.Chart) -> None:
    """Unset, the preStop sleep matches config.shutdown.readiness_delay_seconds."""
    sleep, delay, _, _ = _shutdown(render(chart, {"config": {"shutdown": {"readiness_delay_seconds": 8}}}))
    assert sleep == delay == 8


def test_prestop_can_use_the_kubelet_sleep_action(chart: helm.Chart) -> None:
    """preStopSleepAction renders the built-in sleep (no `sleep` binary needed in the image)."""
    hook = render(chart, {"preStopSleepAction": True}).container["lifecycle"]["preStop"]
    assert hook == {"sleep": {"seconds": 5}}


def test_readme_and_deployment_guide_give_the_charts_shutdown_timing(chart: helm.Chart) -> None:
    """One source of truth: the numbers README and docs/deployment.md give for the preStop sleep and the grace
    period are what the chart renders by default, from the gateway's own shutdown defaults."""
    sleep, delay, drain, grace = _shutdown(render(chart))
    defaults = ShutdownSettings()
    assert (delay, drain) == (defaults.readiness_delay_seconds, defaults.drain_timeout_seconds)
    readme = " ".join((REPO / "README.md").read_text().split())
    assert f"`shutdown.readiness_delay_seconds` (R, default {delay:g} s)" in readme
    assert f"`shutdown.drain_timeout_seconds` (D, default {drain:g} s)" in readme
    assert f"a preStop sleep of P = R ({sleep} s," in readme
    assert f"`terminationGracePeriodSeconds` = P + R + D + 5 = {grace} s" in readme
    assert "leave `preStop` empty" not in readme
    guide = " ".join((REPO / "docs/deployment.md").read_text().split())
    assert f"with the defaults P = {sleep}, R = {delay:g}, D = {drain:g}, margin 5, T = {grace}." in guide


def test_a_grace_period_too_short_to_drain_fails_the_install(chart: helm.Chart) -> None:
    """An explicit terminationGracePeriodSeconds that would kill in-flight requests is refused."""
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render(chart, {"terminationGracePeriodSeconds": 30})  # 5 + 5 + 20 = 30: not above
    assert render(chart, {"terminationGracePeriodSeconds": 31}).pod["terminationGracePeriodSeconds"] == 31


def test_config_change_restarts_pods_policy_change_does_not(chart: helm.Chart) -> None:
    """The pod template carries the config's checksum, and nothing that changes with the policies."""
    base = render(chart).deployment["spec"]["template"]
    changed_config = render(chart, {"config": {"logging": {"level": "debug"}}}).deployment["spec"]["template"]
    changed_policies = render(
        chart, {"policies": {"files": {"extra.yaml": "policies:\n  - name: x\n    match: {path: /x}\n"}}}
    ).deployment["spec"]["template"]
    assert base["metadata"]["annotations"]["checksum/config"] != \
        changed_config["metadata"]["annotations"]["checksum/config"]
    assert changed_policies == base


def test_replicas_topology_and_rollout(chart: helm.Chart) -> None:
    """One replica by default (its in-memory security state is complete); several, with Redis, are spread over
    nodes and zones; a rollout never removes a pod before its replacement is ready."""
    assert render(chart).deployment["spec"]["replicas"] == 1
    r = render(chart, {"replicaCount": 2, "redis": {"enabled": True, "existingSecret": "redis"}})
    spec = r.deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    selector = spec["selector"]["matchLabels"]
    constraints = {c["topologyKey"]: c for c in r.pod["topologySpreadConstraints"]}
    assert set(constraints) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for c in constraints.values():
        assert c["labelSelector"]["matchLabels"] == selector
        assert c["matchLabelKeys"] == ["pod-template-hash"]


def test_autoscaling_owns_the_replica_count(chart: helm.Chart) -> None:
    """With the HPA on, the Deployment leaves `replicas` to it (helm upgrade would fight the HPA otherwise)."""
    r = render(chart, ci_values("production-values"))
    assert "replicas" not in r.deployment["spec"]
    hpa = r.one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == r.deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] == 3
    assert render(chart).all("HorizontalPodAutoscaler") == []


def test_pod_disruption_budget(chart: helm.Chart) -> None:
    """maxUnavailable 1 by default (never blocks a drain); minAvailable when set."""
    assert render(chart).one("PodDisruptionBudget")["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": render(chart).deployment["spec"]["selector"]["matchLabels"]},
    }
    prod = render(chart, ci_values("production-values")).one("PodDisruptionBudget")["spec"]
    assert prod["minAvailable"] == 2
    assert "maxUnavailable" not in prod


def test_sandbox_is_off_by_default(chart: helm.Chart) -> None:
    """Production shape: the sandbox does not run and the gateway forwards to the configured backend."""
    r = render(chart)
    assert r.config["sandbox"] == {"enabled": False}
    assert r.config["upstream"]["url"] == "https://dcr-backend.bank.invalid"


def test_sandbox_switch_for_a_demo_namespace(chart: helm.Chart) -> None:
    """sandbox.enabled: sandbox on loopback, upstream and issuer keys at it, state on an emptyDir, one pod."""
    values = {**ci_values("sandbox-values"), "autoscaling": {"enabled": True}, "replicaCount": 3}
    r = render(chart, values)
    cfg = r.config
    assert cfg["sandbox"]["enabled"] is True
    assert cfg["upstream"]["url"] == "http://127.0.0.1:8081"
    assert cfg["trust"]["token_issuers"]["bank"]["jwks_uri"] == "http://127.0.0.1:8081/jwks"
    assert cfg["trust"]["token_issuers"]["bank"]["issuer"] == cfg["server"]["public_url"]
    state = cfg["sandbox"]["state_dir"]
    mount = next(m for m in r.container["volumeMounts"] if m["mountPath"] == state)
    volume = next(v for v in r.pod["volumes"] if v["name"] == mount["name"])
    assert "emptyDir" in volume
    assert r.deployment["spec"]["replicas"] == 1
    assert r.all("HorizontalPodAutoscaler") == []
    assert r.all("PodDisruptionBudget") == []
    assert "SANDBOX" in r.notes


def test_secrets_come_from_secret_refs_only(chart: helm.Chart) -> None:
    """secretEnv renders secretKeyRef env vars; the chart itself creates no Secret and inlines no value."""
    r = render(chart, ci_values("production-values"))
    env = {e["name"]: e for e in r.container["env"]}
    ref = env["GW_PARTNER_INTROSPECTION_SECRET"]
    assert "value" not in ref
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "dcr-gateway-secrets",
                                                "key": "partner-introspection-client-secret"}
    assert r.config["trust"]["token_issuers"]["partner"]["introspection"]["client_secret_env"] == \
        "GW_PARTNER_INTROSPECTION_SECRET"
    assert r.all("Secret") == []


def test_a_secret_env_without_a_secret_name_fails(chart: helm.Chart) -> None:
    """No `secret` and no `existingSecret`: the install stops instead of rendering a broken reference."""
    with pytest.raises(helm.HelmError, match="secretEnv GW_X"):
        render(chart, {"secretEnv": [{"name": "GW_X", "key": "k"}]})


def test_image_reference(chart: helm.Chart) -> None:
    """Tag defaults to appVersion; a digest pins the image."""
    assert render(chart).container["image"] == f"dcr-gateway:{chart.metadata['appVersion']}"
    prod = ci_values("production-values")
    assert render(chart, prod).container["image"] == \
        f"registry.bank.example/platform/dcr-gateway@{prod['image']['digest']}"
