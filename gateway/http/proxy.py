"""The forwarder: the request as the gateway frames it, error mapping and the relay, over the upstream pool.

Request buffering (nginx's default): the body is read in full, bounded in size and time, before an upstream
connection is taken, and goes upstream as exactly those bytes with `Content-Length` — a stalled body holds no
upstream connection, and the backend never frames a body differently from what the checks could read.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Final, Protocol

from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from ..addresses import ProxyTrust
from ..config import UpstreamSettings
from ..errors import GatewayError, bad_gateway, body_incomplete, body_timeout, gateway_timeout, payload_too_large
from ..observability.metrics import Metrics
from .inbound import HOP_BY_HOP, INTERACTION_ID, BodyLimits, InboundRules, connection_tokens
from .server import PublicRequest, Reply
from .upstream import UpstreamError, UpstreamPool, UpstreamResponse, header_lines

__all__ = ["INTERACTION_ID", "Forwarder", "body_chunks", "read_body"]

_HOST: Final = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")
"""A host name, IPv4 or bracketed IPv6 address, and an optional port: what `X-Forwarded-Host` may carry."""
_RESPONSE_SKIP: Final = frozenset({"server", "date", "content-length"})


class _Content(Protocol):
    def is_eof(self) -> bool: ...
    async def readany(self) -> bytes: ...


class _Interim(Protocol):
    async def write(self, data: bytes, /) -> None: ...


class BodySource(Protocol):
    """What reading a request body needs of a request: the public listener's (`server.PublicRequest`) or an
    aiohttp request (the sandbox's)."""

    @property
    def content_length(self) -> int | None: ...
    @property
    def body_exists(self) -> bool: ...
    @property
    def version(self) -> tuple[int, int]: ...
    @property
    def headers(self) -> Mapping[str, str]: ...
    @property
    def content(self) -> _Content: ...
    @property
    def writer(self) -> _Interim: ...


def _has_body(request: BodySource, limits: BodyLimits) -> bool:
    """Whether a body follows the head: 413 at once when its declared length is past `max_bytes`."""
    if request.content_length is not None and request.content_length > limits.max_bytes:
        raise payload_too_large(limits.max_bytes)
    return request.body_exists


class _BodyRead:
    """One read of a request body under `limits`, part by part: 413 past `max_bytes`, 408 when it stalls or is
    too slow, 400 when it breaks off. `Expect: 100-continue` is answered at the first part wanted: now, and only
    now, the body is wanted. Nothing is decoded (the public listener does not decompress)."""

    __slots__ = ("_content", "_continue", "_deadline", "_limits", "_size", "_writer")

    def __init__(self, request: BodySource, limits: BodyLimits) -> None:
        self._continue = request.version >= (1, 1) and request.headers.get("Expect", "").lower() == "100-continue"
        # The body's total time starts at the first read that can wait (or at 100 Continue): before it, no read
        # waited. A body already all in never looks at the loop's clock (asyncio.get_running_loop() is a getpid
        # system call on Python 3.11).
        self._deadline: float | None = None
        self._limits = limits
        self._content = request.content
        self._size = 0
        if self._continue:
            self._writer = request.writer

    def _due(self) -> float:
        """When the read that starts now must be done: the sooner of the body's total time and the idle bound."""
        now = asyncio.get_running_loop().time()
        if self._deadline is None:
            self._deadline = now + self._limits.total
        return min(self._deadline, now + self._limits.idle)

    async def next(self) -> bytes:
        """The next part of the body as the client framed it; b"" at its end."""
        if self._continue:
            self._continue = False
            self._due()  # the body's total time starts with the invitation to send it
            await self._writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        content, limits = self._content, self._limits
        try:
            if content.is_eof():
                # The rest of the body is already here (most bodies arrive with their head): no read can wait, so
                # none needs a timer.
                chunk = await content.readany()
            else:  # the timer covers the read only, never the consumer's work between two parts
                async with asyncio.timeout_at(self._due()):
                    chunk = await content.readany()
        except TimeoutError:
            raise body_timeout() from None
        except (ConnectionError, HttpProcessingError):
            raise body_incomplete() from None
        self._size += len(chunk)
        if self._size > limits.max_bytes:
            raise payload_too_large(limits.max_bytes)
        return chunk


async def body_chunks(request: BodySource, limits: BodyLimits) -> AsyncIterator[bytes]:
    """The request body as the client framed it, chunk by chunk as it arrives, under the rules of `_BodyRead`."""
    if not _has_body(request, limits):
        return
    read = _BodyRead(request, limits)
    while chunk := await read.next():
        yield chunk


async def _started(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`chunks` with its first part already received (its errors raised now)."""
    first = await anext(chunks, b"")

    async def rest() -> AsyncIterator[bytes]:
        if first:
            yield first
        async for chunk in chunks:
            yield chunk

    return rest()


async def read_body(request: BodySource, limits: BodyLimits) -> bytes:
    """The whole request body (request buffering), under the rules of `_BodyRead` (read in a loop, not through
    `body_chunks`: an async generator per request costs the loop's generator hooks for nothing)."""
    if not _has_body(request, limits):  # most requests (a GET): nothing to read
        return b""
    read = _BodyRead(request, limits)
    parts = []
    while chunk := await read.next():
        parts.append(chunk)
    return b"".join(parts)


class Forwarder:
    """Sends a request upstream over the pooled `UpstreamPool` and streams the answer back."""

    def __init__(self, settings: UpstreamSettings, metrics: Metrics, rules: InboundRules, proxies: ProxyTrust) -> None:
        self._settings = settings
        self._rules = rules
        self._proxies = proxies
        self._metrics = metrics
        self._pool: UpstreamPool | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        s = self._settings
        self._pool = UpstreamPool(
            s.url,
            max_connections=s.pool.max_connections,
            keepalive_seconds=s.pool.keepalive_seconds,
            connect_timeout=s.timeouts.connect,
            read_timeout=s.timeouts.read,
            total_timeout=s.timeouts.total,
        )
        self._pool.start()

    async def close(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    def upstream_headers(
        self, request: PublicRequest, interaction_id: str, request_id: str, extra: Mapping[str, str] | None
    ) -> str:
        """The request's header lines for the upstream: cleaned (inbound.InboundRules), with X-Forwarded-* and
        ids set by us. X-Forwarded-For keeps the client's entries only when its peer is a trusted proxy."""
        lines = self._rules.upstream_headers(request.headers.items(), extra)
        peer = request.remote or "unknown"
        prior = request.headers.getall("X-Forwarded-For", ()) if self._proxies.trusts(request.remote) else ()
        lines.append(f"X-Forwarded-For: {', '.join([*prior, peer])}\r\n")
        lines.append(f"X-Forwarded-Proto: {request.scheme}\r\n")
        host = request.headers.get("Host", "")
        if _HOST.fullmatch(host):  # the Host the client sent, when it is one (never an absolute-form target's)
            lines.append(f"X-Forwarded-Host: {host}\r\n")
        lines.append(f"{INTERACTION_ID}: {interaction_id}\r\nX-Request-Id: {request_id}\r\n")
        if extra:
            lines.append(header_lines(extra.items()))
        return "".join(lines)

    async def forward(
        self,
        request: PublicRequest,
        *,
        interaction_id: str,
        request_id: str,
        route: str,
        body: bytes | AsyncIterator[bytes],
        before_relay: Callable[[int, float], Awaitable[None]],
        extra_headers: Mapping[str, str] | None = None,
        response_headers: Sequence[tuple[str, str]] | None = None,
    ) -> Reply | None:
        """Forward `request` with `body` and return the upstream's answer, with `response_headers` (the gateway's
        own, e.g. RateLimit fields) added to the upstream's and the interaction id set: whole when it is all in,
        else streamed to the client here (None is returned).

        `body` is the whole body (`read_body`: sent with its exact Content-Length), or, on a route that streams,
        `body_chunks` (sent as it arrives under the client's own framing: its Content-Length, else chunked).
        `before_relay(status, seconds)` gets the upstream's status and its time to the response headers as soon
        as they are in, before anything is relayed (the caller's record and its response hooks)."""
        streamed = not isinstance(body, bytes)
        pool = self._pool
        assert pool is not None, "Forwarder.start() not awaited"
        method = request.method
        started = time.perf_counter()
        try:
            if not isinstance(body, bytes):
                # The first part of a streamed body arrives before an upstream connection is taken: a body already
                # known to be broken (or stalled from the start) never opens a request upstream.
                body = await _started(body)
            header_block = self.upstream_headers(request, interaction_id, request_id, extra_headers)
            upstream = await pool.request(method, request.rel_url.raw_path_qs, header_block, body,
                                          content_length=request.content_length if streamed else None)
        except UpstreamError as exc:
            self._metrics.upstream_errors.labels(exc.kind).inc()
            if exc.kind == "timeout":
                raise gateway_timeout() from None
            if exc.kind == "connect":
                raise bad_gateway(f"upstream unavailable: {exc.detail}") from None
            raise bad_gateway("upstream closed the connection or answered invalid HTTP") from None
        except GatewayError as err:  # a streamed body broke a limit on its way: the upstream connection is closed
            if streamed and err.status == 413:
                self._metrics.upstream_errors.labels("body_too_large").inc()
            raise
        seconds = time.perf_counter() - started
        self._metrics.upstream_answered(route, method, seconds)
        try:
            await before_relay(upstream.status, seconds)
            return await self._relay(request, upstream, response_headers, interaction_id)
        finally:
            upstream.release()

    async def _relay(
        self, request: PublicRequest, upstream: UpstreamResponse, extra: Sequence[tuple[str, str]] | None,
        interaction_id: str,
    ) -> Reply | None:
        """The upstream's answer for the client: whole when it is all in, else streamed (None)."""
        headers: CIMultiDict[str] = CIMultiDict()
        length = None
        connection = []
        for name, value in upstream.raw_headers:
            low = name.lower()
            if low == "content-length":
                length = value
            elif low == "connection":
                connection.append(value)
            elif low not in _RESPONSE_SKIP and low not in HOP_BY_HOP:
                headers.add(name, value)
        if connection:  # fields the upstream named in Connection are hop-by-hop too
            for name in connection_tokens(connection):
                headers.popall(name, None)
        if extra:
            headers.extend(extra)
        headers[INTERACTION_ID] = interaction_id
        if upstream.complete and not upstream.bodiless:
            return Reply(upstream.status, headers, upstream.take_body(), reason=upstream.reason or None)
        try:
            await request.stream(upstream.status, upstream.reason or None, headers,
                                 int(length) if length is not None and length.isdigit() else None, upstream.read)
        except (TimeoutError, UpstreamError) as exc:
            # A client that stops reading holds nothing for long (each write has `send_seconds`); an upstream that
            # fails mid-body: the head is out, so the only honest signal left is to cut the connection.
            if isinstance(exc, UpstreamError):
                self._metrics.upstream_errors.labels(exc.kind).inc()
            request.close = True
            if request.transport is not None:
                request.transport.close()
        except ConnectionError:
            request.close = True  # the client went away mid-response; the upstream connection is dropped
        return None
