"""Strict JSON for everything the sandbox reads from a client: I-JSON (RFC 7493) on the JOSE parser.

`json_loads_strict` (gateway.jose.encoding), the one strict JSON reader of the project, refuses invalid UTF-8,
duplicate member names, NaN/Infinity and numbers beyond a double, strings holding a lone surrogate and nesting
deeper than `MAX_JSON_DEPTH`. A value the sandbox stores and sends back unchanged must also keep two rules of
its own, which `check` applies to a parsed value:

- integers exact in IEEE 754 double precision, at most 2^53-1 in magnitude (RFC 7493 §2.2);
- optionally, a bound on string and member name lengths (the SSA claims flattened into a registration).
"""

from __future__ import annotations

from typing import Any, Final

from ..jose.encoding import MAX_JSON_DEPTH, JsonTextError, json_loads_strict

MAX_DEPTH: Final = MAX_JSON_DEPTH
"""Arrays and objects nested deeper than this are refused (an OB SSA needs 5)."""
MAX_SAFE_INTEGER: Final = 2**53 - 1
_MAX_NAME_IN_PATH: Final = 40


class JsonValueError(ValueError):
    """Valid JSON holding a value the sandbox refuses; the message names where (`$.org_name[0]`)."""


def loads(data: bytes) -> Any:
    """Parse strict UTF-8 JSON and `check` it; ValueError (JsonValueError for the I-JSON rules) otherwise."""
    try:
        value = json_loads_strict(data)
    except JsonTextError as exc:
        raise JsonValueError(f"$: {exc}") from None
    check(value)
    return value


def _member(path: str, name: str) -> str:
    shown = name[:_MAX_NAME_IN_PATH].encode("ascii", "backslashreplace").decode("ascii")
    return f"{path}.{shown}" + ("…" if len(name) > _MAX_NAME_IN_PATH else "")


def check(value: Any, *, max_string: int | None = None) -> None:
    """Raise JsonValueError unless `value` (parsed by `json_loads_strict`) keeps the rules above."""
    stack: list[tuple[Any, str]] = [(value, "$")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if max_string is not None and len(item) > max_string:
                raise JsonValueError(f"{path}: a string longer than {max_string} characters")
        elif isinstance(item, bool) or item is None or isinstance(item, float):
            continue
        elif isinstance(item, int):
            if not -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                raise JsonValueError(f"{path}: integers must be at most 2^53-1 in magnitude (RFC 7493 §2.2)")
        elif isinstance(item, list):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
        elif isinstance(item, dict):
            for name, member in item.items():
                child = _member(path, name)
                if max_string is not None and len(name) > max_string:
                    raise JsonValueError(f"{child}: a member name longer than {max_string} characters")
                stack.append((member, child))
        else:
            raise JsonValueError(f"{path}: {type(item).__name__} is not a JSON value")
