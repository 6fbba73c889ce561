"""In-memory StateStore for a single replica: TTL on every entry, bounded size, expiry heap.

Expiry: each write pushes `(expires_at, version)` onto a min-heap. Reads drop an expired entry lazily;
every write also pops at most `purge_batch` expired heap items (amortised O(log n), never a scan of the
whole table), and `sweep()` (run periodically by `start()`) clears everything expired. A key rewritten
with a new TTL leaves a stale heap item behind, recognised by its version and skipped; the heap is
rebuilt when stale items outnumber live entries.

When full (`max_entries` live entries and nothing expired), the documented choice is:
- `on_full="evict"` (default): evict the entry that expires soonest. For a replay cache that is the token
  whose own lifetime ends first, so the replay window lost is the shortest possible. It is never silent:
  every such eviction of an unexpired entry is counted in `stats().evicted_unexpired`, reported through
  `on_evict(namespace)` (for a metric) and logged with its namespace (not its key).
- `on_full="refuse"`: raise `StoreUnavailable`, so checks fail closed instead of forgetting anything.
"""

from __future__ import annotations

import asyncio
import heapq
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import structlog

from ..config.settings import StateSettings
from .store import StoreEvents, StoreUnavailable

_log = structlog.get_logger(__name__)

MAX_ENTRIES = 500_000
"""Entries the gateway's in-memory store holds (about 100 MB at most) before it refuses new ones."""

_Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class MemoryStoreStats:
    """Counters for metrics and tests."""

    entries: int  # entries held, including expired ones not yet purged
    expired_removed: int
    evicted_unexpired: int
    heap_items: int  # live plus stale expiry records


class _Entry:
    __slots__ = ("expires_at", "value", "version")

    def __init__(self, value: str, expires_at: float, version: int) -> None:
        self.value = value
        self.expires_at = expires_at
        self.version = version


def _check_ttl(ttl_seconds: float) -> None:
    if not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
        raise ValueError("ttl_seconds must be a finite number > 0")


