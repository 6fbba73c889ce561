"""Shared security state (replay cache, denylist, rate-limit counters) behind one small interface."""

from .memory import MemoryStore, MemoryStoreStats
from .redis import CircuitBreaker, RedisStore
from .store import StateStore, StoreUnavailable

__all__ = ["CircuitBreaker", "MemoryStore", "MemoryStoreStats", "RedisStore", "StateStore", "StoreUnavailable"]
