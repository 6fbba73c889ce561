"""Shared security state (replay cache, denylist, rate-limit counters) behind one small interface."""

from .memory import MemoryStore, MemoryStoreStats
from .store import StateStore, StoreUnavailable

__all__ = ["MemoryStore", "MemoryStoreStats", "StateStore", "StoreUnavailable"]
