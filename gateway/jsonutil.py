"""Compact JSON encoding used for every body the gateway writes."""

from __future__ import annotations

import json
from typing import Any

_encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> bytes:
    """Encode to compact UTF-8 JSON bytes."""
    return _encoder.encode(value).encode("utf-8")
