"""Strict base64url (RFC 7515 §2) and strict JSON (duplicate members refused) used by every JOSE parser."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Final

import orjson
import pybase64

_NOT_B64URL: Final = "not base64url (only A-Z a-z 0-9 - _ without padding)"
_ALPHABET: Final = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# The characters a canonical segment may end with, by length % 4: after 2 characters only 4 of their 12 bits
# are data (the last character's low 4 bits must be zero), after 3 characters 16 of 18 (low 2 bits zero).
_CANONICAL_LAST: Final = {
    0: frozenset(_ALPHABET),
    2: frozenset(c for i, c in enumerate(_ALPHABET) if i & 0x0F == 0),
    3: frozenset(c for i, c in enumerate(_ALPHABET) if i & 0x03 == 0),
}
_PADDING: Final = {0: "", 2: "==", 3: "="}
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class DuplicateMemberError(ValueError):
    """A JSON object repeats a member name (RFC 7515 §5.2 / RFC 7519 §4: such input MUST be rejected)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member name {name!r}")
        self.name = name


class JsonTextError(ValueError):
    """Input refused before or after parsing: too deeply nested, a lone surrogate, a non-finite number."""


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode strict, canonical base64url without padding; ValueError on anything else."""
    rest = len(segment) % 4
    if rest == 1:
        raise ValueError("impossible base64url length")
    # SECURITY: refuse non-canonical encodings (non-zero unused trailing bits), so one token has one spelling.
    # Only the last character carries unused bits; checking it equals re-encoding the data and comparing.
    if segment and segment[-1] not in _CANONICAL_LAST[rest]:
        raise ValueError("non-canonical base64url (unused bits set)")
    # SECURITY: no padding, no '+', '/', whitespace or other characters (RFC 7515 §2, §7.1); a
    # permissive decoder lets several strings decode to the same bytes (token malleability). '+', '/' and '='
    # are refused here (pybase64 with altchars still takes '+' and '/'); validate=True refuses every other
    # character, non-ASCII text included (the padding is ours, so it is always exact).
    if "+" in segment or "/" in segment or "=" in segment:
        raise ValueError(_NOT_B64URL)
    try:
        return pybase64.b64decode(segment + _PADDING[rest], altchars=b"-_", validate=True)
    except (binascii.Error, ValueError, TypeError) as exc:  # binascii.Error is a ValueError
        raise ValueError(_NOT_B64URL) from exc


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    seen: set[str] = set()  # a repeated name: find the first one, for the error
    for name, _ in pairs:
        if name in seen:
            raise DuplicateMemberError(name)
        seen.add(name)
    raise AssertionError("unreachable: fewer members than pairs without a repeated name")  # pragma: no cover


def _reject_constant(name: str) -> Any:
    raise JsonTextError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses as inf: a number no claim can mean (RFC 7493 §2.2)
        raise JsonTextError("a number beyond the range of an IEEE 754 double")
    return value


MAX_JSON_DEPTH: Final = 32
"""Deepest nesting of arrays and objects accepted: a JWT header, claims set or JWKS is a few levels deep."""

_DECODER: Final = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant,
                                   parse_float=_finite_float)
# A string token (so brackets inside strings are not counted) or a bracket; used only when brackets abound.
_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
# A \u escape of a UTF-16 surrogate: only then can a decoded string hold a lone one.
_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _check_depth(text: str) -> None:
    # SECURITY: the stdlib decoder recurses per level (RecursionError, or a deep structure that every later
    # consumer must walk again); refused before parsing, stopping at the first bracket over the limit.
    if text.count("[") + text.count("{") <= MAX_JSON_DEPTH:
        return  # fast path: too few brackets to nest deeper than the limit
    depth = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > MAX_JSON_DEPTH:
                raise JsonTextError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        elif token in ("]", "}"):
            depth -= 1


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item) is not None:
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def json_loads_strict(data: bytes) -> Any:
    """Parse UTF-8 JSON text strictly; ValueError (DuplicateMemberError, JsonTextError) on anything else.

    Refused: duplicate member names at any depth (RFC 7515 §5.2), NaN / Infinity and numbers that overflow
    a double, trailing data, nesting deeper than MAX_JSON_DEPTH, and strings holding a lone surrogate
    (`"\\ud800"` is JSON syntax but not Unicode text: RFC 8259 §8.2, RFC 7493 §2.1).
    """
    value = _compact_value(data)
    return _json_loads_reference(data) if value is _NOT_COMPACT else value


_NOT_COMPACT: Final = object()


def _compact_value(data: bytes) -> Any:
    """The value of `data` when `data` is exactly orjson's compact serialisation of it; else _NOT_COMPACT.

    A shortcut, never a second judge: it answers only for text the reference parser would read to the same value,
    and everything else goes to the reference. Text that is the serialisation of a value has no repeated member
    (a dict writes each name once), no NaN, Infinity or lone surrogate (orjson reads none of them), nothing
    trailing; its numbers are exact integers or floats written in their shortest round-trip form, so they read
    back as the same values; an integer past 64 bits, which orjson reads as a float, is written back differently
    and goes to the reference. JWS headers and claims are mostly such text (tests/jose/test_json_text.py holds
    the differential test against the reference).
    """
    if data.count(b"[") + data.count(b"{") > MAX_JSON_DEPTH:
        return _NOT_COMPACT  # perhaps too deep: the reference judges the depth exactly
    try:
        value = orjson.loads(data)
        if orjson.dumps(value) == data:
            return value
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        pass
    return _NOT_COMPACT


def _json_loads_reference(data: bytes) -> Any:
    """json_loads_strict for any text: the standard library's parser with the strict hooks above."""
    # Decoding explicitly as UTF-8 stops json.loads from guessing UTF-16/32 (RFC 8259 §8.1); UTF-8 itself
    # cannot carry a surrogate, so only a \u escape can produce one.
    text = data.decode("utf-8")
    _check_depth(text)
    try:
        value = _DECODER.decode(text)
    except RecursionError as exc:  # pragma: no cover - _check_depth refuses such input first
        raise JsonTextError("JSON nested too deeply") from exc
    if _SURROGATE_ESCAPE.search(text) is not None and _has_lone_surrogate(value):
        raise JsonTextError("a string holds a lone UTF-16 surrogate (not Unicode text)")
    return value


def json_dumps_compact(value: Any) -> bytes:
    """Compact UTF-8 JSON, as used for headers and claims we sign."""
    return _COMPACT.encode(value).encode("utf-8")
