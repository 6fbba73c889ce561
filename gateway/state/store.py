"""The shared security state interface: replay cache, denylist entries and rate-limit counters.

Every entry lives in a namespace (e.g. "jti", "denylist", "rate") and expires after its TTL. The memory
implementation serves one replica; the Redis implementation (`redis.py`) serves several. Implementations raise
`StoreUnavailable` when the backend cannot answer, and checks then fail closed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

BreakerState = Literal["closed", "open", "half_open"]
"""A circuit breaker's state (a store that has one, like Redis's)."""
ErrorKind = Literal["timeout", "connection", "auth", "response", "circuit_open"]
"""Why a call to a remote store failed, by kind only (never its message: it may name the URL). `auth`: the store
refused our credentials (a wrong or missing password), which no retry mends."""


class StoreUnavailable(Exception):
    """The state backend cannot answer (down, timed out or full): the caller must fail closed."""

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
        """When the backend is expected back at the earliest (e.g. a circuit breaker's open time), if known."""


@dataclass(frozen=True, slots=True)
class StoreEvents:
    """What a store reports as it runs (the process wires these to metrics); a backend calls those it has."""

    on_breaker_change: Callable[[BreakerState], None] | None = None
    """The circuit breaker changed state (dcr_gateway_state_store_breaker_transitions_total)."""
    on_error: Callable[[ErrorKind], None] | None = None
    """A call failed, by kind (dcr_gateway_state_store_errors_total)."""
    on_cache_link: Callable[[bool], None] | None = None
    """The invalidation link of the local cache went up (True) or down (False)
    (dcr_gateway_state_cache_link_transitions_total)."""


@runtime_checkable
class StateStore(Protocol):
    """Async key/value state with a TTL on every entry: built, started once, used, closed."""

    def read_mostly(self, *namespaces: str) -> None:
        """Declare namespaces read on (nearly) every request and written rarely, before `start()`: the store may
        answer `get_many` of them from a local copy it keeps correct (Redis: invalidated by the server on every
        change, bypassed whenever that cannot be ensured). A hint; correctness never depends on it."""
        ...

    async def start(self) -> None:
        """Begin background work (e.g. an expiry sweep); called once, before the first request."""
        ...

    async def add_if_absent(self, namespace: str, key: str, ttl_seconds: float) -> bool:
        """Record `key` unless present; True when newly added (False means a replay)."""
        ...

    async def put(self, namespace: str, key: str, value: str, ttl_seconds: float) -> None:
        """Set `key` to `value` with a fresh TTL, replacing any previous entry."""
        ...

    async def get(self, namespace: str, key: str) -> str | None:
        """The unexpired value of `key`, or None."""
        ...

    async def get_many(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """The unexpired values of several `(namespace, key)` entries, in order (None where absent), read at
        once: one round trip and one point in time."""
        ...

    async def exists(self, namespace: str, key: str) -> bool:
        """True when `key` is present and unexpired."""
        ...

    async def incr(self, namespace: str, key: str, amount: int, ttl_seconds: float) -> int:
        """Add `amount` to a counter and return the new value; the TTL is set when the counter is created."""
        ...

    async def close(self) -> None:
        """Release resources; the store is unusable afterwards."""
        ...
