"""The metrics module: injectable registries, closed label sets in step with their sources, the hooks other
components are handed (JWKS cache, revocations, replay, audit writer)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import get_args

import pytest

from gateway.checks.revocation import RevocationCause
from gateway.jose.jwks_cache import EVENTS
from gateway.jose.url_guard import KeyOrigin
from gateway.observability import metrics as m
from gateway.observability.audit import AuditLog
from gateway.observability.metrics import Metrics
from gateway.runtime import build_runtime
from tests.conftest import SHIPPED_POLICIES, make_settings
from tests.policy.test_enforcement import REGISTER, auth


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_each_instance_has_its_own_registry():
    """Two Metrics never share values (tests get a fresh registry each)."""
    a, b = Metrics(), Metrics()
    a.replay_rejected()
    assert sample(a, "dcr_gateway_replay_rejections_total") == 1
    assert sample(b, "dcr_gateway_replay_rejections_total") == 0


def test_closed_label_sets_match_their_sources():
    """The JWKS cache's events and the revocation causes are exactly what the metrics accept."""
    assert set(m.JWKS_FETCH_RESULTS) == EVENTS["fetch"]
    assert set(m.JWKS_CACHE_RESULTS) | {"stale"} == EVENTS["cache"]
    assert {"unknown_kid", "rate_limited"} == EVENTS["refetch"]
    assert m.REVOCATION_CAUSES == get_args(RevocationCause)


@pytest.mark.parametrize(
    ("kind", "result", "origin", "name", "labels"),
    [
        ("fetch", "ok", "configured", "dcr_gateway_jwks_fetches_total", {"origin": "configured", "result": "ok"}),
        ("fetch", "timeout", "software", "dcr_gateway_jwks_fetches_total", {"origin": "software", "result": "timeout"}),
        ("cache", "hit", "configured", "dcr_gateway_jwks_cache_lookups_total", {"result": "hit"}),
        ("cache", "miss", "software", "dcr_gateway_jwks_cache_lookups_total", {"result": "miss"}),
        ("cache", "stale", "configured", "dcr_gateway_jwks_stale_served_total", {}),
        ("refetch", "unknown_kid", "software", "dcr_gateway_jwks_unknown_kid_total", {"result": "refetch"}),
        ("refetch", "rate_limited", "configured", "dcr_gateway_jwks_unknown_kid_total", {"result": "rate_limited"}),
    ],
)
def test_jwks_events_map_to_their_metric(kind, result, origin, name, labels):
    """Each JWKS cache event increments exactly one series; only fetches are told apart by origin."""
    metrics = Metrics()
    metrics.jwks_event(kind, result, origin)
    assert metrics.registry.get_sample_value(name, labels) == 1
    if kind == "fetch":
        other = "software" if origin == "configured" else "configured"
        assert metrics.registry.get_sample_value(name, {**labels, "origin": other}) == 0


def test_the_origins_are_the_url_policies_origins():
    """The metric's closed set of origins is the one UrlPolicy.origin may take."""
    assert m.JWKS_ORIGINS == get_args(KeyOrigin)


def test_every_jwks_cache_event_counts_once():
    """Every event the cache can report is accepted and adds exactly 1 to the JWKS series."""
    metrics = Metrics()
    events = [(kind, result, origin) for kind, results in sorted(EVENTS.items()) for result in sorted(results)
              for origin in m.JWKS_ORIGINS]
    for kind, result, origin in events:
        metrics.jwks_event(kind, result, origin)
    total = sum(s.value for metric in metrics.registry.collect() if metric.name.startswith("dcr_gateway_jwks_")
                for s in metric.samples)
    assert total == len(events)


@pytest.mark.parametrize(("kind", "result", "origin"), [("fetch", "https://evil.test/jwks", "configured"),
                                                         ("lookup", "hit", "configured"), ("cache", "", "software"),
                                                         ("fetch", "ok", "https://evil.test/jwks")])
def test_unknown_jwks_events_are_refused(kind, result, origin):
    """An event outside the closed set never becomes a label value."""
    metrics = Metrics()
    with pytest.raises(ValueError, match="unknown JWKS cache event"):
        metrics.jwks_event(kind, result, origin)
    assert "evil" not in metrics.render().decode()


def test_unknown_revocation_cause_and_audit_result_are_refused():
    """revoked() and audit_written() accept only their closed sets."""
    metrics = Metrics()
    with pytest.raises(ValueError):
        metrics.revoked("client-a")
    with pytest.raises(ValueError):
        metrics.audit_written("dropped", 1)


def test_policy_version_is_one_series():
    """A reload replaces the version series instead of adding one per version."""
    metrics = Metrics()
    metrics.set_policy_version("v1", 3)
    metrics.set_policy_version("v2", 4)
    text = metrics.render().decode()
    assert 'dcr_gateway_policy_set_info{version="v2"} 1.0' in text
    assert 'version="v1"' not in text
    assert sample(metrics, "dcr_gateway_policies_loaded") == 4


def test_services_hand_the_replay_hook_to_checks():
    """A check reports a replayed jti with `services.on_replay()` (the replay check's contract)."""
    metrics = Metrics()
    services = build_runtime(make_settings("http://127.0.0.1:1"), metrics).services
    services.on_replay()
    services.on_replay()
    assert sample(metrics, "dcr_gateway_replay_rejections_total") == 2
    build_runtime(make_settings("http://127.0.0.1:1"), None).services.on_replay()  # no metrics: a no-op


