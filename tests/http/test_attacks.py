"""The HTTP attack table of issue 13: each finding reproduced black-box over raw sockets on 127.0.0.1.

Every test drives a real gateway (tests/http/policies) in front of the recording raw upstream
(tests/http/rawupstream.py) and asserts the target contract: what the client gets back, and exactly what
reached the upstream (nothing, or one request framed by the gateway with the bytes the client framed).
No assertion is about a duration: timeouts are set small and outer bounds only keep a test from hanging.
"""

from __future__ import annotations

import asyncio
import gzip
import uuid
import zlib
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote

import pytest

from gateway.config import Settings
from tests.conftest import RunningGateway
from tests.http.asserts import (
    BOUND,
    SETTLE,
    assert_gateway_framed,
    assert_own,
    assert_refused,
    assert_refused_or_closed,
    long_keepalive,
    marker,
    nothing_upstream,
    port_of,
)
from tests.http.conftest import TARGET_TIMEOUTS, server_overrides
from tests.http.rawclient import Exchange, exchange, read_responses, request, wait_closed
from tests.http.rawupstream import EVIL, MARKER, RAW_RESPONSES, SCRIPT, RawUpstream
from tests.waiting import eventually

Harness = Callable[..., Awaitable[tuple[RawUpstream, RunningGateway]]]


# --- the issue-13 configuration ----------------------------------------------------------------------------------


def test_config_has_the_issue13_server_keys():
    """server.timeouts and server.max_connections_per_client exist, with the documented defaults."""
    server = Settings.model_validate({}).server
    timeouts: Any = getattr(server, "timeouts", None)
    assert timeouts is not None, "server.timeouts missing from the config"
    assert (timeouts.header_read_seconds, timeouts.body_idle_seconds, timeouts.body_total_seconds,
            timeouts.keepalive_seconds) == (10, 10, 30, 75)
    assert getattr(server, "max_connections_per_client", None) == 256  # docs/deployment.md: an unlisted ingress pod is one client
    small = Settings.model_validate({"server": TARGET_TIMEOUTS}).server
    assert small.timeouts.header_read_seconds == 0.3  # type: ignore[attr-defined]


# --- finding 1: Content-Encoding smuggling ----------------------------------------------------------------------


def _smuggling_gzip(smuggled: bytes) -> bytes:
    """gzip data whose decoded form is `padding + smuggled` with len(padding) == len(gzip data).

    A gateway that decodes the body but forwards the client's Content-Length sends the padding as the body and
    `smuggled` as a second request on the same upstream connection.
    """
    pad = 64
    for _ in range(50):
        data = gzip.compress(b"A" * pad + smuggled, mtime=0)
        if len(data) == pad:
            return data
        pad = len(data)
    # no exact fixed point: pad the smuggled request's own header to absorb the difference
    for extra in range(1, 200):
        body = smuggled.replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"p" * extra + b"\r\n\r\n", 1)
        data = gzip.compress(b"A" * pad + body, mtime=0)
        if len(data) == pad:
            return data
    raise AssertionError("no fixed point")


SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: backend\r\nX-Marker: smuggled\r\n\r\n"


@pytest.mark.parametrize("connection", [None, "Content-Encoding", "keep-alive, content-encoding"])
async def test_gzip_body_is_refused_and_nothing_is_smuggled(harness: Harness, connection: str | None):
    """Finding 1: a gzip request body is 415, whatever Connection says; the upstream sees nothing at all."""
    up, gw = await harness(server=server_overrides())
    data = _smuggling_gzip(SMUGGLED)
    assert len(gzip.decompress(data)) > len(data)
    mark = marker()
    headers = [("Content-Type", "application/json"), ("Content-Encoding", "gzip"), (MARKER, mark)]
    if connection:
        headers.append(("Connection", connection))
    ex = await exchange(port_of(gw), request("POST", "/echo", headers, data), timeout=BOUND)
    assert_refused_or_closed(ex, 415, 400)
    if ex.responses:
        assert ex.responses[0].status == 415 or connection, ex.responses[0]
        assert ex.responses[0].json()["error"] == "invalid_request"
    await nothing_upstream(up)
    assert not any(r.target == "/SMUGGLED" for r in up.requests)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br", "x-gzip", "compress", "zstd", "x-custom",
                                      "gzip, identity", "identity, gzip", "GZIP"])
async def test_request_content_encoding_other_than_identity_is_415(harness: Harness, encoding: str):
    """Any request Content-Encoding but identity: 415 JSON invalid_request, and nothing upstream."""
    up, gw = await harness(server=server_overrides())
    raw = b'{"a": 1}'
    body = {"gzip": gzip.compress(raw), "deflate": zlib.compress(raw)}.get(encoding.split(",")[0].lower(), raw)
    ex = await exchange(port_of(gw), request("POST", "/echo", [("Content-Encoding", encoding)], body),
                        timeout=BOUND)
    assert ex.responses, ex
    assert_refused(ex.responses[0], 415)
    assert ex.responses[0].json()["error"] == "invalid_request"
    await nothing_upstream(up)


async def test_identity_content_encoding_is_forwarded_as_sent(harness: Harness):
    """Content-Encoding: identity is no encoding: the body goes upstream as the client framed it."""
    up, gw = await harness(server=server_overrides())
    mark, body = marker(), b"\x1f\x8b not really gzip"
    ex = await exchange(port_of(gw), request("POST", "/echo", [("Content-Encoding", "identity"), (MARKER, mark)],
                                             body), timeout=BOUND)
    assert ex.responses, ex
    assert_own(ex.responses[0], mark)
    got = up.by_marker(mark)
    assert len(got) == 1 and got[0].body == body and not got[0].chunked
    assert got[0].values("Content-Length") == [str(len(body))]


# --- finding 2: a response beyond a complete one ----------------------------------------------------------------


