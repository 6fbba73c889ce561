"""Strict JSON for everything the sandbox reads from a client: I-JSON (RFC 7493) on the JOSE parser.

`json_loads_strict` (gateway.jose.encoding) already refuses invalid UTF-8, duplicate member names,
NaN/Infinity literals and nesting too deep for the parser. A value the sandbox reads must also be one it can
store in SQLite, write to a log line and send back unchanged, so `loads` also requires (RFC 7493 §2):

- strings and member names made of Unicode scalar values: no lone surrogate, which `"\\ud800"` escapes let
  through (§2.1);
- integers exact in IEEE 754 double precision, at most 2^53-1 in magnitude (§2.2);
- finite numbers (`1e400` parses to infinity);
- at most `MAX_DEPTH` levels of arrays and objects.

`check` applies the same rules to a parsed value, with an optional bound on string and member name lengths
for values the sandbox stores (the SSA claims flattened into a registration).
"""

from __future__ import annotations

import math
from typing import Any, Final

from ..jose.encoding import json_loads_strict

MAX_DEPTH: Final = 32
"""Arrays and objects nested deeper than this are refused (an OB SSA needs 5)."""
MAX_SAFE_INTEGER: Final = 2**53 - 1
_MAX_NAME_IN_PATH: Final = 40


class JsonValueError(ValueError):
    """Valid JSON holding a value the sandbox refuses; the message names where (`$.org_name[0]`)."""


def loads(data: bytes) -> Any:
    """Parse strict UTF-8 JSON and `check` it; ValueError (JsonValueError for the I-JSON rules) otherwise."""
    value = json_loads_strict(data)
    check(value)
    return value


def _member(path: str, name: str) -> str:
    shown = name[:_MAX_NAME_IN_PATH].encode("ascii", "backslashreplace").decode("ascii")
    return f"{path}.{shown}" + ("…" if len(name) > _MAX_NAME_IN_PATH else "")


def _check_string(text: str, path: str, max_string: int | None, what: str) -> None:
    if max_string is not None and len(text) > max_string:
        raise JsonValueError(f"{path}: {what} longer than {max_string} characters")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JsonValueError(f"{path}: {what} holds a lone surrogate (not Unicode text)") from None


def check(value: Any, *, max_string: int | None = None, max_depth: int = MAX_DEPTH) -> None:
    """Raise JsonValueError unless `value` keeps the rules above (strings at most `max_string` long)."""
    stack: list[tuple[Any, str, int]] = [(value, "$", 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            _check_string(item, path, max_string, "a string")
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise JsonValueError(f"{path}: integers must be at most 2^53-1 in magnitude (RFC 7493 §2.2)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise JsonValueError(f"{path}: numbers must be finite")
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                raise JsonValueError(f"{path}: nested more than {max_depth} levels deep")
            if isinstance(item, list):
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in enumerate(item))
                continue
            for name, member in item.items():
                if not isinstance(name, str):
                    raise JsonValueError(f"{path}: member names must be strings")
                child = _member(path, name)
                _check_string(name, child, max_string, "a member name")
                stack.append((member, child, depth + 1))
        else:
            raise JsonValueError(f"{path}: {type(item).__name__} is not a JSON value")
