"""The forwarder: pooled upstream connections, streamed bodies, header hygiene, timeouts, one safe retry."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Final

import aiohttp
from aiohttp import hdrs, web
from multidict import CIMultiDict, CIMultiDictProxy

from .config import UpstreamSettings
from .context import RequestContext
from .errors import GatewayError, bad_gateway, gateway_timeout, payload_too_large
from .observability.metrics import Metrics

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
_REQUEST_DROP: Final = frozenset({"host", "x-forwarded-proto", "x-forwarded-host", "x-request-id"})
_RESPONSE_DROP: Final = frozenset({"server", "date"})
# Methods safe to send twice when the first attempt never reached the upstream (RFC 9110 §9.2.2).
_RETRY_ON_CONNECT_ERROR: Final = frozenset({"GET", "DELETE"})
_CHUNK = 64 * 1024

INTERACTION_ID: Final = "x-fapi-interaction-id"


def _connection_tokens(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    return {t.strip().lower() for v in headers.getall(hdrs.CONNECTION, ()) for t in v.split(",") if t.strip()}


def clean_headers(
    headers: CIMultiDictProxy[str] | CIMultiDict[str], drop: frozenset[str] = frozenset()
) -> CIMultiDict[str]:
    """Copy headers without hop-by-hop fields (including those named in Connection) and `drop`."""
    named = _connection_tokens(headers)
    out: CIMultiDict[str] = CIMultiDict()
    for name, value in headers.items():
        low = name.lower()
        if low in HOP_BY_HOP or low in named or low in drop:
            continue
        out.add(name, value)
    return out


async def read_body(request: web.Request, limit: int) -> bytes:
    """Read a whole request body, refusing with 413 as soon as it exceeds `limit` bytes."""
    if request.content_length is not None and request.content_length > limit:
        raise payload_too_large(limit)
    chunks = []
    size = 0
    async for chunk in request.content.iter_chunked(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise payload_too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _LimitedBody:
    """Streams the request body upstream, stopping once it crosses the limit."""

    __slots__ = ("exceeded", "limit", "request")

    def __init__(self, request: web.Request, limit: int) -> None:
        self.request = request
        self.limit = limit
        self.exceeded = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        size = 0
        async for chunk in self.request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > self.limit:
                self.exceeded = True
                raise payload_too_large(self.limit)
            yield chunk


class Forwarder:
    """Sends a request upstream over one shared, pooled ClientSession and streams the answer back."""

    def __init__(
        self,
        settings: UpstreamSettings,
        max_body_bytes: int,
        metrics: Metrics,
        strip_headers: frozenset[str] = frozenset(),
    ) -> None:
        self._base = settings.url
        # SECURITY: headers the gateway sets from verified facts are never taken from the client.
        self._drop = _REQUEST_DROP | {h.lower() for h in strip_headers}
        self._max_body = max_body_bytes
        self._metrics = metrics
        t = settings.timeouts
        self._timeout = aiohttp.ClientTimeout(total=t.total, connect=t.connect, sock_read=t.read)
        self._pool = settings.pool
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        """Open the connection pool."""
        connector = aiohttp.TCPConnector(
            limit=self._pool.max_connections,
            limit_per_host=0,
            keepalive_timeout=self._pool.keepalive_seconds,
            enable_cleanup_closed=False,
            use_dns_cache=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            auto_decompress=False,  # bytes pass through as the upstream encoded them
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=(hdrs.USER_AGENT, hdrs.ACCEPT_ENCODING, hdrs.ACCEPT, hdrs.CONTENT_TYPE),
        )

    async def close(self) -> None:
        """Close the pool."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def upstream_headers(
        self, request: web.Request, interaction_id: str, request_id: str, extra: Mapping[str, str] | None
    ) -> CIMultiDict[str]:
        """Request headers for the upstream: cleaned, with X-Forwarded-* and ids set by us."""
        headers = clean_headers(request.headers, self._drop)
        peer = request.remote or "unknown"
        prior = headers.popall(hdrs.X_FORWARDED_FOR, [])
        headers[hdrs.X_FORWARDED_FOR] = ", ".join([*prior, peer]) if prior else peer
        headers[hdrs.X_FORWARDED_PROTO] = request.scheme
        if request.host:
            headers[hdrs.X_FORWARDED_HOST] = request.host
        headers[INTERACTION_ID] = interaction_id
        headers["X-Request-Id"] = request_id
        if extra:
            for name, value in extra.items():
                headers[name] = value
        return headers

    async def forward(
        self,
        request: web.Request,
        ctx: RequestContext,
        *,
        body: bytes | None = None,
        extra_headers: Mapping[str, str] | None = None,
        before_relay: Callable[[int], Awaitable[None]] | None = None,
    ) -> web.StreamResponse:
        """Forward `request` (with `body` if already read, else streamed) and stream the response back."""
        assert self._session is not None, "Forwarder.start() not awaited"
        if request.content_length is not None and request.content_length > self._max_body:
            raise payload_too_large(self._max_body)
        headers = self.upstream_headers(request, ctx.interaction_id, ctx.request_id, extra_headers)
        url = self._base + request.rel_url.raw_path_qs
        method = request.method
        attempts = 2 if method in _RETRY_ON_CONNECT_ERROR else 1
        started = time.perf_counter()
        streamed: _LimitedBody | None = None
        for attempt in range(attempts):
            data: object
            if body is not None:
                data = body
                headers[hdrs.CONTENT_LENGTH] = str(len(body))
            elif request.body_exists:
                streamed = _LimitedBody(request, self._max_body)
                data = streamed.__aiter__()
            else:
                data = None
            try:
                upstream = await self._session.request(
                    method, url, headers=headers, data=data, allow_redirects=False, compress=None
                )
            except aiohttp.ClientConnectorError as exc:
                if attempt + 1 < attempts:
                    continue
                self._metrics.upstream_errors.labels("connect").inc()
                raise bad_gateway(f"upstream unavailable: {exc.strerror or 'connection failed'}") from None
            except TimeoutError:
                self._metrics.upstream_errors.labels("timeout").inc()
                raise gateway_timeout() from None
            except GatewayError:
                raise
            except aiohttp.ClientError:
                if streamed is not None and streamed.exceeded:
                    self._metrics.upstream_errors.labels("body_too_large").inc()
                    raise payload_too_large(self._max_body) from None
                self._metrics.upstream_errors.labels("protocol").inc()
                raise bad_gateway("upstream closed the connection or answered invalid HTTP") from None
            break
        ctx.upstream_seconds = time.perf_counter() - started
        self._metrics.upstream_duration.labels(ctx.route, method).observe(ctx.upstream_seconds)
        ctx.upstream_status = upstream.status
        try:
            if before_relay is not None:
                await before_relay(upstream.status)
            return await self._relay(request, upstream)
        finally:
            upstream.release()

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """Stream the upstream response to the client."""
        response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
        response.headers.extend(clean_headers(upstream.headers, _RESPONSE_DROP))
        if hdrs.CONTENT_LENGTH in upstream.headers:
            response.content_length = int(upstream.headers[hdrs.CONTENT_LENGTH])
        try:
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK):
                await response.write(chunk)
        except (TimeoutError, aiohttp.ClientError):
            # Headers are already sent: the only honest signal left is to cut the connection.
            self._metrics.upstream_errors.labels("timeout" if not upstream.content.is_eof() else "protocol").inc()
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