@pytest.mark.parametrize("script", ["extra", "pipeline2", "big-pipeline2"])
async def test_bytes_after_a_response_never_reach_another_client(harness: Harness, script: str):
    """Finding 2: what an upstream sends beyond a complete response is never relayed; its connection is closed."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    first = marker()
    ex = await exchange(port, request("GET", "/echo", [(MARKER, first), (SCRIPT, script)]), timeout=BOUND)
    assert ex.responses, ex
    assert_own(ex.responses[0], first)
    bad_conn = up.by_marker(first)[0].conn
    for _ in range(6):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert ex.responses, ex
        assert ex.responses[0].header("X-Echo-Marker") != EVIL, "another request's (nobody's) response relayed"
        assert_own(ex.responses[0], mark)
        assert up.by_marker(mark)[0].conn != bad_conn, "the out-of-step upstream connection was reused"


async def test_bytes_after_a_response_concurrent_clients(harness: Harness):
    """Finding 2 under load: clients in parallel over a small pool, half the answers followed by extra bytes."""
    up, gw = await harness(server=server_overrides(), upstream={"pool": {"max_connections": 3}})
    port = port_of(gw)

    async def one(i: int) -> tuple[str, Exchange]:
        mark = marker()
        script = ("pipeline2", "extra", "ok", "ok")[i % 4]
        return mark, await exchange(port, request("GET", "/echo", [(MARKER, mark), (SCRIPT, script)]),
                                    timeout=BOUND)

    for _ in range(3):
        results = await asyncio.gather(*(one(i) for i in range(16)))
        for mark, ex in results:
            assert ex.responses, ex
            resp = ex.responses[0]
            assert resp.header("X-Echo-Marker") in (mark, None), f"response to another request: {resp!r}"
            assert resp.status in (200, 502), resp
            if resp.status == 200:
                assert_own(resp, mark)
            assert len(up.by_marker(mark)) <= 1


async def test_late_bytes_on_an_idle_upstream_connection_are_never_relayed(harness: Harness):
    """A response that arrives on an idle pooled connection is nobody's: the connection is closed."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    first = marker()
    ex = await exchange(port, request("GET", "/echo", [(MARKER, first), (SCRIPT, "late-extra")]), timeout=BOUND)
    assert_own(ex.responses[0], first)
    await eventually(lambda: up.late_sent == 1, "the late response to reach the idle connection")
    for _ in range(3):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert ex.responses, ex
        assert_own(ex.responses[0], mark)


# --- upstream misbehaviour: early answers, closes --------------------------------------------------------------


async def test_early_answer_to_a_large_body_closes_that_connection(harness: Harness):
    """An answer before the request was fully written: relayed (or 502), and that connection is never reused.
    The body is larger than the kernel's loopback socket buffers (tcp_wmem + tcp_rmem maxima), so the answer
    does arrive while the gateway still holds unsent bytes."""
    size = 16 * 1024 * 1024
    up, gw = await harness(server=server_overrides(max_body_bytes=2 * size))
    port = port_of(gw)
    first = marker()
    ex = await exchange(port, request("POST", "/echo", [(MARKER, first), (SCRIPT, "early")], b"z" * size),
                        timeout=BOUND)
    assert ex.responses, ex
    assert ex.responses[0].status in (200, 502), ex.responses[0]
    if ex.responses[0].status == 200:
        assert_own(ex.responses[0], first)
    early = up.by_marker(first)
    assert len(early) <= 1
    for _ in range(3):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert_own(ex.responses[0], mark)
        if early:
            assert up.by_marker(mark)[0].conn != early[0].conn, "connection answered early was reused"


@pytest.mark.parametrize("script", ["close-mid", "close-silent", "early-close"])
async def test_upstream_closing_is_502_or_a_cut_response_and_never_confuses_others(harness: Harness, script: str):
    """An upstream closing mid-exchange: that client gets 502/504 JSON or a response cut off by a close."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    first = marker()
    ex = await exchange(port, request("POST", "/echo", [(MARKER, first), (SCRIPT, script)], b"x" * 50),
                        timeout=BOUND)
    if script == "close-mid":
        assert ex.responses, ex
        resp = ex.responses[0]
        if resp.status == 200:  # headers were relayed: the body must be cut off and the connection closed
            assert resp.header("X-Echo-Marker") == first
            assert not resp.complete and ex.closed, resp
        else:
            assert_refused(resp, 502)
    elif script == "close-silent":
        assert ex.responses, ex
        assert_refused(ex.responses[0], 502)
    else:
        assert ex.responses, ex
        assert ex.responses[0].status in (200, 502), ex.responses[0]
    assert len(up.by_marker(first)) <= 1, "a request the upstream failed on was sent again"
    for _ in range(3):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert_own(ex.responses[0], mark)


@pytest.mark.parametrize("method", ["GET", "DELETE", "POST"])
async def test_a_request_the_upstream_received_is_never_sent_again(harness: Harness, method: str):
    """An upstream that reads a request and closes without answering, on a reused connection: 502, and the
    request is not sent a second time (the upstream received it; a retry would act twice: DELETE revokes)."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    warm = marker()
    ex = await exchange(port, request("GET", "/echo", [(MARKER, warm)]), timeout=BOUND)
    assert_own(ex.responses[0], warm)  # the pool now holds an idle connection, reused next
    mark = marker()
    ex = await exchange(port, request(method, "/echo", [(MARKER, mark), (SCRIPT, "close-silent")],
                                      b"x" if method == "POST" else b""), timeout=BOUND)
    assert ex.responses, ex
    assert_refused(ex.responses[0], 502)
    await asyncio.sleep(SETTLE)
    assert len(up.by_marker(mark)) == 1, f"sent {len(up.by_marker(mark))} times"


