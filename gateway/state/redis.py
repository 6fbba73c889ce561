"""StateStore on Redis: security state shared by every replica and worker process.

Every operation is one atomic Redis command (SET NX PX, SET PX, GET, MGET, EXISTS) or one Lua script (INCRBY with
an expiry set when the counter is created), every key is `<key_prefix><namespace>:<key>` and every key has a
TTL. Commands are pipelined over one kept connection per process (resp.py; redis-py connects it). Each call is
bounded by `timeout_seconds` (waiting for a slot, connecting, the command), and a circuit breaker stops calling
a Redis that keeps failing: while it is open calls fail at once with `StoreUnavailable`, so a dead Redis does
not add its timeout to every request; after `open_seconds` one probe call goes through (half-open) and its
result closes or re-opens the circuit.

The connection URL may hold a password: it is never logged, never put in an exception message, and errors
are reported by kind only.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, TypeVar
from urllib.parse import unquote, urlsplit

import structlog
from redis._parsers import _AsyncRESP2Parser
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..config.settings import StateSettings
from ..observability.logging import get_logger
from .resp import MAX_ARRAY_ITEMS, Pipeline, ReplyError, pack
from .store import BreakerState, ErrorKind, StoreEvents, StoreUnavailable
from .tracking import InvalidationLink, LocalCache

_log = structlog.get_logger(__name__)
_state_log = get_logger("state")

T = TypeVar("T")

# INCRBY, and PEXPIRE when the counter has no expiry yet (it was just created, or lost its TTL somehow):
# one atomic step, so a counter can never be left without a TTL between two commands.
_INCR_LUA = b"""
local v = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return v
"""
_INCR_SHA = hashlib.sha1(_INCR_LUA).hexdigest().encode()  # noqa: S324  # the script's name in Redis, not a secret
_PING = pack(b"PING")
_MAX_RAW_KEY = 200
"""Longer keys (e.g. an unusually long jti) are stored as their SHA-256, so key size stays bounded."""


# What each command answers with, read into the store's value; ValueError (or TypeError) for any other reply,
# which fails the call and drops the connection (resp.Pipeline.call): a reply Redis never sends for the command is
# never read as an answer, and a value the store did not write (not UTF-8 text) is no answer either.


def _ok(reply: Any) -> None:
    if not (type(reply) is bytes and reply == b"OK"):
        raise ValueError("not +OK")


def _added(reply: Any) -> bool:
    """SET NX: +OK when set, nil when the key was there."""
    if reply is None:
        return False
    _ok(reply)
    return True


def _text_or_nil(reply: Any) -> str | None:
    if reply is None:
        return None
    if type(reply) is not bytes:
        raise ValueError("not a bulk string")
    return reply.decode()


def _integer(reply: Any) -> int:
    if type(reply) is not int:
        raise ValueError("not an integer")
    return reply


def _pong(reply: Any) -> bool:
    if not (type(reply) is bytes and reply == b"PONG"):
        raise ValueError("not +PONG")
    return True


def _texts(reply: Any, count: int) -> list[str | None]:
    """MGET: one bulk string or nil per key asked for."""
    if type(reply) is not list or len(reply) != count:
        raise ValueError("not one value per key")
    return [_text_or_nil(value) for value in reply]


class CircuitBreaker:
    """Consecutive-failure breaker: closed → open (fail fast) → half-open (one probe) → closed or open."""

    __slots__ = ("_clock", "_failures", "_on_change", "_opened_at", "_probing", "_state", "failure_threshold",
                 "open_seconds")

    def __init__(
        self,
        failure_threshold: int = 5,
        open_seconds: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], None] | None = None,
    ) -> None:
        if failure_threshold < 1 or not open_seconds > 0:
            raise ValueError("failure_threshold must be >= 1 and open_seconds > 0")
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self._on_change = on_change
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> BreakerState:
        """closed, open or half_open (as of the last call)."""
        return self._state

    def before_call(self) -> None:
        """Let a call through, or raise StoreUnavailable at once while the circuit is open."""
        if self._state == "closed":
            return
        now = self._clock()
        if self._state == "open":
            remaining = self._opened_at + self.open_seconds - now
            if remaining > 0:
                raise StoreUnavailable("state store circuit open", retry_after_seconds=remaining)
            self._set("half_open")
        if self._probing:  # half-open: one probe at a time, everyone else fails fast meanwhile
            raise StoreUnavailable("state store circuit half-open, probe in flight", retry_after_seconds=1.0)
        self._probing = True

    def success(self) -> None:
        """A call succeeded: the circuit closes."""
        self._failures = 0
        self._probing = False
        if self._state != "closed":
            self._set("closed")

    def failure(self) -> None:
        """A call failed: open after `failure_threshold` in a row, or at once when it was the probe."""
        self._failures += 1
        self._probing = False
        if self._state == "half_open" or (self._state == "closed" and self._failures >= self.failure_threshold):
            self._opened_at = self._clock()
            self._set("open")

    def release(self) -> None:
        """A call ended without a verdict (cancelled): let the next call probe."""
        self._probing = False

    def _set(self, state: BreakerState) -> None:
        self._state = state
        _log.warning("state_store_circuit", state=state, consecutive_failures=self._failures)
        if self._on_change is not None:
            self._on_change(state)


def _ms(ttl_seconds: float) -> int:
    if not (math.isfinite(ttl_seconds) and ttl_seconds > 0):
        raise ValueError("ttl_seconds must be a finite number > 0")
    return max(1, math.ceil(ttl_seconds * 1000))


_AUTH_REPLIES: Final = ("NOAUTH", "WRONGPASS")
"""Error replies of a Redis that refuses the connection's credentials (a command before AUTH, a wrong password)."""


