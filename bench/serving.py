"""Running a bench server process: argument parsing, loopback bind, stop on SIGTERM or after a lifetime."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Callable, Sequence

from aiohttp import web

from . import loop
from .net import LOOPBACK, require_loopback

DEFAULT_LIFETIME = 900.0
"""A bench server exits by itself after this many seconds, even if nobody stops it."""


async def serve(app: web.Application, host: str, port: int, lifetime: float) -> None:
    """Serve `app` until SIGTERM/SIGINT or until `lifetime` seconds have passed."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=1024).start()
        await until_stopped(lifetime)
    finally:
        await runner.cleanup()


async def until_stopped(lifetime: float) -> None:
    """Return on SIGTERM/SIGINT or once `lifetime` seconds have passed."""
    stop = asyncio.Event()
    running = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        running.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), lifetime)


def server_main(
    description: str,
    build_app: Callable[[argparse.Namespace], web.Application],
    argv: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> int:
    """Parse --port/--host/--lifetime (plus `add_arguments`), build the app and serve it."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default=LOOPBACK)
    parser.add_argument("--lifetime", type=float, default=DEFAULT_LIFETIME, help="exit after N seconds")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    require_loopback(f"http://{args.host}/")
    loop.run(serve(build_app(args), args.host, args.port, args.lifetime))
    return 0