@pytest.mark.parametrize("key", sorted(RAW_RESPONSES))
async def test_malformed_upstream_responses_are_never_relayed_confused(harness: Harness, key: str):
    """An upstream answering malformed or out-of-step HTTP: that client gets 502/504 JSON or its own response
    intact; nothing of another response reaches anyone; a connection with bytes left over is never reused."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    method = "HEAD" if key == "head-with-body" else "GET"
    first = marker()
    ex = await exchange(port, request(method, "/echo", [(MARKER, first), (SCRIPT, f"raw-{key}")]), methods=[method],
                        timeout=BOUND)
    assert ex.responses or ex.closed, ex
    for resp in ex.responses:
        assert resp.header("X-Evil") is None and resp.header("X-Echo-Marker") != EVIL, f"nobody's response: {resp!r}"
        assert not any(c in v for _, v in resp.headers for c in "\r\n\x00"), f"unsafe header relayed: {resp!r}"
        if resp.status in (502, 504):
            assert_refused(resp, 502, 504)
        else:
            assert resp.status in (200, 204, 304, 400), resp
            assert [v for n, v in resp.headers if n.lower() == "x-echo-marker"] == [first], resp
            if not resp.complete:  # headers relayed, then the upstream's error: cut off, the connection closed
                assert ex.closed and resp.body in (b"", b"{}"), ex
                continue
            with_body = method == "GET" and resp.status in (200, 400)
            assert resp.body in (b"", b"{}") and (resp.body == b"{}") == with_body, resp
    bad_conn = up.by_marker(first)[0].conn
    leftover = EVIL.encode() in RAW_RESPONSES[key]
    for _ in range(3):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert ex.responses, ex
        assert_own(ex.responses[0], mark)
        if leftover:
            assert up.by_marker(mark)[0].conn != bad_conn, "connection with bytes beyond its response reused"


async def test_error_answer_to_a_request_with_a_body_closes_the_connection(harness: Harness):
    """The upstream answers 4xx to a request with a body (it may not have read the body): never reused."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    first = marker()
    ex = await exchange(port, request("POST", "/echo", [(MARKER, first), (SCRIPT, "raw-error-400")], b"body"),
                        timeout=BOUND)
    assert ex.responses and ex.responses[0].status == 400, ex
    assert ex.responses[0].header("X-Echo-Marker") == first
    bad_conn = up.by_marker(first)[0].conn
    for _ in range(2):
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert_own(ex.responses[0], mark)
        assert up.by_marker(mark)[0].conn != bad_conn, "connection reused after an error answer to a body"


# --- finding 3: double decoding ---------------------------------------------------------------------------------


