"""The local cache of read-mostly keys on a real redis-server: kept correct by Redis's invalidations, trusted only
while the invalidation link is up and heard from, fail closed otherwise, and back once the link recovers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway.state.redis import RedisStore
from gateway.state.store import StoreUnavailable
from gateway.state.tracking import LocalCache
from tests.conftest import RedisServer
from tests.state.test_redis import Clock, eventually

NS = "revoked_jti"
OTHER = "jti"


class Made:
    """RedisStores of the test's own, closed at teardown."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.stores: list[RedisStore] = []

    async def __call__(self, url: str, *, cache: bool = True, max_age: float = 60.0, start: bool = True,
                       **kwargs: Any) -> RedisStore:
        kwargs.setdefault("timeout_seconds", 0.5)
        local = LocalCache(max_age_seconds=max_age, max_entries=100) if cache else None
        store = RedisStore.from_url(url, key_prefix=self.prefix, local_cache=local, **kwargs)
        store.read_mostly(NS)
        self.stores.append(store)
        if start:
            await store.start()
            if cache:
                await linked(store)
        return store


async def linked(store: RedisStore, connects: int = 1) -> None:
    """Wait (bounded) until the store's invalidation link has been established `connects` times and is trusted."""
    link, cache = store.invalidation_link, store.local_cache
    assert link is not None and cache is not None

    async def up() -> bool:
        return link.connects >= connects and cache.trusted

    await eventually(up)


@pytest.fixture
async def made(redis_prefix: str) -> AsyncIterator[Made]:
    m = Made(redis_prefix)
    yield m
    for store in m.stores:
        await store.close()


async def mgets(raw: Redis) -> int:
    """MGET calls the server has served so far."""
    stats = await raw.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def test_a_cached_lookup_costs_no_round_trip_and_other_namespaces_are_not_cached(
    made: Made, redis_server: RedisServer, raw: Redis
):
    """The second lookup of the same marks is answered locally; a lookup touching another namespace always asks."""
    store = await made(redis_server.url)
    items = [(NS, "a"), (NS, "b")]
    assert await store.get_many(items) == [None, None]
    before = await mgets(raw)
    for _ in range(5):
        assert await store.get_many(items) == [None, None]
    assert await mgets(raw) == before
    assert await store.get_many([(NS, "a"), (OTHER, "x")]) == [None, None]
    assert await mgets(raw) == before + 1


@pytest.mark.parametrize("writer", ["other store", "plain client"])
async def test_a_change_made_anywhere_invalidates_the_cached_value(
    made: Made, redis_server: RedisServer, raw: Redis, redis_prefix: str, writer: str
):
    """A key cached as absent, then set by another replica's store or by any other Redis client (an operator, an
    older gateway): the cache lets go of it (max_age is 60 s here, so only Redis's invalidation explains it)."""
    reader = await made(redis_server.url)
    other = await made(redis_server.url, cache=False, start=False)
    assert await reader.get_many([(NS, "t")]) == [None]
    assert len(reader.local_cache or ()) == 1
    if writer == "other store":
        await other.put(NS, "t", "1", 60)
    else:
        await raw.set(f"{redis_prefix}{NS}:t", b"1", px=60_000)

    async def seen() -> bool:
        return await reader.get_many([(NS, "t")]) == ["1"]

    await eventually(seen)
    await raw.delete(f"{redis_prefix}{NS}:t")  # a DEL too

    async def gone() -> bool:
        return await reader.get_many([(NS, "t")]) == [None]

    await eventually(gone)


async def test_a_write_through_the_store_itself_is_read_back_at_once(made: Made, redis_server: RedisServer):
    """Read your own writes: a put() through the store drops its cached value before returning."""
    store = await made(redis_server.url)
    assert await store.get_many([(NS, "own")]) == [None]
    await store.put(NS, "own", "1", 60)
    assert await store.get_many([(NS, "own")]) == ["1"]


