"""RedisStore against a real redis-server: atomic semantics shared by instances, TTLs, failure and recovery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import structlog
from redis.asyncio import Redis

from gateway.config import ConfigError, Settings, load_settings
from gateway.state import build_store
from gateway.state.redis import CircuitBreaker, RedisStore, _sentinel_parts
from gateway.state.store import StateStore, StoreUnavailable
from tests.conftest import SHIPPED_POLICIES, RedisServer, RunningGateway, StartServer, free_port
from tests.policy.test_enforcement import ISSUER, REGISTER, Bank, auth

Stores = Callable[..., RedisStore]


@pytest.fixture
async def stores(redis_server: RedisServer, redis_prefix: str) -> AsyncIterator[Stores]:
    """RedisStore instances on the session server (each one its own connection, like separate gateways)."""
    made: list[RedisStore] = []

    def make(url: str | None = None, **kwargs: Any) -> RedisStore:
        kwargs.setdefault("key_prefix", redis_prefix)
        kwargs.setdefault("timeout_seconds", 1.0)
        store = RedisStore.from_url(url or redis_server.url, **kwargs)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


async def eventually(probe: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    """Wait (bounded) until `probe()` is true."""
    deadline = time.monotonic() + timeout
    while not await probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


async def answers_again(store: RedisStore, probe: Callable[[], Awaitable[bool]]) -> None:
    """Wait (bounded) until `probe()` is true instead of raising StoreUnavailable; the circuit is closed then."""
    async def back() -> bool:
        try:
            return await probe()
        except StoreUnavailable:
            return False

    await eventually(back)
    assert store.breaker.state == "closed"


def test_redis_store_is_a_state_store(stores: Stores):
    """RedisStore implements the StateStore protocol."""
    assert isinstance(stores(), StateStore)


async def test_add_if_absent_is_shared_by_two_instances(stores: Stores, raw: Redis, redis_prefix: str):
    """A jti recorded through one instance is a replay for another; the key carries the TTL it was given."""
    a, b = stores(), stores()
    assert await a.add_if_absent("jti", "abc", 60) is True
    assert await b.add_if_absent("jti", "abc", 60) is False
    assert await a.add_if_absent("jti", "abc", 60) is False
    assert await b.add_if_absent("jti", "other", 60) is True
    ttl = await raw.pttl(f"{redis_prefix}jti:abc")
    assert 0 < ttl <= 60_000


async def test_concurrent_add_if_absent_admits_exactly_one(stores: Stores):
    """Fifty racing registrations of one jti over two instances: exactly one wins (SET NX is atomic)."""
    a, b = stores(), stores()
    results = await asyncio.gather(*(s.add_if_absent("jti", "race", 30) for s in [a, b] * 25))
    assert results.count(True) == 1


async def test_put_get_exists_and_expiry(stores: Stores):
    """put/get/exists round-trip; an entry is gone once its TTL has passed."""
    store = stores()
    await store.put("revoked_client", "k", "1700000000.5", 0.3)
    assert await store.get("revoked_client", "k") == "1700000000.5"
    assert await store.exists("revoked_client", "k") is True
    assert await store.get("revoked_client", "missing") is None

    async def gone() -> bool:
        return not await store.exists("revoked_client", "k")

    await eventually(gone)
    assert await store.get("revoked_client", "k") is None


async def test_get_many_is_one_mget_in_order_with_none_for_absent_and_expired(stores: Stores, raw: Redis):
    """get_many reads through one instance what another wrote, in order; absent and expired entries are None."""
    a, b = stores(), stores()
    assert await b.get_many([]) == []
    await a.put("revoked_jti", "t", "1", 60)
    await a.put("revoked_client", "c", "1700000000.5", 0.3)
    await a.put("revoked_jti", "x" * 500, "1", 60)  # a long key is hashed the same way by every call
    items = [("revoked_client", "c"), ("revoked_jti", "missing"), ("revoked_jti", "t"), ("revoked_jti", "x" * 500)]
    assert await b.get_many(items) == ["1700000000.5", None, "1", "1"]

    async def expired() -> bool:
        return (await b.get_many(items))[0] is None

    await eventually(expired)
    assert await b.get_many(items) == [None, None, "1", "1"]


async def test_incr_is_atomic_across_instances_and_keeps_its_first_ttl(stores: Stores, raw: Redis, redis_prefix: str):
    """100 increments racing over two instances count to 100; the counter expires with its first TTL."""
    a, b = stores(), stores()
    values = await asyncio.gather(*(s.incr("rate", "w1", 1, 30) for s in [a, b] * 50))
    assert sorted(values) == list(range(1, 101))
    ttl = await raw.pttl(f"{redis_prefix}rate:w1")
    assert 0 < ttl <= 30_000
    await a.incr("rate", "w1", 1, 3600)  # a later TTL does not extend the window
    assert await raw.pttl(f"{redis_prefix}rate:w1") <= 30_000


async def test_incr_gives_a_ttl_to_a_counter_that_has_none(stores: Stores, raw: Redis, redis_prefix: str):
    """A counter left without expiry (written by something else) gets one on the next increment."""
    await raw.set(f"{redis_prefix}rate:bare", 5)
    assert await stores().incr("rate", "bare", 1, 10) == 6
    assert 0 < await raw.pttl(f"{redis_prefix}rate:bare") <= 10_000


async def test_every_key_is_namespaced_and_expires(stores: Stores, raw: Redis, redis_prefix: str):
    """All keys carry the prefix and a TTL; another prefix sees none of them; long keys are hashed."""
    store = stores()
    await store.add_if_absent("jti", "x" * 500, 10)
    await store.put("revoked_jti", "t", "1", 10)
    await store.incr("rate", "c", 1, 10)
    keys = [k.decode() async for k in raw.scan_iter(match=f"{redis_prefix}*")]
    assert len(keys) == 3
    assert all(len(k) < 120 for k in keys)
    for key in keys:
        assert await raw.pttl(key) > 0
    other = stores(key_prefix=redis_prefix + "other:")
    assert await other.exists("revoked_jti", "t") is False


async def test_ttl_must_be_positive(stores: Stores):
    """A zero or infinite TTL is a programming error, refused before reaching Redis."""
    with pytest.raises(ValueError):
        await stores().put("ns", "k", "v", 0)
    with pytest.raises(ValueError):
        await stores().add_if_absent("ns", "k", float("inf"))


async def test_closed_store_is_unavailable(stores: Stores):
    """After close() every call raises StoreUnavailable."""
    store = stores()
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get("ns", "k")


# -- breaker -----------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_threshold_then_probes_once():
    """closed → open after N failures → fail fast → one half-open probe → closed on success."""
    clock = Clock()
    states: list[str] = []
    breaker = CircuitBreaker(3, 5.0, clock=clock, on_change=states.append)
    for _ in range(2):
        breaker.before_call()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.before_call()
    breaker.failure()
    assert breaker.state == "open"
    with pytest.raises(StoreUnavailable) as err:
        breaker.before_call()
    assert err.value.retry_after_seconds == pytest.approx(5.0)
    clock.now += 5.0
    breaker.before_call()  # the probe
    assert breaker.state == "half_open"
    with pytest.raises(StoreUnavailable):
        breaker.before_call()  # only one probe at a time
    breaker.success()
    assert breaker.state == "closed"
    breaker.before_call()
    assert states == ["open", "half_open", "closed"]


def test_breaker_reopens_when_the_probe_fails_and_a_cancelled_probe_frees_the_slot():
    """A failed probe opens the circuit again for the full time; a cancelled one lets the next call probe."""
    clock = Clock()
    breaker = CircuitBreaker(1, 2.0, clock=clock)
    breaker.before_call()
    breaker.failure()
    clock.now += 2.0
    breaker.before_call()
    breaker.release()  # cancelled
    breaker.before_call()  # next call probes
    breaker.failure()
    assert breaker.state == "open"
    clock.now += 1.0
    with pytest.raises(StoreUnavailable):
        breaker.before_call()


def test_breaker_success_resets_the_failure_count():
    """Failures must be consecutive to open the circuit."""
    breaker = CircuitBreaker(2, 1.0, clock=Clock())
    for _ in range(5):
        breaker.failure()
        breaker.success()
    assert breaker.state == "closed"


# -- failure and recovery ----------------------------------------------------------------------------------


async def test_unreachable_redis_fails_fast_once_the_circuit_opens(stores: Stores):
    """Nothing listening: each call raises StoreUnavailable; after the threshold, calls fail without trying."""
    kinds: list[str] = []
    store = stores(f"redis://127.0.0.1:{free_port()}/0", timeout_seconds=0.5,
                   breaker=CircuitBreaker(2, 60.0), on_error=kinds.append)
    for _ in range(4):
        with pytest.raises(StoreUnavailable):
            await store.exists("ns", "k")
    assert kinds == ["connection", "connection", "circuit_open", "circuit_open"]
    assert store.breaker.state == "open"


@pytest.mark.parametrize(
    "call",
    [lambda s: s.add_if_absent("jti", "k", 10), lambda s: s.get_many([("revoked_jti", "k"), ("revoked_client", "c")])],
    ids=["add_if_absent", "get_many"],
)
async def test_a_silent_redis_times_out_within_the_bound(stores: Stores, call: Callable[[RedisStore], Awaitable[Any]]):
    """A server that accepts and never answers: the call ends with StoreUnavailable (timeout), never hangs."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(-1)
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    kinds: list[str] = []
    store = stores(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.2, on_error=kinds.append)
    try:
        async with asyncio.timeout(5):  # the bound under test is 0.2 s; 5 s only stops a hang
            with pytest.raises(StoreUnavailable):
                await call(store)
    finally:
        server.close()
        await server.wait_closed()
    assert kinds == ["timeout"]


