"""Compact JSON encoding used for every body the gateway writes."""

from __future__ import annotations

from typing import Any

import orjson


def dumps(value: Any) -> bytes:
    """Encode to compact UTF-8 JSON bytes (orjson: bodies and log lines are on the hot path)."""
    return orjson.dumps(value)
