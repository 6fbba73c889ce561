"""The public listener's HTTP/1.1 server: an asyncio protocol on llhttp (httptools), as `upstream.py` is for the
client side.

One parse of every byte, and the rules of a server facing the internet stated here rather than inherited:

- a request head is parsed by llhttp (strict) within limits: the request target at most 8 190 bytes and each
  header field (name and value) at most 8 190 bytes (431 beyond; an unfinished head may grow by at most 64 KiB
  after the read in which it began, since llhttp's binding buffers a field whole), at most 128 header fields,
  no NUL in a value, no second copy of a field a server reads once (Host, Content-Length, Transfer-Encoding,
  Content-Type…), Host required in HTTP/1.1, HTTP/1.0 and 1.1 only (505), CONNECT refused (405: llhttp ignores
  its framing), a target in origin, absolute or asterisk form only; anything else is answered 400 in JSON and the
  connection closed;
- the header read timeout runs from a head's first byte to its end (nginx's client_header_timeout), a new
  connection owing its first head at once; an idle connection is closed after the keep-alive timeout (bytes that
  begin no head, such as empty lines, do not extend it);
- the connections one peer address holds are capped (a trusted proxy's are not: behind it the handler counts
  requests in flight per client);
- requests on a connection are answered one at a time, in order; a request whose body was not wholly received
  when its answer is sent ends the connection (its remaining bytes are never parsed as another request): the
  answer is sent, the sending side shut, and what still arrives is read and dropped for a short while before the
  connection is closed (a lingering close, so that the client reads its answer rather than a reset); a head
  asking to switch protocols is answered as an ordinary request (llhttp stops after it: its body, framed as
  declared, and what follows are parsed on as HTTP), since the gateway never switches;
- an answer must be taken by the client: the next request waits while the answers are not, and a client that
  takes nothing for `server.timeouts.send_seconds` is cut off; a graceful stop finishes the answer in progress
  and serves nothing after it;
- an answer carries `Date`, the configured `Server` field (none by default) and `Connection` as its framing
  needs; a body the length of which is unknown goes chunked (HTTP/1.1) or until the close (HTTP/1.0).

The handler (`handler.PublicHandler`) gets a `PublicRequest` and returns a `Reply` (a whole answer), or streams one
through `PublicRequest.stream`. `PublicServer` is the protocol factory aiohttp's runner and sites serve (it has
the `pre_shutdown` / `shutdown` of aiohttp's `web.Server`: graceful drain on stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from email.utils import formatdate
from http import HTTPStatus
from typing import TYPE_CHECKING, Any, Final, cast

import httptools
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy

from ..jsonutil import dumps
from ..observability.logging import get_logger
from ..timer import LazyTimer
from .fields import breaks_only_at_line_ends

if TYPE_CHECKING:
    from .listener import ListenerLimits

log = get_logger("listener")

MAX_TARGET: Final = 8190
MAX_FIELD: Final = 8190
MAX_FIELDS: Final = 128
MAX_PENDING_HEAD: Final = 64 * 1024
"""An unfinished head may grow by at most this much after the read in which it began (431 beyond): the bound on
what llhttp's binding buffers of a field before the field limit (`MAX_FIELD`) can judge it."""
_PAUSE_AT: Final = 256 * 1024
"""Bytes of a request body buffered unread before the connection stops reading."""
_MAX_QUEUED: Final = 16
"""Requests parsed ahead of the one being answered before the connection stops reading."""
_SINGLETONS: Final = frozenset({"content-length", "content-location", "content-range", "content-type", "etag", "host",
                                "max-forwards", "server", "transfer-encoding", "user-agent"})
_EMPTY_BODY_STATUS: Final = frozenset({204, 304})
_SET_BY_SERVER: Final = frozenset({"content-length", "transfer-encoding", "connection", "date", "server"})
"""Fields of an answer the server writes itself, from the answer's framing and its own settings."""
_REASONS: Final = {s.value: s.phrase for s in HTTPStatus}
_TIMER_SLACK: Final = 0.001
"""A deadline this close is due: the loop's clock counts milliseconds, and a timer may fire just before it."""


