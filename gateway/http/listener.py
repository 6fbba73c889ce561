"""Every listener's connections: slow-header timeout, connections per client, JSON for malformed HTTP.

aiohttp's server parses requests (llhttp) and runs the app; what it does not do for a server facing the
internet, this module adds at the connection level, in one aiohttp `RequestHandler` subclass:

- a header read timeout: from the first byte of a request to the end of its headers (aiohttp waits forever
  once a byte has arrived), after which the connection is closed;
- a cap on the connections one peer address holds at once (a trusted proxy's connections are not counted
  here: behind it the app counts requests in flight per client address instead, `ClientSlots`);
- a request the parser refuses (bad framing, a control character in a header, a duplicate Content-Length)
  is answered with the gateway's JSON error and logged as one line, never a plain-text body or a traceback.

`ListenerRunner` is aiohttp's `AppRunner` serving through this handler, with the keep-alive timeout and no
request decompression; every listener (public, admin, sandbox) and the tests' in-process gateways use it. An app
carrying `ENTRY` (the public app) is served by the gateway's own server (`server.PublicServer`), which keeps the
same limits (`ListenerLimits`) itself.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from http import HTTPStatus
from typing import Any, Final, cast

import httptools
from aiohttp import hdrs, web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.http_parser import RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from aiohttp.web_protocol import RequestHandler, _ErrInfo
from aiohttp.web_request import BaseRequest
from multidict import CIMultiDict

from ..addresses import ProxyTrust
from ..config import ServerSettings
from ..jsonutil import dumps
from ..observability.logging import get_logger
from .server import Handler, PublicServer

log = get_logger("listener")

_VERSIONS: Final = frozenset({(1, 0), (1, 1)})


class ClientSlots:
    """How many connections (or requests) each client address holds, up to `limit` each."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: Counter[str] = Counter()

    def acquire(self, address: str) -> bool:
        """Take a slot for `address`; False when it already holds `limit`."""
        held = self._held[address]
        if held >= self.limit:
            return False
        self._held[address] = held + 1
        return True

    def release(self, address: str) -> None:
        """Give back a slot taken by `acquire`."""
        held = self._held[address] - 1
        if held > 0:
            self._held[address] = held
        else:
            del self._held[address]

    def held(self, address: str) -> int:
        """Slots `address` holds now."""
        return self._held.get(address, 0)


class ListenerLimits:
    """The connection-level limits of one listener (config `server.timeouts`, `server.max_connections_per_client`)."""

    __slots__ = ("body_idle", "body_total", "connections", "header_timeout", "keepalive", "proxies", "send",
                 "server_header")

    def __init__(self, server: ServerSettings, proxies: ProxyTrust) -> None:
        timeouts = server.timeouts
        self.header_timeout = timeouts.header_read_seconds
        self.keepalive = timeouts.keepalive_seconds
        self.body_idle = timeouts.body_idle_seconds
        """For the apps' own body reads (`proxy.read_body`): the longest pause, and the whole body's deadline."""
        self.body_total = timeouts.body_total_seconds
        self.send = timeouts.send_seconds
        """How long an answer may wait for the client to take it (the public listener's server)."""
        self.connections = ClientSlots(server.max_connections_per_client)
        self.proxies = proxies
        self.server_header = server.server_header
        """The `Server` field of every answer (`server.server_header`); empty: none (aiohttp would name itself
        and the Python version)."""

    def set_server_header(self, headers: CIMultiDict[str]) -> None:
        """Put the configured `Server` field in `headers`, or remove it: after aiohttp added its own."""
        if self.server_header:
            headers[hdrs.SERVER] = self.server_header
        else:
            headers.popall(hdrs.SERVER, None)

    async def on_response_prepare(self, _: web.Request, response: web.StreamResponse) -> None:
        """The app's signal (aiohttp sends it once the response's default headers are set, before they are
        written): every answer an app gives, its errors included."""
        self.set_server_header(response.headers)

    def handler_args(self) -> dict[str, Any]:
        """aiohttp `RequestHandler` settings: keep-alive, how long an unread body is drained before closing, and
        no decompression (SECURITY: the body checks read, the body forwarded and the body parsed upstream are
        the same bytes)."""
        return {"keepalive_timeout": self.keepalive, "lingering_time": min(self.body_idle, 10.0),
                "auto_decompress": False}


LIMITS = web.AppKey("listener_limits", ListenerLimits)
ENTRY: web.AppKey[Handler] = web.AppKey("listener_entry")
"""An app's one handler for every request, whatever its target (the public app's): `ListenerRunner` serves it
with the gateway's own HTTP/1.1 server (`server.PublicServer`) instead of aiohttp's."""


class _Heads:
    """Where request heads begin and end in a connection's bytes: llhttp (httptools) run over the same stream as
    aiohttp's parser, which does not say whether it holds the start of a head (after a body, behind a request
    being answered, in the same read as another request)."""

    __slots__ = ("completed", "in_head", "parser", "seen")

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.in_head = False
        self.completed = 0
        """Heads completed so far; `seen`: how many the handler has acted on."""
        self.seen = 0

    def on_message_begin(self) -> None:
        self.in_head = True

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.completed += 1

    def feed(self, data: bytes) -> bool:
        """Follow `data`; False when llhttp refuses it or stops at an upgrade (the handler then starts a new one
        when the connection is next between requests)."""
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # aiohttp frames an upgrade its own way
            return False
        return True


