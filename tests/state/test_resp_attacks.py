"""Attacks on the store's pipelined Redis connection (gateway/state/resp.py, RedisStore._call): what a caller may
see when connects are cut short, replies come in a shape the command does not answer with, callers give up at
random, or Redis dies under load. Real sockets on 127.0.0.1: RESP servers of the test's own (FakeRedis) where
the peer's misbehaviour is the subject, a real redis-server otherwise.
"""

from __future__ import annotations

import asyncio
import gc
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import structlog
from redis.asyncio import ConnectionPool, Redis

from gateway.state.redis import CircuitBreaker, RedisStore
from gateway.state.resp import MAX_REPLY_BYTES, LinkError, Pipeline, _parse, pack
from gateway.state.store import StoreUnavailable
from tests.checks.world import make_world
from tests.conftest import RedisServer
from tests.policy.test_enforcement import REGISTER, auth
from tests.state.test_redis import _two_gateways
from tests.state.test_resp import FakeRedis, _command, _until


class SilentServer:
    """Accepts TCP and reads, never answers: a Redis whose handshake stalls."""

    def __init__(self) -> None:
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        while await reader.read(65536):
            pass
        writer.close()

    async def close(self) -> None:
        for writer in self._writers:
            writer.close()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler ("Task exception was never retrieved" and the like)."""
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: seen.append(context))
    yield seen
    gc.collect()
    loop.set_exception_handler(previous)


# -- the connect path --------------------------------------------------------------------------------------


async def test_close_while_connecting_fails_the_waiting_callers_with_store_unavailable(loop_errors):
    """close() while the handshake is in flight: every caller waiting for that connect gets StoreUnavailable
    (kind `connection`), never a CancelledError it did not ask for (that would end the request with a 500); and
    close() returns once the connect it cancelled has undone itself: no task of the store outlives it."""
    server = SilentServer()
    kinds: list[str] = []
    store = RedisStore.from_url(await server.start(), timeout_seconds=2.0, breaker=CircuitBreaker(100, 1.0),
                                on_error=kinds.append)
    try:
        calls = [asyncio.create_task(store.add_if_absent("jti", f"j{i}", 60)) for i in range(3)]
        await _until(lambda: server.connections >= 1)
        await asyncio.sleep(0.05)
        await store.close()
        assert [t for t in asyncio.all_tasks() if "Pipeline._open" in repr(t.get_coro())] == []
        async with asyncio.timeout(3):
            results = await asyncio.gather(*calls, return_exceptions=True)
        assert [type(r) for r in results] == [StoreUnavailable] * 3, results
        assert kinds == ["connection"] * 3
    finally:
        await store.close()
        await server.close()
    gc.collect()
    assert loop_errors == []


async def test_a_stalled_handshake_fails_within_the_bound_as_a_timeout(loop_errors):
    """A Redis that accepts TCP but never answers the handshake costs each caller its bound, kind `timeout`."""
    server = SilentServer()
    kinds: list[str] = []
    store = RedisStore.from_url(await server.start(), timeout_seconds=0.3, breaker=CircuitBreaker(100, 1.0),
                                on_error=kinds.append)
    try:
        started = time.monotonic()
        async with asyncio.timeout(5):
            results = await asyncio.gather(*(store.get("ns", "k") for _ in range(4)), return_exceptions=True)
        assert [type(r) for r in results] == [StoreUnavailable] * 4
        assert time.monotonic() - started < 1.5
        assert kinds == ["timeout"] * 4
        assert server.connections == 1  # the callers waited for one connect, not one each
    finally:
        await store.close()
        await server.close()
    await asyncio.sleep(0.1)
    gc.collect()
    assert loop_errors == []


async def test_a_call_with_no_time_left_opens_no_connection(loop_errors):
    """A call whose deadline has passed before it connects fails at once and starts no connect nobody waits for
    (a connect task left running would open a connection, or fail with an exception never retrieved)."""
    server = FakeRedis(lambda args, conn: b"+PONG\r\n")
    pool = ConnectionPool.from_url(await server.start())
    pipe = Pipeline(pool, 1.0)
    try:
        with pytest.raises(TimeoutError):
            await pipe.call(pack(b"PING"), pipe.loop_time() - 1, lambda reply: True)
        await asyncio.sleep(0.2)
        assert server.connections == 0
    finally:
        await pipe.close()
        await pool.aclose()
        await server.close()


# -- replies in a shape the command does not answer with ---------------------------------------------------


def _answer_with(bad: bytes) -> Callable[[list[bytes], int], bytes]:
    return lambda args, conn: bad


async def _call(store: RedisStore, method: str) -> Any:
    if method == "add_if_absent":
        return await store.add_if_absent("jti", "j", 60)
    if method == "put":
        return await store.put("rev", "t", "1", 60)
    if method == "get":
        return await store.get("rev", "t")
    if method == "get_many":
        return await store.get_many([("rev", "a"), ("rev", "b")])
    if method == "exists":
        return await store.exists("rev", "t")
    assert method == "incr"
    return await store.incr("rate", "c", 1, 60)


@pytest.mark.parametrize(("method", "bad"), [
    ("get", b"$-2\r\n"),  # a negative length other than -1: not "absent" (a revocation read as none)
    ("add_if_absent", b"*-3\r\n"),  # likewise for an array: not a nil (a fresh jti read as a replay)
    ("add_if_absent", b":0\r\n"),  # SET NX answers +OK or nil: anything else is not "newly added"
    ("add_if_absent", b"+QUEUED\r\n"),
    ("put", b"$-1\r\n"),
    ("get", b":1\r\n"),
    ("get", b"*1\r\n$1\r\nx\r\n"),
    ("get_many", b"*-1\r\n"),
    ("get_many", b"*1\r\n$1\r\nx\r\n"),  # one value for two keys
    ("get_many", b"*2\r\n-ERR x\r\n$-1\r\n"),
    ("get_many", b"*2\r\n:1\r\n$-1\r\n"),
    ("exists", b"$1\r\n0\r\n"),
    ("incr", b"$3\r\nabc\r\n"),
    ("incr", b"$-1\r\n"),
    ("get", b"$1\r\n\xff\r\n"),  # a value the store did not write (not UTF-8 text): no UnicodeDecodeError
    ("get_many", b"*2\r\n$-1\r\n$2\r\n\xc3\x28\r\n"),
])
async def test_a_reply_of_the_wrong_shape_is_never_an_answer(method: str, bad: bytes, loop_errors):
    """Every store call fails closed (StoreUnavailable, kind `connection`: the connection's replies can no longer
    be trusted, it is dropped) on a reply its command never gets from Redis: never a value read from it, never
    an AttributeError/TypeError/ValueError reaching the caller."""
    server = FakeRedis(lambda args, conn: bad if conn == 1 else b"+OK\r\n")
    kinds: list[str] = []
    store = RedisStore.from_url(await server.start(), timeout_seconds=2.0, breaker=CircuitBreaker(100, 1.0),
                                on_error=kinds.append)
    try:
        with pytest.raises(StoreUnavailable):
            await _call(store, method)
        assert kinds == ["connection"]
        await store.put("rev", "t", "1", 60)  # a fresh connection
        assert server.connections == 2
    finally:
        await store.close()
        await server.close()


@pytest.mark.parametrize("data", [b"$-2\r\n", b"*-2\r\n", b"$-100\r\n"])
def test_only_minus_one_is_a_nil(data: bytes):
    with pytest.raises(LinkError):
        _parse(data, 0)


# -- against a real redis-server ---------------------------------------------------------------------------


@pytest.fixture
async def store_on(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[RedisStore]:
    store = RedisStore.from_url(redis_server.url, key_prefix=redis_prefix, timeout_seconds=5.0, pool_size=16,
                                breaker=CircuitBreaker(1000, 1.0))
    yield store
    await store.close()


async def test_callers_cancelled_at_random_never_shift_another_callers_answer(store_on: RedisStore, loop_errors):
    """Hundreds of SET NX (half of them on keys already there) and GETs, a third of the callers cancelled at a
    random point (waiting for a slot, queued, written, answered): every caller that returns has its own key's
    answer — a fresh jti is never reported replayed, a replay never reported fresh, a GET never another's value."""
    rng = random.Random(7)
    store = store_on
    taken = [f"old{i}" for i in range(150)]
    await asyncio.gather(*(store.put("ns", k, k, 60) for k in taken))
    await asyncio.gather(*(store.add_if_absent("jti", k, 60) for k in taken))  # seen once: replays from now on

    async def one(i: int) -> None:
        if i % 3 == 0:
            key = taken[i % len(taken)] if i % 2 else f"fresh{i}"
            added = await store.add_if_absent("jti", key, 60)
            assert added is (not i % 2), (key, added)
        elif i % 3 == 1:
            key = taken[i % len(taken)]
            assert await store.get("ns", key) == key
        else:
            assert await store.get("ns", f"none{i}") is None

    for _round in range(3):
        tasks = [asyncio.create_task(one(i + 1000 * _round)) for i in range(300)]
        for _ in range(100):
            await asyncio.sleep(0) if rng.random() < 0.7 else None
            rng.choice(tasks).cancel()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        failures = [r for r in done if isinstance(r, BaseException) and not isinstance(r, asyncio.CancelledError)]
        assert failures == []
    # the connection is still in step: one more call of each kind gets its own answer
    assert await store.add_if_absent("jti", "last-fresh", 60) is True
    assert await store.add_if_absent("jti", "last-fresh", 60) is False
    assert await store.get("ns", taken[0]) == taken[0]
    gc.collect()
    assert loop_errors == []


