"""Strict base64url (RFC 7515 §2) and strict JSON (duplicate members refused) used by every JOSE parser."""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any, Final

_B64URL_RE: Final = re.compile(r"[A-Za-z0-9_-]*")
_COMPACT: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class DuplicateMemberError(ValueError):
    """A JSON object repeats a member name (RFC 7515 §5.2 / RFC 7519 §4: such input MUST be rejected)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"duplicate member name {name!r}")
        self.name = name


def b64url_encode(data: bytes) -> str:
    """base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(segment: str) -> bytes:
    """Decode strict, canonical base64url without padding; ValueError on anything else."""
    # SECURITY: no padding, no '+', '/', whitespace or other characters (RFC 7515 §2, §7.1); a
    # permissive decoder lets several strings decode to the same bytes (token malleability).
    if _B64URL_RE.fullmatch(segment) is None:
        raise ValueError("not base64url (only A-Z a-z 0-9 - _ without padding)")
    if len(segment) % 4 == 1:
        raise ValueError("impossible base64url length")
    try:
        data = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:  # pragma: no cover - the regex already excludes these
        raise ValueError("not base64url") from exc
    # SECURITY: refuse non-canonical encodings (non-zero unused trailing bits), so one token has one spelling.
    if b64url_encode(data) != segment:
        raise ValueError("non-canonical base64url (unused bits set)")
    return data


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for name, value in pairs:
        if name in obj:
            raise DuplicateMemberError(name)
        obj[name] = value
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)


def json_loads_strict(data: bytes) -> Any:
    """Parse UTF-8 JSON refusing duplicate member names (any depth), NaN/Infinity and trailing data."""
    # Decoding explicitly as UTF-8 stops json.loads from guessing UTF-16/32 (RFC 8259 §8.1).
    text = data.decode("utf-8")
    try:
        return _DECODER.decode(text)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc


def json_dumps_compact(value: Any) -> bytes:
    """Compact UTF-8 JSON, as used for headers and claims we sign."""
    return _COMPACT.encode(value).encode("utf-8")
