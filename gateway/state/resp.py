"""The store's Redis commands, pipelined over one kept connection per process (RESP2).

redis-py spends more CPU on a call than the command itself costs: a `SET NX PX` took 40-77 us of process CPU,
of which its pool's checkout and release (a condition and a stale-data check of the socket) about 19 us,
against 13 us for the same command over a plain connection. The store issues a handful of fixed commands, so
they go through this instead (what ioredis and StackExchange.Redis call auto-pipelining):

- one connection, every caller's command written to it in the order issued, the commands of one loop turn in
  one write; replies come back in the same order (Redis answers a connection's commands in order) and each is
  handed to its caller. A caller that gave up (cancelled) still has its reply read and dropped, so no reply is
  ever read as another command's answer;
- every command carries its caller's deadline. One lazy timer per connection watches the oldest command still
  unanswered: when its deadline passes the connection is treated as stalled, every command on it fails
  (`timeout`) and it is closed, so a silent Redis costs each caller at most its bound and the next call
  connects afresh. A command sent behind one with a later deadline (a NOSCRIPT fallback, callers that waited
  for the connect) is also timed by its caller, so that it is not held to the later deadline;
- a connection that breaks fails every command on it (`connection`), and the next call connects afresh; a
  command is never sent twice (a retried `SET NX` could report a replay that was not one);
- `-READONLY` (a Sentinel-managed master that was demoted) fails the command as a connection failure and
  closes the connection: the next one asks the sentinels for the master again.
- a reply its command never gets from Redis (not RESP, a negative length other than -1, or a type or count
  the command does not answer with: `SET NX` answered with an integer, `MGET` with fewer values) fails the
  command as a connection failure and closes the connection: it is never read as an answer, and what else
  comes on that connection is no longer trusted.

Connecting stays redis-py's: the URL as redis-py reads it (TLS and its `ssl_*` parameters, AUTH, the database,
unix sockets, Sentinel discovery), its handshake, then the connection's transport is taken over by `_Link`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

from redis.asyncio.connection import AbstractConnection, ConnectionPool

from ..timer import LazyTimer

T = TypeVar("T")

MAX_REPLY_BYTES = 1 << 20
"""Unread reply data a connection may hold: the store's replies are a few dozen bytes; more is a broken peer."""
MAX_ARRAY_ITEMS = 1024
"""Most items an array reply may announce: the store's only array is MGET's, one item per key asked for (two for
a revocation lookup; `RedisStore.get_many` asks for no more than this). It also bounds the work of parsing an
incomplete array again each time more of it arrives (a peer that drips a long array in small pieces)."""


class ReplyError(Exception):
    """Redis answered the command with an error reply (`-ERR ...`); the message is Redis's own."""


class LinkError(ConnectionError):
    """The connection broke, or the peer sent what is not RESP or not an answer to the command, or a demoted
    master refused a write."""


class _Incomplete(Exception):
    """The buffer ends inside a reply; `need`: the buffer length the reply needs at least (a bulk string's whole
    length once its header is in), 0 when not known yet."""

    def __init__(self, need: int = 0) -> None:
        super().__init__(need)
        self.need = need


def pack(*args: bytes) -> bytes:
    """One command as a RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        out.append(b"$%d\r\n%b\r\n" % (len(arg), arg))
    return b"".join(out)


def _parse(buf: bytes, pos: int, nested: bool = False) -> tuple[Any, int]:
    """The reply starting at `pos` and the position after it; `_Incomplete` when it does not end in `buf`. The
    store's commands answer with flat arrays at most (MGET): anything deeper is refused as malformed."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete
    kind = buf[pos]
    if kind == 36:  # $ bulk string
        n = _int(buf[pos + 1:end])
        if n < 0:
            _nil(n)
            return None, end + 2
        if n > MAX_REPLY_BYTES:
            raise LinkError("bulk reply too long")
        stop = end + 2 + n
        if len(buf) < stop + 2:
            raise _Incomplete(stop + 2)
        if buf[stop:stop + 2] != b"\r\n":
            raise LinkError("malformed bulk reply")
        return buf[end + 2:stop], stop + 2
    if kind == 43:  # + simple string
        return buf[pos + 1:end], end + 2
    if kind == 58:  # : integer
        return _int(buf[pos + 1:end]), end + 2
    if kind == 45:  # - error
        return ReplyError(buf[pos + 1:end].decode("utf-8", "replace")), end + 2
    if kind == 42 and not nested:  # * array
        n = _int(buf[pos + 1:end])
        if n < 0:
            _nil(n)
            return None, end + 2
        if n > MAX_ARRAY_ITEMS:
            raise LinkError("array reply too long")
        items = []
        pos = end + 2
        for _ in range(n):
            item, pos = _parse(buf, pos, True)
            items.append(item)
        return items, pos
    raise LinkError("unexpected reply type")