async def test_redis_killed_and_restarted_under_load(own_redis, redis_prefix: str, loop_errors):
    """Redis crashes and comes back on the same port while callers keep calling: every failure is
    StoreUnavailable of a reported kind, nothing hangs past the bound, and the store serves again after it."""
    server: RedisServer = own_redis()
    kinds: list[str] = []
    store = RedisStore.from_url(server.url, key_prefix=redis_prefix, timeout_seconds=0.3,
                                breaker=CircuitBreaker(3, 0.2), on_error=kinds.append)
    stop = asyncio.Event()
    other: list[BaseException] = []
    longest = 0.0

    async def caller(n: int) -> None:
        nonlocal longest
        i = 0
        while not stop.is_set():
            i += 1
            started = time.monotonic()
            try:
                assert await store.add_if_absent("jti", f"c{n}-{i}", 60) is True
            except StoreUnavailable:
                await asyncio.sleep(0.01)
            except BaseException as exc:  # what the test is looking for
                other.append(exc)
            longest = max(longest, time.monotonic() - started)
            await asyncio.sleep(0)

    try:
        callers = [asyncio.create_task(caller(n)) for n in range(20)]
        await asyncio.sleep(0.2)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.start)
        await asyncio.sleep(0.2)

        async def serves() -> bool:
            try:
                return await store.add_if_absent("jti", f"probe-{time.monotonic()}", 60)
            except StoreUnavailable:
                return False

        deadline = time.monotonic() + 5
        while not await serves():
            assert time.monotonic() < deadline, "the store did not recover"
            await asyncio.sleep(0.05)
        stop.set()
        async with asyncio.timeout(5):
            await asyncio.gather(*callers)
        assert other == []
        assert longest < 1.5  # bound 0.3 s (slot wait, connect, command); generous
        assert set(kinds) <= {"timeout", "connection", "circuit_open"} and kinds
    finally:
        stop.set()
        await store.close()
    gc.collect()
    assert loop_errors == []