async def test_gzip_in_gzip_cannot_pass_body_size(harness: Harness):
    """Finding 3: a body gzip'd twice is 415 before any body check can see a once-decoded (small) body."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    # The check itself works: over 1024 bytes plainly is 413, under is forwarded.
    ex = await exchange(port, request("POST", "/limited", [], b"a" * 2000), timeout=BOUND)
    assert_refused(ex.responses[0], 413)
    mark = marker()
    ex = await exchange(port, request("POST", "/limited", [(MARKER, mark)], b"a" * 100), timeout=BOUND)
    assert_own(ex.responses[0], mark)
    up.reset()
    inner = gzip.compress(b"a" * 200_000)
    outer = gzip.compress(inner)
    assert len(inner) < 1024
    for enc in ("gzip", "gzip, gzip"):
        ex = await exchange(port, request("POST", "/limited", [("Content-Encoding", enc)], outer), timeout=BOUND)
        assert ex.responses, ex
        assert_refused(ex.responses[0], 415)
    await nothing_upstream(up)


# --- finding 4: pool exhaustion by stalled bodies ---------------------------------------------------------------


async def _stall(port: int, head: bytes, opened: list[asyncio.StreamWriter]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    opened.append(writer)
    writer.write(head)
    await writer.drain()


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_stalled_bodies_cannot_exhaust_the_upstream_pool(harness: Harness, method: str):
    """Finding 4: many clients announce a body and never send it; the next client still gets its 200."""
    pool = 4
    up, gw = await harness(server=server_overrides(), upstream={"pool": {"max_connections": pool}})
    port = port_of(gw)
    opened: list[asyncio.StreamWriter] = []
    stalled = [marker() for _ in range(40)]
    try:
        await asyncio.gather(*(_stall(port, request(method, "/echo", [(MARKER, m), ("Content-Length", "64")]),
                                      opened) for m in stalled))
        await asyncio.sleep(SETTLE)  # the gateway has read every stalled head
        for _ in range(3):
            mark = marker()
            ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
            assert ex.responses, ex
            assert_own(ex.responses[0], mark)
        assert all(not up.by_marker(m) for m in stalled), "a request whose body never came reached the upstream"
        assert up.max_open <= pool
    finally:
        for w in opened:
            w.close()


async def test_connections_per_client_are_bounded(harness: Harness):
    """server.max_connections_per_client: connections beyond it are not served; once they go, service resumes."""
    limit = 4
    server = {**TARGET_TIMEOUTS, "max_connections_per_client": limit,
              "timeouts": {**TARGET_TIMEOUTS["timeouts"], "body_idle_seconds": 5, "body_total_seconds": 5}}
    up, gw = await harness(server=server)
    port = port_of(gw)
    opened: list[asyncio.StreamWriter] = []
    try:
        await asyncio.gather(*(_stall(port, request("POST", "/echo", [("Content-Length", "64")]), opened)
                               for _ in range(limit)))
        await asyncio.sleep(SETTLE)
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
        assert not any(r.status == 200 for r in ex.responses), ex
        await asyncio.sleep(SETTLE)
        assert not up.by_marker(mark)
    finally:
        for w in opened:
            w.close()
    await asyncio.sleep(SETTLE)
    mark = marker()
    ex = await exchange(port, request("GET", "/echo", [(MARKER, mark)]), timeout=BOUND)
    assert_own(ex.responses[0], mark)


async def test_clients_behind_a_trusted_proxy_are_bounded_by_requests_in_flight(harness: Harness):
    """Behind a trusted proxy, max_connections_per_client counts one client's requests in flight (429 beyond),
    and another client behind the same proxy is still served."""
    limit = 2
    server = {**server_overrides(), "max_connections_per_client": limit, "trusted_proxies": ["127.0.0.1/32"]}
    if "timeouts" in server:
        server["timeouts"] = {**server["timeouts"], "body_idle_seconds": 5, "body_total_seconds": 5}
    up, gw = await harness(server=server)
    port = port_of(gw)
    opened: list[asyncio.StreamWriter] = []
    busy = [("X-Forwarded-For", "203.0.113.7")]
    try:
        await asyncio.gather(*(_stall(port, request("POST", "/echo", [*busy, ("Content-Length", "64")]), opened)
                               for _ in range(limit)))
        await asyncio.sleep(SETTLE)
        mark = marker()
        ex = await exchange(port, request("GET", "/echo", [*busy, (MARKER, mark)]), timeout=BOUND)
        assert ex.responses, ex
        assert_refused(ex.responses[0], 429)
        other = marker()
        ex = await exchange(port, request("GET", "/echo", [("X-Forwarded-For", "198.51.100.9"), (MARKER, other)]),
                            timeout=BOUND)
        assert_own(ex.responses[0], other)
        assert not up.by_marker(mark)
    finally:
        for w in opened:
            w.close()


async def test_idle_keepalive_connection_is_closed(harness: Harness):
    """server.timeouts.keepalive_seconds: an idle connection after a request is closed (here after 0.5 s)."""
    server = server_overrides()
    server["timeouts"] = {**server.get("timeouts", {}), "keepalive_seconds": 0.5}
    _, gw = await harness(server=server)
    mark = marker()
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(request("GET", "/echo", [(MARKER, mark)]))
        await writer.drain()
        ex = await read_responses(reader, ["GET"], BOUND)
        assert_own(ex.responses[0], mark)
        closed, data = await wait_closed(reader, BOUND)
    finally:
        writer.close()
    assert closed and not data, data


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_body_over_max_body_bytes_is_413_and_never_upstream(harness: Harness, framing: str):
    """server.max_body_bytes: 413 JSON (or a close) whether the length is declared or only counted."""
    up, gw = await harness(server=server_overrides(max_body_bytes=1000))
    body = b"o" * 3000
    if framing == "chunked":
        raw = request("POST", "/echo", [("Transfer-Encoding", "chunked")]) + b"".join(
            b"%x\r\n%b\r\n" % (100, body[i:i + 100]) for i in range(0, 3000, 100)) + b"0\r\n\r\n"
    else:
        raw = request("POST", "/echo", [], body)
    ex = await exchange(port_of(gw), raw, timeout=BOUND)
    assert_refused_or_closed(ex, 413)
    await nothing_upstream(up)


# --- bodies on methods without one ------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "DELETE", "OPTIONS"])
@pytest.mark.parametrize("framing", ["content-length", "chunked", "chunked-empty"])
async def test_body_on_get_head_delete_is_400(harness: Harness, method: str, framing: str):
    """A body (Content-Length > 0 or any Transfer-Encoding) on GET/HEAD/DELETE: 400 JSON, nothing upstream."""
    up, gw = await harness(server=server_overrides())
    if framing == "content-length":
        raw = request(method, "/echo", [], b"0123456789")
    else:
        data = b"a\r\n0123456789\r\n0\r\n\r\n" if framing == "chunked" else b"0\r\n\r\n"
        raw = request(method, "/echo", [("Transfer-Encoding", "chunked")]) + data
    ex = await exchange(port_of(gw), raw, methods=[method], timeout=BOUND)
    if method == "HEAD":  # the refusal of a HEAD has no body to be JSON
        assert ex.responses or ex.closed, ex
        assert not ex.responses or ex.responses[0].status == 400, ex.responses[0]
    else:
        assert_refused_or_closed(ex, 400)
    await nothing_upstream(up)


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_get_with_content_length_zero_is_forwarded(harness: Harness, method: str):
    up, gw = await harness(server=server_overrides())
    mark = marker()
    ex = await exchange(port_of(gw), request(method, "/echo", [(MARKER, mark)], content_length=True),
                        timeout=BOUND)
    assert_own(ex.responses[0], mark)
    assert_gateway_framed(up, mark, b"")


# --- finding 5: Connection naming end-to-end fields -------------------------------------------------------------


@pytest.mark.parametrize("named", ["Authorization", "authorization, keep-alive", "Content-Length", "Host",
                                   "X-Marker", "Content-Type", "client_id", "Cookie", "X-Custom"])
async def test_connection_naming_an_end_to_end_field_is_400(harness: Harness, named: str):
    """Finding 5: Connection may not name a field the policy or the backend relies on: 400, nothing upstream."""
    up, gw = await harness(server=server_overrides())
    mark = marker()
    headers = [("Authorization", "Bearer abc"), (MARKER, mark), ("Connection", named), ("X-Custom", "1"),
               ("client_id", "c1"), ("Cookie", "a=b"), ("Content-Type", "application/json")]
    ex = await exchange(port_of(gw), request("POST", "/authz", headers, b"{}"), timeout=BOUND)
    assert ex.responses, ex
    assert_refused(ex.responses[0], 400)
    await nothing_upstream(up)


@pytest.mark.parametrize("named", ["keep-alive", "close", "TE", "Trailer", "Upgrade", "Proxy-Connection",
                                   "Keep-Alive, TE"])
async def test_connection_naming_hop_by_hop_fields_is_forwarded_without_them(harness: Harness, named: str):
    """Connection naming only close, keep-alive and the standard hop-by-hop fields is fine; those never go on."""
    up, gw = await harness(server=server_overrides())
    mark = marker()
    headers = [("Authorization", "Bearer abc"), (MARKER, mark), ("Connection", named), ("TE", "trailers"),
               ("Keep-Alive", "timeout=5"), ("Proxy-Connection", "keep-alive")]
    ex = await exchange(port_of(gw), request("GET", "/authz", headers), timeout=BOUND)
    assert ex.responses, ex
    assert_own(ex.responses[0], mark)
    got = up.by_marker(mark)[0]
    assert got.values("Authorization") == ["Bearer abc"]
    for hop in ("Connection", "TE", "Keep-Alive", "Proxy-Connection", "Upgrade", "Trailer"):
        assert hop.lower() == "connection" or not got.has(hop), got.headers
    assert all(v.lower() in ("close", "keep-alive") for v in got.values("Connection")), got.headers


async def test_authorization_the_policy_saw_is_the_one_the_backend_gets(harness: Harness):
    """The validated Authorization reaches the upstream unchanged (the positive half of finding 5)."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    ex = await exchange(port, request("GET", "/authz", [(MARKER, marker())]), timeout=BOUND)
    assert_refused(ex.responses[0], 400)  # the policy does require it
    mark = marker()
    ex = await exchange(port, request("GET", "/authz", [("Authorization", "Bearer abc"), (MARKER, mark)]),
                        timeout=BOUND)
    assert_own(ex.responses[0], mark)
    assert up.by_marker(mark)[0].values("Authorization") == ["Bearer abc"]


