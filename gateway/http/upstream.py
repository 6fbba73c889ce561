"""The upstream client: HTTP/1.1 to the one backend over pooled keep-alive connections, bodies streamed both ways.

Why not aiohttp's ClientSession: the gateway talks to exactly one origin, with headers it has already cleaned,
and the general-purpose client (URL objects, cookie jar, traces, redirects, per-request timers) was measured
at half of the whole per-request cost (`make bench`, docs/benchmarks.md). This client does only what a
reverse proxy needs, with llhttp (the parser of Node.js, through `httptools`) doing the parsing:

- a LIFO pool of at most `max_connections` connections; idle ones are closed after `keepalive` seconds, and a
  connection is reused only when its response was read to the end and both sides allow keep-alive;
- one timer per connection (not one per exchange) enforces the read timeout (between two reads) and the total
  timeout of the exchange in progress;
- request bodies go out as they arrive (Content-Length when known, else chunked); response bodies come back
  as they arrive, with reading paused while the client is slower than the upstream;
- 1xx interim responses are skipped, HEAD/204/304 responses have no body, a close-delimited body ends at EOF.

Errors are `UpstreamError`s with a `kind` (connect, timeout, protocol) the forwarder maps to 502/504.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import deque
from collections.abc import AsyncIterable, Iterable
from typing import Final, Literal, cast
from urllib.parse import urlsplit

import httptools

from ..timer import LazyTimer
from .fields import breaks_only_at_line_ends, safe_field

ErrorKind = Literal["connect", "timeout", "protocol"]

_PAUSE_AT: Final = 256 * 1024
"""Buffered response bytes at which reading from the upstream pauses (the client is slower)."""
_RESUME_AT: Final = 64 * 1024
_MAX_HEADER_BYTES: Final = 64 * 1024
"""Largest response header section accepted from the upstream (llhttp sets no limit of its own)."""
_NO_BODY_STATUS: Final = frozenset({204, 304})
_FRAMING_FIELDS: Final = frozenset({"content-length", "transfer-encoding"})
_NOT_IN_REASON: Final = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
"""Bytes a reason phrase cannot hold (RFC 9112 §4: HTAB, SP, VCHAR, obs-text) and llhttp lets through there: it
stops only at CR and LF, while it refuses the same bytes in a header value."""


class UpstreamError(Exception):
    """The exchange failed; `kind` says how."""

    def __init__(self, kind: ErrorKind, detail: str) -> None:
        super().__init__(detail)
        self.kind: ErrorKind = kind
        self.detail = detail


class UpstreamResponse:
    """One response: status line and headers at once, the body as it arrives (`read`), then `release`."""

    __slots__ = (
        "_buffered",
        "_conn",
        "_error",
        "_headers_waiter",
        "_pool",
        "_reading",
        "_waiter",
        "chunks",
        "complete",
        "deadline",
        "head_only",
        "header_bytes",
        "keep_alive",
        "last_read",
        "parser",
        "raw_headers",
        "reason",
        "request_sent",
        "status",
        "until_close",
        "with_body",
    )

    def __init__(self, pool: UpstreamPool, conn: _Connection, head_only: bool) -> None:
        self._pool = pool
        self.request_sent = False
        """The whole request, body included, went out."""
        self._conn = conn
        self.head_only = head_only
        self.with_body = False
        """The request carried a body (set by the pool before sending)."""
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.reason = ""
        self.raw_headers: list[tuple[str, str]] = []
        self.header_bytes = 0
        self.keep_alive = False
        self.until_close = False
        self.complete = False
        """The whole body has been received (it may still sit in `chunks`)."""
        self.chunks: deque[bytes] = deque()
        self._buffered = 0
        self._reading = True
        self._error: UpstreamError | None = None
        self._waiter: asyncio.Future[None] | None = None
        loop = pool.loop
        self._headers_waiter: asyncio.Future[None] = loop.create_future()
        now = loop.time()
        self.last_read = now
        self.deadline = now + pool.total_timeout
        conn.watch(loop, min(self.deadline, now + pool.read_timeout), min(pool.read_timeout, pool.total_timeout))

    @property
    def bodiless(self) -> bool:
        """The response has no body whatever its headers say: to HEAD, or 204 / 304."""
        return self.head_only or self.status in _NO_BODY_STATUS

    # --- llhttp callbacks -------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second response on one request: parsing stops here, nothing of it is read or handed to anyone.
            self._out_of_step()
            raise UpstreamError("protocol", "upstream sent a second response")
        self.reason = ""  # an interim response's is not the final one's

    def on_status(self, reason: bytes) -> None:
        # SECURITY: the reason is relayed on the client's status line, where a NUL or another control character
        # must not go; llhttp hands it over in parts when it spans reads.
        if _NOT_IN_REASON.search(reason):
            raise UpstreamError("protocol", "upstream reason phrase holds a control character")
        self.reason += reason.decode("utf-8", "surrogateescape")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value)
        if self.header_bytes > _MAX_HEADER_BYTES:
            raise UpstreamError("protocol", "upstream response headers too large")
        # Decoded as the client side decodes (and the server encodes): every byte goes back out as it came in.
        self.raw_headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise UpstreamError("protocol", "upstream switched protocols")
            self.raw_headers = []  # an interim response (100, 103): the final one follows
            return
        self.status = status
        # An answer that came before the whole request was handed to the kernel, or an error answer to a request
        # with a body (the upstream may have answered without reading it: 400, 401, 413…), can leave the rest of
        # the request to be read as another one: such a connection is closed after this exchange, never reused.
        self.keep_alive = (self.parser.should_keep_alive() and self._conn.write_buffer_empty()
                           and not (self.with_body and status >= 400))
        if self.bodiless:
            self._finish()
        else:
            self.until_close = not any(name.lower() in _FRAMING_FIELDS for name, _ in self.raw_headers)
        if not self._headers_waiter.done():
            self._headers_waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.complete:
            return
        self.chunks.append(body)
        self._buffered += len(body)
        if self._buffered >= _PAUSE_AT and self._reading:
            self._reading = False
            self._conn.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:
            return  # the end of an interim response
        if not self.complete:
            self.keep_alive = self.keep_alive and self.parser.should_keep_alive()
            self._finish()

    # --- events from the connection ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        self.last_read = self._pool.loop.time()
        if self.complete:
            self._out_of_step()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            self._fail(cause if isinstance(cause, UpstreamError)
                       else UpstreamError("protocol", f"invalid HTTP from upstream ({type(exc).__name__})"))

    def connection_lost(self) -> None:
        if self.complete:
            return
        if self.until_close and self.status:
            self.keep_alive = False
            self._finish()  # a close-delimited body ends at EOF
            return
        # Never retried, even on a reused connection that dies silently: the upstream may have received and acted
        # on the request (a DELETE), and one client request is at most one upstream request.
        self._fail(UpstreamError("protocol", "upstream closed the connection"))

    def _out_of_step(self) -> None:
        """Bytes beyond a complete response: the connection is out of step with its requests. The response
        already received stands; the connection is closed now and never reused (no byte of it reaches anyone)."""
        self.keep_alive = False
        self._conn.abort()

    def _finish(self) -> None:
        self.complete = True
        self._wake()
        self._conn.wake_drain()  # an upload blocked on a full send buffer stops: the answer is in

    def _fail(self, error: UpstreamError) -> None:
        if self._error is None and not self.complete:
            self._error = error
            if not self._headers_waiter.done():
                self._headers_waiter.set_exception(error)
                self._headers_waiter.exception()  # retrieved: only awaited when the request was fully sent
            self._wake()
            conn = self._conn
            conn.abort()
            if conn.response is self:  # the slot is free now, not when the relay to a slow client ends
                conn.response = None
                self._pool.free_slot()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def check_time(self, now: float) -> float | None:
        """Fail the exchange if a timeout has run out; else when to look again (None: nothing left to time)."""
        if self.complete or self._error is not None:
            return None
        if now >= self.deadline:
            self._fail(UpstreamError("timeout", "upstream exceeded the total timeout"))
            return None
        if not self._reading:
            self.last_read = now  # paused by us for a slow client: not the upstream's delay
        idle_until = self.last_read + self._pool.read_timeout
        if now >= idle_until:
            self._fail(UpstreamError("timeout", "upstream sent nothing within the read timeout"))
            return None
        return min(self.deadline, idle_until)

    # --- the forwarder's side ------------------------------------------------------------------------------------

    async def wait_headers(self) -> None:
        """Until the final status line and headers are in (or the exchange failed)."""
        await self._headers_waiter

    def take_body(self) -> bytes:
        """The whole body, when `complete`: everything buffered, in one piece."""
        body = b"".join(self.chunks)
        self.chunks.clear()
        self._buffered = 0
        return body

    async def read(self) -> bytes:
        """The next part of the body; b"" at its end. Raises UpstreamError if the upstream fails mid-body."""
        while True:
            if self.chunks:
                chunk = self.chunks.popleft()
                self._buffered -= len(chunk)
                if not self._reading and self._buffered <= _RESUME_AT:
                    self._reading = True
                    self.last_read = self._pool.loop.time()
                    self._conn.resume_reading()
                return chunk
            if self._error is not None:
                raise self._error
            if self.complete:
                return b""
            self._waiter = self._pool.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def release(self) -> None:
        """Give the connection back: to the pool when the exchange ended cleanly, else closed."""
        conn = self._conn
        if conn.response is not self:
            return
        conn.response = None
        # Reusable only after a clean exchange both ways: a request body cut short by an early answer would
        # leave its remaining bytes to be read as the next request.
        if self.complete and self.request_sent and self.keep_alive and self._error is None and not self.chunks:
            self._pool.put_back(conn)
        else:
            conn.abort()
            self._pool.free_slot()


class _Connection(asyncio.Protocol):
    """One TCP (or TLS) connection to the upstream; feeds the current exchange's parser."""

    __slots__ = ("_drain", "_paused", "_timer", "closed", "idle_since", "response", "transport")

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.response: UpstreamResponse | None = None
        self.closed = False
        self.idle_since = 0.0
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._timer: LazyTimer | None = None
        """The one timer of the exchanges on this connection (`watch`), made with the first."""

    def watch(self, loop: asyncio.AbstractEventLoop, when: float, cap: float) -> None:
        """Have the current exchange's timeouts looked at by `when` (`cap`: the shorter of the two): the
        connection's one timer, which looks at whichever exchange is in progress when it fires."""
        if self.closed:
            return
        if self._timer is None:
            self._timer = LazyTimer(loop, cap, self._on_timer)
        self._timer.arm(when)

    def _on_timer(self, now: float) -> float | None:
        response = self.response
        if response is None or self.closed:
            return None
        when = response.check_time(now)
        return None if self.closed else when

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not registered subclasses

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:
            self.abort()  # bytes nobody asked for: the connection is out of step
            return
        response.feed(data)

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        self.wake_drain()
        if self.response is not None:
            self.response.connection_lost()

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self.wake_drain()

    def wake_drain(self) -> None:
        """Let a `drain()` in progress return (writable again, closed, or the exchange is over)."""
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    async def drain(self) -> None:
        """Wait while the kernel's send buffer is full (the upstream reads slower than the client sends)."""
        if self._paused and not self.closed:
            assert self.transport is not None
            self._drain = asyncio.get_running_loop().create_future()
            await self._drain

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def write_buffer_empty(self) -> bool:
        """True when everything written has been handed to the kernel."""
        return self.transport is None or self.transport.get_write_buffer_size() == 0

    def pause_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class UpstreamPool:
    """Pooled connections to one origin (`http://host:port` or `https://…`) and the exchanges over them."""

    def __init__(
        self,
        url: str,
        *,
        max_connections: int,
        keepalive_seconds: float,
        connect_timeout: float,
        read_timeout: float,
        total_timeout: float,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        default_port = self.port == (443 if parts.scheme == "https" else 80)
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.host_header = host if default_port else f"{host}:{self.port}"
        self.max_connections = max_connections
        self.keepalive = keepalive_seconds
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.total_timeout = total_timeout
        self._idle: list[_Connection] = []
        self._open = 0
        self._slot_waiters: deque[asyncio.Future[None]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.loop: asyncio.AbstractEventLoop = asyncio.get_running_loop()

    @property
    def idle_count(self) -> int:
        """Connections waiting in the pool."""
        return len(self._idle)

    @property
    def open_count(self) -> int:
        """Connections open (idle or in use)."""
        return self._open

    def start(self) -> None:
        """Begin closing connections idle for longer than `keepalive` seconds."""
        self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    async def close(self) -> None:
        """Close every idle connection; connections in use close when their exchange ends."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
        for conn in self._idle:
            conn.abort()
            self.free_slot()
        self._idle.clear()

    def _sweep(self) -> None:
        cutoff = self.loop.time() - self.keepalive
        keep = []
        for conn in self._idle:
            if conn.closed or conn.idle_since <= cutoff:
                conn.abort()
                self.free_slot()
            else:
                keep.append(conn)
        self._idle = keep
        if not self._closed:
            self._sweeper = self.loop.call_later(self.keepalive, self._sweep)

    def free_slot(self) -> None:
        """A connection is gone: one fewer open, and one waiter may open a new one."""
        self._open -= 1
        self._wake_one()

    def put_back(self, conn: _Connection) -> None:
        """A connection whose exchange ended cleanly: idle in the pool (or closed, if the pool is closing)."""
        if self._closed or conn.closed:
            conn.abort()
            self.free_slot()
            return
        conn.idle_since = self.loop.time()
        self._idle.append(conn)
        self._wake_one()  # a waiter for a slot takes this connection

    def _wake_one(self) -> None:
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _idle_connection(self) -> _Connection | None:
        """The most recently used idle connection still fit for reuse, if any (closing stale ones)."""
        if not self._idle:
            return None
        cutoff = self.loop.time() - self.keepalive
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and conn.idle_since > cutoff:
                return conn
            conn.abort()
            self.free_slot()
        return None

    async def _acquire(self) -> _Connection:
        """A pooled or new connection; waits for a free slot (the caller bounds it by the connect timeout)."""
        while True:
            conn = self._idle_connection()
            if conn is not None:
                return conn
            if self._open < self.max_connections:
                break
            waiter = self.loop.create_future()
            self._slot_waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, then timed out: pass the free slot on
                raise
        self._open += 1
        try:
            _, conn = await self.loop.create_connection(
                _Connection, self.host, self.port, ssl=self.ssl,
                server_hostname=self.host if self.ssl is not None else None,
            )
        except BaseException:
            self.free_slot()
            raise
        return conn

    async def request(
        self,
        method: str,
        target: str,
        header_block: str,
        body: bytes | AsyncIterable[bytes] | None,
        *,
        content_length: int | None = None,
    ) -> UpstreamResponse:
        """Send one request and return once its response headers are in; the caller reads and releases it.

        `header_block` is the request's header lines (`Name: value\\r\\n` each) without Host and framing;
        `body` is bytes, an async iterable of chunks (sent with `content_length` or chunked), or None.
        One attempt: nothing is retried (the upstream may have received a request whose connection then died).
        """
        conn = self._idle_connection()
        try:
            if conn is None:
                async with asyncio.timeout(self.connect_timeout):
                    conn = await self._acquire()
        except TimeoutError:
            raise UpstreamError("connect", "no upstream connection within the connect timeout") from None
        except OSError as exc:
            raise UpstreamError("connect", exc.strerror or "connection failed") from None
        if isinstance(body, bytes):
            framing = f"Content-Length: {len(body)}\r\n" if body or method not in ("GET", "HEAD", "DELETE") else ""
        elif body is None:
            framing = ""
        elif content_length is not None:
            framing = f"Content-Length: {content_length}\r\n"
        else:
            framing = "Transfer-Encoding: chunked\r\n"
        head = f"{method} {target} HTTP/1.1\r\nHost: {self.host_header}\r\n{header_block}{framing}\r\n"
        try:
            raw = head.encode("utf-8", "surrogateescape") if breaks_only_at_line_ends(head) else None
        except UnicodeEncodeError:  # a lone surrogate (a verified claim's JSON may hold one): not bytes at all
            raw = None
        if raw is None:
            self.put_back(conn)
            raise UpstreamError("protocol", "refused to send a header containing a line break or no text")
        response = UpstreamResponse(self, conn, head_only=method == "HEAD")
        response.with_body = body is not None and body != b""
        conn.response = response
        try:
            if isinstance(body, bytes):
                conn.write(raw + body)
                response.request_sent = True
            else:
                conn.write(raw)
                if body is None:
                    response.request_sent = True
                else:
                    await self._send_stream(conn, response, body, chunked=content_length is None)
            await response.wait_headers()
        except BaseException:
            response.release()  # mid-exchange: the connection cannot be reused
            raise
        return response

    @staticmethod
    async def _send_stream(
        conn: _Connection, response: UpstreamResponse, body: AsyncIterable[bytes], *, chunked: bool
    ) -> None:
        loop = asyncio.get_running_loop()
        async for chunk in body:
            if conn.closed or response.complete:
                return  # the upstream answered (or failed) before taking the whole body
            if chunk:
                conn.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain()
                response.last_read = loop.time()  # upload progress: the exchange is not idle
        if conn.closed or response.complete:
            return
        if chunked:
            conn.write(b"0\r\n\r\n")
        response.request_sent = True


def header_lines(headers: Iterable[tuple[str, str]]) -> str:
    """`Name: value\\r\\n` lines for `UpstreamPool.request`; a CR, LF or NUL anywhere is refused."""
    fields = list(headers)
    block = "".join([f"{name}: {value}\r\n" for name, value in fields])
    if not breaks_only_at_line_ends(block, len(fields)) or "\x00" in block:
        for name, value in fields:  # which one, for the message
            if not (safe_field(name) and safe_field(value)):
                raise UpstreamError("protocol", f"refused to send header {name!r}: it contains a line break")
    return block