async def test_a_wrong_password_fails_closed_and_is_never_shown(own_redis, redis_prefix: str, caplog):
    """AUTH refused: StoreUnavailable of kind `auth` (not `connection`: the operator's to fix), the password in no
    message or log line."""
    server: RedisServer = own_redis("--requirepass", "right-pw")
    kinds: list[str] = []
    store = RedisStore.from_url(f"redis://:wr0ng-s3cret@127.0.0.1:{server.port}/0", key_prefix=redis_prefix,
                                timeout_seconds=1.0, breaker=CircuitBreaker(100, 1.0), on_error=kinds.append)
    try:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(StoreUnavailable) as caught:
                await store.add_if_absent("jti", "j", 60)
            assert await store.ping() is False
        assert "wr0ng-s3cret" not in str(caught.value) and caught.value.__cause__ is None
        assert caught.value.__context__ is None or "wr0ng-s3cret" not in repr(caught.value.__context__)
        assert kinds == ["auth"] * 2
        assert [(e["event"], e["kind"]) for e in logs] == [("state_store_error", "auth")] * 2
    finally:
        await store.close()
    assert "wr0ng-s3cret" not in repr(logs) and "wr0ng-s3cret" not in caplog.text


async def test_a_missing_password_is_an_auth_failure(own_redis, redis_prefix: str):
    """A Redis that requires a password, reached without one: every call fails closed, kind `auth`."""
    server: RedisServer = own_redis("--requirepass", "right-pw")
    kinds: list[str] = []
    store = RedisStore.from_url(f"redis://127.0.0.1:{server.port}/0", key_prefix=redis_prefix,
                                timeout_seconds=1.0, breaker=CircuitBreaker(100, 1.0), on_error=kinds.append)
    try:
        with pytest.raises(StoreUnavailable):
            await store.add_if_absent("jti", "j", 60)
        with pytest.raises(StoreUnavailable):
            await store.get("jti", "j")
        assert kinds == ["auth"] * 2
    finally:
        await store.close()


