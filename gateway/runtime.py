"""The process: the event loop every command runs on, and the wiring of what one process shares.

`build_runtime` builds, once per process, what the checks of every policy-set version share: the state store
`state.backend` names (with its circuit breaker), the JWKS cache, the certificate revocation checker, the
revocations, the token verifier and the metric hooks, assembled into `Services`. `Runtime.start()` starts them in
that order before the first request; `Runtime.close()` closes them in the reverse order after the last one. A new
state-store backend is a module in gateway/state/ and a line in its `BACKENDS` table; nothing here or in the checks
changes.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .checks.revocation import OnRevoke, Revocations
from .checks.services import CONFIGURED_URLS, KeyProvider, Services
from .checks.token_verifier import TokenVerifier
from .config import Settings
from .jose.jwks_cache import JwksCache, JwksCacheSettings
from .observability.metrics import Metrics
from .pki.revocation import RevocationChecker, RevocationEvents
from .state import BreakerState, ErrorKind, StoreEvents, build_store

T = TypeVar("T")

def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when the `speed` extra is installed, else the default loop."""
    try:
        import uvloop  # optional dependency (the `speed` extra): imported only where it is used
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on the fastest available loop."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)


YOUNG_COLLECTION_AT = 10_000
"""Allocations (less deallocations) between two collections of the youngest generation (CPython's default: 700)."""


def settle_heap() -> None:
    """Once the process is up (keys loaded, policies compiled, listeners bound): what it holds for its lifetime is
    set aside from the cyclic garbage collector, and young collections run less often.

    Without it, every full collection walks every object the process holds — tens of thousands of them, compiled
    policies and key material included — and a POST through the full policy spent about 7 % of its CPU in the
    collector; frozen, about 2.5 % (`make bench --scenario post`, docs/benchmarks.md). Reference counting still
    frees what was set aside once nothing refers to it; only a reference cycle among those objects outlives its
    use — at most the policy set loaded at start, once a reload has replaced it (what a reload builds is not
    frozen). The technique of `gc.freeze()` in CPython's documentation, as Instagram uses it for its long-lived
    processes."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AT, older, oldest)


class Resource(Protocol):
    """Something the process opens once at start and closes once at exit."""

    async def start(self) -> None:
        """Open it (before the first request)."""
        ...

    async def close(self) -> None:
        """Release it (after the last request); it is unusable afterwards."""
        ...


@dataclass(frozen=True, slots=True)
class Runtime:
    """One process's shared services and the resources behind them, in the order they start."""

    services: Services
    resources: tuple[Resource, ...]

    async def start(self) -> None:
        """Start every resource, in order (JWKS cache, revocation checker, state store, token verifier)."""
        for resource in self.resources:
            await resource.start()

    async def close(self) -> None:
        """Close every resource, in the reverse order."""
        for resource in reversed(self.resources):
            await resource.close()


def build_runtime(settings: Settings, metrics: Metrics | None, *, clock: Callable[[], float] = time.time) -> Runtime:
    """The production runtime: the JWKS cache, the revocation checker and the configured state store, reporting
    to `metrics`.

    Building opens nothing (config check and policy lint build it only to compile policies); `start()` does.
    """
    j = settings.trust.jwks
    cache = JwksCache(
        policy=CONFIGURED_URLS,
        settings=JwksCacheSettings(
            ttl_seconds=j.ttl_seconds,
            min_refetch_interval_seconds=j.min_refetch_interval_seconds,
            stale_max_seconds=j.stale_max_seconds,
            fetch_timeout_seconds=j.timeout_seconds,
            max_bytes=j.max_bytes,
        ),
        on_event=metrics.jwks_event if metrics is not None else None,
    )
    trust = settings.trust
    revocation = RevocationChecker.from_config(trust.revocation, skew_seconds=trust.clock_skew_seconds,
                                               events=_revocation_events(metrics))
    return _assemble(settings, metrics, cache, (cache, revocation), clock, revocation)


def build_offline_runtime(
    settings: Settings, keys: KeyProvider, *, clock: Callable[[], float] = time.time
) -> Runtime:
    """The same services on keys the caller holds instead of the JWKS cache (`policy test`'s generated keys):
    nothing is fetched, and the keys are the caller's to close. No metrics."""
    return _assemble(settings, None, keys, (), clock)


def _assemble(
    settings: Settings,
    metrics: Metrics | None,
    keys: KeyProvider,
    owned: tuple[Resource, ...],
    clock: Callable[[], float],
    revocation: RevocationChecker | None = None,
) -> Runtime:
    trust = settings.trust
    store = build_store(settings.state, _store_events(metrics))
    if metrics is not None and settings.state.backend == "redis":
        metrics.state_breaker_entered("closed", transition=False)  # the breaker starts closed
    revocations = Revocations(store, client_ttl_seconds=trust.revocation_ttl_seconds,
                              skew_seconds=trust.clock_skew_seconds, on_revoke=_on_revoke(metrics))
    tokens = TokenVerifier(keys, skew_seconds=trust.clock_skew_seconds, clock=clock)
    services = Services(trust=trust, keys=keys, store=store, revocations=revocations, tokens=tokens, clock=clock,
                        check_modes=dict(settings.policies.check_modes),
                        modes=settings.policies.check_mode, on_replay=_on_replay(metrics),
                        on_fail_open=_on_fail_open(metrics), revocation=revocation)
    return Runtime(services, (*owned, store, tokens))


def _store_events(metrics: Metrics | None) -> StoreEvents:
    """The store's breaker transitions and failed calls, counted."""
    if metrics is None:
        return StoreEvents()
    errors = metrics.state_errors

    def on_breaker_change(state: BreakerState) -> None:
        metrics.state_breaker_entered(state)

    def on_error(kind: ErrorKind) -> None:
        errors.labels(kind).inc()

    return StoreEvents(on_breaker_change=on_breaker_change, on_error=on_error,
                       on_cache_link=metrics.state_cache_link_changed)


def _revocation_events(metrics: Metrics | None) -> RevocationEvents:
    """The revocation checker's answers, fetches, cache hits and soft-fail passes, counted."""
    if metrics is None:
        return RevocationEvents()
    return RevocationEvents(on_check=metrics.cert_revocation_checked, on_fetch=metrics.cert_revocation_fetched,
                            on_cache_hit=metrics.cert_revocation_cache_hit,
                            on_soft_fail=metrics.cert_revocation_soft_failed)


def _nothing() -> None:
    """A hook nobody listens to."""


def _on_replay(metrics: Metrics | None) -> Callable[[], None]:
    return metrics.replay_rejected if metrics is not None else _nothing


def _on_revoke(metrics: Metrics | None) -> OnRevoke | None:
    return metrics.revoked if metrics is not None else None


def _on_fail_open(metrics: Metrics | None) -> Callable[[str, str], None] | None:
    """Counts the checks passed over because the store was down, by policy and check."""
    if metrics is None:
        return None
    fail_open = metrics.state_fail_open

    def on_fail_open(policy: str, check: str) -> None:
        fail_open.labels(policy, check).inc()

    return on_fail_open
