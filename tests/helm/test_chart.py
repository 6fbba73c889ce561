"""The chart as a whole: helm lint, Kubernetes schema validation of every manifest, values schema, docs."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from .render import CHART, CI_VALUES, ci_values, load_sync, render

MIN_KUBE = "1.27"
"""Chart.yaml kubeVersion's floor; manifests are validated against it and the newest schemas shipped."""

CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
"""Prometheus Operator kinds: no offline schema in kubernetes-validate, asserted field by field elsewhere."""

EVERYTHING_ON: dict[str, Any] = {
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
    "grafanaDashboard": {"enabled": True},
    "autoscaling": {"enabled": True},
    "workers": 2,
    "redis": {"enabled": True, "existingSecret": "redis", "urlKey": "url"},
    "networkPolicy": {"egress": {"redis": {"cidrs": ["10.20.0.0/24"]}}},
    "ingress": {"enabled": True, "mtls": {"caSecret": "ob-cas"}},
    "secretEnv": [{"name": "GW_SECRET", "key": "k", "secret": "s"}],
    "extraEnv": [{"name": "DCRGW_LOGGING__LEVEL", "value": "debug"}],
}


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_helm_lint_is_clean(values_file: str) -> None:
    """`helm lint --strict` finds no error and no warning with each ci values file."""
    report = helm.lint(CHART, ci_values(values_file), strict=True, namespace="open-banking",
                       kube_version=f"v{MIN_KUBE}.0")
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_chart_metadata() -> None:
    """apiVersion v2, an application chart, with a kubeVersion floor and an appVersion for the image tag."""
    with helm.Chart.load(CHART) as chart:
        meta = chart.metadata
    assert meta["apiVersion"] == "v2"
    assert meta["name"] == "dcr-gateway"
    assert meta["type"] == "application"
    assert meta["kubeVersion"].startswith(">=1.27")
    assert meta["appVersion"]