async def test_a_unix_socket_url(own_redis, tmp_path, redis_prefix: str):
    """unix:// connects through redis-py and is taken over like TCP."""
    sock = tmp_path / "redis.sock"
    own_redis("--unixsocket", str(sock), "--unixsocketperm", "700")
    store = RedisStore.from_url(f"unix://{sock}?db=0", key_prefix=redis_prefix, timeout_seconds=2.0)
    try:
        assert await store.add_if_absent("jti", "u", 60) is True
        assert await store.add_if_absent("jti", "u", 60) is False
        raw = Redis(unix_socket_path=str(sock))
        try:
            assert await raw.exists(f"{redis_prefix}jti:u") == 1
        finally:
            await raw.aclose()
    finally:
        await store.close()


# -- deadlines, close, descriptors -------------------------------------------------------------------------


async def test_a_command_behind_one_with_a_later_deadline_still_fails_by_its_own():
    """Deadlines on a connection are not always in the order sent (a NOSCRIPT fallback goes out behind later
    callers' commands; callers arriving as a connect completes go out before those that waited for it): on a
    connection that goes silent, each command still fails by its own deadline, not by the one ahead of it."""
    server = FakeRedis(lambda args, conn: b"")  # the handshake is answered, no command ever is
    pool = ConnectionPool.from_url(await server.start())
    pipe = Pipeline(pool, 5.0)
    try:
        now = pipe.loop_time()
        ahead = asyncio.create_task(pipe.call(pack(b"GET", b"a"), now + 4.0, lambda reply: True))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(5):  # only stops a hang
                await pipe.call(pack(b"GET", b"b"), now + 0.4, lambda reply: True)
        assert time.monotonic() - started < 2.0  # its bound is 0.3 s from here; the one ahead 3.9 s
        ahead.cancel()
    finally:
        await pipe.close()
        await pool.aclose()
        await server.close()


async def test_close_with_callers_waiting_for_a_slot_opens_no_new_connection(loop_errors):
    """close() while commands are in flight and more callers wait for a slot: the slots freed by the failed
    commands do not let the waiting callers connect again behind the closed store (a connection nobody would
    ever close); every caller fails at once with StoreUnavailable."""
    server = FakeRedis(lambda args, conn: b"")  # commands are never answered: they stay in flight
    store = RedisStore.from_url(await server.start(), timeout_seconds=3.0, pool_size=2,
                                breaker=CircuitBreaker(100, 1.0))
    calls = [asyncio.create_task(store.get("ns", f"k{i}")) for i in range(6)]
    await _until(lambda: server.connections == 1)
    await asyncio.sleep(0.1)
    started = time.monotonic()
    await store.close()
    async with asyncio.timeout(5):
        results = await asyncio.gather(*calls, return_exceptions=True)
    took = time.monotonic() - started
    await asyncio.sleep(0.1)
    assert server.connections == 1
    assert [type(r) for r in results] == [StoreUnavailable] * 6, results
    assert took < 1.0  # at once, not at the 3 s bound
    await server.close()
    gc.collect()
    assert loop_errors == []


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_connections_broken_by_the_peer_leave_no_descriptor_behind(loop_errors):
    """Fifty connections each ended by a reply Redis would not send: the process holds no more descriptors or
    tasks after than before (each taken-over transport is closed, the redis-py connection object owns nothing,
    no connect task is left)."""
    server = FakeRedis(lambda args, conn: b"?garbage\r\n")
    store = RedisStore.from_url(await server.start(), timeout_seconds=2.0, breaker=CircuitBreaker(1000, 1.0))
    try:
        with pytest.raises(StoreUnavailable):
            await store.get("ns", "k")
        await asyncio.sleep(0.05)
        gc.collect()
        before, tasks = _open_descriptors(), len(asyncio.all_tasks())
        for _ in range(50):
            with pytest.raises(StoreUnavailable):
                await store.get("ns", "k")
        await asyncio.sleep(0.1)
        gc.collect()
        assert _open_descriptors() <= before + 2
        assert len(asyncio.all_tasks()) <= tasks
        assert server.connections == 51
    finally:
        await store.close()
        await server.close()
    gc.collect()
    assert loop_errors == []


