"""The forwarder: header hygiene, body limits, error mapping and the relay, over the upstream pool (upstream.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Final

from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from .config import UpstreamSettings
from .context import RequestContext
from .errors import GatewayError, bad_gateway, gateway_timeout, payload_too_large
from .observability.metrics import Metrics
from .upstream import UpstreamError, UpstreamPool, UpstreamResponse, header_lines

INTERACTION_ID: Final = "x-fapi-interaction-id"

# RFC 9110 §7.6.1: connection-specific fields, plus the non-standard ones proxies meet in practice.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Set by the gateway for this hop, never copied from the client.
_REQUEST_DROP: Final = frozenset(
    {"host", "x-forwarded-proto", "x-forwarded-host", "x-request-id", INTERACTION_ID}
)
_FRAMING: Final = frozenset({"content-length", "expect"})
"""Set by the upstream client for the body it actually sends (Expect is answered by the gateway itself)."""
_RESPONSE_SKIP: Final = frozenset({"server", "date", "content-length"})
# Methods safe to send twice when the first attempt never reached the upstream (RFC 9110 §9.2.2).
_RETRY_ON_CONNECT_ERROR: Final = frozenset({"GET", "DELETE"})
_CHUNK = 64 * 1024



def _connection_tokens(values: Iterable[str]) -> set[str]:
    """The field names listed in Connection header values (hop-by-hop for this connection only)."""
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}


def body_incomplete() -> GatewayError:
    """400 when the client's body breaks off or is malformed (a short chunked body, a dropped connection)."""
    return GatewayError(400, "invalid_request", "request body incomplete or malformed", reason="body_incomplete")