async def test_store_recovers_when_redis_comes_back_on_the_same_port(own_redis, redis_prefix: str):
    """Redis killed: calls fail (circuit opens); restarted on the same port: calls succeed again."""
    server: RedisServer = own_redis()
    store = RedisStore.from_url(server.url, key_prefix=redis_prefix, timeout_seconds=0.3,
                                breaker=CircuitBreaker(1, 0.2))
    try:
        assert await store.add_if_absent("jti", "before", 60) is True
        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.exists("jti", "before")
        server.start()

        await answers_again(store, lambda: store.add_if_absent("jti", "after", 60))
    finally:
        await store.close()


async def test_get_many_on_a_killed_redis_fails_within_the_bound_and_feeds_the_breaker(own_redis, redis_prefix: str):
    """Redis killed: get_many raises StoreUnavailable within the timeout, counts towards the breaker like any
    command, then fails at once while the circuit is open; back on the same port, it answers again."""
    server: RedisServer = own_redis()
    kinds: list[str] = []
    store = RedisStore.from_url(server.url, key_prefix=redis_prefix, timeout_seconds=0.3,
                                breaker=CircuitBreaker(2, 0.5), on_error=kinds.append)
    items = [("revoked_jti", "t"), ("revoked_client", "c")]
    try:
        await store.put("revoked_jti", "t", "1", 60)
        assert await store.get_many(items) == ["1", None]
        server.stop()
        for _ in range(3):
            started = time.monotonic()
            async with asyncio.timeout(5):  # the bound under test is 0.3 s (plus one immediate reconnect)
                with pytest.raises(StoreUnavailable):
                    await store.get_many(items)
            assert time.monotonic() - started < 1.5
        assert kinds[:2] == ["connection", "connection"] and kinds[2] == "circuit_open"
        assert store.breaker.state == "open"
        server.start()

        async def forgotten() -> bool:  # no persistence: the restart forgot the mark
            return await store.get_many(items) == [None, None]

        await answers_again(store, forgotten)
    finally:
        await store.close()


