"""The floor: the least any Python proxy on this event loop pays per request — a reference, not a product.

An asyncio protocol on llhttp (httptools) in front of the gateway's own upstream client (`gateway.http.upstream`),
on the same loop as every bench process: it reads a request, sends it upstream with its body, and writes the
answer back, and does nothing else — no limits, timeouts, checks, header hygiene, metrics, logging or audit, no
answer for malformed HTTP (the connection is dropped). What the gateway costs above it is what its server, its
rules and its bookkeeping cost; what `bare` costs above it is what aiohttp's server and client cost.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Final, cast

import httptools

from gateway.http.upstream import UpstreamError, UpstreamPool

from . import loop
from .net import LOOPBACK, require_loopback
from .serving import DEFAULT_LIFETIME, until_stopped

_SKIP: Final = frozenset({b"host", b"connection", b"keep-alive", b"transfer-encoding", b"content-length"})
_SKIP_BACK: Final = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


class _Client(asyncio.Protocol):
    """One client connection: requests are answered one at a time, in order."""

    def __init__(self, pool: UpstreamPool) -> None:
        self._pool = pool
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._queue: asyncio.Queue[tuple[str, str, str, bytes, bool]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not registered subclasses
        self._task = asyncio.get_running_loop().create_task(self._serve())

    def connection_lost(self, exc: Exception | None) -> None:
        if self._task is not None:
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError:
            assert self._transport is not None
            self._transport.close()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        block = "".join(f"{n.decode('latin-1')}: {v.decode('latin-1')}\r\n"
                        for n, v in self._headers if n.lower() not in _SKIP)
        method = self._parser.get_method().decode()
        self._queue.put_nowait((method, self._url.decode("latin-1"), block, b"".join(self._body),
                                self._parser.should_keep_alive()))
        self._url, self._headers, self._body = b"", [], []

    async def _serve(self) -> None:
        transport = self._transport
        assert transport is not None
        while True:
            method, target, block, body, keep_alive = await self._queue.get()
            try:
                upstream = await self._pool.request(method, target, block, body if body or method == "POST" else None)
            except UpstreamError:
                transport.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                transport.close()
                return
            try:
                chunks = []
                while chunk := await upstream.read():
                    chunks.append(chunk)
            finally:
                upstream.release()
            payload = b"".join(chunks)
            head = "".join(f"{n}: {v}\r\n" for n, v in upstream.raw_headers if n.lower() not in _SKIP_BACK)
            transport.write(f"HTTP/1.1 {upstream.status} {upstream.reason}\r\n{head}Content-Length: {len(payload)}\r\n"
                            f"{'' if keep_alive else 'Connection: close' + chr(13) + chr(10)}\r\n".encode("latin-1")
                            + payload)
            if not keep_alive:
                transport.close()
                return


async def _main(upstream: str, host: str, port: int, lifetime: float) -> None:
    pool = UpstreamPool(require_loopback(upstream), max_connections=256, keepalive_seconds=60.0, connect_timeout=5.0,
                        read_timeout=30.0, total_timeout=60.0)
    pool.start()
    server = await asyncio.get_running_loop().create_server(lambda: _Client(pool), host, port, backlog=1024)
    try:
        await until_stopped(lifetime)
    finally:
        server.close()
        await pool.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME, help="exit after N seconds")
    parser.add_argument("--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:8081")
    args = parser.parse_args(argv)
    require_loopback(f"http://{args.host}/")
    loop.run(_main(args.upstream.rstrip("/"), args.host, args.port, args.lifetime))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
