"""monitoring/: the alert rules pass `promtool check rules` and their unit tests and have runbook entries; the
Grafana dashboard is well-formed, its PromQL parses, and the README lists its panels."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import ROOT
from tests.observability.conftest import ALERTS, ALERTS_TEST, DASHBOARD, METRICS_DOC, run_promtool

REQUIRED_ALERTS = {"DcrGatewayDown", "DcrGatewayDenyRatioHigh", "DcrGatewayUpstreamErrorRatioHigh",
                   "DcrGatewayLatencyP99High", "DcrGatewayJwksFetchFailing", "DcrGatewayPolicyReloadFailed",
                   # every dependency: key sets, OCSP / CRL, the state store, rate limits
                   "DcrGatewayTokenVerificationUnavailable", "DcrGatewayDirectoryKeysUnavailable",
                   "DcrGatewayCertificateRevocationUnknown", "DcrGatewayCertificateRevocationFetchFailing",
                   "DcrGatewayStateStoreErrors", "DcrGatewayStateStoreCircuitOpen", "DcrGatewayStateStoreFailOpen",
                   "DcrGatewayRateLimitRefusalsHigh"}


def alert_rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels() -> list[dict[str, Any]]:
    return [p for p in dashboard()["panels"] if p["type"] != "row"]


def test_alert_rules_pass_promtool_check(promtool):
    """`promtool check rules` accepts alerts.yaml."""
    code, output = run_promtool(promtool, "check", "rules", str(ALERTS))
    assert code == 0, output
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alert_rules_unit_tests_pass(promtool):
    """`promtool test rules alerts_test.yaml` passes: each alert fires when it should and stays quiet otherwise."""
    code, output = run_promtool(promtool, "test", "rules", ALERTS_TEST.name, cwd=ALERTS_TEST.parent)
    assert code == 0, output
    assert "SUCCESS" in output


def test_alert_unit_tests_can_fail(promtool, tmp_path: Path):
    """The unit tests are not vacuous: an expected alert that does not fire is reported."""
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            if check["exp_alerts"]:
                check["exp_alerts"][0]["exp_labels"]["severity"] = "none"
    tests["rule_files"] = [str(ALERTS)]
    (tmp_path / "t.yaml").write_text(yaml.safe_dump(tests))
    code, output = run_promtool(promtool, "test", "rules", "t.yaml", cwd=tmp_path)
    assert code != 0 and "FAILED" in output


def test_every_alert_is_required_documented_and_tested():
    """The required alerts exist, each has severity, summary and description, and a firing and a quiet test."""
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert REQUIRED_ALERTS <= names
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
    checks = [c for case in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in case["alert_rule_test"]]
    fired = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert fired == names, "alerts without a test that makes them fire"
    assert quiet == names, "alerts without a test that keeps them quiet"


def _doc_section(title: str) -> str:
    return METRICS_DOC.read_text().split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_every_alert_has_a_runbook_entry_and_a_row_in_the_docs():
    """Each rule's `runbook` annotation names its own entry of docs/metrics.md's Runbook (a `### <alert>` heading,
    GitHub's anchor), the Runbook has no entry for an alert that does not exist, and the alert table lists each."""
    names = [r["alert"] for r in alert_rules()]
    for rule in alert_rules():
        assert rule["annotations"].get("runbook") == f"docs/metrics.md#{rule['alert'].lower()}", rule["alert"]
    entries = re.findall(r"^### (\w+)$", _doc_section("Runbook"), re.MULTILINE)
    assert entries == names, "docs/metrics.md's Runbook: one entry per alert, in the order of alerts.yaml"
    table = re.findall(r"^\| `(DcrGateway\w+)` \|", _doc_section("Dashboard and alerts"), re.MULTILINE)
    assert table == names


def test_dashboard_is_a_grafana_dashboard_on_a_datasource_variable():
    """schemaVersion >= 36, a Prometheus datasource variable used by every panel and query, unique ids, a grid."""
    d = dashboard()
    assert d["schemaVersion"] >= 36 and d["uid"] == "dcr-gateway"
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]) and p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
    for p in panels():
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"] and p.get("description"), p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["expr"].strip(), p["title"]
    for name in ("job", "instance"):
        assert variables[name]["datasource"]["uid"] == "${datasource}"


def _as_promql(expr: str) -> str:
    """A Grafana query as plain PromQL: the variables replaced by what Grafana would send."""
    return (expr.replace("$__rate_interval", "5m").replace("$__range", "1h").replace("$__interval", "1m")
            .replace("$job", ".*").replace("$instance", ".*"))


def test_dashboard_queries_are_valid_promql(promtool, tmp_path: Path):
    """Every dashboard query parses: promtool checks them as recording rules."""
    exprs = [_as_promql(t["expr"]) for p in panels() for t in p["targets"]]
    assert not [e for e in exprs if "$" in e], "a Grafana variable left unreplaced"
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query_{i}", "expr": e}
                                                         for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-queries.yaml"
    path.write_text(yaml.safe_dump(rules))
    code, output = run_promtool(promtool, "check", "rules", str(path))
    assert code == 0, output
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"groups": [{"name": "x", "rules": [{"record": "x:y", "expr": "sum(rate(x[5m])"}]}]}))
    assert run_promtool(promtool, "check", "rules", str(bad))[0] != 0


def test_dashboard_has_the_panels_ops_asked_for():
    """Request rate, error ratio, latency quantiles, decisions, audit-mode denials, JWKS, reloads, upstream…"""
    titles = {p["title"] for p in panels()}
    assert {"Request rate", "Error ratio", "Latency p50 / p95 / p99", "Decisions by policy and reason",
            "Audit-mode would-be denials", "JWKS health", "Policy reload failures", "Upstream errors",
            "In-flight requests", "Revocations"} <= titles
    # Every dependency: key sets, OCSP / CRL, the state store, rate limits.
    assert {"Key sets unavailable", "Certificate revocation answers", "OCSP / CRL fetches", "State store errors",
            "State store circuit breaker", "Fail-open and fail-closed decisions", "Rate-limit refusals (429)"} <= titles
    quantiles = next(p for p in panels() if p["title"] == "Latency p50 / p95 / p99")
    assert [re.search(r"histogram_quantile\((0\.\d+)", t["expr"]).group(1) for t in quantiles["targets"]] == \
        ["0.5", "0.95", "0.99"]


def test_readme_lists_every_dashboard_panel():
    """README's Operations section names each panel of the dashboard, in order, and no other."""
    readme = (ROOT / "README.md").read_text()
    operations = readme.split("## Operations", 1)[1].split("\n## ", 1)[0]
    block = operations.split("Dashboard panels", 1)[1].split("\n\n", 1)[0]
    listed = re.findall(r"^\s*- \*\*(.+?)\*\*", block, re.MULTILINE)
    assert listed == [p["title"] for p in panels()]