# -- configuration -----------------------------------------------------------------------------------------


async def test_password_url_from_the_environment_works_and_is_never_logged(own_redis, tmp_path: Path, monkeypatch):
    """A password-protected Redis through DCRGW_STATE__REDIS__URL or url_env; no log line shows the password."""
    server: RedisServer = own_redis("--requirepass", "s3cret-pw")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("state:\n  backend: redis\n  redis: {key_prefix: 'pw:'}\n")
    url = f"redis://:s3cret-pw@127.0.0.1:{server.port}/0"
    direct = load_settings(cfg, {"DCRGW_STATE__REDIS__URL": url})
    indirect = load_settings(cfg, {"DCRGW_STATE__REDIS__URL_ENV": "MY_REDIS"})
    assert "s3cret" not in repr(direct) and "s3cret" not in str(direct.model_dump())
    with pytest.raises(ConfigError, match="MY_REDIS is not set"):
        build_store(indirect.state)
    monkeypatch.setenv("MY_REDIS", url)
    with structlog.testing.capture_logs() as logs:
        for settings in (direct, indirect):
            store = build_store(settings.state)
            assert isinstance(store, RedisStore)
            await store.put("ns", "k", "v", 10)
            assert await store.get("ns", "k") == "v"
            await store.close()
        wrong = RedisStore.from_url(url.replace("s3cret-pw", "wrong-pw"), breaker=CircuitBreaker(1, 60))
        with pytest.raises(StoreUnavailable):
            await wrong.get("ns", "k")
        await wrong.close()
    assert logs  # the failure above was logged …
    assert "s3cret" not in repr(logs) and "wrong-pw" not in repr(logs)  # … by kind only