async def test_redis_down_means_the_cache_is_not_trusted_and_it_recovers(own_redis, made: Made):
    """Redis killed: a lookup the cache holds is not answered from it but fails closed (StoreUnavailable) like
    any call to a dead Redis; Redis restarted: the link comes back, a write made meanwhile is seen, caching
    resumes."""
    server: RedisServer = own_redis()
    store = await made(server.url)
    assert await store.get_many([(NS, "k")]) == [None]
    cache = store.local_cache
    assert cache is not None and len(cache) == 1
    server.stop()

    async def distrusted() -> bool:
        return not cache.trusted

    await eventually(distrusted)
    with pytest.raises(StoreUnavailable):
        await store.get_many([(NS, "k")])

    server.start()
    await linked(store, connects=2)
    client = Redis.from_url(server.url)
    try:
        await client.set(f"{made.prefix}{NS}:k", b"1", px=60_000)

        async def answers() -> bool:
            try:
                return await store.get_many([(NS, "k")]) == ["1"]
            except StoreUnavailable:
                return False

        await eventually(answers)
        assert len(cache) == 1
    finally:
        await client.aclose()


async def test_a_killed_link_is_noticed_and_nothing_cached_before_it_is_trusted(
    made: Made, redis_server: RedisServer, raw: Redis, redis_prefix: str
):
    """CLIENT KILL of the subscriber connection alone (the pool stays connected): the link is re-established, and
    a change made while no link listened is read from Redis, not from the cache it had."""
    store = await made(redis_server.url)
    assert await store.get_many([(NS, "gap")]) == [None]
    await raw.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await raw.set(f"{redis_prefix}{NS}:gap", b"1", px=60_000)  # nobody subscribed: no invalidation reaches us
    await linked(store, connects=2)
    assert await store.get_many([(NS, "gap")]) == ["1"]


async def test_a_silent_link_stops_being_trusted(made: Made, redis_server: RedisServer, raw: Redis):
    """Redis stops answering without closing anything (CLIENT PAUSE): no PONG within max_age, so the cache stops
    answering (lookups go to Redis, paused: they time out and fail closed); it is trusted again afterwards."""
    store = await made(redis_server.url, max_age=0.4)
    cache = store.local_cache
    assert cache is not None
    assert await store.get_many([(NS, "quiet")]) == [None]
    await raw.execute_command("CLIENT", "PAUSE", "3000", "ALL")

    async def distrusted() -> bool:
        return not cache.trusted

    await eventually(distrusted)
    with pytest.raises(StoreUnavailable):
        await store.get_many([(NS, "quiet")])
    await linked(store)


async def test_without_a_link_nothing_is_cached(made: Made, redis_server: RedisServer, raw: Redis):
    """A store with a cache that was never started (no link): every lookup goes to Redis."""
    store = await made(redis_server.url, start=False)
    before = await mgets(raw)
    for _ in range(3):
        assert await store.get_many([(NS, "n")]) == [None]
    assert await mgets(raw) == before + 3


async def test_a_server_without_client_tracking_leaves_the_cache_off(own_redis, made: Made):
    """CLIENT TRACKING refused (here by an ACL, as some managed Redis services do): the link never comes up,
    lookups still work, each one a round trip."""
    server: RedisServer = own_redis("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-client|tracking")
    store = await made(server.url, start=False)
    await store.start()
    for _ in range(3):
        assert await store.get_many([(NS, "x")]) == [None]
    cache = store.local_cache
    assert cache is not None and not cache.trusted and len(cache) == 0


# -- LocalCache's own rules (no Redis needed) ---------------------------------------------------------------

def test_a_read_overtaken_by_an_invalidation_or_a_link_change_is_not_kept():
    """begin() → invalidate / link down+up → fill(): the answer may predate the change, so it is dropped."""
    cache = LocalCache(max_age_seconds=1.0, max_entries=10, clock=Clock())
    cache.link_up()
    for change in (lambda: cache.invalidate(["other"]), lambda: cache.invalidate(None),
                   lambda: (cache.link_down(), cache.link_up())):
        started = cache.begin()
        change()
        cache.fill(started, ["k"], [None])
        assert cache.lookup(["k"]) is None
    started = cache.begin()
    cache.fill(started, ["k"], [None])
    assert cache.lookup(["k"]) == [None]