@pytest.mark.parametrize("protocol", ["h2c", "TLS/1.2", "websocket"])
async def test_upgrade_requests_are_forwarded_without_upgrade_and_nothing_after_them_is_smuggled(
        harness: Harness, protocol: str):
    """h2c smuggling: `Connection: Upgrade` + `Upgrade: h2c` is answered as plain HTTP/1.1 (the upstream never
    sees Upgrade, so never switches); bytes pipelined after it are answered as their own requests or not at all,
    and the connection then closes rather than hanging."""
    server = server_overrides()
    server["timeouts"] = {**server.get("timeouts", {}), "keepalive_seconds": 1}
    up, gw = await harness(server=server)
    first, second = marker(), marker()
    raw = (request("GET", "/echo", [(MARKER, first), ("Connection", "Upgrade"), ("Upgrade", protocol)])
           + request("GET", "/echo", [(MARKER, second)]) + SMUGGLED)
    ex = await exchange(port_of(gw), raw, methods=["GET", "GET", "GET"], timeout=BOUND)
    assert ex.responses, ex
    assert ex.responses[0].status != 101, ex.responses[0]
    assert_own(ex.responses[0], first)
    assert not up.by_marker(first)[0].has("Upgrade")
    if len(ex.responses) > 1:
        assert_own(ex.responses[1], second)
    else:
        assert ex.closed, "requests after an upgrade request neither answered nor the connection closed"
    for resp in ex.responses[2:]:
        assert resp.status == 404, resp  # /SMUGGLED matches no policy
    await asyncio.sleep(SETTLE)
    assert not any(r.target == "/SMUGGLED" for r in up.requests)
    assert len(up.by_marker(second)) == (1 if len(ex.responses) > 1 else 0)


# --- finding 8: spoofable trust headers --------------------------------------------------------------------------

SPOOFED = ["X-DCR-Client-Id", "X_DCR_Client_Id", "x_dcr_client_id", "X-DCR-SOFTWARE-ID", "x_dcr_org_id",
           "X-Dcr-Software-Roles", "X_DCR_Client_Cert_S256", "ssl-client-cert", "ssl_client_cert",
           "SSL_CLIENT_CERT", "Forwarded", "X-Real-IP", "X_Real_IP", "X-Request-Id", "x_request_id",
           "X-Forwarded-For", "X_Forwarded_For", "X-Forwarded-Proto", "x_forwarded_proto", "X-Forwarded-Host",
           "X-Forwarded-Port", "X_Forwarded_Port", "X-Forwarded-Prefix", "x_forwarded_prefix", "X-Forwarded-Server",
           "X-Client-IP", "True-Client-IP", "true_client_ip", "x_fapi_interaction_id", "X-Fapi-Interaction-Id"]


@pytest.mark.parametrize("name", SPOOFED)
async def test_headers_colliding_with_gateway_set_ones_never_reach_the_backend(harness: Harness, name: str):
    """Finding 8: any spelling (case, `_` or `-`) of a gateway-set header is removed; the gateway's own stay."""
    up, gw = await harness(server=server_overrides())
    mark, spoof = marker(), f"spoof{uuid.uuid4().hex[:8]}"
    value = f"for={spoof}" if name == "Forwarded" else spoof
    ex = await exchange(port_of(gw), request("GET", "/echo", [(name, value), (MARKER, mark)]), timeout=BOUND)
    assert ex.responses, ex
    assert_own(ex.responses[0], mark)
    got = up.by_marker(mark)[0]
    leaked = [(n, v) for n, v in got.headers if spoof in v]
    assert not leaked, f"spoofed {name} reached the backend: {leaked}"
    for own in ("X-Forwarded-For", "X-Forwarded-Proto", "X-Request-Id"):
        assert len(got.values(own)) == 1, (own, got.headers)
    assert got.values("X-Forwarded-For")[0].endswith("127.0.0.1")


async def test_client_certificate_header_named_in_config_is_removed_in_every_spelling(harness: Harness):
    """The configured trust.client_certificate.header, in `_` and case variants, never reaches the backend."""
    up, gw = await harness(server=server_overrides(),
                           trust={"client_certificate": {"header": "X-Client-Cert"}})
    mark, spoof = marker(), f"spoof{uuid.uuid4().hex[:8]}"
    for i, name in enumerate(("X-Client-Cert", "x_client_cert", "X_CLIENT-CERT")):
        ex = await exchange(port_of(gw), request("GET", "/echo", [(name, spoof), (MARKER, f"{mark}{i}")]),
                            timeout=BOUND)
        assert_own(ex.responses[0], f"{mark}{i}")
        assert not [h for h in up.by_marker(f"{mark}{i}")[0].headers if spoof in h[1]], name


@pytest.mark.parametrize("name", ["X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override", "X-Original-URL",
                                  "X-Rewrite-URL", "x_http_method_override", "X_Original_URL", "x-rewrite-url"])
async def test_override_headers_are_400(harness: Harness, name: str):
    """Finding 8: method/URL override headers would make the backend act on what no policy evaluated: 400."""
    up, gw = await harness(server=server_overrides())
    value = "DELETE" if "method" in name.lower() else "/admin/secret"
    ex = await exchange(port_of(gw), request("GET", "/echo", [(name, value)]), timeout=BOUND)
    assert ex.responses, ex
    assert_refused(ex.responses[0], 400)
    await nothing_upstream(up)


@pytest.mark.parametrize("pair", [("client_id", "client-id"), ("Client-Id", "client_id"),
                                  ("X-Api-Key", "x_api_key"), ("Authorization", "authorization_")])
async def test_two_spellings_of_one_header_are_400(harness: Harness, pair: tuple[str, str]):
    """Finding 8: `client_id` and `client-id` together: which one the backend reads is unknowable: 400."""
    up, gw = await harness(server=server_overrides())
    first, second = pair
    mark = marker()
    ex = await exchange(port_of(gw), request("GET", "/echo", [(first, "a"), (second, "b"), (MARKER, mark)]),
                        timeout=BOUND)
    assert ex.responses, ex
    if second.endswith("_"):  # not the same family (a control): forwarded
        assert_own(ex.responses[0], mark)
        return
    assert_refused(ex.responses[0], 400)
    await nothing_upstream(up)


