"""The event loop every bench process uses: the gateway's own (`gateway.runtime.run_async`: uvloop when
installed, else asyncio's), so the bare proxy and the gateway are measured on the same loop."""

from __future__ import annotations

import importlib.util

from gateway.runtime import run_async as run

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None

__all__ = ["HAVE_UVLOOP", "run"]
