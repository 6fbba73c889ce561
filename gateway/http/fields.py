"""What a header block the gateway writes may hold: line breaks only where its lines end.

A CR or LF inside a field would end the line early and let the rest be read as another field or message
(response splitting, request smuggling into the backend). Fields parsed by llhttp cannot hold one, and the
gateway's own never do; this is the last check before any head is written, on either side of the proxy.
"""

from __future__ import annotations


def safe_field(text: str) -> bool:
    """True when `text` can be a header name or value: no CR, LF or NUL (RFC 9110 §5.5)."""
    return "\r" not in text and "\n" not in text and "\x00" not in text


def breaks_only_at_line_ends(block: str, lines: int | None = None) -> bool:
    """True when every CR and every LF in `block` belongs to a CRLF (a line's end), and, given `lines`, there are
    exactly that many.

    Counting is the whole check, and it allocates nothing: as many CRs as CRLFs means no CR stands alone, and as
    many LFs as CRLFs means no LF does. (The text's counts are its UTF-8 bytes' counts, even with surrogateescape:
    UTF-8 writes CR and LF only for CR and LF.)"""
    pairs = block.count("\r\n")
    return block.count("\r") == pairs and block.count("\n") == pairs and (lines is None or pairs == lines)
