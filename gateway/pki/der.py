"""A small strict DER reader (ITU-T X.690 §8 and §10) for the few structures the gateway reads itself: the
QCStatements extension (RFC 3739, ETSI EN 319 412-5) and `#`-hex attribute values of RFC 4514 DNs.

Strict: definite lengths in their shortest form only, low tag numbers only, no trailing bytes, OIDs without
padding. Bounded: the input is at most `MAX_INPUT` bytes and every reader is iterative over a fixed structure, so
a hostile certificate costs at most linear time and no recursion. The only exception any function here raises is
`ParseError` (a `ValueError`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

MAX_INPUT: Final = 65536
"""Largest DER input read (a certificate extension is at most a few kilobytes)."""
MAX_OID_ARCS: Final = 32
MAX_ARC_BYTES: Final = 8
"""An OID arc longer than this (56 bits) is refused: no OID the gateway reads comes near it."""

# Universal tags (X.680 §8.4) of the types read here.
SEQUENCE, OBJECT_IDENTIFIER = 0x30, 0x06
UTF8_STRING, PRINTABLE_STRING, IA5_STRING, NUMERIC_STRING, VISIBLE_STRING = 0x0C, 0x13, 0x16, 0x12, 0x1A
BMP_STRING, UNIVERSAL_STRING = 0x1E, 0x1C

_PRINTABLE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 '()+,-./:=?")


class ParseError(ValueError):
    """DER that is malformed, not the expected structure, or beyond the bounds; the message is safe to show."""


@dataclass(frozen=True, slots=True)
class Element:
    """One TLV: its tag byte and its content (a view of the input, never copied)."""

    tag: int
    content: memoryview


def _read(data: memoryview, pos: int) -> tuple[Element, int]:
    """The element at `pos` and the position after it."""
    end = len(data)
    if pos + 2 > end:
        raise ParseError("truncated DER element")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ParseError("high tag numbers are not supported")
    first = data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    elif first == 0x80:
        raise ParseError("indefinite length is not DER")
    else:
        count = first & 0x7F
        if count > 4 or pos + count > end:
            raise ParseError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        if data[pos] == 0 or length < 0x80:
            raise ParseError("DER length not in its shortest form")
        pos += count
    if length > end - pos:
        raise ParseError("DER length beyond the data")
    return Element(tag, data[pos : pos + length]), pos + length


def read_one(data: bytes | memoryview, tag: int | None = None) -> Element:
    """The single element `data` is (no trailing bytes), of `tag` when given."""
    view = memoryview(data)
    if len(view) > MAX_INPUT:
        raise ParseError(f"DER input longer than {MAX_INPUT} bytes")
    element, end = _read(view, 0)
    if end != len(view):
        raise ParseError("trailing bytes after the DER element")
    if tag is not None and element.tag != tag:
        raise ParseError(f"expected tag 0x{tag:02x}, got 0x{element.tag:02x}")
    return element


def children(element: Element, *, limit: int) -> Iterator[Element]:
    """The elements a constructed element holds, at most `limit` of them."""
    if not element.tag & 0x20:
        raise ParseError("expected a constructed element")
    data, pos, count = element.content, 0, 0
    while pos < len(data):
        count += 1
        if count > limit:
            raise ParseError(f"more than {limit} elements in a sequence")
        child, pos = _read(data, pos)
        yield child


def expect(element: Element, tag: int, what: str) -> Element:
    """`element` when its tag is `tag`; ParseError naming `what` otherwise."""
    if element.tag != tag:
        raise ParseError(f"{what}: expected tag 0x{tag:02x}, got 0x{element.tag:02x}")
    return element


def oid(element: Element) -> str:
    """The dotted string of an OBJECT IDENTIFIER (X.690 §8.19)."""
    expect(element, OBJECT_IDENTIFIER, "object identifier")
    data = bytes(element.content)
    if not data or data[-1] & 0x80:
        raise ParseError("empty or truncated object identifier")
    arcs: list[int] = []
    value, length = 0, 0
    for byte in data:
        if length == 0 and byte == 0x80:
            raise ParseError("object identifier arc padded with 0x80")
        value = (value << 7) | (byte & 0x7F)
        length += 1
        if length > MAX_ARC_BYTES:
            raise ParseError("object identifier arc too long")
        if not byte & 0x80:
            arcs.append(value)
            value, length = 0, 0
            if len(arcs) > MAX_OID_ARCS:
                raise ParseError("object identifier with too many arcs")
    first = arcs[0]
    head = [0, first] if first < 40 else [1, first - 40] if first < 80 else [2, first - 80]
    return ".".join(str(arc) for arc in head + arcs[1:])


def text(element: Element, *, max_chars: int) -> str:
    """The text of a character string (UTF8, Printable, IA5, Numeric, Visible, BMP or Universal string)."""
    data, tag = bytes(element.content), element.tag
    try:
        if tag == UTF8_STRING:
            value = data.decode("utf-8")
        elif tag in (PRINTABLE_STRING, IA5_STRING, NUMERIC_STRING, VISIBLE_STRING):
            value = data.decode("ascii")
            if tag == PRINTABLE_STRING and not set(value) <= _PRINTABLE:
                raise ParseError("PrintableString with a character outside its set")
            if tag == NUMERIC_STRING and not all(c.isdigit() or c == " " for c in value):
                raise ParseError("NumericString with a character outside its set")
            if tag == VISIBLE_STRING and not all(" " <= c <= "~" for c in value):
                raise ParseError("VisibleString with a character outside its set")
        elif tag == BMP_STRING:
            value = data.decode("utf-16-be")
        elif tag == UNIVERSAL_STRING:
            value = data.decode("utf-32-be")
        else:
            raise ParseError(f"expected a character string, got tag 0x{tag:02x}")
    except UnicodeDecodeError:
        raise ParseError("character string not validly encoded") from None
    if len(value) > max_chars:
        raise ParseError(f"character string longer than {max_chars} characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ParseError("character string with a lone surrogate")
    return value