async def test_two_stores_racing_on_the_same_jtis_admit_each_exactly_once(
    redis_server: RedisServer, redis_prefix: str
):
    """Two gateways' stores (two connections) send SET NX for the same jtis concurrently, some callers cancelled
    at random: no jti is ever admitted twice, and every jti no cancelled caller reports admitted was admitted by
    a cancelled one (its SET was written) — never lost to a misrouted reply."""
    rng = random.Random(11)
    a, b = (RedisStore.from_url(redis_server.url, key_prefix=redis_prefix, timeout_seconds=5.0, pool_size=8,
                                breaker=CircuitBreaker(1000, 1.0)) for _ in range(2))
    try:
        jtis = [f"jti-{i}" for i in range(200)]
        tasks = {(jti, s): asyncio.create_task(store.add_if_absent("jti", jti, 60))
                 for jti in jtis for s, store in (("a", a), ("b", b))}
        for _ in range(80):
            await asyncio.sleep(0) if rng.random() < 0.5 else None
            rng.choice(list(tasks.values())).cancel()
        await asyncio.gather(*tasks.values(), return_exceptions=True)
        for jti in jtis:
            got = [t.result() for s in "ab" if not (t := tasks[(jti, s)]).cancelled()]
            assert got.count(True) <= 1, (jti, got)
            if got and True not in got:  # the one that added it was cancelled after its SET went out
                assert any(tasks[(jti, s)].cancelled() for s in "ab"), (jti, got)
        assert await a.add_if_absent("jti", "after", 60) is True
        assert await b.add_if_absent("jti", "after", 60) is False
    finally:
        await a.close()
        await b.close()


async def test_redis_killed_under_concurrent_gateway_load_is_503_never_500(
    start_server: Any, running_gateway: Any, own_redis: Any, redis_prefix: str
):
    """Two gateways on one Redis, twenty requests at a time through each (token revocation lookups): Redis
    killed, then restarted on the same port. Every answer is 200 or 503 with Retry-After (never a 500, never a
    hang), and both gateways serve again."""
    server: RedisServer = own_redis()
    bank, a, b = await _two_gateways(start_server, running_gateway, server.url, redis_prefix,
                                     timeout_seconds=0.3, breaker={"failure_threshold": 3, "open_seconds": 0.3})
    statuses: list[int] = []
    stop = asyncio.Event()

    async def load(gateway: Any) -> None:
        while not stop.is_set():
            async with asyncio.timeout(5):
                resp = await gateway.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))
                await resp.read()
            statuses.append(resp.status)
            if resp.status == 503:
                assert int(resp.headers["Retry-After"]) >= 1
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(load(g)) for g in (a, b) for _ in range(20)]
    try:
        await asyncio.sleep(0.3)
        await asyncio.to_thread(server.stop)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)
        deadline = time.monotonic() + 8
        while True:
            mark = len(statuses)
            await asyncio.sleep(0.3)
            if statuses[mark:] and all(s == 200 for s in statuses[mark:]):
                break
            assert time.monotonic() < deadline, "the gateways did not recover"
    finally:
        stop.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    assert [r for r in results if r is not None] == []
    assert set(statuses) == {200, 503}, sorted(set(statuses))


# -- a hostile or broken peer ------------------------------------------------------------------------------