def _int(raw: bytes) -> int:
    """A RESP integer or length: ASCII digits after an optional minus. int() alone would also read spaces, a
    plus sign and underscores ("1_0" as 10): a broken peer, not a number."""
    if not (raw[1:] if raw[:1] == b"-" else raw).isdigit():
        raise LinkError("malformed integer")
    return int(raw)


def _nil(n: int) -> None:
    """A negative length: -1 is the nil reply; any other is a broken peer (read as nil it would be an answer:
    "absent" for a revoked token, "seen" for a fresh jti)."""
    if n != -1:
        raise LinkError("malformed length")


class _Link(asyncio.Protocol):
    """One connection's pipeline: commands out in order, replies back to their callers in the same order."""

    __slots__ = ("_buf", "_held", "_loop", "_more", "_need", "_out", "_owner", "_pending", "_timer", "_transport",
                 "alive", "latest")

    def __init__(self, loop: asyncio.AbstractEventLoop, writer: asyncio.StreamWriter, cap: float) -> None:
        self._loop = loop
        self._owner = writer
        """Kept while the link lives: a stream writer that is collected closes its transport."""
        self._transport: asyncio.Transport = writer.transport  # type: ignore[assignment]
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] | None = None
        self._buf = b""
        self._more: list[bytes] = []
        """Pieces received while a reply whose length is known (`_need`) is still short: joined once, when it can
        be whole, instead of copying the buffer again with every piece."""
        self._need = 0
        self._held = 0
        self._timer = LazyTimer(loop, cap, self._on_due)
        self.alive = True
        self.latest = 0.0
        """The latest deadline of a command sent: the timer fails a command no later than that."""

    def send(self, command: bytes, deadline: float) -> asyncio.Future[Any]:
        """Queue `command` for this loop turn's write; its reply (or failure) arrives on the returned future."""
        future = self._loop.create_future()
        self._pending.append((future, deadline))
        if deadline > self.latest:
            self.latest = deadline
        out = self._out
        if out is None:
            self._out = [command]
            self._loop.call_soon(self._flush)
        else:
            out.append(command)
        self._timer.arm(deadline)
        return future

    def close(self) -> None:
        """Fail whatever is in flight and drop the connection."""
        self._fail(LinkError("connection closed"))

    def _flush(self) -> None:
        out, self._out = self._out, None
        if out and self.alive:
            self._transport.write(b"".join(out) if len(out) > 1 else out[0])

    # -- asyncio.Protocol ------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._need:
            self._more.append(data)
            self._held += len(data)
            if self._held < self._need:
                return
            buf, self._more, self._need = b"".join(self._more), [], 0
        else:
            buf = self._buf + data if self._buf else data
        pending = self._pending
        pos, size, need = 0, len(buf), 0
        try:
            while pos < size:
                reply, pos = _parse(buf, pos)
                if not pending:
                    raise LinkError("reply to no command")
                if type(reply) is ReplyError and reply.args[0].startswith("READONLY"):
                    raise LinkError("READONLY: the master was demoted")  # this command fails with the rest
                future = pending.popleft()[0]
                if not future.done():  # a caller that gave up: its reply is read and dropped
                    if type(reply) is ReplyError:
                        future.set_exception(reply)
                    else:
                        future.set_result(reply)
        except _Incomplete as short:
            need = short.need - pos
            if need > MAX_REPLY_BYTES:  # an array of long strings: it could not be held whole
                self._fail(LinkError("reply too large"))
                return
        except (LinkError, ValueError) as exc:  # ValueError: an integer past int()'s 4300-digit limit
            self._fail(exc if isinstance(exc, LinkError) else LinkError("malformed reply"))
            return
        self._buf = buf[pos:] if pos < size else b""
        if len(self._buf) > MAX_REPLY_BYTES:
            self._fail(LinkError("reply too large"))
        elif need > len(self._buf):  # parsed again only once that much is in
            self._need, self._held, self._more = need, len(self._buf), [self._buf]

    def eof_received(self) -> bool:
        self._fail(LinkError("connection closed by Redis"))
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(LinkError("connection lost"))

    def pause_writing(self) -> None:  # commands are small and bounded in number by the store's slots
        pass

    def resume_writing(self) -> None:
        pass

    # -- internals -------------------------------------------------------------------------------------
    def _on_due(self, now: float) -> float | None:
        if not self._pending:
            return None
        deadline = self._pending[0][1]
        if deadline > now:
            return deadline
        self._fail(TimeoutError("no reply within the bound"))  # the oldest command is overdue: a stalled link
        return None

    def _fail(self, exc: BaseException) -> None:
        if not self.alive:
            return
        self.alive = False
        self._timer.cancel()
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():  # one exception each: a shared one would gather every caller's traceback
                future.set_exception(type(exc)(*exc.args))
        self._transport.abort()