def _kind(exc: BaseException) -> ErrorKind:
    if isinstance(exc, TimeoutError | RedisTimeoutError):
        return "timeout"
    # Checked before `connection`: redis-py's AuthenticationError is a ConnectionError, but credentials are the
    # operator's to fix, not the network's (the metric's kind and the log line say which).
    if isinstance(exc, AuthenticationError) or (isinstance(exc, ReplyError) and str(exc).startswith(_AUTH_REPLIES)):
        return "auth"
    if isinstance(exc, RedisConnectionError | OSError):  # resp.LinkError is a ConnectionError
        return "connection"
    return "response"


class RedisStore:
    """A StateStore on Redis; build it with `RedisStore.from_url` (or around a client, for tests)."""

    __slots__ = ("_breaker", "_cache", "_client", "_closed", "_link", "_on_cache_link", "_on_error", "_pipe",
                 "_prefix", "_read_mostly", "_slots", "_timeout")

    def __init__(
        self,
        client: Redis,
        *,
        key_prefix: str = "dcrgw:",
        timeout_seconds: float = 0.25,
        breaker: CircuitBreaker | None = None,
        on_error: Callable[[ErrorKind], None] | None = None,
        max_concurrency: int = 32,
        local_cache: LocalCache | None = None,
        on_cache_link: Callable[[bool], None] | None = None,
    ) -> None:
        self._client = client
        """redis-py's client: its pool connects (the pipeline's connection, the invalidation link's)."""
        self._pipe = Pipeline(client.connection_pool, timeout_seconds)
        # At most `max_concurrency` commands in flight; callers beyond it queue here, first come first served,
        # within their timeout.
        self._slots = asyncio.Semaphore(max_concurrency)
        self._prefix = key_prefix
        self._timeout = timeout_seconds
        self._breaker = breaker if breaker is not None else CircuitBreaker()
        self._on_error = on_error
        self._closed = False
        self._cache = local_cache
        """Read-mostly namespaces' values as last read; used only while `_link` keeps it correct (tracking.py)."""
        self._on_cache_link = on_cache_link
        self._link: InvalidationLink | None = None
        self._read_mostly: frozenset[str] = frozenset()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "dcrgw:",
        pool_size: int = 32,
        timeout_seconds: float = 0.25,
        breaker: CircuitBreaker | None = None,
        on_error: Callable[[ErrorKind], None] | None = None,
        local_cache: LocalCache | None = None,
        on_cache_link: Callable[[bool], None] | None = None,
    ) -> RedisStore:
        """Connect lazily to `redis://`, `rediss://` (TLS), `unix://` or `redis+sentinel://h1:p,h2:p/name[/db]`."""
        return cls(_client(url, timeout_seconds), key_prefix=key_prefix,
                   timeout_seconds=timeout_seconds, breaker=breaker, on_error=on_error, max_concurrency=pool_size,
                   local_cache=local_cache, on_cache_link=on_cache_link)

    @classmethod
    def from_settings(cls, settings: StateSettings, events: StoreEvents) -> RedisStore:
        """The store `state.redis` describes, with its circuit breaker; ConfigError when the URL is not set."""
        cfg = settings.redis
        breaker = CircuitBreaker(cfg.breaker.failure_threshold, cfg.breaker.open_seconds,
                                 on_change=events.on_breaker_change)
        lc = cfg.local_cache
        cache = LocalCache(max_age_seconds=lc.max_age_seconds, max_entries=lc.max_entries) if lc.enabled else None
        return cls.from_url(cfg.resolve_url(), key_prefix=cfg.key_prefix, pool_size=cfg.pool_size,
                            timeout_seconds=cfg.timeout_seconds, breaker=breaker, on_error=events.on_error,
                            local_cache=cache, on_cache_link=events.on_cache_link)

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker guarding this store."""
        return self._breaker

    @property
    def local_cache(self) -> LocalCache | None:
        """The local copy of the read-mostly namespaces, when configured."""
        return self._cache

    @property
    def invalidation_link(self) -> InvalidationLink | None:
        """The link keeping `local_cache` correct, once started."""
        return self._link

    # -- StateStore ------------------------------------------------------------------------------------
    def read_mostly(self, *namespaces: str) -> None:
        """`get_many` of only these namespaces may be answered from the local cache (if configured), which the
        invalidation link started by `start()` keeps correct."""
        if self._link is not None:
            raise RuntimeError("read_mostly() must be called before start()")
        self._read_mostly = self._read_mostly.union(namespaces)

    async def start(self) -> None:
        """Log whether Redis answers now. Not a start condition: while Redis is away the checks fail closed
        (or open, as configured) and the breaker keeps its timeout off the requests. Starts the invalidation
        link when there is a local cache and something to cache."""
        if self._cache is not None and self._read_mostly and self._link is None:
            prefixes = sorted(f"{self._prefix}{ns}:" for ns in self._read_mostly)
            self._link = InvalidationLink(self._client, self._cache, prefixes, timeout_seconds=self._timeout,
                                          on_change=self._on_cache_link)
            self._link.start()
        _state_log.info("state_store", backend="redis", reachable=await self.ping())

    async def add_if_absent(self, namespace: str, key: str, ttl_seconds: float) -> bool:
        """Record `key` unless present (SET NX PX); True when newly added (False means a replay)."""
        k, ms = self._key(namespace, key), _ms(ttl_seconds)
        try:
            return await self._call(pack(b"SET", k.encode(), b"1", b"NX", b"PX", b"%d" % ms), _added)
        finally:
            self._wrote(namespace, k)

    async def put(self, namespace: str, key: str, value: str, ttl_seconds: float) -> None:
        """Set `key` to `value` with a fresh TTL (SET PX), replacing any previous entry."""
        k, ms = self._key(namespace, key), _ms(ttl_seconds)
        try:
            await self._call(pack(b"SET", k.encode(), value.encode(), b"PX", b"%d" % ms), _ok)
        finally:  # read your own writes at once, not when the invalidation comes back (a failed SET may have landed)
            self._wrote(namespace, k)

    async def get(self, namespace: str, key: str) -> str | None:
        """The unexpired value of `key`, or None."""
        k = self._key(namespace, key)
        return await self._call(pack(b"GET", k.encode()), _text_or_nil)

    async def get_many(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """The unexpired values of several `(namespace, key)` entries, in order (None where absent): one MGET."""
        if not items:
            return []
        if len(items) > MAX_ARRAY_ITEMS:  # the reply would be refused as a broken peer's
            raise ValueError(f"get_many asks for at most {MAX_ARRAY_ITEMS} entries")
        keys = [self._key(namespace, key) for namespace, key in items]
        cache = self._cache
        if cache is None or not all(namespace in self._read_mostly for namespace, _ in items):
            return await self._mget(keys)
        values = cache.lookup(keys)  # None while the link is down: then Redis answers, as without a cache
        if values is None:
            started = cache.begin()
            values = await self._mget(keys)
            cache.fill(started, keys, values)
        return values

    async def exists(self, namespace: str, key: str) -> bool:
        """True when `key` is present and unexpired."""
        k = self._key(namespace, key)
        return await self._call(pack(b"EXISTS", k.encode()), _integer) > 0

    async def incr(self, namespace: str, key: str, amount: int, ttl_seconds: float) -> int:
        """Add `amount` to a counter atomically; a new counter expires `ttl_seconds` later (a fixed window)."""
        k, ms = self._key(namespace, key), _ms(ttl_seconds)
        try:
            args = (b"1", k.encode(), b"%d" % amount, b"%d" % ms)
            return await self._call(pack(b"EVALSHA", _INCR_SHA, *args), _integer, pack(b"EVAL", _INCR_LUA, *args))
        finally:
            self._wrote(namespace, k)

    async def close(self) -> None:
        """Stop the invalidation link and drop the connection; later calls raise StoreUnavailable."""
        if not self._closed:
            self._closed = True
            if self._link is not None:
                await self._link.close()
            await self._pipe.close()
            await self._client.aclose()

    # -- extras ----------------------------------------------------------------------------------------
    async def ping(self) -> bool:
        """True when Redis answers now (start-up log line); never raises."""
        try:
            return await self._call(_PING, _pong)
        except StoreUnavailable:
            return False

    # -- internals -------------------------------------------------------------------------------------
    async def _mget(self, keys: list[str]) -> list[str | None]:
        count = len(keys)
        return await self._call(pack(b"MGET", *(k.encode() for k in keys)), lambda reply: _texts(reply, count))

    def _wrote(self, namespace: str, key: str) -> None:
        if self._cache is not None and namespace in self._read_mostly:
            self._cache.invalidate([key])

    def _key(self, namespace: str, key: str) -> str:
        if len(key) > _MAX_RAW_KEY:
            key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
        return f"{self._prefix}{namespace}:{key}"

    async def _call(self, command: bytes, read: Callable[[Any], T], fallback: bytes | None = None) -> T:
        """The reply to a packed command, within the timeout and under the breaker, as `read` reads it (a reply
        it refuses fails the call, kind `connection`); `fallback` is sent instead when Redis does not know the
        script `command` names (NOSCRIPT: it restarted or was flushed)."""
        if self._closed:
            raise StoreUnavailable("state store is closed")
        breaker = self._breaker
        try:
            breaker.before_call()
        except StoreUnavailable:
            self._report("circuit_open")
            raise
        pipe, slots = self._pipe, self._slots
        deadline = pipe.loop_time() + self._timeout
        try:
            if slots.locked():  # wait for a slot, first come first served, within the call's bound
                async with asyncio.timeout_at(deadline):
                    await slots.acquire()
            else:
                await slots.acquire()  # free: returns at once
            try:
                result = await pipe.call(command, deadline, read)
            except ReplyError as exc:
                if fallback is None or not str(exc).startswith("NOSCRIPT"):
                    raise
                result = await pipe.call(fallback, deadline, read)
            finally:
                slots.release()
        except (RedisError, OSError, TimeoutError, ReplyError) as exc:
            breaker.failure()
            kind = _kind(exc)
            self._report(kind)
            if breaker.state != "open":  # once open, failures are fast and not logged one by one
                # SECURITY: the error kind only — messages can name the URL's host, never its password,
                # but there is nothing here an operator needs beyond the kind.
                _log.warning("state_store_error", kind=kind, error=type(exc).__name__)
            raise StoreUnavailable(f"state store {kind}") from None
        except BaseException:
            breaker.release()  # cancelled: no verdict on Redis
            raise
        breaker.success()
        return result

    def _report(self, kind: ErrorKind) -> None:
        if self._on_error is not None:
            self._on_error(kind)


def _client(url: str, timeout: float) -> Redis:
    # redis-py only connects (resp.Pipeline carries the commands; its pool is asked for new connections only, so
    # it has no size to bound): one immediate retry of a failed connect, never redis-py 6's default of 3 retries
    # with up to 10 s back-off. No socket timeout of redis-py's own: the pipeline bounds the handshake and every
    # command; connect keeps its own bound.
    options: dict[str, Any] = {
        "socket_timeout": None,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1),
        "client_name": "dcr-gateway",
        # The pure-Python parser reads exactly each handshake reply (readexactly/readline); hiredis's, when
        # installed, reads ahead into its own buffer, where bytes would be lost when resp.py takes the transport.
        "parser_class": _AsyncRESP2Parser,
    }
    parts = urlsplit(url)
    if parts.scheme == "redis+sentinel":
        hosts, db, service = _sentinel_parts(url)
        sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves Sentinel.__init__ untyped
            hosts, sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout}, **options
        )
        master: Redis = sentinel.master_for(
            service, db=db,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )
        return master
    pool = ConnectionPool.from_url(url, **options)
    # The pipeline reads RESP2 only (and the invalidation link takes RESP2 pub/sub delivery): a `?protocol=3`
    # in the URL (which from_url lets win over the options) would have every call fail as a malformed reply.
    pool.connection_kwargs["protocol"] = 2
    return Redis.from_pool(pool)


def _sentinel_parts(url: str) -> tuple[list[tuple[str, int]], int, str]:
    """`redis+sentinel://[user:password@]h1:26379,h2:26379/service[/db]` → sentinels, db, service."""
    parts = urlsplit(url)
    hosts: list[tuple[str, int]] = []
    for item in parts.netloc.rpartition("@")[2].split(","):
        host, sep, port = item.rpartition(":")
        if not sep or "]" in port:  # no port, or a bare IPv6 literal
            host, port = item, "26379"
        hosts.append((host.strip("[]"), int(port)))
    path = [p for p in parts.path.split("/") if p]
    db = int(path[1]) if len(path) > 1 else 0
    return hosts, db, path[0]
