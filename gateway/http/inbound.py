"""What a client may send the gateway, and what of it goes upstream: the framing rule and header hygiene.

The framing rule (docs/security.md): the backend receives exactly one request per client request, framed by
the gateway — the exact body bytes the checks could read, with `Content-Length` equal to their length — and
nothing the gateway had to guess about. So, before any policy runs:

- HTTP/1.0 or HTTP/1.1 only (505, listener.py); `Transfer-Encoding` only `chunked` (501, RFC 9112 §6.1); `Expect` only
  `100-continue` (417), and the gateway answers it itself, when it starts reading the body;
- `Connection` may name only the connection options and the standard hop-by-hop fields: a client cannot make
  the gateway drop a header the checks read (`Connection: Authorization`) (400);
- method-override and URL-override headers are refused: the backend must act on the method and path the
  policy matched (400);
- a header name whose spelling differs only by `_` / `-` from another in the same request, or a second copy of a
  header the checks read once (`Authorization`, `client_id`, `Content-Type`…), is ambiguous (400);

and, once the route is known, a request body must arrive unencoded (`Content-Encoding` absent or `identity`)
unless the route's policy accepts its coding (`encoding_refusal`, 415): an encoded body would be decoded by
one side and not the other. Nothing is ever decompressed here; an accepted coded body goes upstream byte for
byte, and a check that reads the body refuses it (`plaintext_needed`).

On the way out, every inbound header that collides with one the gateway sets — compared case-insensitively
with `_` and `-` equal, as CGI/WSGI-style backends fold them — is removed, with the hop-by-hop fields.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from multidict import CIMultiDictProxy

from ..policy import BodyLimits as BodyLimits  # re-exported: the server's body limits (proxy, sandbox)
from ..policy import Denial, denial_for
from ..reasons import HttpRefusals, Reason

INTERACTION_ID: Final = "x-fapi-interaction-id"


def family(name: str) -> str:
    """The name a header is known by at any backend: lower case, `_` read as `-` (CGI/WSGI fold both)."""
    return name.lower().replace("_", "-")


# RFC 9110 §7.6.1: connection-specific fields, plus the non-standard ones proxies meet in practice.
HOP_BY_HOP: Final = frozenset(
    {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection", "te", "trailer",
     "transfer-encoding", "upgrade"}
)
CONNECTION_OPTIONS: Final = HOP_BY_HOP | {"close"}
"""What a client's `Connection` may name; any other field name is refused."""

SET_BY_GATEWAY: Final = frozenset(
    {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-forwarded-port", "x-forwarded-prefix",
     "x-forwarded-server", "forwarded", "x-real-ip", "x-client-ip", "true-client-ip", "x-request-id",
     INTERACTION_ID}
)
"""Header families the gateway sets for the upstream itself; inbound copies (any spelling) never pass."""

FRAMING: Final = frozenset({"content-length", "expect"})
"""Framing the gateway sets for the body it actually sends (Expect is answered by the gateway itself).
`Content-Encoding` goes upstream as sent: only `identity`, or a coding the route's policy accepts, gets here."""

OVERRIDES: Final = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override", "x-original-url", "x-rewrite-url",
     "x-original-method", "x-override-url"}
)
"""Headers some frameworks read to change the method or path after routing: refused, never forwarded."""

SINGLE: Final = frozenset(
    {"authorization", "client-id", "content-type", "content-length", "content-encoding", "host",
     "transfer-encoding", INTERACTION_ID}
)
"""Header families a request may carry once: the checks read one value, the backend must not see another."""


_SPELLED_ONE_WAY: Final = HOP_BY_HOP | FRAMING | {"content-encoding", "host"}
"""Framing and connection fields: an `_` spelling of one is refused, not guessed at."""


H = HttpRefusals


def _refusal(reason: Reason, description: str) -> Denial:
    return denial_for(reason, description, H.check)


class InboundRules:
    """The request-header rules, built once from config: `screen` refuses, `upstream_headers` cleans."""

    __slots__ = ("_drop", "_single")

    def __init__(self, gateway_headers: Iterable[str], single: Iterable[str] = ()) -> None:
        """`gateway_headers`: the other headers the gateway sets or consumes (fact headers, the client
        certificate header); `single`: other families a check reads once."""
        self._drop = HOP_BY_HOP | SET_BY_GATEWAY | FRAMING | {family(h) for h in gateway_headers}
        self._single = SINGLE | {family(h) for h in single}

    def screen(self, headers: CIMultiDictProxy[str]) -> Denial | None:
        """The refusal for a request whose headers are ambiguous or try to steer the gateway, else None."""
        seen: dict[str, str] = {}
        for name, _ in headers.items():  # every field: iterating the keys folds repeats
            low = name.lower()
            fam = low.replace("_", "-")
            if fam in _SPELLED_ONE_WAY and fam != low:
                # `Content_Encoding` means nothing here but framing to a backend that folds `_` into `-`.
                return _refusal(H.ambiguous_header, f"header {name[:64]!r} looks like a framing field")
            spelled = seen.get(fam)
            if spelled is None:
                seen[fam] = low
                continue
            if spelled != low:
                return _refusal(H.ambiguous_header, f"header {name[:64]!r} is also sent spelled otherwise")
            if fam in self._single:
                return _refusal(H.duplicate_header, f"header {name[:64]!r} is sent more than once")
        if OVERRIDES.intersection(seen):
            return _refusal(H.override_header, "method and URL override headers are not accepted")
        coding = seen.get("transfer-encoding")
        if coding is not None and headers.get(coding, "").strip().lower() != "chunked":
            return _refusal(H.transfer_encoding, "the only transfer coding accepted is chunked")
        expect = seen.get("expect")
        if expect is not None and headers.get(expect, "").strip().lower() != "100-continue":
            return _refusal(H.expectation, "the only expectation met is 100-continue")
        connection = seen.get("connection")
        if connection is not None:
            named = connection_tokens(headers.getall(connection))
            if not named <= CONNECTION_OPTIONS:
                return _refusal(H.connection_header, "Connection may name only hop-by-hop fields")
        return None

    def upstream_headers(self, headers: Iterable[tuple[str, str]], also_drop: Mapping[str, str] | None) -> list[str]:
        """`Name: value\\r\\n` lines of the inbound headers that go upstream (ours are added by the caller).

        `also_drop`: headers the caller sets itself for this request (the fact headers it sends)."""
        drop = self._drop
        if also_drop:
            drop = drop | {family(h) for h in also_drop}
        return [f"{name}: {value}\r\n" for name, value in headers if family(name) not in drop]


def content_codings(headers: CIMultiDictProxy[str]) -> tuple[str, ...]:
    """The request body's content codings, `identity` left out (lower case, in the order applied)."""
    value = headers.get("Content-Encoding")
    if value is None:
        return ()
    return tuple(c for c in (t.strip().lower() for t in value.split(",")) if c and c != "identity")


def encoding_refusal(codings: tuple[str, ...], accepted: frozenset[str]) -> Denial | None:
    """415 for a body content-coded otherwise than its route's policy accepts (by default: any coding). The
    public listener never decompresses: an accepted coded body goes upstream byte for byte."""
    if all(c in accepted for c in codings):
        return None
    return _refusal(H.content_encoding, "request bodies must not be content-encoded here")


def connection_tokens(values: Iterable[str]) -> set[str]:
    """The field names listed in Connection header values (hop-by-hop for this connection only)."""
    return {t.strip().lower() for v in values for t in v.split(",") if t.strip()}