def _values(args: list[bytes], conn: int) -> bytes:
    """GET <prefix>k<n> is answered with the bulk string "v<n>", MGET likewise."""
    def value(key: bytes) -> bytes:
        v = b"v" + key.rpartition(b":k")[2]
        return b"$%d\r\n%b\r\n" % (len(v), v)

    if args[0].upper() == b"MGET":
        return b"*%d\r\n" % (len(args) - 1) + b"".join(value(k) for k in args[1:])
    return value(args[1])


async def test_replies_cut_at_every_byte_reach_their_callers_whole():
    """Replies arriving a byte at a time, many callers in flight: every caller gets its own value, whole."""
    server = FakeRedis(_values, byte_by_byte=True)
    store = RedisStore.from_url(await server.start(), timeout_seconds=5.0, pool_size=8)
    try:
        async with asyncio.timeout(10):
            values = await asyncio.gather(*(store.get("ns", f"k{i}") for i in range(30)))
            many = await store.get_many([("ns", "k7"), ("ns", "k123456")])
        assert values == [f"v{i}" for i in range(30)]
        assert many == ["v7", "v123456"]
    finally:
        await store.close()
        await server.close()


async def test_a_long_reply_dripped_in_pieces_is_parsed_once_it_can_be_whole(monkeypatch: pytest.MonkeyPatch):
    """Once a bulk string's header is in, its length is known: the pieces after it are kept aside and parsed
    once, when the reply can be whole, not copied and parsed again with every piece (quadratic in its length)."""
    import gateway.state.resp as resp

    attempts = 0
    real = resp._parse

    def counted(buf: bytes, pos: int, nested: bool = False) -> Any:
        nonlocal attempts
        attempts += 1
        return real(buf, pos, nested)

    monkeypatch.setattr(resp, "_parse", counted)
    value = b"x" * 4096
    server = FakeRedis(lambda args, conn: b"$%d\r\n%b\r\n" % (len(value), value), byte_by_byte=True)
    store = RedisStore.from_url(await server.start(), timeout_seconds=5.0)
    try:
        async with asyncio.timeout(10):
            assert await store.get("ns", "k") == value.decode()
        assert attempts <= 16  # the header's few bytes, then the whole reply once (about 4 100 pieces sent)
    finally:
        await store.close()
        await server.close()


def test_a_bulk_string_longer_than_a_reply_may_be_is_refused_from_its_header():
    """A bulk string announcing more than MAX_REPLY_BYTES is a broken peer's, refused before any of it is read."""
    with pytest.raises(LinkError, match="too long"):
        _parse(b"$%d\r\n" % (MAX_REPLY_BYTES + 1), 0)


@pytest.mark.parametrize("bad", [
    b":1_0\r\n",  # int() reads "1_0" as 10
    b": 1\r\n",
    b":+1\r\n",
    b"$+1\r\nx\r\n",
    b"$ 1\r\nx\r\n",
    b"*+1\r\n$1\r\nx\r\n",
])
def test_integers_and_lengths_with_junk_are_refused(bad: bytes):
    """A RESP integer or length is ASCII digits after an optional minus: what Python's int() also accepts
    (spaces, '+', '_') is a broken peer, not a number."""
    with pytest.raises(LinkError):
        _parse(bad, 0)