def test_password_in_the_config_file_is_refused(tmp_path: Path):
    """SECURITY: a Redis password written in config.yaml is an error that names the key, not the password."""
    cfg = tmp_path / "config.yaml"
    cfg.write_text("state:\n  backend: redis\n  redis:\n    url: redis://:hunter2@redis:6379/0\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, {})
    message = str(err.value)
    assert "state.redis.url" in message and "DCRGW_STATE__REDIS__URL" in message and "line 4" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    ("state", "problem"),
    [
        ({"backend": "redis"}, "needs state.redis.url"),
        ({"backend": "redis", "redis": {"url": "http://:pw@h/"}}, "expected a URL with scheme"),
        ({"backend": "redis", "redis": {"url": "redis+sentinel://h:26379"}}, "service name"),
    ],
    ids=["no-url", "wrong-scheme", "sentinel-without-service"],
)
def test_invalid_state_config(state: dict[str, Any], problem: str):
    """Misconfigured Redis settings are refused at load, without echoing the URL."""
    with pytest.raises(ValueError) as err:
        Settings.model_validate({"state": state})
    assert problem in str(err.value) and ":pw@" not in str(err.value)


def test_sentinel_url_parts():
    """`redis+sentinel://` lists the sentinels, the master's service name and the database."""
    assert _sentinel_parts("redis+sentinel://:pw@s1:26380,s2,[::1]:26381/mymaster/2") == (
        [("s1", 26380), ("s2", 26379), ("::1", 26381)], 2, "mymaster")


# -- two gateways sharing Redis ----------------------------------------------------------------------------

Starter = Callable[..., Awaitable[RunningGateway]]


async def _two_gateways(start_server: StartServer, running_gateway: Starter, redis_url: str,
                        prefix: str, **redis: Any) -> tuple[Bank, RunningGateway, RunningGateway]:
    bank = Bank()
    server = await start_server(bank.app)
    base = str(server.make_url("")).rstrip("/")
    trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "audiences": ["dcr"],
                                        "token_types": ["at+jwt"]}}}
    state = {"backend": "redis", "redis": {"url": redis_url, "key_prefix": prefix, **redis}}
    a = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust, state=state)
    b = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust, state=state)
    return bank, a, b


async def _cached(gateway: RunningGateway) -> RedisStore:
    """The gateway's store once its revocation cache's invalidation link is up and trusted."""
    store = gateway.services.store
    assert isinstance(store, RedisStore)
    link, cache = store.invalidation_link, store.local_cache
    assert link is not None and cache is not None

    async def up() -> bool:
        return cache.trusted

    await eventually(up)
    return store


@pytest.mark.parametrize("local_cache", [True, False], ids=["cached", "uncached"])
async def test_revocation_through_one_gateway_is_honoured_by_the_other(
    start_server: StartServer, running_gateway: Starter, redis_server: RedisServer, redis_prefix: str,
    local_cache: bool,
):
    """A token revoked by gateway A (ClientId mismatch) is refused by gateway B, which never saw it misused —
    also when B holds the token's "not revoked" in its local cache (Redis's invalidation reaches B before it
    acknowledges A's write)."""
    bank, a, b = await _two_gateways(start_server, running_gateway, redis_server.url, redis_prefix,
                                     local_cache={"enabled": local_cache})
    token = bank.token()
    if local_cache:
        store = await _cached(b)
        assert (await b.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200
        assert store.local_cache is not None and len(store.local_cache) == 2  # the jti's and the client's marks
    assert (await b.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200
    resp = await a.client.get(f"{REGISTER}/client-b", headers=auth(token))
    assert resp.status == 401
    resp = await b.client.get(f"{REGISTER}/client-a", headers=auth(token))
    assert resp.status == 401
    assert (await resp.json())["error_description"] == "the access token has been revoked"
    assert (await b.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))).status == 200