@pytest.mark.parametrize("name", ["Authorization", "client_id", "Content-Type", "Host", "x-fapi-interaction-id",
                                  "ssl-client-cert", "Content-Encoding"])
async def test_a_second_copy_of_a_single_valued_header_is_400(harness: Harness, name: str):
    """Headers the checks read once (docs/security.md): a second copy, same spelling, is 400, nothing upstream."""
    up, gw = await harness(server=server_overrides())
    values = {"x-fapi-interaction-id": (str(uuid.uuid4()), str(uuid.uuid4())),
              "Content-Encoding": ("identity", "identity")}.get(name, ("one", "two"))
    headers = [(name, values[0]), (MARKER, marker()), (name, values[1])]
    ex = await exchange(port_of(gw), request("POST", "/authz", [("Authorization", "Bearer a"), *headers]
                                             if name != "Authorization" else headers, b"{}"), timeout=BOUND)
    assert ex.responses, ex
    assert_refused(ex.responses[0], 400)
    await nothing_upstream(up)


@pytest.mark.parametrize("name", ["Content_Length", "Transfer_Encoding", "content_encoding", "EXPECT", "keep_alive",
                                  "proxy_connection", "X_Forwarded_Host"])
async def test_framing_lookalike_headers_never_reach_the_backend(harness: Harness, name: str):
    """`Content_Length`, `Transfer_Encoding`… mean nothing to the gateway's parser but may mean framing to a
    backend that folds `_` into `-`: dropped or refused, never forwarded; the body is framed by the real ones."""
    up, gw = await harness(server=server_overrides())
    mark = marker()
    value = {"Content_Length": "100", "Transfer_Encoding": "chunked", "content_encoding": "gzip"}.get(name, "spoofed")
    ex = await exchange(port_of(gw), request("POST", "/echo", [(name, value), (MARKER, mark)], b"abc"), timeout=BOUND)
    assert ex.responses, ex
    if ex.responses[0].status != 200:
        assert_refused(ex.responses[0], 400, 415, 417)
        await nothing_upstream(up)
        return
    assert_own(ex.responses[0], mark)
    assert_gateway_framed(up, mark, b"abc")
    got = up.by_marker(mark)[0]
    assert not [h for h in got.headers if h[0] == name], got.headers


# --- finding 11: slow clients, control characters -----------------------------------------------------------------


async def test_stalled_body_is_408_or_closed(harness: Harness):
    """Finding 11: Content-Length 100 with 29 bytes sent: 408 JSON (or a close) after body_idle_seconds."""
    up, gw = await harness(server=server_overrides())
    mark = marker()
    ex = await exchange(port_of(gw), request("POST", "/echo", [(MARKER, mark), ("Content-Length", "100")])
                        + b"x" * 29, timeout=BOUND)
    assert not ex.timed_out, "a stalled body kept the connection open"
    assert_refused_or_closed(ex, 408)
    await nothing_upstream(up)


@pytest.mark.parametrize("head", [b"GET /echo HTTP/1.1\r\nHost: x\r\n", b"GET /echo HTTP/1.1\r\n", b"GET /ec",
                                  b"\r\n"])
async def test_unfinished_headers_are_closed(harness: Harness, head: bytes):
    """Finding 11: a request head that never ends (or never starts) is closed after header_read_seconds, not
    only after the keep-alive timeout (set long here)."""
    up, gw = await harness(server=long_keepalive())
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(head)
        await writer.drain()
        closed, data = await wait_closed(reader, BOUND)
    finally:
        writer.close()
    assert closed, "unfinished request head kept the connection open"
    assert not data or b" 408 " in data.split(b"\r\n", 1)[0] or b" 400 " in data.split(b"\r\n", 1)[0], data
    assert b"text/plain" not in data, data
    await nothing_upstream(up)


async def test_silent_connection_is_closed_after_header_read_seconds(harness: Harness):
    """A connection that never sends its first request head (zero bytes) is an unfinished head too: closed after
    header_read_seconds (as nginx's client_header_timeout does from accept), not held for keepalive_seconds."""
    up, gw = await harness(server=long_keepalive())
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        closed, data = await wait_closed(reader, BOUND)
    finally:
        writer.close()
    assert closed, "a connection that sent nothing was kept open"
    assert not data or data.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 400 ")), data
    await nothing_upstream(up)


@pytest.mark.parametrize("when", ["same-write", "while-answering", "after-body-same-write", "after-body-next-write",
                                  "after-chunked-body-same-write", "after-chunked-body-next-write"])
async def test_unfinished_head_behind_a_request_is_closed(harness: Harness, when: str):
    """Slowloris behind a first request: a partial head that arrives with (or during) a request, or right after
    its body, then nothing, is closed after header_read_seconds too, not only after the keep-alive timeout (set
    long here)."""
    up, gw = await harness(server=long_keepalive())
    mark = marker()
    partial = b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: "
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    method = "POST" if "body" in when else "GET"
    try:
        if when.startswith("after"):
            if "chunked" in when:
                head = request("POST", "/echo", [(MARKER, mark), ("Transfer-Encoding", "chunked")])
                body = b"3\r\nabc\r\n0\r\n\r\n"
            else:
                head, body = request("POST", "/echo", [(MARKER, mark), ("Content-Length", "3")]), b"abc"
            if when.endswith("same-write"):
                writer.write(head + body + partial)
            else:
                writer.write(head)
                await writer.drain()
                await asyncio.sleep(SETTLE)  # the gateway is reading the body
                writer.write(body + partial)
        elif when == "same-write":
            writer.write(request("GET", "/echo", [(MARKER, mark)]) + partial)
        else:
            up.hold = asyncio.Event()
            writer.write(request("GET", "/echo", [(MARKER, mark)]))
            await writer.drain()
            await eventually(lambda: mark in up.started, "the first request to be with the upstream, held")
            writer.write(partial)
            await writer.drain()
            await asyncio.sleep(SETTLE)
            up.hold.set()
        await writer.drain()
        ex = await read_responses(reader, [method], BOUND)
        assert ex.responses, ex
        assert_own(ex.responses[0], mark)
        closed, data = await wait_closed(reader, BOUND)
    finally:
        writer.close()
    assert closed, "an unfinished request head behind a first request kept the connection open"
    assert not data or data.startswith((b"HTTP/1.1 408 ", b"HTTP/1.1 400 ")), data