@pytest.mark.parametrize("kube", [MIN_KUBE, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("values_file", [*CI_VALUES, "everything-on"])
def test_every_manifest_validates_against_kubernetes(chart: helm.Chart, values_file: str, kube: str) -> None:
    """Every rendered object passes kubernetes-validate in strict mode (unknown fields are errors)."""
    values = EVERYTHING_ON if values_file == "everything-on" else ci_values(values_file)
    rendered = render(chart, values)
    assert rendered.manifests
    unvalidated = set()
    for manifest in rendered.manifests:
        try:
            kubernetes_validate.validate(manifest, kube, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unvalidated.add(manifest["kind"])
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{manifest['kind']}/{manifest['metadata']['name']}: {path}: {exc.message}")
    assert unvalidated <= CRD_KINDS


def test_everything_on_renders_every_kind(chart: helm.Chart) -> None:
    """With every switch on, each template contributes its object (so the validation above covers all)."""
    kinds = render(chart, EVERYTHING_ON).kinds()
    assert kinds == {"Deployment", "Service", "ConfigMap", "ServiceAccount", "HorizontalPodAutoscaler",
                     "PodDisruptionBudget", "NetworkPolicy", "Ingress", *CRD_KINDS}


def test_every_object_is_labelled_and_namespaced(chart: helm.Chart) -> None:
    """Standard labels and the release namespace on every object (the dashboard may live elsewhere)."""
    for m in render(chart, EVERYTHING_ON).manifests:
        labels = m["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "dcr-gateway"
        assert labels["app.kubernetes.io/instance"] == "dcr-gateway"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert m["metadata"]["namespace"] == "open-banking"


BAD_VALUES = [
    pytest.param({"replicaCount": "three"}, "/replicaCount", id="replicaCount-string"),
    pytest.param({"replicaz": 2}, "replicaz", id="unknown-top-level-key"),
    pytest.param({"config": {"upstream": {"urll": "https://x"}}}, "urll", id="unknown-config-key"),
    pytest.param({"config": {"upstream": {"timeouts": {"connect": "fast"}}}}, "/config/upstream/timeouts/connect",
                 id="config-wrong-type"),
    pytest.param({"config": {"policies": {"unmatched_status": 500}}}, "/config/policies/unmatched_status",
                 id="config-bad-enum"),
    pytest.param({"secretEnv": [{"name": "GW_SECRET", "key": "k", "value": "hunter2"}]}, "value",
                 id="inline-secret"),
    pytest.param({"workers": 0}, "/workers", id="workers-zero"),
    pytest.param({"redis": {"enabled": True, "existingSecret": "s", "password": "hunter2"}}, "password",
                 id="redis-inline-password"),
    pytest.param({"redis": {"enabled": True, "existingSecret": "s", "urlKey": ""}}, "/redis/urlKey",
                 id="redis-empty-url-key"),
    pytest.param({"image": {"digest": "latest"}}, "/image/digest", id="bad-digest"),
    pytest.param({"ingress": {"mtls": {"verifyClient": "maybe"}}}, "/ingress/mtls/verifyClient",
                 id="bad-verify-client"),
    pytest.param({"networkPolicy": {"egress": {"jwks": {"cidrs": ["as.bank.example"]}}}}, "/networkPolicy/egress/jwks",
                 id="cidr-not-a-cidr"),
    pytest.param({"policies": {"files": {"../evil.yaml": "policies: []"}}}, "../evil.yaml", id="bad-policy-name"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES)
def test_bad_values_are_rejected_at_install(chart: helm.Chart, values: dict[str, Any], where: str) -> None:
    """values.schema.json rejects the install (render validates as `helm install` does), naming the key."""
    with pytest.raises(helm.HelmValuesError) as info:
        render(chart, values)
    assert where in str(info.value)


@pytest.mark.parametrize("values_file", CI_VALUES)
def test_ci_values_satisfy_the_schema(chart: helm.Chart, values_file: str) -> None:
    """The test inputs themselves are valid values."""
    chart.validate_schema(ci_values(values_file))


def test_schema_forbids_unknown_keys_at_top_level() -> None:
    """additionalProperties false at the top and in every section the chart defines."""
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    for key in ("image", "sandbox", "policies", "service", "metrics", "networkPolicy", "ingress", "redis", "config"):
        assert schema["properties"][key]["additionalProperties"] is False, key


def test_config_schema_is_generated_from_the_gateway_model() -> None:
    """The schema's `config` block is what helm/sync.py generates from gateway/config/settings.py (run it when stale)."""
    sync = load_sync()
    text = (CHART / "values.schema.json").read_text()
    assert text == sync.render_schema(json.loads(text)), "values.schema.json is stale: run `python helm/sync.py`"


def test_values_defaults_are_the_gateway_defaults_where_they_mirror_config() -> None:
    """Every key under `config` in values.yaml is a real config key (the generated schema accepts it)."""
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({"config": chart.values["config"]})


_KEY = re.compile(r"^(?P<indent> *)(?:- )?(?P<key>[A-Za-z_][\w./-]*):(?:\s|$)")


def test_every_value_is_documented() -> None:
    """helm-docs style: every value has a `# --` comment, on itself or on a parent it belongs to."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    parents: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        match = _KEY.match(line)
        if match is None or line.lstrip().startswith("#"):
            continue
        indent = len(match["indent"])
        while parents and parents[-1][0] >= indent:
            parents.pop()
        block = []
        j = i - 1
        while j >= 0 and lines[j].lstrip().startswith("#"):
            block.append(lines[j].strip())
            j -= 1
        documented = any(b.startswith("# --") for b in block) or any(doc for _, doc in parents)
        has_value = line.split(":", 1)[1].strip() != ""
        following = next((nxt for nxt in lines[i + 1:] if nxt.strip() and not nxt.lstrip().startswith("#")), "")
        is_section = not has_value and _KEY.match(following) is not None \
            and len(following) - len(following.lstrip()) > indent and not following.lstrip().startswith("- ")
        if not documented and not is_section:
            undocumented.append(f"values.yaml line {i + 1}: {match['key']}")
        parents.append((indent, documented))
    assert undocumented == []
