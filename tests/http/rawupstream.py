"""A raw-socket recording upstream for the HTTP harness (issue 13).

It parses what the gateway sends with its own small, strict HTTP/1.1 request parser (request line, header
lines ending in CRLF, Content-Length or chunked body, nothing lenient), records every request it could parse
and every byte it could not, and answers by a script: well, or in one of the ways a broken or hostile backend
answers (bytes after a complete response, two responses to one request, an answer before the request body was
read, a close in the middle of a response body, a close before any answer).

The response to a request carries the request's marker (header `X-Marker`) in `X-Echo-Marker` and in its
body, so a client can tell whether the answer it got is the answer to its own request. The script comes from
the request's `X-Upstream-Script` header (the gateway forwards it like any other header) or, when absent, from
`RawUpstream.default_script`.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MARKER = "X-Marker"
SCRIPT = "X-Upstream-Script"
EVIL = "EVIL"
"""The marker of the responses a misbehaving upstream sends that answer no request."""

SCRIPTS = ("ok", "chunked", "extra", "pipeline2", "big-pipeline2", "late-extra", "early", "early-close",
           "close-mid", "close-silent")
"""ok: a Content-Length response; chunked: a chunked one; extra: junk bytes right after the response;
pipeline2: a second complete response (status 203, marker EVIL, header X-Evil) in the same write;
big-pipeline2: the same after a 300 KB response body; late-extra: that second response a
moment later; early: the response before the request body is read (the body is read afterwards); early-close:
the response before the body is read, then the connection is closed; close-mid: headers announcing 100 bytes,
10 of them, close; close-silent: the request is read, the connection closed without an answer."""

MISBEHAVING = frozenset({"extra", "pipeline2", "big-pipeline2", "late-extra", "early", "early-close", "close-mid", "close-silent"})

_TOKEN = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_REQUEST_LINE = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+) (\S+) HTTP/(\d\.\d)$")
_VALUE_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_MAX_LINE = 64 * 1024


class Malformed(Exception):
    """The gateway sent bytes the strict parser refuses."""


@dataclass
class Received:
    """One request as the upstream parsed it."""

    conn: int
    """Which upstream connection it came on (1, 2, …)."""
    index: int
    """Its position on that connection (0 for the first)."""
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool
    """True when it came with Transfer-Encoding: chunked (the harness's contract: never)."""
    script: str = "ok"

    def values(self, name: str) -> list[str]:
        """Every value of header `name` (case-insensitive)."""
        low = name.lower()
        return [v for n, v in self.headers if n.lower() == low]

    def has(self, name: str) -> bool:
        """Whether header `name` is present (case-insensitive)."""
        return bool(self.values(name))

    @property
    def marker(self) -> str | None:
        """The request's marker header, when it has exactly one."""
        values = self.values(MARKER)
        return values[0] if len(values) == 1 else None


@dataclass
class Garbage:
    """Bytes the upstream could not parse as a request, or that were left over when a connection closed."""

    conn: int
    reason: str
    data: bytes


@dataclass
class RawUpstream:
    """The recording upstream; `start()` it, point a gateway at `url`, read `requests` / `garbage`."""

    default_script: str = "ok"
    requests: list[Received] = field(default_factory=list)
    garbage: list[Garbage] = field(default_factory=list)
    started: dict[str, int] = field(default_factory=dict)
    """Marker → connection of every request whose head arrived, complete or not."""
    connections: int = 0
    open_connections: int = 0
    max_open: int = 0
    hold: asyncio.Event | None = None
    """When set (not None), every request waits for this event before it is answered (a slow backend)."""
    late_sent: int = 0
    """How many `late-extra` second responses have been written out (drained to the gateway's socket)."""
    server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        """Forget what was recorded (between cases sharing one upstream)."""
        self.requests.clear()
        self.garbage.clear()
        self.started.clear()

    def by_marker(self, marker: str) -> list[Received]:
        """The requests that carried `marker` in X-Marker."""
        return [r for r in self.requests if marker in r.values(MARKER)]

    # --- the server ----------------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        conn = self.connections
        self.open_connections += 1
        self.max_open = max(self.max_open, self.open_connections)
        reader._limit = 2 * _MAX_LINE  # type: ignore[attr-defined]  # long lines are refused by us, not the reader
        index = 0
        try:
            while True:
                try:
                    if not await self._serve_one(conn, index, reader, writer):
                        return
                except Malformed as exc:
                    rest = reader._buffer  # type: ignore[attr-defined]  # whatever came after the bad part
                    self.garbage.append(Garbage(conn, str(exc), bytes(rest)))
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    return
                index += 1
        except (ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open_connections -= 1
            self._tasks.discard(task)
            writer.close()

    async def _line(self, reader: asyncio.StreamReader, conn: int, first: bool) -> bytes | None:
        try:
            raw = await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial:
                self.garbage.append(Garbage(conn, "leftover bytes at close", exc.partial))
            elif not first:
                self.garbage.append(Garbage(conn, "closed inside a request head", b""))
            return None
        except asyncio.LimitOverrunError as exc:
            raise Malformed("line too long") from exc
        if not raw.endswith(b"\r\n") or b"\r" in raw[:-2]:
            raise Malformed(f"line not ended by CRLF or with a bare CR: {raw[:80]!r}")
        return raw[:-2]

    async def _serve_one(self, conn: int, index: int, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> bool:
        line = await self._line(reader, conn, first=True)
        if line is None:
            return False
        m = _REQUEST_LINE.match(line)
        if m is None or m.group(3) != b"1.1":
            raise Malformed(f"bad request line {line[:80]!r}")
        method, target = m.group(1).decode(), m.group(2).decode("latin-1")
        headers: list[tuple[str, str]] = []
        while True:
            hl = await self._line(reader, conn, first=False)
            if hl is None:
                return False
            if not hl:
                break
            if hl[:1] in (b" ", b"\t"):
                raise Malformed("obs-fold")
            name, sep, value = hl.partition(b":")
            if not sep or not _TOKEN.match(name):
                raise Malformed(f"bad header line {hl[:80]!r}")
            value = value.strip(b" \t")
            if _VALUE_BAD.search(value):
                raise Malformed(f"control character in header {name!r}")
            headers.append((name.decode(), value.decode("latin-1")))
        names = [n.lower() for n, _ in headers]
        if names.count("host") != 1:
            raise Malformed("Host missing or repeated")
        script = next((v for n, v in headers if n.lower() == SCRIPT.lower()), self.default_script)
        te = [v for n, v in headers if n.lower() == "transfer-encoding"]
        cl = [v for n, v in headers if n.lower() == "content-length"]
        if te and cl:
            raise Malformed("Content-Length and Transfer-Encoding")
        if len(cl) > 1:
            raise Malformed("Content-Length repeated")
        if te and (len(te) > 1 or te[0].lower() != "chunked"):
            raise Malformed(f"Transfer-Encoding {te!r}")
        if cl and not cl[0].isdigit():
            raise Malformed(f"Content-Length {cl[0]!r}")
        marker = next((v for n, v in headers if n.lower() == MARKER.lower()), "")
        self.started[marker] = conn
        if self.hold is not None:
            await self.hold.wait()
        if script in ("early", "early-close"):
            await self._respond(writer, marker, 0, "ok")
            if script == "early-close":
                self.requests.append(Received(conn, index, method, target, "1.1", headers, b"", bool(te), script))
                return False
        try:
            body = await (self._chunked(reader) if te else reader.readexactly(int(cl[0]) if cl else 0))
        except asyncio.IncompleteReadError as exc:
            self.garbage.append(Garbage(conn, "closed inside a request body", exc.partial))
            return False
        self.requests.append(Received(conn, index, method, target, "1.1", headers, body, bool(te), script))
        if script == "close-silent":
            return False
        if script == "close-mid":
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nX-Echo-Marker: " + marker.encode("latin-1")
                         + b"\r\n\r\n" + b"0123456789")
            await writer.drain()
            return False
        if script.startswith("raw-"):
            writer.write(RAW_RESPONSES[script[4:]].replace(b"{marker}", marker.encode("latin-1")))
            await writer.drain()
            return True
        if script not in ("early",):
            await self._respond(writer, marker, len(body), script)
        return True

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = bytearray()
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = size_line[:-2]
            if not re.fullmatch(rb"[0-9a-fA-F]{1,16}", size):
                raise Malformed(f"bad chunk size {size[:40]!r}")
            n = int(size, 16)
            if n == 0:
                if await reader.readexactly(2) != b"\r\n":
                    raise Malformed("trailer section sent upstream")
                return bytes(body)
            body += await reader.readexactly(n)
            if await reader.readexactly(2) != b"\r\n":
                raise Malformed("chunk data not followed by CRLF")

    async def _respond(self, writer: asyncio.StreamWriter, marker: str, length: int, script: str) -> None:
        pad = 300 * 1024 if script == "big-pipeline2" else 0
        writer.write(response_bytes(marker, length, chunked=script == "chunked", pad=pad))
        if script == "extra":
            writer.write(b"XJUNK\r\n\r\n")
        elif script in ("pipeline2", "big-pipeline2"):
            writer.write(EVIL_RESPONSE)
        await writer.drain()
        if script == "late-extra":
            await asyncio.sleep(0.03)  # scripted: the second response comes late, once the connection is idle
            writer.write(EVIL_RESPONSE)
            await writer.drain()
            self.late_sent += 1


def response_bytes(marker: str, length: int, *, chunked: bool = False, pad: int = 0) -> bytes:
    """A 200 response naming `marker` (header and body) and the body length the upstream received."""
    padding = f',"pad":"{"p" * pad}"' if pad else ""
    body = f'{{"marker":"{marker}","received":{length}{padding}}}'.encode("latin-1")
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Echo-Marker: {marker}\r\n"
            f"X-Received-Length: {length}\r\n").encode("latin-1")
    if chunked:
        half = len(body) // 2
        return (head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n"
                % (half, body[:half], len(body) - half, body[half:]))
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


EVIL_RESPONSE = (f"HTTP/1.1 203 Evil\r\nContent-Type: application/json\r\nX-Echo-Marker: {EVIL}\r\nX-Evil: 1\r\n"
                 f"Set-Cookie: evil=1\r\nContent-Length: 2\r\n\r\n{{}}").encode()
"""The response nobody asked for."""


RAW_RESPONSES: dict[str, bytes] = {
    "dup-cl": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2\r\nContent-Length: 40\r\n\r\n{}",
    "dup-cl-same": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
    "cl-te": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n"
             b"2\r\n{}\r\n0\r\n\r\n",
    "te-cl": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
             b"2\r\n{}\r\n0\r\n\r\n",
    "te-gzip": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
               b"2\r\n{}\r\n0\r\n\r\n",
    "cl-sign": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: +2\r\n\r\n{}",
    "cl-list": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2, 2\r\n\r\n{}",
    "obs-fold": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nX-Folded: a\r\n b\r\nContent-Length: 2\r\n\r\n{}",
    "bare-lf": b"HTTP/1.1 200 OK\nX-Echo-Marker: {marker}\nContent-Length: 2\n\n{}",
    "bare-cr": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nX-Cr: a\rb\r\nContent-Length: 2\r\n\r\n{}",
    "nul": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nX-Nul: a\x00b\r\nContent-Length: 2\r\n\r\n{}",
    "bad-chunk": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nTransfer-Encoding: chunked\r\n\r\n0x2\r\n{}\r\n0\r\n\r\n",
    "short-chunk-then-response": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 b"2\r\n{}\r\n0\r\n\r\n" + EVIL_RESPONSE,
    "version": b"HTTP/2.0 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2\r\n\r\n{}",
    "status-garbage": b"HTTP/1.1 2000 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2\r\n\r\n{}",
    "101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: evil\r\nConnection: upgrade\r\n\r\n" + EVIL_RESPONSE,
    "100-then-extra": b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\n"
                      b"Content-Length: 2\r\n\r\n{}" + EVIL_RESPONSE,
    "head-with-body": b"HTTP/1.1 200 OK\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2\r\n\r\n{}" + EVIL_RESPONSE,
    "204-with-body": b"HTTP/1.1 204 No Content\r\nX-Echo-Marker: {marker}\r\n\r\n" + EVIL_RESPONSE,
    "error-400": b"HTTP/1.1 400 Bad Request\r\nX-Echo-Marker: {marker}\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 2\r\n\r\n{}",
    "304-with-body": b"HTTP/1.1 304 Not Modified\r\nX-Echo-Marker: {marker}\r\nContent-Length: 2\r\n\r\n{}",
}
"""Malformed or out-of-step upstream answers (script `raw-<key>`); `{marker}` is the request's marker."""