@pytest.mark.parametrize("cut", [b"$5\r\nab", b"*2\r\n$1\r\na\r\n", b"$5", b":12"])
async def test_eof_inside_a_reply_is_a_connection_failure(cut: bytes):
    """The peer closes the connection in the middle of a reply: kind `connection`, the next call connects afresh."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        try:
            while True:
                args = await _command(reader)
                if args[0].upper() == b"CLIENT":
                    writer.write(b"+OK\r\n")
                elif connections == 1:
                    writer.write(cut)
                    await writer.drain()
                    break
                else:
                    writer.write(b"$2\r\nok\r\n")
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        writer.close()

    connections = 0
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    kinds: list[str] = []
    store = RedisStore.from_url(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0", timeout_seconds=2.0,
                                breaker=CircuitBreaker(100, 1.0), on_error=kinds.append)
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await store.get("ns", "k")
        assert time.monotonic() - started < 1.0  # at the EOF, not at the 2 s bound
        assert kinds == ["connection"]
        assert await store.get("ns", "k") == "ok"
        assert connections == 2
    finally:
        await store.close()
        server.close()


@pytest.mark.parametrize("error", [
    b"-LOADING Redis is loading the dataset in memory\r\n",
    b"-BUSY Redis is busy running a script.\r\n",
    b"-MASTERDOWN Link with MASTER is down\r\n",
    b"-NOSCRIPT No matching script.\r\n",  # to a GET: only EVALSHA falls back
])
async def test_error_replies_fail_their_command_only(error: bytes):
    """Redis refusing commands for a while: those fail (`response`, StoreUnavailable), their neighbours in the same
    write get their own answers, and the connection is kept."""
    server = FakeRedis(lambda args, conn: error if args[1].endswith(b"bad") else b"$2\r\nok\r\n")
    kinds: list[str] = []
    store = RedisStore.from_url(await server.start(), timeout_seconds=2.0, breaker=CircuitBreaker(100, 1.0),
                                on_error=kinds.append)
    try:
        results = await asyncio.gather(store.get("ns", "good1"), store.get("ns", "bad"), store.get("ns", "good2"),
                                       return_exceptions=True)
        assert results[0] == "ok" and isinstance(results[1], StoreUnavailable) and results[2] == "ok"
        assert kinds == ["response"] and server.connections == 1
    finally:
        await store.close()
        await server.close()


async def test_an_idle_connection_keeps_no_timer(redis_server: RedisServer, redis_prefix: str):
    """Once every command is answered, the connection's timer stops within one bound: an idle process holds no
    timer per connection (nor closes the connection)."""
    store = RedisStore.from_url(redis_server.url, key_prefix=redis_prefix, timeout_seconds=0.2)
    try:
        await store.put("ns", "k", "v", 60)
        link = store._pipe._link
        assert link is not None
        await asyncio.sleep(0.5)
        assert link._timer._handle is None and link.alive
        assert await store.get("ns", "k") == "v" and store._pipe._link is link
    finally:
        await store.close()


async def test_a_url_asking_for_resp3_still_serves(redis_server: RedisServer, redis_prefix: str):
    """`?protocol=3` in the URL (redis-py would then say HELLO 3): the store's connection speaks RESP2, which is
    all the pipeline reads — not a store that fails every call as a `connection` error."""
    url = redis_server.url + "?protocol=3"
    store = RedisStore.from_url(url, key_prefix=redis_prefix, timeout_seconds=2.0, breaker=CircuitBreaker(100, 1.0))
    try:
        assert await store.add_if_absent("jti", "r3", 60) is True
        assert await store.add_if_absent("jti", "r3", 60) is False
        assert await store.get("ns", "absent") is None
    finally:
        await store.close()


async def test_registration_replays_across_two_gateways_under_concurrency(
    start_server: Any, running_gateway: Any, redis_server: RedisServer, redis_prefix: str
):
    """Two gateways on one Redis; each of ten signed registration requests is sent six times at once, three
    through each gateway: exactly one of the six is registered, the other five refused as replays (400
    `jti_replayed`), whichever gateway they reached."""
    state = {"backend": "redis", "redis": {"url": redis_server.url, "key_prefix": redis_prefix}}
    a = await make_world(start_server, running_gateway, state=state)
    b = await make_world(start_server, running_gateway, state=state)
    try:
        await _replays(a, b)
    finally:
        await a.session.close()
        await b.session.close()


async def _replays(a: Any, b: Any) -> None:
    bodies = [a.request() for _ in range(10)]
    sends = [(body, world) for body in bodies for world in (a, b, a, b, a, b)]

    async def send(body: str, world: Any) -> tuple[str, int, str]:
        resp = await world.post(body)
        text = await resp.text()
        return body, resp.status, text

    async with asyncio.timeout(20):
        results = await asyncio.gather(*(send(body, world) for body, world in sends))
    for body in bodies:
        statuses = sorted(status for sent, status, _ in results if sent == body)
        assert statuses == [201] + [400] * 5, statuses
    refused = [text for _, status, text in results if status == 400]
    assert all("already used" in text for text in refused), refused[:1]
    assert a.denials("jti_replayed") + b.denials("jti_replayed") == 50
    assert a.registrations() + b.registrations() == 10