def test_entries_and_the_link_expire_after_max_age_and_size_is_bounded():
    """An entry older than max_age is a miss; a link not heard from for max_age answers nothing; oldest evicted."""
    clock = Clock()
    cache = LocalCache(max_age_seconds=1.0, max_entries=2, clock=clock)
    assert cache.lookup([]) is None  # link never up
    cache.link_up()
    cache.fill(cache.begin(), ["a", "b"], ["1", None])
    assert cache.lookup(["a", "b"]) == ["1", None]
    clock.now += 0.6
    cache.heard()
    cache.fill(cache.begin(), ["c"], [None])  # full: "a" (oldest) goes
    assert cache.lookup(["a"]) is None and cache.lookup(["b", "c"]) == [None, None]
    clock.now += 0.5  # "b" is 1.1 s old, "c" 0.5 s; heard 0.5 s ago
    assert cache.lookup(["b"]) is None and cache.lookup(["c"]) == [None]
    clock.now += 0.6  # heard 1.1 s ago: the link is not trusted, whatever the entries' age
    assert not cache.trusted and cache.lookup(["c"]) is None


async def test_lookups_racing_a_revocation_never_keep_the_old_answer(made: Made, redis_server: RedisServer):
    """Many concurrent lookups while another store revokes: once the revocation is acknowledged and its
    invalidation read, no lookup answers 'absent' again."""
    reader = await made(redis_server.url)
    writer = await made(redis_server.url, cache=False, start=False)
    stop = asyncio.Event()

    async def look() -> None:
        while not stop.is_set():
            await reader.get_many([(NS, "race")])
            await asyncio.sleep(0)  # a cache hit never suspends: let the others (and the link) run

    tasks = [asyncio.create_task(look()) for _ in range(20)]
    await asyncio.sleep(0.05)
    await writer.put(NS, "race", "1", 60)

    async def seen() -> bool:
        return await reader.get_many([(NS, "race")]) == ["1"]

    await eventually(seen)
    stop.set()
    await asyncio.gather(*tasks)
    for _ in range(50):
        assert await reader.get_many([(NS, "race")]) == ["1"]


class HeldLink:
    """A loopback TCP relay to Redis that can hold back what Redis sends to the subscriber connection (the one
    that sent SUBSCRIBE): a slow invalidation link, as a lossy network would make it, with real Redis behind."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.release = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def close(self) -> None:
        self.release.set()
        for task in self.tasks:
            task.cancel()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        subscriber = asyncio.Event()

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, to_client: bool) -> None:
            while data := await src.read(65536):
                if not to_client and b"SUBSCRIBE" in data:
                    subscriber.set()
                if to_client and subscriber.is_set() and b"message" in data:
                    await self.release.wait()  # invalidations to the subscriber wait for the test
                dst.write(data)
                await dst.drain()
            dst.close()

        for task in (asyncio.create_task(pump(reader, up_writer, False)),
                     asyncio.create_task(pump(up_reader, writer, True))):
            self.tasks.add(task)


async def test_a_write_through_the_store_is_read_back_even_before_its_invalidation_arrives(
    made: Made, redis_server: RedisServer
):
    """Read your own writes without waiting for the link: with Redis's invalidation held back on the way, a put()
    through the store still drops its cached value before returning; the held message is applied later."""
    relay = HeldLink(redis_server.port)
    try:
        store = await made(await relay.start())
        assert await store.get_many([(NS, "own")]) == [None]
        await store.put(NS, "own", "1", 60)
        assert await store.get_many([(NS, "own")]) == ["1"]
        relay.release.set()
    finally:
        await relay.close()


async def test_a_held_invalidation_is_what_another_replica_waits_for(made: Made, redis_server: RedisServer):
    """The bound in normal operation is the invalidation's way to this replica: while it is held, a change made
    elsewhere is not seen from the cache (max_age is 60 s); once delivered, it is."""
    relay = HeldLink(redis_server.port)
    try:
        reader = await made(await relay.start())
        writer = await made(redis_server.url, cache=False, start=False)
        assert await reader.get_many([(NS, "far")]) == [None]
        await writer.put(NS, "far", "1", 60)
        assert await reader.get_many([(NS, "far")]) == [None]  # held: the cached answer stands, as documented
        relay.release.set()

        async def seen() -> bool:
            return await reader.get_many([(NS, "far")]) == ["1"]

        await eventually(seen)
    finally:
        await relay.close()