class HeadRefused(Exception):
    """A request head the server does not accept: answered with `status` in JSON, then the connection closes."""

    def __init__(self, status: int, kind: str) -> None:
        super().__init__(kind)
        self.status = status
        self.kind = kind


class Reply:
    """A whole answer: status, header fields, body; `close`: the connection ends after it."""

    __slots__ = ("body", "close", "headers", "reason", "status")

    def __init__(self, status: int, headers: CIMultiDict[str] | None = None, body: bytes = b"", *,
                 reason: str | None = None, close: bool = False) -> None:
        self.status = status
        self.reason = reason
        self.headers: CIMultiDict[str] = headers if headers is not None else CIMultiDict()
        self.body = body
        self.close = close

    @classmethod
    def of(cls, response: web.Response) -> Reply:
        """An aiohttp `web.Response` built by code shared with the other listeners (gateway.errors), as a Reply."""
        body = response.body
        assert isinstance(body, bytes | bytearray), "only whole bodies are answers"
        return cls(response.status, CIMultiDict(response.headers), bytes(body), reason=response.reason,
                   close=response.keep_alive is False)

    @classmethod
    def json(cls, status: int, body: Any, headers: Iterable[tuple[str, str]] = (), *, close: bool = False) -> Reply:
        """A JSON answer (`Content-Type: application/json`)."""
        fields: CIMultiDict[str] = CIMultiDict(headers)
        fields["Content-Type"] = "application/json"
        return cls(status, fields, dumps(body), close=close)


class BodyReader:
    """A request body as it arrives (the handler reads it with `readany`, as from aiohttp's StreamReader)."""

    __slots__ = ("_chunks", "_conn", "_eof", "_error", "_size", "_waiter")

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._eof = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None

    def feed(self, data: bytes) -> None:
        self._chunks.append(data)
        self._size += len(data)
        if self._size >= _PAUSE_AT:
            self._conn.pause_reading()
        self._wake()

    def feed_eof(self) -> None:
        self._eof = True
        self._wake()

    def fail(self, error: BaseException) -> None:
        if not self._eof:
            self._error = error
            self._wake()

    def is_eof(self) -> bool:
        """The whole body has been received (it may still be buffered here)."""
        return self._eof

    @property
    def buffered(self) -> int:
        """Bytes received and not yet read."""
        return self._size

    async def readany(self) -> bytes:
        """The next part of the body; b"" at its end. Raises ConnectionError once the body is known to be broken
        (malformed, or the client went away mid-body), even with parts of it still buffered: none of a broken
        body is handed on after that is known."""
        while not self._chunks:
            if self._eof:
                return b""
            if self._error is not None:
                raise self._error
            self._waiter = self._conn.loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None:
            raise self._error
        chunk = self._chunks.popleft()
        self._size -= len(chunk)
        self._conn.resume_reading()
        return chunk

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Target:
    """The request target as the handler reads it (`rel_url` in aiohttp's terms): path, and path with query."""

    __slots__ = ("raw_path", "raw_path_qs")

    def __init__(self, raw_path: str, raw_path_qs: str) -> None:
        self.raw_path = raw_path
        self.raw_path_qs = raw_path_qs


