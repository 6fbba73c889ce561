"""The bare proxy: the minimal aiohttp forwarder anyone would write in 30 lines — the anchor for ratios.

One shared ClientSession, headers copied (minus the obvious hop-by-hop ones), response streamed back.
No policy, no metrics, no logging: whatever the gateway costs beyond this is the gateway's own cost.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from .net import require_loopback
from .serving import server_main

SESSION = web.AppKey("session", aiohttp.ClientSession)
_REQUEST_SKIP = frozenset({"host", "connection", "keep-alive", "transfer-encoding"})
_RESPONSE_SKIP = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length"})


def build_app(upstream: str) -> web.Application:
    """A catch-all forwarder to `upstream` (base URL, no trailing slash)."""
    require_loopback(upstream)

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256), auto_decompress=False)
        yield
        await app[SESSION].close()

    async def forward(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _REQUEST_SKIP}
        data = request.content if request.body_exists else None
        url = upstream + request.rel_url.raw_path_qs
        async with request.app[SESSION].request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as up:
            kept = {k: v for k, v in up.headers.items() if k.lower() not in _RESPONSE_SKIP}
            response = web.StreamResponse(status=up.status, headers=kept)
            if up.content_length is not None:
                response.content_length = up.content_length
            await response.prepare(request)
            async for chunk in up.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def _args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", required=True, help="base URL of the upstream, e.g. http://127.0.0.1:8081")


if __name__ == "__main__":
    raise SystemExit(
        server_main(__doc__ or "", lambda args: build_app(args.upstream.rstrip("/")), add_arguments=_args)
    )