async def test_trickled_headers_are_closed(harness: Harness):
    """Slowloris: header bytes trickling in never let a head last beyond header_read_seconds."""
    up, gw = await harness(server=long_keepalive())
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    head = request("GET", "/echo", [("X-Long", "y" * 400)])
    closed = False
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOUND
        for byte in head[:-4]:
            if loop.time() > deadline:
                break
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            closed, _ = await wait_closed(reader, 0.02)
            if closed:
                break
    finally:
        writer.close()
    assert closed, "a trickled head kept the connection open"
    await nothing_upstream(up)


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
async def test_trickled_body_is_408_or_closed(harness: Harness, framing: str):
    """A body trickling one byte at a time is cut at body_total_seconds: 408 or closed, nothing upstream."""
    up, gw = await harness(server=server_overrides())
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    mark = marker()
    framing_header = ("Content-Length", "1000") if framing == "content-length" else ("Transfer-Encoding", "chunked")
    writer.write(request("POST", "/echo", [(MARKER, mark), framing_header])
                 + (b"3e8\r\n" if framing == "chunked" else b""))
    closed, data = False, b""
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BOUND
        for _ in range(999):
            if loop.time() > deadline:
                break
            try:
                writer.write(b"b")
                await writer.drain()
            except ConnectionError:
                closed = True
                break
            closed, got = await wait_closed(reader, 0.05)
            data += got
            if closed or data:
                break
        if data and not closed:
            closed, more = await wait_closed(reader, BOUND)
            data += more
    finally:
        writer.close()
    assert closed or data, "a trickled body kept the connection open without an answer"
    if data:
        assert data.startswith(b"HTTP/1.1 408 "), data
        assert b"application/json" in data, data
    await nothing_upstream(up)


PARSER_REFUSALS = {
    "nul-in-value": request("GET", "/echo", [("X-A", "a\x00b")]),
    "del-in-value": request("GET", "/echo", [("X-A", "a\x7fb")]),
    "ctl-in-value": request("GET", "/echo", [("X-A", "a\x01b")]),
    "nul-in-name": request("GET", "/echo", [("X-\x00A", "b")]),
    "space-before-colon": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A : b\r\n\r\n",
    "obs-fold": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n",
    "bare-lf-header": b"GET /echo HTTP/1.1\r\nHost: x\nX-A: b\r\n\r\n",
    "bare-lf-end": b"GET /echo HTTP/1.1\r\nHost: x\r\n\n",
    "bare-cr": b"GET /echo HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    "dup-content-length": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
    "dup-content-length-differ": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 30\r\n\r\nabc",
    "content-length-list": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
    "content-length-sign": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
    "cl-and-te": b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n",
    "te-and-cl": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n"
                 b"3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-0x": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-negative": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n-3\r\nabc\r\n0\r\n\r\n",
    "chunk-size-not-hex": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\ng\r\nabc\r\n0\r\n\r\n",
    "chunk-size-overflow": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                           b"10000000000000003\r\nabc\r\n0\r\n\r\n",
    "chunk-data-no-crlf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    "chunk-bare-lf": b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("line", [b"GET /echo", b"GET /echo HTTP/1.2", b"GET /echo HTTP/2.0", b"GET /echo HTTP/0.9",
                                  b"GET /echo HTTP/1.1 extra", b"GET /echo http/1.1"])
async def test_request_lines_of_other_protocols_are_refused(harness: Harness, line: bytes):
    """HTTP/0.9-style, other versions, malformed request lines: 400 or 505 JSON (an HTTP/1.1 status line) or a
    close; never forwarded."""
    up, gw = await harness(server=server_overrides())
    ex = await exchange(port_of(gw), line + b"\r\nHost: x\r\n\r\n", timeout=BOUND)
    assert not ex.timed_out, ex
    assert_refused_or_closed(ex, 400, 505)
    await nothing_upstream(up)


@pytest.mark.parametrize("case", sorted(PARSER_REFUSALS))
async def test_parser_level_refusals_are_json_400_or_close(harness: Harness, case: str):
    """Finding 11 and the parser table: 400 with a JSON body (or a close), never text/plain, never upstream."""
    up, gw = await harness(server=server_overrides())
    ex = await exchange(port_of(gw), PARSER_REFUSALS[case], methods=["GET", "GET"], timeout=BOUND)
    assert not ex.timed_out, ex
    assert_refused_or_closed(ex, 400)
    await nothing_upstream(up)


@pytest.mark.parametrize("case", ["long-value", "long-name", "many-headers", "long-target"])
async def test_oversized_heads_are_refused_as_json(harness: Harness, case: str):
    """Heads beyond the parser's limits: 4xx JSON (400/414/431) or a close, never text/plain, nothing upstream."""
    up, gw = await harness(server=server_overrides())
    headers: list[tuple[str, str]] = []
    target = "/echo"
    if case == "long-value":
        headers = [("X-Big", "v" * 70_000)]
    elif case == "long-name":
        headers = [("X-" + "n" * 70_000, "v")]
    elif case == "many-headers":
        headers = [(f"X-H{i}", "v" * 100) for i in range(2000)]
    else:
        target = "/echo?" + "q" * 70_000
    ex = await exchange(port_of(gw), request("GET", target, headers), timeout=BOUND)
    assert not ex.timed_out, ex
    assert_refused_or_closed(ex, 400, 413, 414, 431)
    await nothing_upstream(up)


@pytest.mark.parametrize("line", [b"GET http://127.0.0.1:9/echo HTTP/1.1", b"GET http://evil.example/echo HTTP/1.1",
                                  b"CONNECT 127.0.0.1:9 HTTP/1.1", b"OPTIONS * HTTP/1.1", b"GET //echo HTTP/1.1",
                                  b"GET /echo#frag HTTP/1.1", b"GET echo HTTP/1.1", b"GET /%65cho HTTP/1.1",
                                  b"TRACE /echo HTTP/1.1", b"get /echo HTTP/1.1"])