async def _limited_chunks(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The request body as it arrives; 413 as soon as it crosses `limit`, 400 if it breaks off."""
    size = 0
    try:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise payload_too_large(limit)
            yield chunk
    except (ConnectionError, HttpProcessingError):
        raise body_incomplete() from None


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read a whole request body, refusing with 413 as soon as it exceeds `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large(limit)
    return b"".join([chunk async for chunk in _limited_chunks(request, limit)])


class _LimitedBody:
    """Streams the request body upstream, remembering whether it was cut off for crossing the limit."""

    __slots__ = ("exceeded", "limit", "request")

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in _limited_chunks(self.request, self.limit):
                yield chunk
        except GatewayError as err:
            self.exceeded = err.status == 413
            raise


class Forwarder:
    """Sends a request upstream over the pooled `UpstreamPool` and streams the answer back."""

    def __init__(
        self,
        settings: UpstreamSettings,
        max_body_bytes: int,
        metrics: Metrics,
        strip_headers: frozenset[str] = frozenset(),
    ) -> None:
        self._settings = settings
        # SECURITY: headers the gateway sets from verified facts are never taken from the client.
        self._drop = _REQUEST_DROP | _FRAMING | {h.lower() for h in strip_headers}
        self._max_body = max_body_bytes
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
        self, request: web.Request, interaction_id: str, request_id: str, extra: Mapping[str, str] | None
    ) -> str:
        """The request's header lines for the upstream: cleaned, with X-Forwarded-* and ids set by us."""
        headers = request.headers
        drop = self._drop
        if hdrs.CONNECTION in headers:
            drop = drop | _connection_tokens(headers.getall(hdrs.CONNECTION))
        if extra:
            drop = drop | {name.lower() for name in extra}
        lines = []
        prior = []
        for name, value in headers.items():
            low = name.lower()
            if low in HOP_BY_HOP or low in drop:
                continue
            if low == "x-forwarded-for":
                prior.append(value)
                continue
            lines.append(f"{name}: {value}\r\n")
        peer = request.remote or "unknown"
        lines.append(f"X-Forwarded-For: {', '.join([*prior, peer])}\r\n")
        lines.append(f"X-Forwarded-Proto: {request.scheme}\r\n")
        if request.host:
            lines.append(f"X-Forwarded-Host: {request.host}\r\n")
        lines.append(f"{INTERACTION_ID}: {interaction_id}\r\nX-Request-Id: {request_id}\r\n")
        if extra:
            lines.append(header_lines(extra.items()))
        return "".join(lines)

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        *,
        body: bytes | None = None,
        extra_headers: Mapping[str, str] | None = None,
        before_relay: Callable[[int], Awaitable[None]] | None = None,
        response_headers: Sequence[tuple[str, str]] | None = None,
    ) -> web.StreamResponse:
        """Forward `request` (with `body` if already read, else streamed) and stream the response back,
        with `response_headers` (the gateway's own, e.g. RateLimit fields) added to the upstream's."""
        pool = self._pool
        assert pool is not None, "Forwarder.start() not awaited"
        if request.content_length is not None and request.content_length > self._max_body:
            raise payload_too_large(self._max_body)
        method = request.method
        streamed: _LimitedBody | None = None
        data: bytes | AsyncIterator[bytes] | None = body
        if body is None and request.body_exists:
            streamed = _LimitedBody(request, self._max_body)
            data = streamed.__aiter__()
        started = time.perf_counter()
        try:
            header_block = self.upstream_headers(request, ctx.interaction_id, ctx.request_id, extra_headers)
            upstream = await pool.request(method, request.rel_url.raw_path_qs, header_block, data,
                                          content_length=request.content_length if streamed else None,
                                          retry_unsent=method in _RETRY_ON_CONNECT_ERROR and streamed is None)
        except UpstreamError as exc:
            self._metrics.upstream_errors.labels(exc.kind).inc()
            if exc.kind == "timeout":
                raise gateway_timeout() from None
            if exc.kind == "connect":
                raise bad_gateway(f"upstream unavailable: {exc.detail}") from None
            raise bad_gateway("upstream closed the connection or answered invalid HTTP") from None
        except GatewayError:
            if streamed is not None and streamed.exceeded:
                self._metrics.upstream_errors.labels("body_too_large").inc()
            raise
        ctx.upstream_seconds = time.perf_counter() - started
        self._metrics.upstream_answered(ctx.route, method, ctx.upstream_seconds)
        ctx.upstream_status = upstream.status
        try:
            if before_relay is not None:
                await before_relay(upstream.status)
            return await self._relay(request, upstream, response_headers)
        finally:
            upstream.release()

    async def _relay(
        self, request: web.Request, upstream: UpstreamResponse, extra: Sequence[tuple[str, str]] | None
    ) -> web.StreamResponse:
        """Send the upstream response to the client: in one write when it is all in, else streamed."""
        headers = []
        length = None
        connection = []
        for name, value in upstream.raw_headers:
            low = name.lower()
            if low == "content-length":
                length = value
            elif low == "connection":
                connection.append(value)
            elif low not in _RESPONSE_SKIP and low not in HOP_BY_HOP:
                headers.append((name, value))
        if connection:  # fields the upstream named in Connection are hop-by-hop too
            named = _connection_tokens(connection)
            headers = [(name, value) for name, value in headers if name.lower() not in named]
        if extra:
            headers.extend(extra)
        if upstream.complete and not upstream.bodiless:
            return web.Response(status=upstream.status, reason=upstream.reason or None,
                                body=upstream.take_body(), headers=CIMultiDict(headers))
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason or None,
                                      headers=CIMultiDict(headers))
        if length is not None and length.isdigit():
            response.content_length = int(length)
        try:
            await response.prepare(request)
            while chunk := await upstream.read():
                await response.write(chunk)
        except UpstreamError as exc:
            # Headers are already sent: the only honest signal left is to cut the connection.
            self._metrics.upstream_errors.labels(exc.kind).inc()
            if request.transport is not None:
                request.transport.close()
            return response
        except ConnectionError:
            return response  # the client went away mid-response; the upstream connection is dropped
        await response.write_eof()
        return response
