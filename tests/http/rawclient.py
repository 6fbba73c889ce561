"""Raw-socket client helpers for the HTTP harness: send exact bytes to the gateway, read what comes back.

The responses are parsed here, strictly and simply (status line, headers, Content-Length, chunked or
close-delimited body), so that a test sees exactly what a client on the wire would see: interim 1xx
responses, a response cut short by a close, bytes after the last response.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Response:
    """One response as the client read it."""

    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool
    """False when the connection closed (or the read timed out) before the body's end."""
    interim: list[int] = field(default_factory=list)
    """Status codes of the 1xx responses that preceded it."""
    version: str = "HTTP/1.1"
    """The status line's protocol version."""

    def header(self, name: str) -> str | None:
        low = name.lower()
        return next((v for n, v in self.headers if n.lower() == low), None)

    @property
    def is_json(self) -> bool:
        ctype = (self.header("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json" or not self.complete:
            return False
        try:
            json.loads(self.body)
        except ValueError:
            return False
        return True

    def json(self) -> Any:
        return json.loads(self.body)

    def __repr__(self) -> str:
        return (f"Response({self.version} {self.status} {self.reason!r}, headers={self.headers!r}, body={self.body[:200]!r}, "
                f"complete={self.complete}, interim={self.interim})")


@dataclass
class Exchange:
    """Everything one client connection got: the responses in order, and how the connection ended."""

    responses: list[Response]
    closed: bool
    """The gateway closed the connection (EOF or reset) before the read ended."""
    timed_out: bool
    """The read ended because nothing more came within the timeout."""
    trailing: bytes = b""
    """Bytes after the last response read that did not form a response (or that nobody asked for)."""


class _Eof(Exception):
    pass


class _Reader:
    def __init__(self, reader: asyncio.StreamReader, deadline: float) -> None:
        self.reader = reader
        self.deadline = deadline
        self.buf = bytearray()

    async def _more(self) -> None:
        remaining = self.deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise TimeoutError
        try:
            data = await asyncio.wait_for(self.reader.read(65536), remaining)
        except ConnectionError:
            data = b""
        if not data:
            raise _Eof
        self.buf += data

    async def line(self) -> bytes:
        while b"\n" not in self.buf:
            await self._more()
        i = self.buf.index(b"\n")
        out = bytes(self.buf[: i + 1])
        del self.buf[: i + 1]
        return out.rstrip(b"\r\n")

    async def exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._more()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    async def rest(self) -> bytes:
        with contextlib.suppress(_Eof, TimeoutError):
            while True:
                await self._more()
        out = bytes(self.buf)
        self.buf.clear()
        return out


async def _read_response(r: _Reader, method: str) -> Response:
    interim: list[int] = []
    while True:
        status_line = await r.line()
        parts = status_line.decode("latin-1").split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
            raise ValueError(f"not a status line: {status_line[:100]!r}")
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = []
        while line := await r.line():
            name, _, value = line.decode("latin-1").partition(":")
            headers.append((name, value.strip()))
        if 100 <= status < 200:
            interim.append(status)
            continue
        break
    response = Response(status, reason, headers, b"", False, interim, parts[0])
    lowered = {n.lower(): v for n, v in headers}
    if method == "HEAD" or status in (204, 304):
        response.complete = True
        return response
    body = bytearray()
    try:
        if "chunked" in lowered.get("transfer-encoding", "").lower():
            while True:
                size = int((await r.line()).split(b";")[0], 16)
                if size == 0:
                    while await r.line():
                        pass
                    break
                body += await r.exactly(size)
                await r.exactly(2)
        elif "content-length" in lowered:
            body += await r.exactly(int(lowered["content-length"]))
        else:
            body += await r.rest()
            response.body = bytes(body)
            return response  # close-delimited: complete only in the sense that it ended
        response.complete = True
    except (_Eof, TimeoutError):
        body += r.buf
        r.buf.clear()
    response.body = bytes(body)
    return response


async def read_responses(reader: asyncio.StreamReader, methods: list[str], timeout: float) -> Exchange:
    """Read up to len(methods) responses (HEAD ones without body), stopping at a close or after `timeout`."""
    r = _Reader(reader, asyncio.get_running_loop().time() + timeout)
    responses: list[Response] = []
    closed = timed_out = False
    bad = b""
    for method in methods:
        try:
            resp = await _read_response(r, method)
        except _Eof:
            closed = True
            break
        except TimeoutError:
            timed_out = True
            break
        except ValueError as exc:  # not HTTP: kept as trailing bytes for the test to judge
            bad = str(exc).encode("latin-1", "replace") + b"\n"
            break
        responses.append(resp)
        if not resp.complete:
            closed = True
            break
    return Exchange(responses, closed, timed_out, bad + bytes(r.buf))


async def exchange(port: int, data: bytes | list[bytes], *, methods: list[str] | None = None,
                   timeout: float = 5.0, pause: float = 0.0, linger: float = 0.0) -> Exchange:
    """Connect to 127.0.0.1:`port`, send `data` (parts `pause` s apart), read the responses.

    `methods`: one per expected response (default: one GET). With `linger`, after the expected responses the
    connection is watched that long more for extra bytes (a response nobody asked for) or a close.
    """
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        parts = [data] if isinstance(data, bytes) else data
        for i, part in enumerate(parts):
            if i and pause:
                await asyncio.sleep(pause)
            try:
                writer.write(part)
                await writer.drain()
            except ConnectionError:
                break
        result = await read_responses(reader, methods or ["GET"], timeout)
        if linger and not result.closed:
            r = _Reader(reader, asyncio.get_running_loop().time() + linger)
            r.buf += result.trailing
            try:
                while True:
                    await r._more()
            except _Eof:
                result.closed = True
            except TimeoutError:
                pass
            result.trailing = bytes(r.buf)
        return result
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def wait_closed(reader: asyncio.StreamReader, timeout: float) -> tuple[bool, bytes]:
    """Read until the peer closes (True) or `timeout` passes (False); returns what was read."""
    data = bytearray()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False, bytes(data)
        try:
            chunk = await asyncio.wait_for(reader.read(65536), remaining)
        except TimeoutError:
            return False, bytes(data)
        except ConnectionError:
            return True, bytes(data)
        if not chunk:
            return True, bytes(data)
        data += chunk


def request(method: str, target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", *,
            content_length: bool | None = None, host: str = "gateway.test") -> bytes:
    """A well-formed request's bytes; Content-Length added when there is a body (or when asked)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{n}: {v}" for n, v in headers or []]
    if content_length or (content_length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_json_responses(ex: Exchange) -> list[Any]:
    return [r.json() for r in ex.responses if r.is_json]
