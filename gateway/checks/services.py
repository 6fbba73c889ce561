"""What checks share: trust anchors, the JWKS cache, the state store, revocations, the token verifier."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ..config import Settings, TrustSettings
from ..jose import KeyProvider, UrlPolicy
from ..jose.jwks_cache import JwksCache, JwksCacheSettings
from ..observability.logging import get_logger
from ..observability.metrics import Metrics
from ..state.memory import MemoryStore
from ..state.redis import CircuitBreaker, RedisStore
from ..state.store import StateStore
from .revocation import Revocations
from .token_verifier import TokenVerifier

# Key-set URLs written by the operator in config are trusted as given (loopback and private networks
# included); URLs taken from documents signed by others (SSAs) get a strict UrlPolicy instead.
CONFIGURED_URLS = UrlPolicy.build(allow_http=True, allow_private=True, allow_loopback=True)

log = get_logger("state")


def _no_hook() -> None:
    """A hook nobody listens to."""


@dataclass(slots=True)
class Services:
    """Built once per process; every check instance of every policy-set version shares it."""

    trust: TrustSettings
    keys: KeyProvider
    store: StateStore
    revocations: Revocations
    tokens: TokenVerifier
    clock: Callable[[], float]
    jwks_cache: JwksCache | None = None
    check_modes: Mapping[str, str] = field(default_factory=dict)
    """Check kind → "audit" to report its denials without enforcing them (config policies.check_modes)."""
    on_replay: Callable[[], None] = _no_hook
    """Called once per replayed registration request jti (dcr_gateway_replay_rejections_total)."""
    on_fail_open: Callable[[str, str], None] | None = None
    """Called with (policy, check) when a check is passed over because the store is down (metrics)."""

    async def start(self) -> None:
        """Open network resources."""
        if self.jwks_cache is not None:
            await self.jwks_cache.start()
        if isinstance(self.store, MemoryStore):
            await self.store.start()  # background sweep of expired entries
        elif isinstance(self.store, RedisStore):
            # Not a start condition: checks fail closed (or open, as configured) while Redis is away.
            log.info("state_store", backend="redis", reachable=await self.store.ping())
        await self.tokens.start()

    async def close(self) -> None:
        """Close network resources and the store."""
        await self.tokens.close()
        if self.jwks_cache is not None:
            await self.jwks_cache.close()
        await self.store.close()

    async def prefetch(self, uris: Iterable[str]) -> list[str]:
        """Warm configured key sets; return the URIs that failed."""
        results = await self.keys.prefetch(uris, policy=CONFIGURED_URLS)
        return [uri for uri, err in results.items() if err is not None]


def build_services(
    settings: Settings,
    metrics: Metrics | None,
    *,
    keys: KeyProvider | None = None,
    store: StateStore | None = None,
    clock: Callable[[], float] = time.time,
) -> Services:
    """The production services (JWKS cache, the configured store) unless `keys` / `store` are given."""
    trust = settings.trust
    cache: JwksCache | None = None
    if keys is None:
        j = trust.jwks
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
        keys = cache
    store = store if store is not None else build_store(settings, metrics)
    revocations = Revocations(store, client_ttl_seconds=trust.revocation_ttl_seconds,
                              skew_seconds=trust.clock_skew_seconds,
                              on_revoke=metrics.revoked if metrics is not None else None)
    tokens = TokenVerifier(keys, skew_seconds=trust.clock_skew_seconds, clock=clock)
    on_fail_open = None
    if metrics is not None:
        fail_open = metrics.state_fail_open

        def on_fail_open(policy: str, check: str) -> None:
            fail_open.labels(policy, check).inc()

    return Services(trust=trust, keys=keys, store=store, revocations=revocations, tokens=tokens, clock=clock,
                    jwks_cache=cache, check_modes=dict(settings.policies.check_modes), on_fail_open=on_fail_open,
                    on_replay=metrics.replay_rejected if metrics is not None else _no_hook)



MEMORY_STORE_MAX_ENTRIES = 500_000
"""Entries the in-memory store holds (about 100 MB at most) before it refuses new ones."""


def build_store(settings: Settings, metrics: Metrics | None) -> StateStore:
    """The configured state store: in-memory (one instance) or Redis (shared), with breaker and metrics."""
    state = settings.state
    if state.backend == "memory":
        # SECURITY: fail closed when full. Evicting would silently forget unexpired revocations and replay
        # entries (a flood of rate-limit keys could then revive a revoked token); refusing makes the checks
        # that need the store answer 503 instead, as they do when Redis is down.
        return MemoryStore(max_entries=MEMORY_STORE_MAX_ENTRIES, on_full="refuse")
    cfg = state.redis
    on_change = on_error = None
    if metrics is not None:
        m = metrics

        def on_change(new_state: str) -> None:
            m.state_breaker.labels(new_state).inc()

        def on_error(kind: str) -> None:
            m.state_errors.labels(kind).inc()

    breaker = CircuitBreaker(cfg.breaker.failure_threshold, cfg.breaker.open_seconds, on_change=on_change)
    return RedisStore.from_url(cfg.resolve_url(), key_prefix=cfg.key_prefix, pool_size=cfg.pool_size,
                               timeout_seconds=cfg.timeout_seconds, breaker=breaker, on_error=on_error)
