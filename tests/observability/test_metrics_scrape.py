"""A real /metrics scrape after mixed traffic: counted right, promtool-clean, documented, bounded, in step
with the dashboard and the alert rules."""

from __future__ import annotations

import json
import re

import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.checks import REGISTRY
from gateway.reasons import REFUSALS, StoreRefusals
from tests.observability.conftest import (
    ALERTS,
    DASHBOARD,
    METRICS_DOC,
    exported_families,
    run_promtool,
    sampled_names,
    strip_suffix,
)

_NAME = re.compile(r"dcr_gateway_[a-z_]+")
# The label names a gateway series may carry: closed sets only (`le` is the histogram bucket bound).
ALLOWED_LABELS = {"route", "method", "status_class", "decision", "policy", "mode", "check", "reason", "kind",
                  "result", "cause", "version", "state", "source", "origin", "le"}
METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


_SELECTOR = re.compile(r"(dcr_gateway_[a-z_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'(\w+)\s*(?:=~|!~|!=|=)\s*"([^"]*)"')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")
_WORDS = re.compile(r"\w+(?:\|\w+)*")
TARGET_LABELS = {"job", "instance"}
"""Added by Prometheus at scrape time, not by the gateway."""
LAZY_CLOSED_SETS = {"status_class": {f"{n}xx" for n in range(1, 6)}, "decision": {"allow", "deny", "audit_deny", "error"},
                    "mode": {"enforce", "audit"}, "method": METHODS | {"other"}}
"""Closed label sets whose series appear with their first event (the others are created at zero up front)."""


def queried_expressions() -> dict[str, list[str]]:
    """The PromQL of the dashboard's panels and variables, of the alert rules and of docs/metrics.md, by source."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    return {
        "dashboard": exprs,
        "alerts": [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]],
        "docs": [METRICS_DOC.read_text()],
    }


def exported_labels(scrape: str) -> dict[str, dict[str, set[str]]]:
    """Family → label name → the values it has in the scrape (histogram series folded into their family)."""
    out: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(scrape):
        for sample in family.samples:
            labels = out.setdefault(strip_suffix(sample.name), {})
            for name, value in sample.labels.items():
                labels.setdefault(name, set()).add(value)
    return out


def reasons_by_check() -> dict[str, set[str]]:
    """Every `check` label value the gateway can give, with the `reason`s of that check (from the code)."""
    checks = {name: set(kind.reasons.by_name) for name, kind in REGISTRY.items()}
    for table in REFUSALS:
        if table.check:
            checks[table.check] = set(table.by_name)
    store = set(StoreRefusals.by_name)  # the engine's answer for any check whose store cannot answer
    return {name: reasons | store for name, reasons in checks.items()}


def label_problems(exprs: list[str], labels: dict[str, dict[str, set[str]]]) -> list[str]:
    """What the queries get wrong about labels: a label name the metric does not have (or that no metric of the
    query has, in `by`/`on`/…), or a literal value it never takes: for `check` and `reason`, the checks and
    reasons of the code; for the other labels, their closed sets (as the scrape shows those created at zero)."""
    checks = reasons_by_check()
    all_reasons = set().union(*checks.values())
    problems = []
    for expr in exprs:
        used = {label for name in _NAME.findall(expr) for label in labels.get(strip_suffix(name), {})}
        for name, body in _SELECTOR.findall(expr):
            have = labels.get(strip_suffix(name), {})
            matchers = dict(_MATCHER.findall(body))
            for label, value in _MATCHER.findall(body):
                if label not in have and label not in TARGET_LABELS:
                    problems.append(f"{name}: no label {label!r}")
                    continue
                if not value or not _WORDS.fullmatch(value) or label in TARGET_LABELS | {"policy"}:
                    continue  # empty, a real regex, a Grafana variable, or a value from config (policy names)
                for alternative in value.split("|"):
                    if label == "check":
                        known = set(checks)
                    elif label == "reason":
                        check = matchers.get("check")
                        known = checks.get(check, set()) if check in checks else all_reasons
                    else:
                        known = LAZY_CLOSED_SETS.get(label, have[label])
                    if alternative not in known:
                        problems.append(f"{name}: {label}={alternative!r} is not a value it takes")
        for group in _GROUPING.findall(expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                if label not in used | TARGET_LABELS | {"le"}:
                    problems.append(f"grouping by {label!r}, a label none of the metrics has: {expr[:80]}")
    return problems


def documented_metrics() -> set[str]:
    """Names in the first column of the tables of docs/metrics.md."""
    return set(re.findall(r"^\| `(dcr_gateway_[a-z_]+)`", METRICS_DOC.read_text(), re.MULTILINE))


def queried_metrics() -> dict[str, set[str]]:
    """Every dcr_gateway_ metric the dashboard, the alert rules and docs/metrics.md query, by source."""
    return {source: {strip_suffix(n) for e in exprs for n in _NAME.findall(e)}
            for source, exprs in queried_expressions().items()}


async def test_mixed_traffic_is_counted(mixed_traffic):
    """Each kind of traffic moves its own counter: decisions, revocations by cause, upstream, JWKS, reloads, audit."""
    o = await mixed_traffic()
    read = "/open-banking/v3.1/register/{ClientId}"
    assert o.value("dcr_gateway_requests_total", {"route": read, "method": "GET", "status_class": "2xx",
                                                  "decision": "allow"}) == 2
    assert o.value("dcr_gateway_requests_total", {"route": "unmatched", "method": "GET", "status_class": "4xx",
                                                  "decision": "deny"}) == 1
    assert o.value("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                   "decision": "deny", "check": "bearer_token",
                                                   "reason": "token_missing"}) == 1
    assert o.value("dcr_gateway_decisions_total", {"policy": "dcr_status_preview", "mode": "audit",
                                                   "decision": "audit_deny", "check": "bearer_token",
                                                   "reason": "token_missing"}) == 1
    for cause in ("client_not_owned", "upstream_401", "client_deleted"):
        assert o.value("dcr_gateway_revocations_total", {"cause": cause}) == 1, cause
    assert o.value("dcr_gateway_upstream_responses_total", {"route": read, "status_class": "4xx"}) == 1
    assert o.value("dcr_gateway_upstream_responses_total", {"route": read, "status_class": "2xx"}) == 3  # 2 GET, DELETE
    assert o.value("dcr_gateway_upstream_errors_total", {"kind": "connect"}) == 3  # /echo, /sink, /limited
    assert o.value("dcr_gateway_requests_total", {"route": "/echo", "method": "GET", "status_class": "5xx",
                                                  "decision": "error"}) == 1
    # Both are the token issuers' key sets (config trust.token_issuers): no TPP key set was fetched.
    assert o.value("dcr_gateway_jwks_fetches_total", {"origin": "configured", "result": "ok"}) == 1
    assert o.value("dcr_gateway_jwks_fetches_total", {"origin": "configured", "result": "error"}) == 1
    assert o.value("dcr_gateway_jwks_fetches_total", {"origin": "software", "result": "ok"}) == 0
    assert o.value("dcr_gateway_jwks_cache_lookups_total", {"result": "hit"}) >= 1
    assert o.value("dcr_gateway_jwks_unknown_kid_total", {"result": "rate_limited"}) == 1
    assert o.value("dcr_gateway_policy_reloads_total", {"result": "failure"}) == 1
    assert o.value("dcr_gateway_policy_reloads_total", {"result": "success"}) == 1
    assert o.value("dcr_gateway_policies_loaded") == 8
    versions = [s for f in o.metrics.registry.collect() if f.name == "dcr_gateway_policy_set_info"
                for s in f.samples]
    assert [s.value for s in versions] == [1.0]  # only the current version, the replaced one is gone
    # Gateway A answered 9 requests → 9 decision events, plus audit_start and audit_stop.
    assert o.value("dcr_gateway_audit_events_total", {"result": "written"}) == 11
    assert o.value("dcr_gateway_audit_events_total", {"result": "failed"}) == 0
    assert o.value("dcr_gateway_requests_in_flight") == 0
    # Gateway B's budget of one: the second request is refused with 429.
    assert o.value("dcr_gateway_decisions_total", {"policy": "limited", "mode": "enforce", "decision": "deny",
                                                   "check": "rate_limit", "reason": "rate_limited"}) == 1
    assert o.value("dcr_gateway_requests_total", {"route": "/limited", "method": "GET", "status_class": "4xx",
                                                  "decision": "deny"}) == 1
    # Gateway C's Redis is down: its start-up ping and the first call fail to connect, the breaker opens after
    # those two in a row and the next calls are refused at once; each rate_limit call is passed over (fail_open).
    assert o.value("dcr_gateway_state_store_errors_total", {"kind": "connection"}) == 2
    assert o.value("dcr_gateway_state_store_errors_total", {"kind": "circuit_open"}) == 2
    assert o.value("dcr_gateway_state_store_breaker_transitions_total", {"state": "open"}) == 1
    assert o.value("dcr_gateway_state_store_breaker_state", {"state": "open"}) == 1
    assert o.value("dcr_gateway_state_store_breaker_state", {"state": "closed"}) == 0
    assert o.value("dcr_gateway_state_fail_open_total", {"policy": "shared_limit", "check": "rate_limit"}) == 3


async def test_scrape_passes_promtool_check_metrics(mixed_traffic, promtool):
    """`promtool check metrics` finds nothing to report in the real exposition (naming, units, _total, help)."""
    o = await mixed_traffic()
    code, output = run_promtool(promtool, "check", "metrics", stdin=o.scrape)
    assert (code, output.strip()) == (0, "")


def test_promtool_check_metrics_can_fail(promtool):
    """The lint is not vacuous: a counter without _total and a non-base unit are reported."""
    bad = "# HELP x_bytes b\n# TYPE x_bytes counter\nx_bytes 1\n# HELP y_milliseconds m\n# TYPE y_milliseconds gauge\n" \
          "y_milliseconds 2\n"
    code, output = run_promtool(promtool, "check", "metrics", stdin=bad)
    assert code != 0 and "_total" in output and "base unit" in output


async def test_every_exported_metric_is_documented(mixed_traffic):
    """docs/metrics.md lists exactly the exported families: nothing undocumented, nothing stale."""
    o = await mixed_traffic()
    exported = set(exported_families(o.scrape))
    assert all(name.startswith("dcr_gateway_") for name in exported)
    documented = documented_metrics()
    assert exported - documented == set(), "exported but not documented in docs/metrics.md"
    assert documented - exported == set(), "documented but not exported"


async def test_dashboard_rules_and_docs_query_only_exported_metrics(mixed_traffic):
    """Every dcr_gateway_ name the dashboard, the alert rules and the docs query is exported, with samples, and
    every label they select or group by is one the metric has, with a value it takes."""
    o = await mixed_traffic()
    exported = set(exported_families(o.scrape))
    sampled = sampled_names(o.scrape)
    queried = queried_metrics()
    assert queried["dashboard"] and queried["alerts"]
    for source, names in queried.items():
        assert names - exported == set(), f"{source} queries metrics the gateway does not export"
        assert names - sampled == set(), f"{source} queries metrics without a sample after mixed traffic"
    labels = exported_labels(o.scrape)
    for source, exprs in queried_expressions().items():
        assert label_problems(exprs, labels) == [], f"{source} queries labels the metrics do not have"
    # The check is not vacuous: a misspelt label, a value outside a closed set, a reason of another check.
    assert len(label_problems([
        'sum by (job, kinds) (rate(dcr_gateway_upstream_errors_total{kind="connect", result="ok"}[5m]))',
        'dcr_gateway_state_store_errors_total{kind="circuit_opened"}',
        'dcr_gateway_decisions_total{check="bearer_token", reason="directory_jwks_unavailable"}',
        'dcr_gateway_decisions_total{check="rate_limits", reason=~"rate_limited|too_many"}',
    ], labels)) == 6


async def test_labels_come_from_closed_sets(mixed_traffic):
    """Label names are from the closed list, routes are templates, and no client id, path or token leaks."""
    o = await mixed_traffic()
    for family in text_string_to_metric_families(o.scrape):
        for sample in family.samples:
            assert set(sample.labels) <= ALLOWED_LABELS, sample
            labels = sample.labels
            if "route" in labels:
                assert labels["route"] in o.routes, sample
            if "method" in labels:
                assert labels["method"] in METHODS, sample
            if "source" in labels:
                assert labels["source"] in {"ocsp", "crl"}, sample
            if "origin" in labels:
                assert labels["origin"] in {"configured", "software"}, sample
            if "status_class" in labels:
                assert re.fullmatch(r"[1-5]xx", labels["status_class"]), sample
            for value in labels.values():
                assert re.fullmatch(r"[A-Za-z0-9_.+:/{}-]*", value), sample
    for secret in o.sent_secrets:
        assert secret not in o.scrape
