"""Who can reach what: Services, NetworkPolicy, Ingress (mTLS), and the monitoring objects (off by default)."""

from __future__ import annotations

import json
from typing import Any

import helm_python as helm
import pytest
import yaml

from .render import CHART, RELEASE, ci_values, render

MONITORING = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
              "grafanaDashboard": {"enabled": True}}


def test_public_service_exposes_only_the_public_port(chart: helm.Chart) -> None:
    """The public Service targets `http`; the admin port is never on it."""
    svc = render(chart).one("Service", RELEASE)
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("http", 8080, "http")]
    assert svc["spec"]["type"] == "ClusterIP"


def test_admin_port_has_its_own_metrics_service(chart: helm.Chart) -> None:
    """A separate ClusterIP Service, labelled component=metrics, targets the admin port."""
    r = render(chart)
    svc = r.one("Service", f"{RELEASE}-metrics")
    assert svc["metadata"]["labels"]["app.kubernetes.io/component"] == "metrics"
    assert [(p["name"], p["targetPort"]) for p in svc["spec"]["ports"]] == [("metrics", "admin")]
    assert svc["spec"]["selector"] == r.deployment["spec"]["selector"]["matchLabels"]


def _rules_by_port(policy: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    return {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}


def test_network_policy_admits_only_the_ingress_controller_and_prometheus(chart: helm.Chart) -> None:
    """Public port from the ingress controller's pods, admin port from Prometheus's pods, nothing else."""
    r = render(chart)
    np = r.one("NetworkPolicy")
    assert np["spec"]["podSelector"]["matchLabels"] == r.deployment["spec"]["selector"]["matchLabels"]
    assert set(np["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    rules = _rules_by_port(np)
    assert set(rules) == {"http", "admin"}
    assert len(np["spec"]["ingress"]) == 2
    (controller,) = rules["http"]
    assert controller["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "ingress-nginx"}
    assert controller["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "ingress-nginx"}
    (prometheus,) = rules["admin"]
    assert prometheus["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}


def test_network_policy_egress_is_an_allow_list(chart: helm.Chart) -> None:
    """Egress: DNS always, then exactly the upstream and JWKS peers and CIDRs from values; no open rule."""
    default = render(chart).one("NetworkPolicy")["spec"]["egress"]
    assert len(default) == 1
    assert {p["port"] for p in default[0]["ports"]} == {53}
    prod = render(chart, ci_values("production-values")).one("NetworkPolicy")["spec"]["egress"]
    assert all(rule.get("to") for rule in prod), "a rule without `to` would allow every destination"
    cidrs = {peer["ipBlock"]["cidr"] for rule in prod for peer in rule["to"] if "ipBlock" in peer}
    assert cidrs == {"203.0.113.10/32", "203.0.113.11/32"}
    backend = next(rule for rule in prod if rule["ports"] == [{"port": 8443, "protocol": "TCP"}])
    assert backend["to"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "dcr-backend"}


def test_redis_egress_only_when_redis_is_enabled(chart: helm.Chart) -> None:
    """The Redis rule appears with redis.enabled and not before."""
    values: dict[str, Any] = {"networkPolicy": {"egress": {"redis": {"cidrs": ["10.20.0.0/24"]}}}}
    off = render(chart, values).one("NetworkPolicy")["spec"]["egress"]
    on = render(chart, {**values, "redis": {"enabled": True, "existingSecret": "redis"}}).one("NetworkPolicy")[
        "spec"]["egress"]
    redis = [rule for rule in on if rule["ports"] == [{"port": 6379, "protocol": "TCP"}]]
    assert len(redis) == 1 and redis[0]["to"] == [{"ipBlock": {"cidr": "10.20.0.0/24"}}]
    assert not any(rule["ports"] == [{"port": 6379, "protocol": "TCP"}] for rule in off)


def test_notes_warn_about_placeholders_and_closed_egress(chart: helm.Chart) -> None:
    """Default values: NOTES say which placeholders and egress gaps keep the gateway from becoming ready."""
    notes = render(chart).notes
    assert "config.upstream.url" in notes and "config.trust.token_issuers.bank" in notes
    assert "networkPolicy.egress.jwks" in notes
    prod_notes = render(chart, ci_values("production-values")).notes
    # Only the example's placeholders (tests/helm/test_production_example.py): no egress or scaling warning.
    assert [w.split(":")[1].strip() for w in prod_notes.split("\n") if w.startswith("WARNING")] == [
        "the gateway will not become ready"]
    assert "enable-underscores-in-headers" in prod_notes


def test_ingress_is_off_by_default(chart: helm.Chart) -> None:
    """No Ingress unless asked for."""
    assert render(chart).all("Ingress") == []


def test_ingress_with_mtls_for_ingress_nginx(chart: helm.Chart) -> None:
    """The production example: TLS, client certificates verified and passed on as `ssl-client-cert`."""
    r = render(chart, ci_values("production-values"))
    ing = r.one("Ingress")
    ann = ing["metadata"]["annotations"]
    assert ann["nginx.ingress.kubernetes.io/auth-tls-secret"] == "ingress-nginx/ob-issuing-cas"
    assert ann["nginx.ingress.kubernetes.io/auth-tls-verify-client"] == "on"
    assert ann["nginx.ingress.kubernetes.io/auth-tls-verify-depth"] == "3"
    assert ann["nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream"] == "true"
    assert ann["nginx.ingress.kubernetes.io/proxy-body-size"] == "1m"
    assert ing["spec"]["ingressClassName"] == "nginx"
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    svc = r.one("Service", backend["name"])
    assert backend["port"]["name"] in {p["name"] for p in svc["spec"]["ports"]}
    assert backend["name"] == RELEASE


def test_mtls_ca_secret_defaults_to_the_release_namespace(chart: helm.Chart) -> None:
    """A bare Secret name is qualified with the release namespace (ingress-nginx wants namespace/name)."""
    ing = render(chart, {"ingress": {"enabled": True, "mtls": {"caSecret": "ob-cas"}}}).one("Ingress")
    assert ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-tls-secret"] == "open-banking/ob-cas"


def test_mtls_without_a_ca_secret_fails(chart: helm.Chart) -> None:
    """mTLS is on by default with the Ingress, and needs the CA bundle to verify TPPs against."""
    with pytest.raises(helm.HelmError, match="caSecret"):
        render(chart, {"ingress": {"enabled": True}})


def test_monitoring_objects_are_off_by_default(chart: helm.Chart) -> None:
    """No ServiceMonitor, PrometheusRule or dashboard ConfigMap unless switched on."""
    r = render(chart)
    assert r.all("ServiceMonitor") == []
    assert r.all("PrometheusRule") == []
    assert not any("grafana_dashboard" in m["metadata"]["labels"] for m in r.all("ConfigMap"))


def test_service_monitor_scrapes_the_metrics_service(chart: helm.Chart) -> None:
    """The ServiceMonitor selects the metrics Service (and not the public one) and its named port."""
    r = render(chart, {**MONITORING, "metrics": {**MONITORING["metrics"],
                                                 "serviceMonitor": {"enabled": True,
                                                                    "labels": {"release": "kps"}}}})
    sm = r.one("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kps"
    selector = sm["spec"]["selector"]["matchLabels"]
    matching = [s for s in r.all("Service") if selector.items() <= s["metadata"]["labels"].items()]
    assert [s["metadata"]["name"] for s in matching] == [f"{RELEASE}-metrics"]
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in matching[0]["spec"]["ports"]}
    assert endpoint["path"] == "/metrics"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["open-banking"]}


def test_prometheus_rule_loads_files_alerts_yaml(chart: helm.Chart) -> None:
    """The PrometheusRule carries the groups of files/alerts.yaml, each rule an alert or record with an expr."""
    groups = yaml.safe_load((CHART / "files" / "alerts.yaml").read_text())["groups"]
    rule = render(chart, MONITORING).one("PrometheusRule")
    assert rule["spec"]["groups"] == groups
    assert groups
    for group in groups:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r)
            assert r["expr"].strip()
    # Prometheus's own templates pass through untouched (no Helm templating of the rules file).
    assert "{{ $labels.instance }}" in json.dumps(rule["spec"])


def test_grafana_dashboard_configmap(chart: helm.Chart) -> None:
    """Dashboards from files/dashboards/*.json in a ConfigMap with the sidecar label, valid JSON each."""
    r = render(chart, {**MONITORING, "grafanaDashboard": {"enabled": True, "namespace": "monitoring"}})
    (cm,) = [m for m in r.all("ConfigMap") if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert cm["metadata"]["namespace"] == "monitoring"
    files = sorted(p.name for p in (CHART / "files" / "dashboards").glob("*.json"))
    assert sorted(cm["data"]) == files and files
    for text in cm["data"].values():
        dashboard = json.loads(text)
        assert dashboard["title"] and dashboard["uid"] and dashboard["panels"]


def test_monitoring_files_are_the_canonical_ones() -> None:
    """The chart's alert rules and dashboard are the monitoring/ files themselves (one source of truth)."""
    from tests.helm.render import CHART

    root = CHART.parent.parent
    assert (CHART / "files" / "alerts.yaml").resolve() == (root / "monitoring" / "prometheus" / "alerts.yaml")
    assert (CHART / "files" / "dashboards" / "dcr-gateway.json").resolve() == (
        root / "monitoring" / "grafana" / "dcr-gateway.json")