class GatewayRequestHandler(RequestHandler):
    """aiohttp's connection handler with the limits above."""

    __slots__ = ("_client", "_header_timer", "_heads", "_limits")

    def __init__(self, manager: web.Server, *, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._client: str | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._heads: _Heads | None = _Heads()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        # A new connection owes its first request head within the timeout (nginx's client_header_timeout).
        self._header_timer = self._loop.call_later(self._limits.header_timeout, self._headers_too_slow)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else None
        if address is None or self._limits.proxies.trusts(address):
            return
        if not self._limits.connections.acquire(address):
            log.warning("client_connection_refused", peer=address, limit=self._limits.connections.limit)
            self.force_close()
            return
        self._client = address

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_header_timer()
        if self._client is not None:
            self._limits.connections.release(self._client)
            self._client = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        parsed = self._request_count
        idle = self._current_request is None and not self._messages
        heads = self._heads
        if heads is None and idle:
            heads = self._heads = _Heads()  # between requests, the next byte begins a head: follow again
        if data and heads is not None and not heads.feed(data):
            heads = self._heads = None  # refused (aiohttp answers 400) or an upgrade head: lost until idle
        super().data_received(data)
        if self._request_count != parsed:
            self._refuse_unserved(self._request_count - parsed)
        if self._force_close:
            return
        if heads is None:  # not following: bytes between requests start the timer, a parsed head stops it
            if self._request_count != parsed:
                self._stop_header_timer()
            elif data and idle and self._header_timer is None:
                self._start_header_timer()
            return
        if heads.completed != heads.seen:  # a head was completed in this read: its timer stops
            heads.seen = heads.completed
            self._stop_header_timer()
        if heads.in_head and self._header_timer is None:
            # A head begun and not complete — a slow client, or a request pipelined behind a body or behind a
            # request still being answered — must be complete in time.
            self._start_header_timer()

    def _refuse_unserved(self, new: int) -> None:
        """Heads the gateway does not serve become refusals, answered before anything else reads them and the
        connection closed: another HTTP version than 1.0 / 1.1 (505, in an HTTP/1.x status line: aiohttp would
        answer in the request's version), and CONNECT (405: llhttp ignores its framing, so its body would be
        read as further requests)."""
        queue = self._messages
        for i in range(len(queue) - new, len(queue)):
            message = queue[i][0]
            if not isinstance(message, RawRequestMessage):
                continue
            if message.version not in _VERSIONS:
                exc = HttpProcessingError(code=505, message=f"HTTP/{message.version[0]}.{message.version[1]}")
            elif message.method == "CONNECT":
                exc = HttpProcessingError(code=405, message="CONNECT")
            else:
                continue
            queue[i] = (_ErrInfo(status=exc.code, exc=exc, message=exc.message), EMPTY_PAYLOAD)

    def _start_header_timer(self) -> None:
        self._header_timer = self._loop.call_later(self._limits.header_timeout, self._headers_too_slow)

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self._force_close:
            return
        if self._current_request is not None or self._messages:
            self._start_header_timer()  # a head waiting behind a request in progress: judged once it is done
            return
        log.info("header_timeout", peer=self._client)
        self.force_close()

    def _stop_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        """A request the HTTP parser (or aiohttp itself) refused: the gateway's JSON error, one log line.

        The parser's message is not logged: it quotes the offending line, which may hold a credential. A request
        line or header over aiohttp's 8190-byte limit is 431 (RFC 6585 §5)."""
        if isinstance(exc, LineTooLong) and status == 400:
            status = 431
        log.warning("http_refused", status=status, error=type(exc).__name__ if exc is not None else None,
                    peer=request.remote)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send the error")
        error = {405: "method_not_allowed"}.get(status, "server_error" if status >= 500 and status != 505
                                                 else "invalid_request")
        description = {400: "malformed HTTP request", 405: "CONNECT is not served",
                       431: "request line or header field too large",
                       505: "only HTTP/1.0 and HTTP/1.1 are served"}.get(status, HTTPStatus(status).phrase.lower())
        response = _Refusal(self._limits, status=status,
                            body=dumps({"error": error, "error_description": description}),
                            content_type="application/json", headers={"Cache-Control": "no-store"})
        response.force_close()
        return response


class _Refusal(web.Response):
    """The answer to a request refused before any app saw it (no app signal runs for it): its `Server` field
    is set as the apps' are (`ListenerLimits.set_server_header`)."""

    def __init__(self, limits: ListenerLimits, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._limits = limits

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        self._limits.set_server_header(self.headers)


class _GatewayServer(web.Server):
    """aiohttp's Server making `GatewayRequestHandler`s."""

    def __init__(self, server: web.Server, limits: ListenerLimits) -> None:
        super().__init__(server.request_handler, request_factory=server.request_factory,
                         handler_cancellation=server.handler_cancellation, loop=server._loop, **server._kwargs)
        self._limits = limits

    def __call__(self) -> RequestHandler:
        return GatewayRequestHandler(self, loop=self._loop, limits=self._limits, **self._kwargs)


class ListenerRunner(web.AppRunner):
    """`AppRunner` for an app carrying `LIMITS`: its connections get `GatewayRequestHandler`."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        limits = app[LIMITS]
        super().__init__(app, **{**kwargs, **limits.handler_args()})
        if limits.on_response_prepare not in app.on_response_prepare:
            app.on_response_prepare.append(limits.on_response_prepare)  # the `Server` field of its answers

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()  # the app started (its startup and cleanup contexts run as ever)
        entry = self.app.get(ENTRY)
        if entry is not None:
            # The public listener: the gateway's own server (server.py), with aiohttp's runner and sites around it.
            return cast(web.Server, PublicServer(entry, self.app[LIMITS], server._loop))
        return _GatewayServer(server, self.app[LIMITS])