async def test_audit_mode_revokes_nothing_and_counts_nothing(bank_gw_metrics, tmp_path):
    """A foreign ClientId in audit mode is forwarded and reported, but no revocation is counted."""
    text = (SHIPPED_POLICIES / "dcr.yaml").read_text().replace(
        "match: {methods: [GET]", "mode: audit\n    match: {methods: [GET]"
    )
    (tmp_path / "dcr.yaml").write_text(text)
    bank, gw = await bank_gw_metrics(tmp_path)
    resp = await gw.client.get(f"{REGISTER}/client-b", headers=auth(bank.token()))
    assert resp.status == 200
    for cause in m.REVOCATION_CAUSES:
        assert gw.sample("dcr_gateway_revocations_total", {"cause": cause}) == 0


async def test_revocation_is_counted_once(bank_gw_metrics):
    """A token on a foreign ClientId is revoked and counted once; the revoked token's retry counts nothing more."""
    bank, gw = await bank_gw_metrics(SHIPPED_POLICIES)
    token = bank.token()
    for _ in range(2):
        resp = await gw.client.get(f"{REGISTER}/client-b", headers=auth(token))
        assert resp.status == 401
    assert gw.sample("dcr_gateway_revocations_total", {"cause": "client_not_owned"}) == 1


def test_audit_events_written_are_counted(tmp_path: Path):
    """Every event that reached the file is counted as written (start, decisions, stop)."""
    metrics = Metrics()
    path = tmp_path / "audit.log"
    log = AuditLog("file", str(path), on_write=metrics.audit_written)
    for i in range(3):
        log.emit({"request_id": str(i)})
    log.close()
    assert sample(metrics, "dcr_gateway_audit_events_total", result="written") == 5
    assert len(path.read_text().splitlines()) == 5
    assert sample(metrics, "dcr_gateway_audit_events_total", result="failed") == 0


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux) for a sink that refuses writes")
def test_audit_sink_failure_is_counted_and_the_writer_survives(tmp_path: Path, capfd):
    """A sink that refuses writes (ENOSPC) counts every event as failed, batch after batch, and says so."""
    metrics = Metrics()
    log = AuditLog("file", "/dev/full", on_write=metrics.audit_written)
    log.emit({"request_id": "1"})
    deadline = time.monotonic() + 30
    while sample(metrics, "dcr_gateway_audit_events_total", result="failed") < 2:  # start + first event
        assert time.monotonic() < deadline, "the writer never reported the failed batch"
        time.sleep(0.01)
    log.emit({"request_id": "2"})  # a later batch: only a writer that survived the failure counts it
    log.close()
    assert sample(metrics, "dcr_gateway_audit_events_total", result="failed") == 4
    assert sample(metrics, "dcr_gateway_audit_events_total", result="written") == 0
    assert "audit write failed" in capfd.readouterr().err


# Amounts on, between and beyond the latency buckets' bounds (0.005 is one), with sums whose float rounding
# depends on the order of the additions.
_AMOUNTS = (0.005, 0.0049, 0.1 + 0.2, 1e-9, 31.0, 0.0, 2.5, 0.3, 0.005000001, 7.0)


def test_per_request_recording_exposes_what_the_public_api_would():
    """request_done, upstream_answered, decided and in_flight go straight to prometheus-client's value objects,
    without the library's lock (metrics._loop_add, _observer): the exposition is byte for byte what the public
    calls produce (bucket bounds included, sums added in the same order), first series and cached series alike.
    (Multiprocess mode keeps the library's locked mmap writes: tests/observability/test_multiprocess.py.)"""
    fast, public = Metrics(), Metrics()
    route, other = "/open-banking/v3.1/register/{ClientId}", "/open-banking/v3.1/register"
    for i, amount in enumerate(_AMOUNTS * 2):
        method, status = "GET" if i % 4 else "BREW", (200, 404, 201)[i % 3]
        upstream = None if i % 4 == 0 else 200 + 100 * (i % 3)
        fast.in_flight.inc()
        fast.decided("open_read", "enforce", "deny" if i % 5 == 0 else "allow", "c" * (i % 2), "")
        fast.upstream_answered(route if i % 2 else other, method, amount / 2)
        if i % 7:  # i = 0, 7, 14: still in flight
            fast.in_flight.dec()
        fast.request_done(route if i % 2 else other, method, status, "allow", amount, upstream)

        label = m.method_label(method)
        public.in_flight_gauge.inc()
        public.decisions.labels("open_read", "enforce", "deny" if i % 5 == 0 else "allow", "c" * (i % 2), "").inc()
        public.upstream_duration.labels(route if i % 2 else other, label).observe(amount / 2)
        if i % 7:
            public.in_flight_gauge.dec()
        public.requests.labels(route if i % 2 else other, label, f"{status // 100}xx", "allow").inc()
        public.request_duration.labels(route if i % 2 else other, label).observe(amount)
        if upstream is not None:
            public.upstream_responses.labels(route if i % 2 else other, f"{upstream // 100}xx").inc()
    assert fast.render() == public.render()
    assert sample(fast, "dcr_gateway_requests_in_flight") == 3
