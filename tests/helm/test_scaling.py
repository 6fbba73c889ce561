"""Scaling out: `workers` and the Redis state store as the chart exposes them — the rendered config, the Redis
URL from a Secret, the combinations the chart refuses, the NOTES warnings, and the rendered production pod
run for real (`dcr-gateway serve` with two workers on a loopback redis-server)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import helm_python as helm
import pytest
import yaml
from jwcrypto import jwk

from gateway.config import load_settings
from tests.conftest import RedisServer, free_port

from .render import (
    ci_values,
    gateway_cli,
    in_signed_facts_secret,
    pod_env,
    render,
    write_mounts,
    write_signed_facts_secret,
)

REDIS: dict[str, Any] = {"enabled": True, "existingSecret": "dcr-redis", "urlKey": "redis-url"}


def test_workers_and_redis_reach_the_rendered_config(chart: helm.Chart) -> None:
    """`workers` → server.workers, `redis.enabled` → state.backend redis; the defaults say 1 and memory."""
    default = render(chart).config
    assert default["server"]["workers"] == 1
    assert default["state"] == {"backend": "memory"}
    prod = render(chart, ci_values("production-values")).config
    assert prod["server"]["workers"] == 2
    assert prod["state"]["backend"] == "redis"
    assert prod["state"]["redis"]["key_prefix"] == "dcrgw:prod:"  # tuning keys pass through
    cfg = render(chart, {"workers": 3, "redis": REDIS}).config
    assert (cfg["server"]["workers"], cfg["state"]["backend"]) == (3, "redis")
    assert "url" not in cfg["state"].get("redis", {}) and "url_env" not in cfg["state"].get("redis", {})


def test_a_workers_change_rolls_the_pods(chart: helm.Chart) -> None:
    """server.workers is in config.yaml, read once at start: the checksum annotation changes with it."""
    def checksum(workers: int) -> str:
        r = render(chart, {"workers": workers, "redis": REDIS})
        return str(r.deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"])

    assert checksum(2) != checksum(3)


def test_redis_url_comes_from_the_secret_only(chart: helm.Chart) -> None:
    """DCRGW_STATE__REDIS__URL from a secretKeyRef; no URL in the ConfigMap, no Secret created by the chart."""
    r = render(chart, ci_values("production-values"))
    (entry,) = [e for e in r.container["env"] if e["name"] == "DCRGW_STATE__REDIS__URL"]
    assert entry == {"name": "DCRGW_STATE__REDIS__URL",
                     "valueFrom": {"secretKeyRef": {"name": "dcr-gateway-secrets", "key": "redis-url"}}}
    assert "redis://" not in r.configmap_data("config")["config.yaml"]
    assert r.all("Secret") == []
    default_key = render(chart, {"redis": {"enabled": True, "existingSecret": "s"}}).container["env"]
    assert default_key[0]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "url"}
    assert "env" not in render(chart).container  # Redis off: no variable at all


REFUSED = [
    pytest.param({"workers": 2}, "workers: 2 worker processes per pod need redis.enabled", id="workers-without-redis"),
    pytest.param({"workers": 2, "redis": REDIS, "sandbox": {"enabled": True},
                  "config": {"server": {"public_url": "https://demo.bank.example"}}},
                 "workers: 2 worker processes cannot run with sandbox.enabled", id="workers-with-sandbox"),
    pytest.param({"redis": {"enabled": True}}, "redis.enabled needs redis.existingSecret", id="redis-without-secret"),
    pytest.param({"redis": REDIS, "config": {"state": {"redis": {"url": "redis://:pw@redis:6379/0"}}}},
                 "config.state.redis.url / url_env: the Redis URL may hold a password", id="inline-url"),
    pytest.param({"config": {"state": {"backend": "redis"}}}, "config.state.backend: set by the chart",
                 id="backend-in-config"),
    pytest.param({"config": {"server": {"workers": 4}}}, "config.server.workers: set by the chart",
                 id="workers-in-config"),
    pytest.param({"extraEnv": [{"name": "DCRGW_SERVER__WORKERS", "value": "4"}]},
                 "DCRGW_SERVER__WORKERS: set by the chart", id="workers-in-env"),
    pytest.param({"redis": REDIS, "secretEnv": [{"name": "DCRGW_STATE__REDIS__URL", "key": "k", "secret": "s"}]},
                 "DCRGW_STATE__REDIS__URL: set by the chart", id="redis-url-in-secret-env"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED)
def test_unsafe_combinations_fail_the_install(chart: helm.Chart, values: dict[str, Any], message: str) -> None:
    """What the gateway would refuse at start (or a URL in values) stops `helm install` with a clear message."""
    with pytest.raises(helm.HelmError) as info:
        render(chart, values)
    assert message in str(info.value)


def test_the_same_combinations_install_once_made_safe(chart: helm.Chart) -> None:
    """The refusals are specific: workers > 1 with Redis, and Redis with its Secret, do install."""
    assert render(chart, {"workers": 2, "redis": REDIS}).container["args"] == [
        "serve", "--config", "/etc/dcr-gateway/config/config.yaml"]  # workers come from config.yaml
    render(chart, {"redis": REDIS, "sandbox": {"enabled": True},
                   "config": {"server": {"public_url": "https://demo.bank.example"}}})


PER_POD = "without Redis: the replay cache,"
ACCEPT = "I understand replays and revocations are per pod"
DEMO: dict[str, Any] = {"sandbox": {"enabled": True}, "config": {"server": {"public_url": "https://demo.bank.example"}}}


def test_the_default_install_is_one_pod_with_complete_state(chart: helm.Chart) -> None:
    """Safe by default: one replica, no HPA, the in-memory store, nothing to warn about."""
    r = render(chart)
    assert r.deployment["spec"]["replicas"] == 1
    assert r.all("HorizontalPodAutoscaler") == []
    assert r.config["state"]["backend"] == "memory"
    assert PER_POD not in r.notes


@pytest.mark.parametrize(("values", "cause"), [
    pytest.param({"replicaCount": 2}, "replicaCount: 2", id="replicas"),
    pytest.param({"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 5}}, "autoscaling.maxReplicas: 5",
                 id="autoscaling"),
    pytest.param({"autoscaling": {"enabled": True, "maxReplicas": 3}, "replicaCount": 1}, "autoscaling.maxReplicas: 3",
                 id="autoscaling-over-one-replica"),
    pytest.param({"replicaCount": 2, "acceptPerPodSecurityState": "yes"}, "replicaCount: 2", id="not-the-sentence"),
])
def test_several_pods_without_redis_fail_the_install(chart: helm.Chart, values: dict[str, Any], cause: str) -> None:
    """More than one pod (replicas or the HPA's maximum) with per-pod security state: the render is refused, the
    message names the cause, the risk and the three ways out, the acceptance among them word for word."""
    with pytest.raises(helm.HelmError) as info:
        render(chart, values)
    message = str(info.value)
    if "acceptPerPodSecurityState" in values:
        assert 'acceptPerPodSecurityState: "yes" is not the acceptance' in message
        assert f'exactly "{ACCEPT}"' in message
        return
    assert f"{cause} without redis.enabled" in message
    assert "a registration replayed to another pod is accepted" in message
    assert "redis.enabled" in message and "replicaCount: 1" in message
    assert f'acceptPerPodSecurityState: "{ACCEPT}"' in message


def test_several_pods_install_with_redis_or_the_risk_accepted(chart: helm.Chart) -> None:
    """The refusal is specific: Redis, the acceptance by name, one pod or the sandbox (one pod) install. With the
    acceptance NOTES still warns (the risk stays), saying that it was accepted; with Redis it says nothing."""
    assert render(chart, {"replicaCount": 2, "redis": REDIS}).deployment["spec"]["replicas"] == 2
    accepted = render(chart, {"replicaCount": 2, "acceptPerPodSecurityState": ACCEPT})
    assert accepted.deployment["spec"]["replicas"] == 2
    assert accepted.config["state"]["backend"] == "memory"
    assert "WARNING (risk accepted in acceptPerPodSecurityState): 2 replicas " + PER_POD in accepted.notes
    assert "PER POD" in accepted.notes
    hpa = render(chart, {"autoscaling": {"enabled": True, "maxReplicas": 5}, "acceptPerPodSecurityState": ACCEPT})
    assert "up to 5 pods (autoscaling) " + PER_POD in hpa.notes
    for quiet in ({"replicaCount": 1}, {"replicaCount": 4, "redis": REDIS},
                  {"autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}},
                  {**DEMO, "replicaCount": 3, "autoscaling": {"enabled": True}}):
        assert PER_POD not in render(chart, quiet).notes, quiet
    # Accepting with one pod is harmless and says nothing.
    assert PER_POD not in render(chart, {"acceptPerPodSecurityState": ACCEPT}).notes


def test_notes_warn_about_closed_redis_egress_and_a_cpu_limit_below_workers(chart: helm.Chart) -> None:
    """Redis on but the NetworkPolicy has no Redis peer; N workers under a CPU limit below N cores."""
    notes = render(chart, {"workers": 2, "redis": REDIS, "resources": {"limits": {"cpu": "1500m"}}}).notes
    assert "networkPolicy.egress.redis has no cidrs/peers" in notes
    assert "WARNING: 2 workers under a CPU limit of 1500m" in notes
    fine = render(chart, {"workers": 2, "redis": REDIS, "resources": {"limits": {"cpu": 2}},
                          "networkPolicy": {"egress": {"redis": {"cidrs": ["10.20.0.0/24"]}}}}).notes
    assert "CPU limit" not in fine and "egress.redis" not in fine


def test_multiprocess_metrics_directory_is_on_the_tmp_emptydir(chart: helm.Chart) -> None:
    """The supervisor makes its PROMETHEUS_MULTIPROC_DIR under Python's temp dir (or under a preset
    PROMETHEUS_MULTIPROC_DIR): with a read-only root that must be /tmp, the emptyDir, and nothing may move it."""
    r = render(chart, {"workers": 2, "redis": REDIS})
    assert r.container["securityContext"]["readOnlyRootFilesystem"] is True
    names = {e["name"] for e in r.container["env"]}
    assert not names & {"TMPDIR", "TEMP", "TMP", "PROMETHEUS_MULTIPROC_DIR"}
    (tmp,) = [m for m in r.container["volumeMounts"] if m["mountPath"] == "/tmp"]
    volume = next(v for v in r.pod["volumes"] if v["name"] == tmp["name"])
    assert "emptyDir" in volume and not tmp.get("readOnly", False)


def test_rendered_production_config_passes_config_check_only_with_the_pod_env(chart: helm.Chart,
                                                                              tmp_path: Path) -> None:
    """The real `dcr-gateway config check`: the production config (2 workers, Redis, signed facts) is valid with
    the Redis URL the Secret provides; without it, without the chart's state.backend, or without the chart's
    signed facts key_file, the gateway refuses it."""
    r = render(chart, ci_values("production-values"))
    config, _ = write_mounts(r, tmp_path)
    ok = gateway_cli("config", "check", "--config", str(config), env=pod_env(r))
    assert ok.returncode == 0, ok.stderr
    no_url = gateway_cli("config", "check", "--config", str(config),
                         env={k: v for k, v in pod_env(r).items() if k != "DCRGW_STATE__REDIS__URL"})
    assert no_url.returncode == 2 and "state.redis.url" in no_url.stderr
    cfg = yaml.safe_load(config.read_text())
    del cfg["state"]["backend"]
    config.write_text(yaml.safe_dump(cfg))
    memory = gateway_cli("config", "check", "--config", str(config), env=pod_env(r))
    assert memory.returncode == 2 and "2 workers need state.backend: redis" in memory.stderr
    cfg["state"]["backend"] = "redis"
    del cfg["upstream"]["signed_facts"]["key_file"]
    config.write_text(yaml.safe_dump(cfg))
    no_key = gateway_cli("config", "check", "--config", str(config), env=pod_env(r))
    assert no_key.returncode == 2 and "2 workers need upstream.signed_facts.key_file" in no_key.stderr


def _fetched_urls(node: Any, key: str = "") -> list[str]:
    """Every URL the gateway may fetch on its own (upstream, JWKS, introspection, Redis) in a settings dump."""
    if isinstance(node, dict):
        return [u for k, v in node.items() for u in _fetched_urls(v, k)]
    if isinstance(node, list | tuple):
        return [u for v in node for u in _fetched_urls(v, key)]
    if key in ("url", "jwks_uri", "endpoint") and node is not None:
        return [node if isinstance(node, str) else node.get_secret_value()]
    return []


def _events(out: Path, name: str) -> list[dict[str, Any]]:
    lines = out.read_text(errors="replace").splitlines()
    return [e for e in (json.loads(x) for x in lines if x.startswith("{")) if e.get("event") == name]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry.name))
    return found


async def test_rendered_production_pod_serves_with_two_workers_on_redis(
    chart: helm.Chart, tmp_path: Path, redis_server: RedisServer
) -> None:
    """The production render run as the pod would run it: the container's args and environment (the Redis URL
    as its Secret would give it), TMPDIR standing for the /tmp emptyDir. Listeners, upstream and key-set URLs
    are moved to loopback so nothing leaves 127.0.0.0/8. The parent starts the 2 workers of config.yaml,
    they reach Redis, /metrics merges them from a directory under the temp dir, both sign facts with the
    signedFacts Secret's key (laid out as the pod mounts it), SIGTERM stops all cleanly."""
    r = render(chart, ci_values("production-values"))
    config, policies = write_mounts(r, tmp_path)
    key = jwk.JWK.generate(kty="EC", crv="P-256")
    secret = write_signed_facts_secret(r, tmp_path, {"key.pem": key.export_to_pem(private_key=True, password=None)})
    key_file = in_signed_facts_secret(r, r.config["upstream"]["signed_facts"]["key_file"], secret)
    args = r.container["args"]
    assert args[:2] == ["serve", "--config"] and "--workers" not in args
    pod_tmp = tmp_path / "pod-tmp"
    pod_tmp.mkdir()
    public, admin, closed = free_port(), free_port(), free_port()
    nowhere = f"http://127.0.0.1:{closed}"
    env = {
        **pod_env(r, redis_url=redis_server.url),
        "DCRGW_SERVER__PUBLIC__HOST": "127.0.0.1", "DCRGW_SERVER__PUBLIC__PORT": str(public),
        "DCRGW_SERVER__ADMIN__HOST": "127.0.0.1", "DCRGW_SERVER__ADMIN__PORT": str(admin),
        "DCRGW_POLICIES__DIR": str(policies),
        "DCRGW_UPSTREAM__SIGNED_FACTS__KEY_FILE": str(key_file),
        "DCRGW_UPSTREAM__URL": nowhere,
        "DCRGW_TRUST__TOKEN_ISSUERS__BANK__JWKS_URI": f"{nowhere}/jwks",
        "DCRGW_TRUST__TOKEN_ISSUERS__PARTNER__INTROSPECTION__ENDPOINT": f"{nowhere}/introspect",
        "DCRGW_TRUST__DIRECTORIES__OPENBANKING__JWKS_URI": f"{nowhere}/directory/jwks",
        "DCRGW_STATE__REDIS__KEY_PREFIX": f"helm-{os.getpid()}-",
        "DCRGW_SHUTDOWN__READINESS_DELAY_SECONDS": "0",
    }
    urls = _fetched_urls(load_settings(config, env=env).model_dump())
    assert urls and all(urlsplit(u).hostname == "127.0.0.1" for u in urls), urls  # no traffic off loopback

    base = {k: v for k, v in os.environ.items() if not k.startswith(("DCRGW_", "PROMETHEUS_", "TMP", "TEMP"))}
    out = tmp_path / "out.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config)],
                                stdout=sink, stderr=subprocess.STDOUT, env={**base, **env, "TMPDIR": str(pod_tmp)})
    try:
        deadline = time.monotonic() + 60
        while len(_events(out, "listening")) < 2:
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, "2 workers not listening within 60 s\n" + out.read_text()
            await asyncio.sleep(0.1)
        assert len(_children(proc.pid)) == 2
        stores = _events(out, "state_store")
        assert len(stores) == 2 and all(e["backend"] == "redis" and e["reachable"] for e in stores), stores
        assert redis_server.url not in out.read_text()
        (metrics_dir,) = pod_tmp.glob("dcrgw-metrics-*")
        assert list(metrics_dir.glob("*.db"))
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{admin}/metrics") as resp:
            assert resp.status == 200
            assert 'dcr_gateway_build_info{version="' in await resp.text()
            async with s.get(f"http://127.0.0.1:{admin}/facts/jwks.json") as keys:  # either worker: the Secret's key
                assert [k["kid"] for k in (await keys.json())["keys"]] == [key.thumbprint()]
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 40) == 0, out.read_text()
        assert not metrics_dir.exists()
    finally:
        if proc.poll() is None:
            proc.kill()  # the workers get SIGTERM from PR_SET_PDEATHSIG
            proc.wait(10)
