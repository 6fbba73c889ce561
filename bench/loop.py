"""The event loop every bench process uses: uvloop when installed (as the gateway does), else asyncio's."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not HAVE_UVLOOP:
        return None
    import uvloop

    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a fresh loop (uvloop when available)."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)
