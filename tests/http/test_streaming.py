"""Routes that opt out of request buffering (`stream_body`) or allow a body on DELETE (`allow_body_on`).

A streamed body goes upstream as it arrives, under the client's framing: the dangers are the classic ones of a
streaming proxy. Whatever the client does — a body over the route's limit, a body that stalls, a client that
disconnects mid-body, an upstream that answers before the body is in — the upstream must never receive a
complete request with a body other than the one the client framed, never a byte beyond it, and the upstream
connection carrying a broken body must be closed, never reused for another client.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.conftest import RunningGateway
from tests.http.asserts import BOUND, SETTLE, assert_own, assert_refused, assert_refused_or_closed, marker, port_of
from tests.http.conftest import STREAM_POLICIES, server_overrides
from tests.http.rawclient import exchange, request
from tests.http.rawupstream import MARKER, SCRIPT, RawUpstream
from tests.waiting import eventually


@pytest.fixture
async def streaming(
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
    running_gateway: Callable[..., Awaitable[RunningGateway]],
) -> tuple[RawUpstream, int]:
    up = await raw_upstream()
    gw = await running_gateway(up.url, policy_dir=STREAM_POLICIES, server=server_overrides())
    return up, port_of(gw)


def chunked(body: bytes, size: int = 7) -> bytes:
    return b"".join(b"%x\r\n%b\r\n" % (len(body[i:i + size]), body[i:i + size])
                    for i in range(0, len(body), size)) + b"0\r\n\r\n"


async def still_serves(up: RawUpstream, port: int, avoid_conn: int | None = None) -> None:
    """The next clients get their own answers, on another upstream connection than `avoid_conn`."""
    for _ in range(3):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert ex.responses, ex
        assert_own(ex.responses[0], mark)
        if avoid_conn is not None:
            assert up.by_marker(mark)[0].conn != avoid_conn, "connection that carried a broken body was reused"


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_streamed_body_arrives_exactly(streaming, framing: str):
    """A streamed body reaches the upstream exactly (its Content-Length, or chunked without the client's
    extensions and trailers), in one request."""
    up, port = streaming
    mark, body = marker(), bytes(range(256)) * 8 + b"GET /SMUGGLED HTTP/1.1\r\nHost: x\r\n\r\n"
    if framing == "chunked":
        raw = (request("POST", "/stream", [(MARKER, mark), ("Transfer-Encoding", "chunked")])
               + chunked(body).replace(b"\r\n0\r\n\r\n", b"\r\n0;ext=1\r\nX-Trailer: t\r\n\r\n"))
    else:
        raw = request("POST", "/stream", [(MARKER, mark)], body)
    ex = await exchange(port, raw, timeout=BOUND)
    assert_own(ex.responses[0], mark)
    got = up.by_marker(mark)
    assert len(got) == 1 and got[0].body == body, got
    assert not got[0].has("X-Trailer") and not got[0].has("Expect") and not got[0].has("Content-Encoding")
    assert not up.garbage and not any(r.target == "/SMUGGLED" for r in up.requests)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_streamed_body_over_the_route_limit_never_reaches_the_upstream_whole(streaming, framing: str):
    """Over stream_body.max_bytes: 413 (or a close); the upstream never gets a complete request, and the
    connection that carried the cut body is closed, not reused."""
    up, port = streaming
    mark, body = marker(), b"b" * 6000
    if framing == "chunked":
        raw = request("POST", "/stream", [(MARKER, mark), ("Transfer-Encoding", "chunked")]) + chunked(body, 1000)
    else:
        raw = request("POST", "/stream", [(MARKER, mark), ("Content-Length", "6000")]) + body
    ex = await exchange(port, [raw[: len(raw) // 2], raw[len(raw) // 2:]], pause=0.05, timeout=BOUND)
    assert_refused_or_closed(ex, 413)
    await asyncio.sleep(SETTLE)
    assert not up.by_marker(mark), "a cut body reached the upstream as a complete request"
    await still_serves(up, port, up.started.get(mark))


async def test_stalled_streamed_body_is_408_and_its_upstream_connection_closed(streaming):
    """A streamed body that stalls: 408 (or a close) after idle_seconds; the upstream connection is closed."""
    up, port = streaming
    mark = marker()
    ex = await exchange(port, request("POST", "/stream", [(MARKER, mark), ("Content-Length", "100")]) + b"x" * 29,
                        timeout=BOUND)
    assert not ex.timed_out, ex
    assert_refused_or_closed(ex, 408)
    await asyncio.sleep(SETTLE)
    assert not up.by_marker(mark), "a stalled body reached the upstream as a complete request"
    await still_serves(up, port, up.started.get(mark))


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_client_leaving_mid_stream_never_completes_a_request_upstream(streaming, framing: str):
    """The client disconnects halfway through a streamed body: no complete request upstream, connection closed."""
    up, port = streaming
    mark = marker()
    if framing == "chunked":
        head = request("POST", "/stream", [(MARKER, mark), ("Transfer-Encoding", "chunked")])
        part = b"a\r\n0123456789\r\n"
    else:
        head = request("POST", "/stream", [(MARKER, mark), ("Content-Length", "100")])
        part = b"0123456789"
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head + part)
    await writer.drain()
    await eventually(lambda: mark in up.started, "the gateway to stream the request upstream")
    writer.transport.abort()
    await asyncio.sleep(SETTLE)
    assert not up.by_marker(mark), "a body the client abandoned reached the upstream as a complete request"
    await still_serves(up, port, up.started.get(mark))


async def test_early_answer_to_a_streamed_body_closes_the_connection(streaming):
    """The upstream answers before the streamed body is in: relayed (or 502/408), the connection never reused."""
    up, port = streaming
    mark = marker()
    head = request("POST", "/stream", [(MARKER, mark), (SCRIPT, "early"), ("Content-Length", "40")])
    ex = await exchange(port, [head + b"x" * 20, b"y" * 20], pause=0.1, timeout=BOUND)
    assert ex.responses, ex
    if ex.responses[0].status == 200:
        assert_own(ex.responses[0], mark)
    else:
        assert_refused(ex.responses[0], 502, 408)
    got = up.by_marker(mark)
    assert len(got) <= 1 and (not got or got[0].body == b"x" * 20 + b"y" * 20), got
    await still_serves(up, port, got[0].conn if got else None)


async def test_body_on_delete_where_the_policy_allows_it_goes_up_framed(streaming):
    """allow_body_on: [DELETE]: the body goes upstream with its exact Content-Length, de-chunked."""
    up, port = streaming
    mark = marker()
    raw = request("DELETE", "/purge", [(MARKER, mark), ("Transfer-Encoding", "chunked")]) + chunked(b"purge-me")
    ex = await exchange(port, raw, timeout=BOUND)
    assert_own(ex.responses[0], mark)
    got = up.by_marker(mark)
    assert len(got) == 1 and got[0].body == b"purge-me" and not got[0].chunked, got
    assert got[0].values("Content-Length") == ["8"]
    mark = marker()
    ex = await exchange(port, request("DELETE", "/echo", [(MARKER, mark)], b"nope"), timeout=BOUND)
    assert ex.responses, ex
    assert_refused(ex.responses[0], 400)
    assert not up.by_marker(mark)


@pytest.mark.parametrize("script", ["early", "early-close", "raw-error-400"])
async def test_rest_of_a_streamed_body_after_the_answer_is_never_a_request(streaming, script: str):
    """The upstream answers while the client is still streaming its body: what the client sends afterwards is
    still that body (here it looks like a request): it never reaches the upstream as one, and the client gets
    one answer for its one request."""
    up, port = streaming
    mark = marker()
    inner = request("GET", "/echo", [(MARKER, "smuggled")])
    first = b"x" * 40
    head = request("POST", "/stream", [(MARKER, mark), (SCRIPT, script),
                                       ("Content-Length", str(len(first) + len(inner)))])
    ex = await exchange(port, [head + first, inner], pause=0.2, methods=["POST"], timeout=BOUND, linger=0.5)
    await asyncio.sleep(SETTLE)
    assert not up.by_marker("smuggled"), "the rest of a streamed body reached the upstream as a request"
    assert ex.responses, ex
    assert ex.responses[0].status in (200, 400, 502, 408), ex.responses[0]
    assert b"smuggled" not in ex.trailing, ex.trailing
    await still_serves(up, port, up.started.get(mark))