async def test_client_deletion_through_one_gateway_revokes_its_tokens_on_the_other(
    start_server: StartServer, running_gateway: Starter, redis_server: RedisServer, redis_prefix: str
):
    """DELETE confirmed through A: every earlier token of the client is refused by B."""
    bank, a, b = await _two_gateways(start_server, running_gateway, redis_server.url, redis_prefix)
    token = bank.token()
    assert (await a.client.delete(f"{REGISTER}/client-a", headers=auth(token))).status == 204
    resp = await b.client.get(f"{REGISTER}/client-a", headers=auth(bank.token(iat=int(time.time()) - 5)))
    assert resp.status == 401


async def _commandstats(raw: Redis) -> dict[str, int]:
    """Calls per command since the last CONFIG RESETSTAT, leaving out the test's own INFO and CONFIG."""
    stats = await raw.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    return {name: n for name, n in calls.items() if not name.startswith(("info", "config"))}


@pytest.mark.parametrize("local_cache", [True, False], ids=["cached", "uncached"])
async def test_a_token_request_makes_one_redis_round_trip_at_most(
    start_server: StartServer, running_gateway: Starter, own_redis, redis_prefix: str, local_cache: bool
):
    """Through the shipped read policy, a GET costs at most one Redis command — one MGET of both revocation marks,
    no EXISTS or GET — whether the token is valid or revoked; none while the local cache holds both marks, one
    each time without it (the server's own INFO commandstats count; the cache link's PINGs left out)."""
    server: RedisServer = own_redis()
    bank, a, _ = await _two_gateways(start_server, running_gateway, server.url, redis_prefix,
                                     local_cache={"enabled": local_cache})
    if local_cache:
        await _cached(a)
    raw = Redis.from_url(server.url)

    async def commands() -> dict[str, int]:
        return {k: v for k, v in (await _commandstats(raw)).items() if k != "ping"}

    try:
        token = bank.token()
        assert (await a.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200  # warm: JWKS, pool
        await raw.config_resetstat()
        assert (await a.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))).status == 200
        assert await commands() == {"mget": 1}  # a new token: its jti's mark is not cached yet
        await raw.config_resetstat()
        for _ in range(3):
            assert (await a.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200
        assert await commands() == ({} if local_cache else {"mget": 3})

        assert (await a.client.get(f"{REGISTER}/client-b", headers=auth(token))).status == 401  # revokes
        await raw.config_resetstat()
        for _ in range(2):
            resp = await a.client.get(f"{REGISTER}/client-a", headers=auth(token))
            assert (await resp.json())["error_description"] == "the access token has been revoked"
        # cached: the write dropped the token's mark, read once more, then the revoked mark is cached
        assert await commands() == {"mget": 1 if local_cache else 2}
        subscribers = [c for c in await raw.client_list() if "P" in c.get("flags", "")]
        assert len(subscribers) == (2 if local_cache else 0)  # one invalidation link per gateway, with a cache
    finally:
        await raw.aclose()


async def test_redis_down_fails_closed_with_retry_after_then_recovers(
    start_server: StartServer, running_gateway: Starter, own_redis, redis_prefix: str
):
    """Redis killed: the revocation lookup cannot answer → 503 + Retry-After, fast; restarted → 200 again."""
    server: RedisServer = own_redis()
    bank, a, _ = await _two_gateways(start_server, running_gateway, server.url, redis_prefix,
                                     timeout_seconds=0.3, breaker={"failure_threshold": 2, "open_seconds": 0.5})
    token = bank.token()
    assert (await a.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200
    server.stop()
    for _ in range(4):  # the first two reach the dead Redis, then the circuit is open
        async with asyncio.timeout(5):  # bound: 0.3 s per store call
            resp = await a.client.get(f"{REGISTER}/client-a", headers=auth(token))
        assert resp.status == 503
        assert int(resp.headers["Retry-After"]) >= 1
        body = await resp.json()
        assert body["error"] == "temporarily_unavailable"
        assert body["error_description"] == "security state store unavailable, retry later"
    assert a.sample("dcr_gateway_state_store_errors_total", {"kind": "circuit_open"}) >= 1
    assert a.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                     "decision": "deny", "check": "bearer_token",
                                                     "reason": "state_unavailable"}) == 4
    server.start()

    async def recovered() -> bool:
        return (await a.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200

    await eventually(recovered)
    assert a.sample("dcr_gateway_state_store_breaker_transitions_total", {"state": "closed"}) >= 1
    assert (a.sample("dcr_gateway_state_store_breaker_state", {"state": "closed"}),
            a.sample("dcr_gateway_state_store_breaker_state", {"state": "open"})) == (1, 0)


async def test_callers_waiting_for_a_slot_are_served_before_a_caller_that_comes_back(
    stores: Stores, raw: Redis, redis_prefix: str
):
    """Sustained load, made deterministic: 8 callers, 5 calls each, one command in flight at most (pool_size 1).
    The server holds the first call (CLIENT PAUSE WRITE) while the other 7 queue one after another; once it
    answers, every caller comes straight back for its next call. Waiters are served first come first served and a
    caller coming back joins the end of the queue: service is strictly round-robin, nobody starves, the breaker
    stays closed. (redis-py's blocking pool, which the store once used, let the caller that just released the
    connection take it again ahead of the waiters — it served each caller's 5 calls in a row; under real load
    some waiters waited past the timeout and the breaker opened while Redis was healthy.) The subject is order,
    not speed: the timeout is far above any call's latency, and the server's own INCR count says in which order
    the calls ran."""
    callers, rounds = 8, 5
    store = stores(pool_size=1, timeout_seconds=30.0)
    assert await store.incr("order", "n", 1, 60) == 1  # the connection is open, the INCR script loaded
    served: list[tuple[int, int]] = []  # (caller, the counter's value its call set): the order Redis ran them in

    async def caller(me: int) -> None:
        for _ in range(rounds):
            served.append((me, await store.incr("order", "n", 1, 60)))

    tasks: list[asyncio.Task[None]] = []
    await raw.client_pause(30_000, all=False)  # WRITE: holds the store's EVALSHA, not our CLIENT UNPAUSE
    try:
        for me in range(callers):
            tasks.append(asyncio.create_task(caller(me)))
            for _ in range(10):  # no I/O can finish meanwhile (the server holds it): each caller in turn reaches
                await asyncio.sleep(0)  # the connection (caller 0) or the queue (the others), in creation order
        assert served == []  # nothing answered yet: the queue is in a known order
    finally:
        await raw.client_unpause()
    async with asyncio.timeout(30):  # stops a hang only
        await asyncio.gather(*tasks)
    expected = [(me, 2 + r * callers + me) for r in range(rounds) for me in range(callers)]
    assert served == expected, f"served in this order (caller, server's count): {served}"
    assert store.breaker.state == "closed"


async def test_a_timed_out_call_never_leaves_its_reply_for_the_next(stores: Stores, raw: Redis, redis_prefix: str):
    """Redis answers after the store gave up: that late reply must not be read as the next call's answer."""
    store = stores(pool_size=1, timeout_seconds=0.25)
    await store.put("ns", "first", "1", 60)
    await store.put("ns", "second", "2", 60)
    await raw.execute_command("CLIENT", "PAUSE", "600", "ALL")  # the server holds every command for 0.6 s
    with pytest.raises(StoreUnavailable):
        await store.get("ns", "first")
    await raw.ping()  # held by the same pause and queued behind the GET: once it answers, the paused GET has run
    # and its late reply has gone to whatever connection sent it
    assert await store.get("ns", "second") == "2"
    assert await store.get_many([("ns", "first"), ("ns", "second")]) == ["1", "2"]


async def test_start_logs_whether_redis_answers_and_never_fails(stores: Stores):
    """start() logs once whether Redis answers (not a start condition): true when it does, false on a dead port."""
    live, dead = stores(), stores(f"redis://127.0.0.1:{free_port()}/0")
    with structlog.testing.capture_logs() as logs:
        await live.start()
        await dead.start()
    lines = [(e["component"], e["backend"], e["reachable"]) for e in logs if e["event"] == "state_store"]
    assert lines == [("state", "redis", True), ("state", "redis", False)]