class MemoryStore:
    """A StateStore in this process's memory; an injectable clock makes expiry testable."""

    __slots__ = (
        "_clock",
        "_closed",
        "_data",
        "_evicted",
        "_expired",
        "_heap",
        "_on_evict",
        "_sweeper",
        "_version",
        "max_entries",
        "on_full",
        "purge_batch",
    )

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        on_full: Literal["evict", "refuse"] = "evict",
        purge_batch: int = 64,
        clock: Callable[[], float] = time.monotonic,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        if max_entries <= 0 or purge_batch <= 0:
            raise ValueError("max_entries and purge_batch must be > 0")
        self.max_entries = max_entries
        self.on_full = on_full
        self.purge_batch = purge_batch
        self._clock = clock
        self._on_evict = on_evict
        self._data: dict[_Key, _Entry] = {}
        self._heap: list[tuple[float, int, str, str]] = []
        self._version = 0
        self._expired = 0
        self._evicted = 0
        self._closed = False
        self._sweeper: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, settings: StateSettings, events: StoreEvents) -> MemoryStore:
        """The gateway's in-memory store: `MAX_ENTRIES` at most, refusing new entries when full."""
        # SECURITY: fail closed when full. Evicting would silently forget unexpired revocations and replay
        # entries (a flood of rate-limit keys could then revive a revoked token); refusing makes the checks
        # that need the store answer 503 instead, as they do when Redis is down.
        return cls(max_entries=MAX_ENTRIES, on_full="refuse")

    # -- StateStore ------------------------------------------------------------------------------------
    def read_mostly(self, *namespaces: str) -> None:
        """Nothing to do: every read is already local."""

    async def start(self, sweep_interval_seconds: float = 30.0) -> None:
        """Sweep expired entries every `sweep_interval_seconds` in the background until close()."""
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.create_task(self._sweep_forever(sweep_interval_seconds))

    async def add_if_absent(self, namespace: str, key: str, ttl_seconds: float) -> bool:
        """Record `key` unless present; True when newly added (False means a replay)."""
        _check_ttl(ttl_seconds)
        now = self._begin_write()
        if self._live((namespace, key), now) is not None:
            return False
        self._insert((namespace, key), "1", ttl_seconds, now)
        return True

    async def put(self, namespace: str, key: str, value: str, ttl_seconds: float) -> None:
        """Set `key` to `value` with a fresh TTL, replacing any previous entry."""
        _check_ttl(ttl_seconds)
        now = self._begin_write()
        self._insert((namespace, key), value, ttl_seconds, now)

    async def get(self, namespace: str, key: str) -> str | None:
        """The unexpired value of `key`, or None."""
        self._check_open()
        entry = self._live((namespace, key), self._clock())
        return None if entry is None else entry.value

    async def get_many(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """The unexpired values of several `(namespace, key)` entries, in order (None where absent)."""
        self._check_open()
        now = self._clock()
        return [None if (entry := self._live(k, now)) is None else entry.value for k in items]

    async def exists(self, namespace: str, key: str) -> bool:
        """True when `key` is present and unexpired."""
        self._check_open()
        return self._live((namespace, key), self._clock()) is not None

    async def incr(self, namespace: str, key: str, amount: int, ttl_seconds: float) -> int:
        """Add `amount` to a counter; a new counter starts at `amount` and expires `ttl_seconds` later."""
        _check_ttl(ttl_seconds)
        now = self._begin_write()
        entry = self._live((namespace, key), now)
        if entry is None:
            self._insert((namespace, key), str(amount), ttl_seconds, now)
            return amount
        value = int(entry.value) + amount  # ValueError when the entry is not a counter, like Redis INCRBY
        entry.value = str(value)  # the expiry is unchanged: a fixed window
        return value

    async def close(self) -> None:
        """Stop the sweeper and drop every entry; later calls raise StoreUnavailable."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            try:
                await self._sweeper
            except asyncio.CancelledError:
                pass
            self._sweeper = None
        self._data.clear()
        self._heap.clear()

    # -- extras ----------------------------------------------------------------------------------------
    def sweep(self) -> int:
        """Remove every expired entry now; returns how many were removed."""
        before = self._expired
        self._purge(self._clock(), limit=None)
        self._maybe_compact()
        return self._expired - before

    def stats(self) -> MemoryStoreStats:
        """Current counters."""
        return MemoryStoreStats(len(self._data), self._expired, self._evicted, len(self._heap))

    # -- internals -------------------------------------------------------------------------------------
    async def _sweep_forever(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self.sweep()

    def _check_open(self) -> None:
        if self._closed:
            raise StoreUnavailable("memory store is closed")

    def _begin_write(self) -> float:
        self._check_open()
        now = self._clock()
        self._purge(now, limit=self.purge_batch)
        return now

    def _live(self, k: _Key, now: float) -> _Entry | None:
        entry = self._data.get(k)
        if entry is None:
            return None
        if entry.expires_at <= now:
            del self._data[k]  # lazy expiry; its heap item is now stale and skipped later
            self._expired += 1
            return None
        return entry

    def _insert(self, k: _Key, value: str, ttl_seconds: float, now: float) -> None:
        if k not in self._data and len(self._data) >= self.max_entries:
            self._make_room(now)
        self._version += 1
        expires_at = now + ttl_seconds
        self._data[k] = _Entry(value, expires_at, self._version)
        heapq.heappush(self._heap, (expires_at, self._version, k[0], k[1]))
        self._maybe_compact()

    def _purge(self, now: float, limit: int | None) -> None:
        heap = self._heap
        popped = 0
        while heap and heap[0][0] <= now and (limit is None or popped < limit):
            _, version, namespace, key = heapq.heappop(heap)
            popped += 1
            entry = self._data.get((namespace, key))
            if entry is not None and entry.version == version:
                del self._data[(namespace, key)]
                self._expired += 1

    def _make_room(self, now: float) -> None:
        self._purge(now, limit=None)
        if len(self._data) < self.max_entries:
            return
        if self.on_full == "refuse":
            raise StoreUnavailable(f"memory store is full ({self.max_entries} unexpired entries)")
        while self._heap:
            _, version, namespace, key = heapq.heappop(self._heap)
            entry = self._data.get((namespace, key))
            if entry is not None and entry.version == version:
                del self._data[(namespace, key)]
                self._evicted += 1
                if self._evicted == 1 or self._evicted % 1000 == 0:
                    _log.warning("state_store_full_evicted", namespace=namespace, evicted_total=self._evicted)
                if self._on_evict is not None:
                    self._on_evict(namespace)
                return

    def _maybe_compact(self) -> None:
        if len(self._heap) > 2 * len(self._data) + 1024:
            self._heap = [(e.expires_at, e.version, ns, key) for (ns, key), e in self._data.items()]
            heapq.heapify(self._heap)