async def test_request_target_forms(harness: Harness, line: bytes):
    """Absolute-, authority- and asterisk-form targets and odd paths: either refused (4xx JSON / close, nothing
    upstream) or forwarded in origin form naming the path the policy matched (percent-encoded or not), once."""
    up, gw = await harness(server=server_overrides())
    mark = marker()
    ex = await exchange(port_of(gw), line + b"\r\nHost: gateway.test\r\nX-Marker: " + mark.encode() + b"\r\n\r\n",
                        timeout=BOUND)
    assert not ex.timed_out, ex
    await asyncio.sleep(SETTLE)
    got = up.by_marker(mark)
    if ex.responses and ex.responses[0].status == 200:
        assert_own(ex.responses[0], mark)
        assert len(got) == 1 and unquote(got[0].target) == "/echo" and got[0].method == "GET", got
    else:
        assert_refused_or_closed(ex, 400, 403, 404, 405, 501)
        assert not got, got
    assert not up.garbage


@pytest.mark.parametrize("target", ["/authz", "/nowhere"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("delivery", ["same-write", "expect-then-body"])
async def test_unread_body_of_a_denied_request_is_never_a_request(harness: Harness, target: str, framing: str,
                                                                  delivery: str):
    """A request denied before its body is read (policy denial, no route): its body — here a whole request — is
    discarded or the connection closed; it never reaches the upstream, and a genuine request after it is either
    answered as its own or not at all."""
    up, gw = await harness(server=server_overrides())
    smuggled = request("GET", "/echo", [(MARKER, "smuggled")])
    headers = [("X-Marker", marker())]
    if delivery == "expect-then-body":
        headers.append(("Expect", "100-continue"))
    if framing == "chunked":
        headers.append(("Transfer-Encoding", "chunked"))
        body = b"%x\r\n%b\r\n0\r\n\r\n" % (len(smuggled), smuggled)
    else:
        headers.append(("Content-Length", str(len(smuggled))))
        body = smuggled
    head = request("POST", target, headers)
    genuine = marker()
    after = request("GET", "/echo", [(MARKER, genuine)])
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        if delivery == "same-write":
            writer.write(head + body + after)
        else:
            writer.write(head)
            await writer.drain()
            first = await read_responses(reader, ["POST"], BOUND)  # the denial, without 100 Continue
            assert first.responses, first
            assert_refused(first.responses[0], 400, 401, 403, 404, 405)
            writer.write(body + after)
        await writer.drain()
        rest = await read_responses(reader, ["POST", "GET"] if delivery == "same-write" else ["GET"], BOUND)
    finally:
        writer.close()
    await asyncio.sleep(SETTLE)
    assert not up.by_marker("smuggled"), "the body of a denied request reached the upstream as a request"
    responses = rest.responses
    if delivery == "same-write" and responses:
        assert_refused(responses[0], 400, 401, 403, 404, 405)
        responses = responses[1:]
    for resp in responses:
        assert resp.header("X-Echo-Marker") != "smuggled", resp
        if resp.status == 200:
            assert_own(resp, genuine)
        else:
            assert_refused(resp, 400, 408)
    assert len(up.by_marker(genuine)) <= 1


# --- framing the gateway does itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("trailer", ["X-T", "Authorization", "X-DCR-Client-Id", "X-Marker", "Host", "Content-Type",
                                     "X-HTTP-Method-Override", "Content-Encoding"])
async def test_chunked_request_goes_upstream_de_chunked_with_content_length(harness: Harness, trailer: str):
    """A chunked request (with extensions and a trailer section) reaches the upstream as Content-Length + the
    data; no trailer field ever reaches the upstream (nor replaces a header the policy checked)."""
    up, gw = await harness(server=server_overrides())
    mark = marker()
    raw = (request("POST", "/authz", [(MARKER, mark), ("Authorization", "Bearer checked"),
                                      ("Transfer-Encoding", "chunked"), ("Trailer", trailer)])
           + b"5;ext=1\r\nhello\r\n1;a\r\n \r\n05\r\nworld\r\n0\r\n" + trailer.encode() + b": trailed\r\n\r\n")
    ex = await exchange(port_of(gw), raw, timeout=BOUND)
    assert ex.responses, ex
    if ex.responses[0].status != 200:  # refusing a trailer section is fine; forwarding it is not
        assert_refused(ex.responses[0], 400)
        await nothing_upstream(up)
        return
    assert_own(ex.responses[0], mark)
    assert_gateway_framed(up, mark, b"hello world")
    got = up.by_marker(mark)[0]
    assert not [h for h in got.headers if h[1] == "trailed"], got.headers
    assert got.values("Authorization") == ["Bearer checked"]


async def test_expect_100_continue_is_answered_by_the_gateway(harness: Harness):
    """Expect: 100-continue is never forwarded; the body arrives upstream exactly."""
    up, gw = await harness(server=server_overrides())
    port = port_of(gw)
    mark = marker()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request("POST", "/echo", [(MARKER, mark), ("Expect", "100-continue"),
                                               ("Content-Length", "5")]))
        await writer.drain()
        await asyncio.sleep(0.1)
        writer.write(b"hello")
        await writer.drain()
        ex = await read_responses(reader, ["POST"], BOUND)
    finally:
        writer.close()
    assert ex.responses, ex
    assert_own(ex.responses[0], mark)
    assert_gateway_framed(up, mark, b"hello")


async def test_pipelined_requests_each_get_their_own_answer(harness: Harness):
    """Three pipelined requests (one with a body that looks like a request): three upstream requests, in order."""
    up, gw = await harness(server=server_overrides())
    marks = [marker() for _ in range(3)]
    body = SMUGGLED
    raw = (request("GET", "/echo", [(MARKER, marks[0])]) + request("POST", "/echo", [(MARKER, marks[1])], body)
           + request("GET", "/echo/a", [(MARKER, marks[2])]))
    ex = await exchange(port_of(gw), raw, methods=["GET", "POST", "GET"], timeout=BOUND)
    assert len(ex.responses) == 3, ex
    for resp, mark in zip(ex.responses, marks, strict=True):
        assert_own(resp, mark)
    assert_gateway_framed(up, marks[1], body)
    assert not any(r.target == "/SMUGGLED" for r in up.requests)