class Pipeline:
    """Commands to one Redis, pipelined over one kept connection (see the module's docstring)."""

    __slots__ = ("_closed", "_connecting", "_link", "_pool", "_timeout")

    def __init__(self, pool: ConnectionPool, timeout_seconds: float) -> None:
        self._pool = pool
        self._timeout = timeout_seconds
        self._link: _Link | None = None
        self._connecting: asyncio.Task[_Link] | None = None
        self._closed = False

    async def call(self, command: bytes, deadline: float, read: Callable[[Any], T]) -> T:
        """Send a packed command and return its reply as `read` reads it (from bytes, int, None or a list of
        them); raises ReplyError, LinkError (the connection failed, or `read` refused the reply — ValueError or
        TypeError — as one the command does not answer with: the connection's replies are no longer trusted and
        it is dropped) or TimeoutError (no reply by `deadline`, on the loop's clock)."""
        link = self._link
        if link is None or not link.alive:
            if self._closed:  # not connected again behind close(): a connection nobody would close
                raise LinkError("connection closed")
            link = await self._connect(deadline)
        if deadline < link.latest:  # the timer watches the oldest command: one ahead would hold this one longer
            future = link.send(command, deadline)
            async with asyncio.timeout_at(deadline):  # on expiry: cancelled, its reply read and dropped
                reply = await future
        else:
            reply = await link.send(command, deadline)
        try:
            return read(reply)
        except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
            link.close()
            raise LinkError("a reply the command does not answer with") from None

    @staticmethod
    def loop_time() -> float:
        """The clock deadlines are on (the running loop's)."""
        return asyncio.get_running_loop().time()

    async def close(self) -> None:
        """Drop the connection (and any connect in progress) for good; calls in flight and later ones fail with
        LinkError."""
        self._closed = True
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            # Returns once the connect has undone itself (its socket closed): nothing of ours is left running
            # after close(). asyncio.wait raises nothing for the task, but does for our own cancellation.
            await asyncio.wait([connecting])
        if self._link is not None:  # a connect that finished before the cancel reached it left its link here
            self._link.close()
            self._link = None

    async def _connect(self, deadline: float) -> _Link:
        remaining = deadline - self.loop_time()
        if remaining <= 0:  # before any connect is started: one nobody waits for would be left to run
            raise TimeoutError("no time left to connect")
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
        try:
            # shielded: a caller that gives up does not cancel the connect other callers wait for
            link = await asyncio.wait_for(asyncio.shield(task), remaining)
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and me is not None and not me.cancelling():  # close() ended the connect
                raise LinkError("connection closed") from None
            raise
        if not link.alive:
            raise LinkError("connection lost")
        return link

    async def _open(self) -> _Link:
        conn: AbstractConnection = self._pool.make_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(self._timeout):  # TCP/TLS connect, AUTH, SELECT, CLIENT SETNAME, sentinels
                await conn.connect()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
            writer = _take_over(conn)
        except BaseException:
            await conn.disconnect(nowait=True)
            raise
        link = _Link(asyncio.get_running_loop(), writer, self._timeout)
        writer.transport.set_protocol(link)
        self._link = link
        return link


def _take_over(conn: AbstractConnection) -> asyncio.StreamWriter:
    """The stream writer (and so the transport) of a connected, handshaken redis-py connection, detached from it
    (redis-py is pinned < 7). Its reader must hold nothing unread: the handshake's replies are all read."""
    reader, writer = conn._reader, conn._writer
    if reader is None or writer is None:
        raise LinkError("not connected")
    if reader._buffer or reader.at_eof():  # type: ignore[attr-defined]
        raise LinkError("unread data after the handshake")
    conn._reader = conn._writer = None  # the connection object no longer owns (or closes) it
    return writer
