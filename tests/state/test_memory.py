"""MemoryStore: TTLs, replay semantics, counters, bounded size with counted eviction, expiry heap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.config.settings import StateSettings
from gateway.state import MemoryStore, StateStore, StoreUnavailable, build_store
from tests.waiting import eventually


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    """A fresh fake clock."""
    return FakeClock()


MakeStore = Callable[..., MemoryStore]


@pytest.fixture
async def make_store(clock: FakeClock) -> AsyncIterator[MakeStore]:
    """MemoryStores on the fake clock, closed at teardown."""
    stores: list[MemoryStore] = []

    def make(**kwargs: Any) -> MemoryStore:
        store = MemoryStore(clock=clock, **kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.close()


def test_is_a_state_store() -> None:
    """MemoryStore satisfies the StateStore protocol."""
    assert isinstance(MemoryStore(), StateStore)


async def test_replay_cache(make_store: MakeStore, clock: FakeClock) -> None:
    """add_if_absent is True once, False while the entry lives, True again after it expires."""
    store = make_store()
    assert await store.add_if_absent("jti", "a", 60) is True
    assert await store.add_if_absent("jti", "a", 60) is False
    assert await store.add_if_absent("other", "a", 60) is True  # namespaces are separate
    clock.now += 59.9
    assert await store.add_if_absent("jti", "a", 60) is False
    clock.now += 0.1  # exactly at expiry: gone
    assert await store.add_if_absent("jti", "a", 60) is True


async def test_concurrent_replays_only_one_wins(make_store: MakeStore) -> None:
    """Of many concurrent add_if_absent calls for one key, exactly one is new."""
    store = make_store()
    results = await asyncio.gather(*(store.add_if_absent("jti", "same", 60) for _ in range(100)))
    assert results.count(True) == 1


async def test_put_get_exists(make_store: MakeStore, clock: FakeClock) -> None:
    """put replaces value and TTL; get/exists see only unexpired entries."""
    store = make_store()
    assert await store.get("deny", "tok") is None
    assert await store.exists("deny", "tok") is False
    await store.put("deny", "tok", "revoked", 10)
    assert await store.get("deny", "tok") == "revoked"
    clock.now += 5
    await store.put("deny", "tok", "again", 10)  # new TTL from now
    clock.now += 9
    assert await store.get("deny", "tok") == "again"
    assert await store.exists("deny", "tok") is True
    clock.now += 1
    assert await store.get("deny", "tok") is None
    assert await store.exists("deny", "tok") is False


async def test_get_many(make_store: MakeStore, clock: FakeClock) -> None:
    """get_many returns values in the order asked, None for absent or expired entries, duplicates included."""
    store = make_store()
    assert await store.get_many([]) == []
    await store.put("a", "k", "1", 10)
    await store.put("b", "k", "1700000000.5", 20)
    items = [("b", "k"), ("a", "missing"), ("a", "k"), ("c", "k"), ("a", "k")]
    assert await store.get_many(items) == ["1700000000.5", None, "1", None, "1"]
    clock.now += 10  # the first entry expires, the second lives on
    assert await store.get_many(items) == ["1700000000.5", None, None, None, None]
    clock.now += 10
    assert await store.get_many(items) == [None] * 5
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get_many([("a", "k")])


async def test_incr_fixed_window(make_store: MakeStore, clock: FakeClock) -> None:
    """incr creates at `amount`, adds, keeps the creation TTL, restarts after expiry."""
    store = make_store()
    assert await store.incr("rate", "client-1", 1, 60) == 1
    clock.now += 30
    assert await store.incr("rate", "client-1", 2, 60) == 3
    clock.now += 29
    assert await store.incr("rate", "client-1", 1, 60) == 4
    assert await store.get("rate", "client-1") == "4"
    clock.now += 1  # 60 s after creation: the window is over despite the later increments
    assert await store.incr("rate", "client-1", 1, 60) == 1


async def test_incr_on_non_counter(make_store: MakeStore) -> None:
    """incr on a non-integer value is an error, like Redis INCRBY."""
    store = make_store()
    await store.put("x", "k", "text", 60)
    with pytest.raises(ValueError):
        await store.incr("x", "k", 1, 60)


@pytest.mark.parametrize("ttl", [0, -1, float("nan"), float("inf")])
async def test_ttl_must_be_positive_and_finite(make_store: MakeStore, ttl: float) -> None:
    """Every entry has a real TTL."""
    store = make_store()
    with pytest.raises(ValueError):
        await store.add_if_absent("jti", "a", ttl)
    with pytest.raises(ValueError):
        await store.put("d", "a", "v", ttl)
    with pytest.raises(ValueError):
        await store.incr("r", "a", 1, ttl)


async def test_full_store_evicts_soonest_expiring_and_counts_it(make_store: MakeStore) -> None:
    """When full, the soonest-expiring unexpired entry is evicted, counted and reported."""
    evicted: list[str] = []
    store = make_store(max_entries=3, on_evict=evicted.append)
    await store.add_if_absent("jti", "long", 300)
    await store.add_if_absent("jti", "short", 10)
    await store.put("deny", "mid", "x", 100)
    assert await store.add_if_absent("jti", "new", 200) is True
    assert await store.exists("jti", "short") is False
    for namespace, key in (("jti", "long"), ("deny", "mid"), ("jti", "new")):
        assert await store.exists(namespace, key)
    assert store.stats().evicted_unexpired == 1
    assert evicted == ["jti"]


async def test_full_store_purges_expired_before_evicting(make_store: MakeStore, clock: FakeClock) -> None:
    """Expired entries make room first; nothing unexpired is evicted then."""
    store = make_store(max_entries=2)
    await store.add_if_absent("jti", "old", 5)
    await store.add_if_absent("jti", "keep", 100)
    clock.now += 6
    await store.add_if_absent("jti", "new", 100)
    assert store.stats().evicted_unexpired == 0
    assert await store.exists("jti", "keep") and await store.exists("jti", "new")


async def test_full_store_can_refuse(make_store: MakeStore, clock: FakeClock) -> None:
    """on_full='refuse' raises StoreUnavailable (fail closed) and forgets nothing."""
    store = make_store(max_entries=2, on_full="refuse")
    await store.add_if_absent("jti", "a", 10)
    await store.add_if_absent("jti", "b", 20)
    with pytest.raises(StoreUnavailable):
        await store.add_if_absent("jti", "c", 30)
    assert await store.exists("jti", "a") and await store.exists("jti", "b")
    await store.put("jti", "a", "overwrite is not growth", 10)  # existing key: no room needed
    clock.now += 10
    assert await store.add_if_absent("jti", "c", 30) is True


async def test_writes_purge_in_bounded_batches_and_sweep_clears_all(
    make_store: MakeStore, clock: FakeClock
) -> None:
    """A write purges at most purge_batch expired entries; sweep() removes every expired one."""
    store = make_store(purge_batch=10)
    for i in range(100):
        await store.add_if_absent("jti", str(i), 1)
    clock.now += 2
    await store.add_if_absent("jti", "trigger", 60)
    assert store.stats().entries == 100 - 10 + 1
    assert store.sweep() == 90
    assert store.stats().entries == 1
    assert store.stats().expired_removed == 100


async def test_rewrites_do_not_grow_the_heap(make_store: MakeStore) -> None:
    """Rewriting one key many times leaves a bounded number of stale heap items."""
    store = make_store()
    for i in range(10_000):
        await store.put("deny", "same", str(i), 60 + i)
    assert store.stats().entries == 1
    assert store.stats().heap_items <= 2 * 1 + 1024 + 1
    assert await store.get("deny", "same") == "9999"


async def test_background_sweeper(clock: FakeClock) -> None:
    """start() sweeps expired entries without any request touching the store."""
    store = MemoryStore(clock=clock)
    await store.put("deny", "a", "x", 1)
    await store.start(sweep_interval_seconds=0.01)
    clock.now += 2
    await eventually(lambda: store.stats().entries == 0, "the sweeper to drop the expired entry")
    await store.close()


async def test_closed_store_is_unavailable(make_store: MakeStore) -> None:
    """After close() every call raises StoreUnavailable."""
    store = make_store()
    await store.put("d", "k", "v", 10)
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get("d", "k")
    with pytest.raises(StoreUnavailable):
        await store.add_if_absent("jti", "k", 10)


async def test_the_gateways_memory_store_refuses_rather_than_forgets():
    """The store the gateway builds fails closed when full: an unexpired revocation is never evicted."""
    store = build_store(StateSettings())
    assert isinstance(store, MemoryStore) and store.on_full == "refuse"
    store.max_entries = 2  # the real limit is large; the behaviour at the limit is what matters here
    await store.put("revoked_jti", "a", "1", 60)
    await store.put("ratelimit", "b", "1", 60)
    with pytest.raises(StoreUnavailable):
        await store.put("ratelimit", "c", "1", 60)
    assert await store.exists("revoked_jti", "a")
    await store.close()
