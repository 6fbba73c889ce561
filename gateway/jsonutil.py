"""Compact JSON encoding used for every body, log line and audit event the gateway writes.

orjson does the work (bodies and log lines are on the hot path). It refuses two things a client can put in
front of us: a lone surrogate (`"\\ud800"` in a JSON string is legal JSON but not Unicode) and an integer
beyond 64 bits. Those values are still encoded, never raised as a 500: the stdlib encoder writes surrogates
as `\\uXXXX` escapes (ASCII output) and an integer too long for `str()` is written as a string saying so.
"""

from __future__ import annotations

import json
import math
from typing import Any

import orjson


def dumps(value: Any, *, sort_keys: bool = False, default: Any = None) -> bytes:
    """Encode to compact UTF-8 JSON bytes; never raises for strings or integers a client sent."""
    try:
        return orjson.dumps(value, default=default, option=orjson.OPT_SORT_KEYS if sort_keys else None)
    except TypeError:
        return _fallback(value, sort_keys, default)


def _fallback(value: Any, sort_keys: bool, default: Any) -> bytes:
    text = json.dumps(_printable_ints(value), ensure_ascii=True, separators=(",", ":"), sort_keys=sort_keys,
                      default=default, allow_nan=False)
    return text.encode("ascii")


def _printable_ints(value: Any, depth: int = 0) -> Any:
    """`value` with integers that `str()` refuses (over sys.get_int_max_str_digits digits) made strings, and
    NaN / infinities made null as orjson writes them (the stdlib encoder would raise with allow_nan=False)."""
    if depth > 256:
        return "[too deeply nested]"
    if isinstance(value, bool):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        try:
            str(value)
        except ValueError:
            return "[integer too long]"
        return value
    if isinstance(value, dict):
        return {k: _printable_ints(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_printable_ints(v, depth + 1) for v in value]
    return value
