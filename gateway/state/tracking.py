"""A local copy of read-mostly Redis keys, kept correct by Redis itself (server-assisted client-side caching).

Revocation marks are read on every request and written rarely: reading them from Redis each time cost a round
trip per request. `LocalCache` keeps what was read, and `InvalidationLink` keeps it correct. The link is one
dedicated connection that asks Redis to report every change of a key under the cached namespaces' prefixes
(`CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX …`, Redis ≥ 6, RESP2 pub/sub delivery on
`__redis__:invalidate`): whoever writes the key — any replica, any version of the gateway, an operator, an
expiry, FLUSHDB — Redis sends its name to every tracking connection, before it acknowledges the write.

Trust, fail closed: the cache answers only while the link is up and has been heard from within
`max_age_seconds` (it PINGs every quarter of that). The moment the link's connection fails, the cache is
emptied and bypassed — every lookup goes to Redis through the store's usual path (timeout, circuit breaker,
the policy's `on_store_error`) — until a new link is subscribed; entries read before that are never kept.
Each entry is also re-read at least every `max_age_seconds`. So a revocation on another replica is seen here
as soon as its invalidation is read (normally well under a millisecond), and never later than
`max_age_seconds` whatever happens to the link.

Races: a lookup notes the cache's epoch before it asks Redis and keeps the answer only when the epoch has not
moved meanwhile; every invalidation, every change of the link's state and every write through this store
moves it. A value Redis changed while the answer was on its way is therefore never kept.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from ..observability.logging import get_logger

_log = structlog.get_logger(__name__)
_state_log = get_logger("state")

_CHANNEL = b"__redis__:invalidate"
_RETRY_MIN_SECONDS = 0.05
_RETRY_MAX_SECONDS = 2.0
_UNSUPPORTED_RETRY_SECONDS = 60.0
"""Redis refused CLIENT TRACKING (older than 6, or the command is disabled): try again this much later."""


class LocalCache:
    """Values of Redis keys as last read (None for absent), trusted only while the invalidation link is live."""

    __slots__ = ("_clock", "_entries", "_epoch", "_heard_until", "_link_up", "max_age", "max_entries")

    def __init__(self, *, max_age_seconds: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not max_age_seconds > 0 or max_entries < 1:
            raise ValueError("max_age_seconds must be > 0 and max_entries >= 1")
        self.max_age = max_age_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: dict[str, tuple[str | None, float]] = {}
        self._epoch = 0
        self._link_up = False
        self._heard_until = 0.0

    @property
    def trusted(self) -> bool:
        """True while the link is subscribed and was heard from within `max_age` (the cache may answer)."""
        return self._link_up and self._clock() < self._heard_until

    def lookup(self, keys: Sequence[str]) -> list[str | None] | None:
        """The cached values of every key, or None (a miss) when one is absent or too old, or the link is not live."""
        now = self._clock()
        if not (self._link_up and now < self._heard_until):
            return None
        entries = self._entries
        values: list[str | None] = []
        for key in keys:
            entry = entries.get(key)
            if entry is None or entry[1] <= now:
                return None
            values.append(entry[0])
        return values

    def begin(self) -> tuple[int, float]:
        """Note the epoch and time before a read from Redis (give both to `fill`)."""
        return self._epoch, self._clock()

    def fill(self, started: tuple[int, float], keys: Sequence[str], values: Sequence[str | None]) -> None:
        """Keep what a read begun at `started` returned — only when nothing moved the epoch meanwhile."""
        epoch, at = started
        if epoch != self._epoch or not self._link_up:
            return
        entries = self._entries
        expires = at + self.max_age
        for key, value in zip(keys, values, strict=True):
            if key not in entries and len(entries) >= self.max_entries:
                del entries[next(iter(entries))]  # the oldest insertion goes first: bounded memory
            entries[key] = (value, expires)

    def invalidate(self, keys: Sequence[str] | None) -> None:
        """Forget `keys` (None: everything, e.g. after FLUSHDB) and move the epoch."""
        self._epoch += 1
        if keys is None:
            self._entries.clear()
        else:
            for key in keys:
                self._entries.pop(key, None)

    def heard(self) -> None:
        """The link delivered something (an invalidation or a PONG): everything Redis sent before it is applied."""
        self._heard_until = self._clock() + self.max_age

    def link_up(self) -> None:
        """The link is subscribed: from now on reads may be kept."""
        self._entries.clear()
        self._epoch += 1
        self._link_up = True
        self.heard()

    def link_down(self) -> None:
        """The link failed: forget everything and answer nothing until it is up again."""
        self._entries.clear()
        self._epoch += 1
        self._link_up = False

    def __len__(self) -> int:
        return len(self._entries)


class InvalidationLink:
    """The connection that keeps a `LocalCache` correct: subscribed to Redis's invalidations of `prefixes`."""

    __slots__ = ("_cache", "_client", "_closed", "_on_change", "_prefixes", "_task", "_timeout", "connects")

    def __init__(
        self,
        client: Redis,
        cache: LocalCache,
        prefixes: Sequence[str],
        *,
        timeout_seconds: float,
        on_change: Callable[[bool], None] | None = None,
    ) -> None:
        self._client = client
        self._cache = cache
        self._prefixes = tuple(prefixes)
        self._timeout = timeout_seconds
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.connects = 0
        """Links established so far (tests wait on it)."""

    def start(self) -> None:
        """Run the link in the background until `close()`; the cache is trusted only while it is up."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="state-invalidation-link")

    async def close(self) -> None:
        """Stop the link; the cache is no longer trusted."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        self._cache.link_down()

    async def _run(self) -> None:
        delay = _RETRY_MIN_SECONDS
        was_up = False
        while not self._closed:
            conn: Any = None
            try:
                conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
                async with asyncio.timeout(self._timeout * 4):  # connect, CLIENT ID, TRACKING, SUBSCRIBE
                    await self._subscribe(conn)
                self._cache.link_up()
                self.connects += 1
                was_up = self._changed(was_up, True)
                delay = _RETRY_MIN_SECONDS
                await self._serve(conn)
            except ResponseError as exc:
                # CLIENT TRACKING refused (Redis < 6, a disabled command, an ACL): the cache stays off, every
                # lookup goes to Redis. Said once per attempt, slowly.
                _log.warning("state_cache_unsupported", error=type(exc).__name__)
                delay = _UNSUPPORTED_RETRY_SECONDS
            except (RedisError, OSError, TimeoutError, _Silent) as exc:
                if was_up or delay == _RETRY_MIN_SECONDS:
                    _log.warning("state_cache_link_error", error=type(exc).__name__)
            finally:
                self._cache.link_down()
                was_up = self._changed(was_up, False)
                if conn is not None:
                    await conn.disconnect(nowait=True)
            if not self._closed:
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX_SECONDS)

    def _changed(self, was_up: bool, up: bool) -> bool:
        if was_up != up:
            _state_log.info("state_cache_link", up=up)
            if self._on_change is not None:
                self._on_change(up)
        return up

    async def _subscribe(self, conn: Any) -> None:
        await conn.connect()
        await conn.send_command("CLIENT", "ID")
        client_id = await conn.read_response()
        args: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", client_id, "BCAST"]
        for prefix in self._prefixes:
            args += ["PREFIX", prefix]
        await conn.send_command(*args)
        if await conn.read_response() != b"OK":
            raise _Silent("CLIENT TRACKING not acknowledged")
        await conn.send_command("SUBSCRIBE", _CHANNEL)
        reply = await conn.read_response()
        if not (isinstance(reply, list) and reply[:2] == [b"subscribe", _CHANNEL]):
            raise _Silent("SUBSCRIBE not acknowledged")

    async def _serve(self, conn: Any) -> None:
        """Apply invalidations as they come and PING every quarter of `max_age`; returns when the link fails."""
        reader = asyncio.get_running_loop().create_task(self._read(conn))
        try:
            interval = self._cache.max_age / 4
            while not reader.done():
                done, _ = await asyncio.wait({reader}, timeout=interval)
                if done:
                    break
                if not self._cache.trusted:
                    raise _Silent("invalidation link silent")  # no PONG within max_age: a dead link
                await conn.send_command("PING")
            reader.result()  # the reader's failure, if any
        finally:
            reader.cancel()

    async def _read(self, conn: Any) -> None:
        cache = self._cache
        try:
            while True:
                message = await conn.read_response()
                cache.heard()
                if isinstance(message, list) and len(message) == 3 and message[0] == b"message":
                    keys = message[2]
                    cache.invalidate(None if keys is None else [k.decode() for k in keys])
        finally:
            cache.link_down()  # at once: not one lookup more from a cache nobody keeps correct


class _Silent(Exception):
    """The link answered wrongly or not at all."""
