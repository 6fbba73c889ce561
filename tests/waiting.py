"""Waiting for something to happen without a fixed sleep: poll a condition until it holds, within a generous
bound that only stops a hang (never a timed assertion: a slow machine waits longer, it does not fail)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

BOUND_SECONDS = 30.0
"""How long a condition may take before the test fails as hung (far beyond what any machine needs)."""


async def eventually(
    condition: Callable[[], bool | Awaitable[bool]], what: str, *, bound: float = BOUND_SECONDS, interval: float = 0.01
) -> None:
    """Return as soon as `condition()` is true (it may be a coroutine function); fail naming `what` past `bound`."""
    deadline = time.monotonic() + bound
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        assert time.monotonic() < deadline, f"still waiting after {bound:g} s for: {what}"
        await asyncio.sleep(interval)


class Clock:
    """A clock the test moves by hand (`clock.now += 2`), for code that takes `clock=`; starts at 1000.0."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
