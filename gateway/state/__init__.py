"""Shared security state (replay cache, denylist, rate-limit counters) behind one small interface.

A backend is a module here with a `StateStore` class and one line in `BACKENDS` (and its name among
`state.backend`'s values in gateway/config/settings.py).
"""

from collections.abc import Callable

from ..config.settings import StateSettings
from .memory import MemoryStore, MemoryStoreStats
from .redis import CircuitBreaker, RedisStore
from .store import BreakerState, ErrorKind, StateStore, StoreEvents, StoreUnavailable

StoreFactory = Callable[[StateSettings, StoreEvents], StateStore]
"""Builds a backend's store from `state` settings; nothing is opened before its `start()`."""

BACKENDS: dict[str, StoreFactory] = {
    "memory": MemoryStore.from_settings,
    "redis": RedisStore.from_settings,
}
"""`state.backend` → the factory of its store."""


def build_store(settings: StateSettings, events: StoreEvents | None = None) -> StateStore:
    """The store `state.backend` names, reporting to `events`; ConfigError when its settings are incomplete."""
    return BACKENDS[settings.backend](settings, events or StoreEvents())


__all__ = [
    "BACKENDS",
    "BreakerState",
    "CircuitBreaker",
    "ErrorKind",
    "MemoryStore",
    "MemoryStoreStats",
    "RedisStore",
    "StateStore",
    "StoreEvents",
    "StoreFactory",
    "StoreUnavailable",
    "build_store",
]