class _InterimWriter:
    """What the handler may send before its answer: `100 Continue` (proxy.body_chunks)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: _Connection) -> None:
        self._conn = conn

    async def write(self, data: bytes) -> None:
        self._conn.write(data)


class PublicRequest:
    """One request on the public listener, with what the handler reads of it."""

    __slots__ = ("_conn", "body_exists", "close", "content", "content_length", "headers", "keep_alive", "method",
                 "rel_url", "remote", "scheme", "streamed", "version", "writer")

    def __init__(self, conn: _Connection, method: str, version: tuple[int, int], target: _Target,
                 headers: CIMultiDictProxy[str], content_length: int | None, chunked: bool, keep_alive: bool) -> None:
        self._conn = conn
        self.method = method
        self.version = version
        self.rel_url = target
        self.headers = headers
        self.content_length = content_length
        self.body_exists = chunked or bool(content_length)
        self.content = BodyReader(conn)
        if not self.body_exists:
            self.content.feed_eof()
        self.keep_alive = keep_alive
        self.remote = conn.peer
        self.scheme = "http"
        self.writer = _InterimWriter(conn)
        self.streamed = 0
        """The status of an answer streamed (`stream`); 0: none, the handler returns a `Reply`."""
        self.close = False
        """The streamed answer ends the connection (it said so, or its end is the close)."""

    @property
    def transport(self) -> asyncio.Transport | None:
        """The client connection (None once it is closed)."""
        return self._conn.transport

    async def stream(self, status: int, reason: str | None, headers: CIMultiDict[str], length: int | None,
                     chunks: Callable[[], Awaitable[bytes]]) -> None:
        """Send an answer whose body comes in parts (`chunks()` until b""): with `Content-Length` when `length` is
        known, else chunked (HTTP/1.1) or until the close (HTTP/1.0). Each write waits at most
        `server.timeouts.send_seconds` for the client to take it (TimeoutError: the caller closes the connection)."""
        self.streamed = status
        await self._conn.stream(self, status, reason, headers, length, chunks)


Handler = Callable[[PublicRequest], Awaitable["Reply | None"]]


class _Connection(asyncio.Protocol):
    """One client connection."""

    __slots__ = ("_begun", "_body", "_closing", "_current", "_drain", "_head_bytes", "_head_deadline", "_headers",
                 "_idle_deadline", "_in_head", "_lingering", "_paused", "_queue", "_raw_url", "_refusal", "_server",
                 "_slot", "_stopped", "_synthetic", "_task", "_timer", "_upgrade_framing", "loop", "parser", "peer",
                 "transport")

    def __init__(self, server: PublicServer) -> None:
        self._server = server
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.peer: str | None = None
        self.parser = httptools.HttpRequestParser(self)
        self._slot: str | None = None
        self._raw_url = b""
        self._headers: list[tuple[str, str]] = []
        self._head_bytes = 0
        """Bytes received in reads wholly inside the unfinished head (`MAX_PENDING_HEAD`)."""
        self._begun = False
        """A head began in the read being parsed."""
        self._in_head = False
        self._refusal: Reply | None = None
        """A head refused behind pipelined requests: answered after them, then the connection closes."""
        self._body: BodyReader | None = None
        """The body of the request being parsed."""
        self._queue: deque[PublicRequest] = deque()
        self._current: PublicRequest | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        """No request after the ones queued is served (a stop, an upgrade, a refusal, `Connection: close`)."""
        self._stopped = False
        """Nothing more is parsed on this connection (a refused head)."""
        self._upgrade_framing: bytes | None = None
        """The body framing of a request whose head asked to switch protocols (see data_received)."""
        self._synthetic = False
        """The parser is reading the framing head written for such a body: its callbacks are not a request."""
        self._lingering = False
        self._paused = False
        self._drain: asyncio.Future[None] | None = None
        self._head_deadline = math.inf
        """When the head being received (or owed: a new connection's first) is too late (the header timeout)."""
        self._idle_deadline = math.inf
        """When the connection, idle between requests, is closed (the keep-alive timeout)."""
        limits = server.limits
        self._timer = LazyTimer(self.loop, min(limits.header_timeout, limits.keepalive), self._on_timer)
        """The connection's one timer, for both deadlines."""

    # --- connection events --------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not registered subclasses
        limits = self._server.limits
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) and peer else None
        self._server.connections[self] = None
        # A new connection owes its first request head within the timeout (nginx's client_header_timeout).
        self._head_deadline = self.loop.time() + limits.header_timeout
        self._timer.arm(self._head_deadline)
        address = self.peer
        if address is None or limits.proxies.trusts(address):
            return
        if not limits.connections.acquire(address):
            log.warning("client_connection_refused", peer=address, limit=limits.connections.limit)
            self._closing = True
            self.transport.abort()
            return
        self._slot = address

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_timers()
        if self._slot is not None:
            self._server.limits.connections.release(self._slot)
            self._slot = None
        self._server.connections.pop(self, None)
        self._closing = True
        self.transport = None
        gone = ConnectionResetError("the client closed the connection")
        if self._body is not None:
            self._body.fail(gone)
        for request in self._queue:
            request.content.fail(gone)
        if self._current is not None:
            self._current.content.fail(gone)
        if self._drain is not None and not self._drain.done():
            self._drain.set_exception(gone)
            self._drain.exception()
        if self._task is None:
            self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._stopped or self.transport is None:
            return  # bytes after the last request served on this connection: read and dropped
        was_in_head = self._in_head
        self._begun = False
        while True:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade as exc:
                # llhttp stops after a head asking to switch protocols. The gateway never switches (Upgrade and
                # Connection are hop-by-hop: nothing of them goes upstream), so what follows the head — its body,
                # framed as it declared, and any request after it — is parsed on as HTTP by a new parser.
                data = data[exc.args[0]:]
                self.parser = httptools.HttpRequestParser(self)
                if self._upgrade_framing is not None:
                    self._synthetic = True  # the head below only frames the body for the parser: not a request
                    framing, self._upgrade_framing = self._upgrade_framing, None
                    self.parser.feed_data(b"PUT / HTTP/1.1\r\nHost: x\r\n" + framing + b"\r\n")
                if data:
                    continue
            except HeadRefused as exc:
                self._refuse_head(exc.status, exc.kind)
            except httptools.HttpParserError as exc:
                cause = exc.__context__
                if isinstance(cause, HeadRefused):
                    self._refuse_head(cause.status, cause.kind)
                else:
                    self._refuse_head(400, type(exc).__name__)
            else:
                if self._in_head and was_in_head and not self._begun:
                    # A read that began inside a head and did not finish it: llhttp's binding buffers an unfinished
                    # field whole before the field limit can see it, so a head that keeps arriving is bounded here
                    # (the read in which it began is not counted: at most one read more is buffered).
                    self._head_bytes += len(data)
                    if self._head_bytes > MAX_PENDING_HEAD:
                        self._refuse_head(431, "LineTooLong")
            return

    def eof_received(self) -> bool | None:
        """The client will send nothing more: a body still expected is broken off; requests already received are
        still answered (the sending side stays open for that), then the connection closes."""
        if self._body is not None:
            self._body.fail(ConnectionResetError("the client closed the connection mid-body"))
        self._closing = True
        if self._task is not None or self._queue:
            return True
        return None  # nothing to answer: the transport closes

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.loop.create_future()

    def resume_writing(self) -> None:
        if self._drain is not None and not self._drain.done():
            self._drain.set_result(None)

    def pause_reading(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Read again once neither reason to pause holds: fewer than `_MAX_QUEUED` requests waiting, and the body
        being received (if any) under `_PAUSE_AT` buffered."""
        if (self._paused and self.transport is not None and len(self._queue) < _MAX_QUEUED
                and (self._body is None or self._body.buffered < _PAUSE_AT)):
            self._paused = False
            self.transport.resume_reading()

    # --- llhttp callbacks -----------------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._synthetic:
            return
        # A head begins: the keep-alive timer gives way to the header timer (bytes that begin no head, such as
        # the empty lines llhttp skips between requests, leave the keep-alive timer running).
        self._idle_deadline = math.inf
        self._begun = True
        self._in_head = True
        self._raw_url = b""
        self._headers = []
        self._head_bytes = 0
        if self._head_deadline == math.inf:
            self._head_deadline = self.loop.time() + self._server.limits.header_timeout
            self._timer.arm(self._head_deadline)

    def on_url(self, url: bytes) -> None:
        if self._synthetic:
            return
        self._raw_url += url
        if len(self._raw_url) > MAX_TARGET:
            raise HeadRefused(431, "LineTooLong")

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer fields: not read
        if len(name) + len(value) > MAX_FIELD:
            raise HeadRefused(431, "LineTooLong")
        raw = value.rstrip(b" \t")
        if b"\x00" in raw:
            raise HeadRefused(400, "InvalidHeader")
        self._headers.append((name.decode("utf-8", "surrogateescape"), raw.decode("utf-8", "surrogateescape")))
        if len(self._headers) > MAX_FIELDS:
            raise HeadRefused(400, "BadHttpMessage")

    def on_headers_complete(self) -> None:
        if self._synthetic:
            return
        self._in_head = False
        self._head_deadline = math.inf
        parser = self.parser
        version = parser.get_http_version()
        if version not in ("1.1", "1.0"):
            raise HeadRefused(505, "HttpVersionNotSupported")
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise HeadRefused(405, "CONNECT")
        seen: set[str] = set()
        for name, _ in self._headers:
            low = name.lower()
            if low in _SINGLETONS:
                if low in seen:
                    raise HeadRefused(400, "BadHttpMessage")
                seen.add(low)
            elif low == "sec-websocket-key1":
                raise HeadRefused(400, "InvalidHeader")
        if version == "1.1" and "host" not in seen:
            raise HeadRefused(400, "BadHttpMessage")
        target = _parse_target(self._raw_url)
        headers = CIMultiDictProxy(CIMultiDict(self._headers))
        length: int | None = None
        raw_length = headers.get("Content-Length")
        if raw_length is not None:
            length = int(raw_length)  # llhttp accepted it: digits only
        coding = headers.get("Transfer-Encoding")  # llhttp judged its framing; chunked: its last coding is
        chunked = coding is not None and coding.rpartition(",")[2].strip().lower() == "chunked"
        if parser.should_upgrade() and "transfer-encoding" in seen and (not chunked or length is not None):
            # llhttp does not judge the framing of a head that asks to switch protocols: what it refuses in any
            # other head (a body coding that does not end in chunked, or both framings) is refused here.
            raise HeadRefused(400, "BadHttpMessage")
        request = PublicRequest(self, method, (1, 1) if version == "1.1" else (1, 0), target, headers, length, chunked,
                                parser.should_keep_alive())
        self._body = request.content if request.body_exists else None
        if parser.should_upgrade() and request.body_exists:
            # llhttp will stop after this head without reading the body: data_received has it read as declared.
            self._upgrade_framing = b"Transfer-Encoding: chunked\r\n" if chunked else b"Content-Length: %d\r\n" % (
                length or 0)
        self._queue.append(request)
        if len(self._queue) >= _MAX_QUEUED:
            self.pause_reading()
        if self._task is None:
            self._task = self.loop.create_task(self._serve())

    def on_body(self, body: bytes) -> None:
        if self._body is not None:
            self._body.feed(body)

    def on_message_complete(self) -> None:
        if self._upgrade_framing is not None:
            return  # the head of a body llhttp skips: the body is read after it (data_received)
        self._synthetic = False
        if self._body is not None:
            self._body.feed_eof()
            self._body = None

    # --- answering --------------------------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the queued requests in order, then wait for the next (keep-alive) or close."""
        handler = self._server.handler
        first = True
        try:
            while self._queue and self.transport is not None:
                if not first:
                    # A pipelined request waits two turns of the loop, as it would behind a framework's own steps:
                    # what arrived meanwhile is seen first (an upstream closing the connection it has just answered
                    # on is then not picked for this request).
                    await asyncio.sleep(0)
                    await asyncio.sleep(0)
                first = False
                request = self._current = self._queue.popleft()
                self.resume_reading()
                self._server.requests_count += 1
                try:
                    reply = await handler(request)
                except Exception:
                    if request.streamed:
                        # Failed after its head went out (the handler logged it): the answer's framing is broken, so
                        # the only honest signal left is to end the connection.
                        reply = None
                        request.close = True
                    else:
                        log.exception("unhandled_error", method=request.method)
                        reply = Reply.json(500, {"error": "server_error", "error_description": "internal error"},
                                           close=True)
                self._current = None
                complete = request.content.is_eof()
                if request.streamed:
                    close = request.close
                else:
                    close = (reply is None or reply.close or not complete or not request.keep_alive
                             or (self._closing and not self._queue and self._refusal is None))
                    if reply is not None:
                        close = self._send(request, reply, close)
                if close:
                    self._end(lingering=not complete)
                    return
                try:
                    # A client that does not take its answers stops getting more (its requests wait, then reading
                    # pauses: TCP pushes back), and one that takes none for `send` seconds is cut off.
                    await self._drained(self._server.limits.send)
                except TimeoutError:
                    log.info("send_timeout", peer=self.peer)
                    self.abort()
                    return
                except ConnectionError:
                    return
            if self._refusal is not None:
                self._send(None, self._refusal, True)
                self._end(lingering=True)
                return
        finally:
            self._task = None
            self._server.answered()
        if self.transport is None:
            return
        if self._closing:
            self._end(lingering=False)
            return
        if self.transport.get_write_buffer_size():
            # Answers the client has not taken yet: it gets `send` seconds to take some, as for every write.
            self.loop.call_later(self._server.limits.send, self._watch_sending,
                                 self.transport.get_write_buffer_size())
        if not self._in_head:
            self._idle_deadline = self.loop.time() + self._server.limits.keepalive
            self._timer.arm(self._idle_deadline)

    def _head(self, request: PublicRequest | None, status: int, reason: str | None, headers: CIMultiDict[str],
              length: int | None, close: bool, bodiless: bool) -> tuple[bytes, bool, bool]:
        """The status line and header block; whether the body goes chunked, and whether the connection closes
        after it (`close`, or an HTTP/1.0 body without a length)."""
        version11 = request is None or request.version == (1, 1)
        chunked = False
        fields = [f"HTTP/1.1 {status} {reason or _REASONS.get(status, 'Unknown')}\r\n"]
        for name, value in headers.items():
            if name.lower() not in _SET_BY_SERVER:
                fields.append(f"{name}: {value}\r\n")
        if _no_body(status):
            pass
        elif length is not None:
            fields.append(f"Content-Length: {length}\r\n")
        elif bodiless:
            pass
        elif version11:
            fields.append("Transfer-Encoding: chunked\r\n")
            chunked = True
        else:
            close = True  # HTTP/1.0: the body ends at the close
        fields.append(f"Date: {_http_date()}\r\n")
        server = self._server.limits.server_header
        if server:
            fields.append(f"Server: {server}\r\n")
        if close:
            if version11:
                fields.append("Connection: close\r\n")
        elif not version11:
            fields.append("Connection: keep-alive\r\n")
        fields.append("\r\n")
        text = "".join(fields)
        head = text.encode("utf-8", "surrogateescape")
        if not breaks_only_at_line_ends(text, len(fields)):
            # SECURITY: a line break inside a field (a lone CR or LF, or a whole CRLF that would begin a field of
            # its own) would split the answer — never from llhttp-parsed upstream fields or the gateway's own, so
            # this is the last guard: the answer is refused whole rather than sent.
            raise ValueError("a response header field holds a line break")
        return head, chunked, close

    def _send(self, request: PublicRequest | None, reply: Reply, close: bool) -> bool:
        """Write a whole answer; whether the connection ends after it."""
        body = reply.body
        bodiless = request is not None and request.method == "HEAD"
        if _no_body(reply.status):
            body, bodiless = b"", True
        try:
            head, _, close = self._head(request, reply.status, reply.reason, reply.headers, len(body), close, bodiless)
        except ValueError:
            return self._send_unrelayable(request, reply.status, bodiless)
        self.write(head if bodiless else head + body)
        return close

    def _send_unrelayable(self, request: PublicRequest | None, status: int, bodiless: bool) -> bool:
        """An answer whose head the server refused to write (a line break or a non-text character in a field):
        a 502 in its place, and the connection ends after it."""
        log.error("response_refused", status=status, reason="a header field holds a line break or is not text")
        reply = Reply.json(502, {"error": "bad_gateway", "error_description": "upstream answer not relayable"},
                           close=True)
        head, _, _ = self._head(request, 502, None, reply.headers, len(reply.body), True, bodiless)
        self.write(head if bodiless else head + reply.body)
        return True

    async def stream(self, request: PublicRequest, status: int, reason: str | None, headers: CIMultiDict[str],
                     length: int | None, chunks: Callable[[], Awaitable[bytes]]) -> None:
        send_timeout = self._server.limits.send
        bodiless = request.method == "HEAD" or _no_body(status)
        close = not request.keep_alive or not request.content.is_eof() or (self._closing and not self._queue)
        try:
            head, chunked, request.close = self._head(request, status, reason, headers, length, close, bodiless)
        except ValueError:  # nothing of this answer is written: the same 502 as for a whole answer (`_send`)
            request.streamed = 502
            request.close = self._send_unrelayable(request, status, request.method == "HEAD")
            return
        self.write(head)
        await self._drained(send_timeout)
        while chunk := await chunks():
            if bodiless:
                continue
            self.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            await self._drained(send_timeout)
        if chunked:
            self.write(b"0\r\n\r\n")

    async def _drained(self, limit_seconds: float) -> None:
        drain = self._drain
        if drain is None or drain.done():
            if self.transport is None:
                raise ConnectionResetError("the client closed the connection")
            return
        async with asyncio.timeout(limit_seconds):
            await asyncio.shield(drain)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """A graceful stop: the request being answered is finished (its answer says `Connection: close`); nothing
        after it is parsed or served, and an idle connection closes now."""
        self._closing = True
        self._stopped = True
        self._queue.clear()
        self._refusal = None
        if self._task is None and self.transport is not None:
            self._stop_timers()
            self.transport.close()

    def abort(self) -> None:
        """Close now, whatever is in progress."""
        self._closing = True
        if self.transport is not None:
            self.transport.abort()

    @property
    def busy(self) -> bool:
        return self._task is not None

    def _end(self, *, lingering: bool) -> None:
        """No more requests on this connection: close it, after a lingering read when the client may still be
        sending (a body not read to its end)."""
        self._closing = True
        self._stop_timers()
        transport = self.transport
        if transport is None:
            return
        if transport.get_write_buffer_size():
            # What is still to send gets `send` seconds to be taken, as every answer does; then the connection is
            # cut.
            self.loop.call_later(self._server.limits.send, self._watch_sending, transport.get_write_buffer_size())
        if not lingering or not transport.can_write_eof():
            transport.close()
            return
        self._lingering = True
        if self._paused:
            self._paused = False
            transport.resume_reading()  # what still arrives is read and dropped
        try:
            transport.write_eof()
        except OSError:
            transport.close()
            return
        linger = min(self._server.limits.body_idle, 10.0)
        self.loop.call_later(linger, transport.close)

    def _refuse_head(self, status: int, kind: str) -> None:
        """A head the server does not accept: the gateway's JSON error, one log line, and the connection closes
        after the answers already due (the parser's message is not logged: it quotes the offending line, which
        may hold a credential)."""
        log.warning("http_refused", status=status, error=kind, peer=self.peer)
        error = {405: "method_not_allowed"}.get(status, "server_error" if status >= 500 and status != 505
                                                 else "invalid_request")
        description = {400: "malformed HTTP request", 405: "CONNECT is not served",
                       431: "request line or header field too large",
                       505: "only HTTP/1.0 and HTTP/1.1 are served"}.get(status, _REASONS.get(status, "").lower())
        self._stopped = True  # nothing after this is parsed
        self._closing = True
        if self._body is not None:  # broken off mid-body: the handler reading it learns so now
            self._body.fail(ConnectionAbortedError("malformed request body"))
            self._body = None
        self._in_head = False
        self._head_deadline = math.inf
        refusal = Reply.json(status, {"error": error, "error_description": description},
                             [("Cache-Control", "no-store")], close=True)
        if self._task is not None or self._queue:
            self._refusal = refusal  # answers due before it first (a pipelined batch); then the connection closes
            return
        self._send(None, refusal, True)
        self._end(lingering=True)

    # --- timers -------------------------------------------------------------------------------------------------

    def _on_timer(self, now: float) -> float | None:
        """The timer's look: act on a deadline that has passed; the next one to look at."""
        if self.transport is None:
            return None
        now += _TIMER_SLACK
        if now >= self._head_deadline:
            self._head_deadline = math.inf
            self._headers_too_slow()
        elif now >= self._idle_deadline:
            self._idle_deadline = math.inf
            self._idle_too_long()
        if self.transport is None:
            return None
        next_deadline = min(self._head_deadline, self._idle_deadline)
        return next_deadline if next_deadline < math.inf else None

    def _headers_too_slow(self) -> None:
        if self.transport is None or (self._closing and not self._in_head):
            return
        if self._task is not None:
            # A head waiting behind a request in progress: judged once that one is answered.
            self._head_deadline = self.loop.time() + self._server.limits.header_timeout
            return
        log.info("header_timeout", peer=self._slot)
        self._closing = True
        self.transport.close()

    def _idle_too_long(self) -> None:
        if self._task is None and not self._in_head and self.transport is not None:
            self._end(lingering=False)

    def _watch_sending(self, pending: int) -> None:
        """Answers still unsent (`pending` bytes past the kernel's buffer) `send` seconds after the last one was
        written: cut off unless the client took some of them meanwhile."""
        transport = self.transport
        if transport is None:
            return
        left = transport.get_write_buffer_size()
        if not left:
            return
        if left >= pending:
            log.info("send_timeout", peer=self.peer)
            self.abort()
            return
        self.loop.call_later(self._server.limits.send, self._watch_sending, left)

    def _stop_timers(self) -> None:
        self._head_deadline = self._idle_deadline = math.inf
        self._timer.cancel()


def _no_body(status: int) -> bool:
    """An answer with this status has no body, whatever is sent with it (RFC 9110 §6.4.1: 1xx, 204, 304)."""
    return status in _EMPTY_BODY_STATUS or 100 <= status < 200


def _parse_target(raw: bytes) -> _Target:
    """The request target in origin form (`/path?query`), absolute form (`http://host/path`, whose path is used)
    or asterisk form (`*`); anything else is refused. A fragment is not part of the path."""
    text = raw.decode("utf-8", "surrogateescape")
    if text.startswith("/"):
        path_qs = text.split("#", 1)[0]
    elif text == "*":
        path_qs = "*"
    elif "://" in text:
        try:
            url = httptools.parse_url(raw)
        except httptools.HttpParserInvalidURLError:
            raise HeadRefused(400, "InvalidURLError") from None
        path = (url.path or b"/").decode("utf-8", "surrogateescape")
        path_qs = path + ("?" + url.query.decode("utf-8", "surrogateescape") if url.query is not None else "")
    else:
        raise HeadRefused(400, "InvalidURLError")
    path = path_qs.split("?", 1)[0]
    return _Target(path, path_qs)


_date: list[Any] = [0, ""]


def _http_date() -> str:
    """The `Date` field, formatted once a second."""
    now = int(time.time())
    if _date[0] != now:
        _date[0] = now
        _date[1] = formatdate(now, usegmt=True)
    return cast(str, _date[1])


class PublicServer:
    """The protocol factory of the public listener, with the graceful stop aiohttp's runner drives."""

    def __init__(self, handler: Handler, limits: ListenerLimits, loop: asyncio.AbstractEventLoop) -> None:
        self.handler = handler
        self.limits = limits
        self.loop = loop
        self.connections: dict[_Connection, None] = {}
        self.requests_count = 0
        self._answered = asyncio.Event()

    def __call__(self) -> _Connection:
        return _Connection(self)

    def pre_shutdown(self) -> None:
        """Stop serving new requests: idle connections close now, busy ones after their answer."""
        for conn in list(self.connections):
            conn.close()

    def answered(self) -> None:
        """A connection has answered every request it had (`shutdown` waits for all of them)."""
        self._answered.set()

    async def shutdown(self, grace: float | None = None) -> None:
        """Wait (at most `grace` seconds) for the answers in progress, then close every connection."""
        deadline = self.loop.time() + (grace or 0.0)
        while any(conn.busy for conn in self.connections):
            self._answered.clear()
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._answered.wait()
        for conn in list(self.connections):
            conn.abort()
        self.connections.clear()
