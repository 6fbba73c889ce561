"""Render the real chart with Helm's own engine (helm-python-sdk, offline) and read what it produced."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "dcr-gateway"
CI_VALUES = sorted(p.stem for p in (CHART / "ci").glob("*-values.yaml"))
RELEASE = "dcr-gateway"
NAMESPACE = "open-banking"


@dataclass
class Rendered:
    """The manifests of one render, and NOTES.txt."""

    manifests: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Every manifest of a kind."""
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        """The single manifest of a kind (and name)."""
        found = [m for m in self.all(kind) if name is None or m["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {[m['metadata']['name'] for m in found]}"
        return found[0]

    def kinds(self) -> set[str]:
        """The kinds rendered."""
        return {m["kind"] for m in self.manifests}

    @property
    def deployment(self) -> dict[str, Any]:
        """The gateway's Deployment."""
        return self.one("Deployment")

    @property
    def pod(self) -> dict[str, Any]:
        """The Deployment's pod spec."""
        spec: dict[str, Any] = self.deployment["spec"]["template"]["spec"]
        return spec

    @property
    def container(self) -> dict[str, Any]:
        """The gateway container."""
        (container,) = self.pod["containers"]
        return dict(container)

    def configmap_data(self, suffix: str) -> dict[str, str]:
        """The data of the ConfigMap named `<release>-<suffix>`."""
        data: dict[str, str] = self.one("ConfigMap", f"{RELEASE}-{suffix}")["data"]
        return data

    @property
    def config(self) -> dict[str, Any]:
        """The rendered config.yaml, parsed."""
        parsed: dict[str, Any] = yaml.safe_load(self.configmap_data("config")["config.yaml"])
        return parsed


def ci_values(name: str) -> dict[str, Any]:
    """One of the chart's ci/*-values.yaml test inputs."""
    values: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{name}.yaml").read_text()) or {}
    return values


def render(chart: helm.Chart, values: dict[str, Any] | None = None) -> Rendered:
    """Render as `helm install dcr-gateway -n open-banking` would (schema validation included)."""
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    manifests: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        manifests.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return Rendered(manifests, notes)


def write_mounts(r: Rendered, root: Path) -> tuple[Path, Path]:
    """Lay the two ConfigMaps out as the pod sees them; return (config file, policy dir)."""
    config = root / "config" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text(r.configmap_data("config")["config.yaml"])
    policies = root / "policies"
    policies.mkdir()
    for name, content in r.configmap_data("policies").items():
        (policies / name).write_text(content)
    return config, policies


def write_signed_facts_secret(r: Rendered, root: Path, data: Mapping[str, bytes]) -> Path:
    """Lay the signedFacts Secret (`data`: its keys and PEMs) out under `root` as the pod's volume projects it
    (only the rendered items, with their mode); return the directory standing for its mount path."""
    (volume,) = [v for v in r.pod["volumes"] if v["name"] == "signed-facts-key"]
    directory = root / "signed-facts"
    for item in volume["secret"]["items"]:
        path = directory / item["path"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data[item["key"]])
        path.chmod(volume["secret"]["defaultMode"])
    return directory


def in_signed_facts_secret(r: Rendered, path: str, directory: Path) -> Path:
    """Where a path of the rendered config (key_file, published_key_files) lies in the directory that
    `write_signed_facts_secret` filled; fails when the path is not in the Secret's volume."""
    (mount,) = [m for m in r.container["volumeMounts"] if m["name"] == "signed-facts-key"]
    return directory / Path(path).relative_to(mount["mountPath"])


LOOPBACK_REDIS_URL = "redis://127.0.0.1:6399/0"
"""Stands for the Redis URL Secret when only the config is checked (nothing connects to it)."""


def pod_env(r: Rendered, redis_url: str = LOOPBACK_REDIS_URL) -> dict[str, str]:
    """The gateway container's environment as the pod gets it. Secret values are stand-ins: `redis_url` for
    the Redis URL, `secret:<name>/<key>` for anything else; plain `value`s as rendered."""
    env: dict[str, str] = {}
    for entry in r.container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = str(entry["value"])
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        env[entry["name"]] = redis_url if entry["name"] == "DCRGW_STATE__REDIS__URL" else \
            f"secret:{ref['name']}/{ref['key']}"
    return env


def gateway_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `dcr-gateway` CLI (`python -m gateway`) with no DCRGW_* overrides from this shell, plus
    `env` (e.g. the pod's environment from `pod_env`)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")}
    return subprocess.run([sys.executable, "-m", "gateway", *args], cwd=REPO, env={**clean, **(env or {})},
                          capture_output=True, text=True, check=False)


def load_sync() -> ModuleType:
    """helm/sync.py (the generator of the schema's config block) as a module."""
    spec = importlib.util.spec_from_file_location("helm_sync", REPO / "helm" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
