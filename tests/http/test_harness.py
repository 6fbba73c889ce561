"""The harness's own tools, checked directly: the recording upstream's strict parser and its scripts, and the
raw client's response reader. If these were lenient, the attack table and the differential tests could not fail."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.http.rawclient import exchange, request
from tests.http.rawupstream import EVIL, MARKER, SCRIPT, RawUpstream

Start = Callable[..., Awaitable[RawUpstream]]


async def send(up: RawUpstream, data: bytes, methods: list[str] | None = None):
    ex = await exchange(up.port, data, methods=methods or ["GET"], timeout=2)
    await asyncio.sleep(0.05)
    return ex


async def test_records_requests_exactly(raw_upstream: Start):
    up = await raw_upstream()
    chunked = request("POST", "/a", [(MARKER, "c"), ("Transfer-Encoding", "chunked")]) + b"3\r\nabc\r\n0\r\n\r\n"
    ex = await send(up, request("POST", "/a", [(MARKER, "1")], b"hello") + chunked + request("GET", "/b?x",
                                                                                            [(MARKER, "2")]),
                    ["POST", "POST", "GET"])
    assert [r.header("X-Echo-Marker") for r in ex.responses] == ["1", "c", "2"]
    assert [(r.method, r.target, r.body, r.chunked, r.marker) for r in up.requests] == [
        ("POST", "/a", b"hello", False, "1"), ("POST", "/a", b"abc", True, "c"), ("GET", "/b?x", b"", False, "2")]
    assert up.requests[0].values("content-length") == ["5"] and up.garbage == []


@pytest.mark.parametrize("raw", [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\nX-A: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00\r\n\r\n",
    b"GET / HTTP/1.1\r\nX-A: a\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext\r\nabc\r\n0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
])
async def test_refuses_anything_not_strictly_framed(raw_upstream: Start, raw: bytes):
    """What the gateway must never send upstream is recorded as garbage, never as a request."""
    up = await raw_upstream()
    await send(up, raw)
    assert up.requests == [] and len(up.garbage) == 1, (up.requests, up.garbage)


async def test_leftover_and_cut_bodies_are_recorded(raw_upstream: Start):
    up = await raw_upstream()
    await send(up, request("GET", "/", [(MARKER, "1")]) + b"GET /SMUGG")
    assert [r.marker for r in up.requests] == ["1"]
    assert [g.reason for g in up.garbage] == ["leftover bytes at close"] and up.garbage[0].data == b"GET /SMUGG"
    up.reset()
    await send(up, request("POST", "/", [(MARKER, "2"), ("Content-Length", "10")]) + b"abc")
    assert up.requests == [] and up.started == {"2": up.connections}
    assert [(g.reason, g.data) for g in up.garbage] == [("closed inside a request body", b"abc")]


@pytest.mark.parametrize(("script", "expect"), [("pipeline2", EVIL.encode()), ("extra", b"XJUNK"),
                                                ("close-mid", b"0123456789")])
async def test_scripts_misbehave_as_described(raw_upstream: Start, script: str, expect: bytes):
    up = await raw_upstream()
    ex = await send(up, request("GET", "/", [(MARKER, "m"), (SCRIPT, script)]), ["GET", "GET"])
    seen = b"".join(r.body + "".join(v for _, v in r.headers).encode() for r in ex.responses) + ex.trailing
    assert expect in seen, ex
    assert ex.responses[0].header("X-Echo-Marker") == "m"
