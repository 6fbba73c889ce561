"""The process: the event loop every command runs on, and (as it grows) the wiring of what one process shares."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when the `speed` extra is installed, else the default loop."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_async(coro: Coroutine[Any, Any, int]) -> int:
    """Run a coroutine to completion on the fastest available loop."""
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(coro)
