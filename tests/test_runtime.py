"""gateway/runtime.py wires the process: what it builds from config, the order it starts and closes it in, and
the metric hooks it hands the store and the checks. Real stores and a real JWKS cache; nothing is fetched."""

from __future__ import annotations

import pytest

from gateway.checks.services import CONFIGURED_URLS
from gateway.checks.token_verifier import TokenVerifier
from gateway.jose import JwksCache
from gateway.observability.metrics import Metrics
from gateway.pki.revocation import RevocationChecker
from gateway.runtime import build_offline_runtime, build_runtime
from gateway.state import MemoryStore, RedisStore, StoreUnavailable
from tests.conftest import free_port, make_settings

UPSTREAM = "http://127.0.0.1:9"


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


async def test_the_runtime_starts_the_cache_the_store_and_the_verifier_and_closes_them_in_reverse():
    """Building opens nothing; start() readies the resources in order (the key cache, the revocation checker, the
    store, the verifier); close() leaves the store unusable."""
    runtime = build_runtime(make_settings(UPSTREAM), Metrics())
    services = runtime.services
    assert [type(r) for r in runtime.resources] == [JwksCache, RevocationChecker, MemoryStore, TokenVerifier]
    assert runtime.resources[0] is services.keys and runtime.resources[1] is services.revocation
    assert runtime.resources[2] is services.store and runtime.resources[3] is services.tokens
    await runtime.start()
    await services.store.put("ns", "k", "v", 60)
    assert await services.store.get("ns", "k") == "v"
    await runtime.close()
    with pytest.raises(StoreUnavailable):
        await services.store.get("ns", "k")


async def test_the_configured_backend_is_the_store_every_check_shares():
    """`state.backend: redis` gives a Redis store (connected lazily: building it reaches nothing)."""
    settings = make_settings(UPSTREAM, state={"backend": "redis", "redis": {"url": "redis://127.0.0.1:1/0"}})
    runtime = build_runtime(settings, None)
    assert isinstance(runtime.services.store, RedisStore)
    await runtime.close()


async def test_the_store_reports_its_failures_and_breaker_to_the_metrics():
    """A dead Redis: each failed call is counted by kind, the breaker opening is counted once, and the breaker's
    state gauge moves from closed (as built) to open. The memory store has no breaker and no state series."""
    metrics = Metrics()
    dead = f"redis://127.0.0.1:{free_port()}/0"
    settings = make_settings(UPSTREAM, state={"backend": "redis", "redis": {
        "url": dead, "timeout_seconds": 1, "breaker": {"failure_threshold": 1, "open_seconds": 60}}})
    runtime = build_runtime(settings, metrics)
    store = runtime.services.store
    states = {state: sample(metrics, "dcr_gateway_state_store_breaker_state", {"state": state})
              for state in ("closed", "open", "half_open")}
    assert states == {"closed": 1, "open": 0, "half_open": 0}
    for _ in range(2):
        with pytest.raises(StoreUnavailable):
            await store.get("ns", "k")
    await runtime.close()
    assert sample(metrics, "dcr_gateway_state_store_errors_total", {"kind": "connection"}) == 1
    assert sample(metrics, "dcr_gateway_state_store_errors_total", {"kind": "circuit_open"}) == 1
    assert sample(metrics, "dcr_gateway_state_store_breaker_transitions_total", {"state": "open"}) == 1
    assert sample(metrics, "dcr_gateway_state_store_breaker_state", {"state": "open"}) == 1
    assert sample(metrics, "dcr_gateway_state_store_breaker_state", {"state": "closed"}) == 0
    memory = Metrics()
    await build_runtime(make_settings(UPSTREAM), memory).close()
    assert memory.registry.get_sample_value("dcr_gateway_state_store_breaker_state", {"state": "closed"}) is None


def test_fail_open_and_replay_hooks_count_into_the_metrics():
    """The hooks checks call (`on_fail_open`, `on_replay`) feed their counters; without metrics they are no-ops."""
    metrics = Metrics()
    services = build_runtime(make_settings(UPSTREAM), metrics).services
    assert services.on_fail_open is not None
    services.on_fail_open("dcr", "rate_limit")
    services.on_replay()
    assert sample(metrics, "dcr_gateway_state_fail_open_total", {"policy": "dcr", "check": "rate_limit"}) == 1
    assert sample(metrics, "dcr_gateway_replay_rejections_total", {}) == 1
    quiet = build_runtime(make_settings(UPSTREAM), None).services
    assert quiet.on_fail_open is None
    quiet.on_replay()


async def test_the_offline_runtime_uses_the_callers_keys_and_leaves_them_to_the_caller():
    """`policy test`'s runtime: the caller's keys (generated ones there, a cache of the test's own here) serve
    the checks; only the store and the verifier are the runtime's to start and close."""
    keys = JwksCache(policy=CONFIGURED_URLS)
    runtime = build_offline_runtime(make_settings(UPSTREAM), keys)
    assert runtime.services.keys is keys
    assert [type(r) for r in runtime.resources] == [MemoryStore, TokenVerifier]
    await runtime.start()
    await runtime.close()
    await keys.close()


def test_settling_the_heap_sets_what_is_held_aside_and_spaces_young_collections():
    """What the process holds when it is up is frozen (no collection walks it again) and the youngest generation is
    collected every YOUNG_COLLECTION_AT allocations; the older generations keep their thresholds."""
    import gc

    from gateway.runtime import YOUNG_COLLECTION_AT, settle_heap

    before = gc.get_threshold()
    held = [[n] for n in range(1000)]  # tracked containers alive at the call
    try:
        settle_heap()
        assert gc.get_freeze_count() >= len(held)
        assert gc.get_threshold() == (YOUNG_COLLECTION_AT, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
