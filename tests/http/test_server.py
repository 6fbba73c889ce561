"""The public listener's own server (gateway/http/server.py) under the attacks that found its first weaknesses
(an adversarial review of the branch that introduced it): answers a client does not take, empty lines between
requests, a body behind a full pipeline, the pending-head bound, and the framing of heads asking to switch
protocols. Real sockets, the raw upstream of the harness, no mocks."""

from __future__ import annotations

import asyncio
import socket

from tests.http.rawclient import exchange, request
from tests.http.rawupstream import MARKER

BOUND = 10.0
"""Far above what any of these takes when the rule holds; a broken rule shows as this bound running out."""


def port_of(gw) -> int:
    return gw.client.port


async def test_empty_lines_between_requests_do_not_keep_an_idle_connection_open(harness) -> None:
    """llhttp skips empty lines between requests without beginning one: they must not stop the keep-alive timer
    (two bytes every few seconds would otherwise hold a connection and its slot for ever)."""
    _up, gw = await harness(server={"timeouts": {"keepalive_seconds": 0.3, "header_read_seconds": 30}})
    reader, writer = await asyncio.open_connection("127.0.0.1", port_of(gw))
    try:
        writer.write(request("GET", "/echo"))
        await writer.drain()
        async with asyncio.timeout(BOUND):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        writer.write(b"\r\n")
        await writer.drain()
        async with asyncio.timeout(BOUND):  # the 0.3 s keep-alive timeout closes it, far within the bound
            rest = await reader.read()
        assert b"HTTP/1.1" not in rest
    finally:
        writer.close()


async def test_a_body_behind_a_full_pipeline_is_read(harness) -> None:
    """Sixteen pipelined requests fill the queue and pause reading; the seventeenth's body, sent after them, must
    still be read (reading resumes once the queue drains), not left to the body timeout."""
    up, gw = await harness(server={"timeouts": {"body_idle_seconds": 60, "body_total_seconds": 120}})
    gets = b"".join(request("GET", "/echo", [(MARKER, f"g{i}")]) for i in range(16))
    head = b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\nX-Marker: post\r\nContent-Length: 5\r\n\r\n"
    ex = await exchange(port_of(gw), [gets + head, b"hello"], pause=0.2, methods=["GET"] * 16 + ["POST"],
                        timeout=BOUND)
    assert not ex.timed_out, ex
    assert [r.status for r in ex.responses] == [200] * 17, ex
    assert up.by_marker("post")[0].body == b"hello"


async def test_a_head_split_behind_a_large_body_is_not_refused(harness) -> None:
    """The pending-head bound counts only reads wholly inside an unfinished head: a 70 000-byte body and the first
    bytes of the next head in one read, the rest of that head later, is two answered requests."""
    _up, gw = await harness(server={"max_body_bytes": 100_000})
    first = request("POST", "/echo", [(MARKER, "p1")], b"a" * 70_000)
    second = request("GET", "/echo", [(MARKER, "p2")])
    ex = await exchange(port_of(gw), [first + second[:20], second[20:]], pause=0.2, methods=["POST", "GET"],
                        timeout=BOUND)
    assert [r.status for r in ex.responses] == [200, 200], ex


async def test_a_client_that_takes_no_answers_gets_no_more_and_is_cut_off(harness) -> None:
    """A client that pipelines requests and never reads: the server stops handling them once its answers back up
    (the requests wait, reading pauses, TCP pushes back), so the upstream sees a bounded number of them — not
    every request sent — and the connection ends: cut `send_seconds` after the client stopped taking answers that
    are still the server's to send, or closed when idle once the kernel holds them."""
    up, gw = await harness(server={"timeouts": {"send_seconds": 1, "keepalive_seconds": 1, "header_read_seconds": 1}})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", port_of(gw)))
    one = request("GET", "/echo", [("X-Pad", "p" * 200)])
    batch = one * 64
    sent = 0
    blocked = False
    try:
        # An unbounded server reads and answers everything sent (its memory growing with the answers it holds):
        # the client then never blocks and the bound runs out. A bounded one stops reading, so the client's
        # sending blocks once the kernel's buffers (a few MB on loopback) are full.
        async with asyncio.timeout(3 * BOUND):
            while not blocked:
                try:
                    await asyncio.wait_for(loop.sock_sendall(sock, batch), 2.0)
                except (TimeoutError, ConnectionError):
                    blocked = True  # the client's sending blocked (or was cut off): the server stopped reading
                else:
                    sent += 64
        assert len(up.requests) < sent
        # The client has read nothing: the connection ends within a few seconds (the send, keep-alive or header
        # timeout: the client's last, cut-off write may have left half a head).
        async with asyncio.timeout(3 * BOUND):
            while True:
                try:
                    if not await loop.sock_recv(sock, 1 << 20):
                        break
                except ConnectionError:
                    break
    finally:
        sock.close()


async def test_a_switch_protocol_head_with_a_framing_llhttp_does_not_judge_is_refused(harness) -> None:
    """llhttp stops after a head asking to switch protocols without judging its Transfer-Encoding; the server
    refuses there what llhttp refuses in any other head (a coding that does not end in chunked, both framings)."""
    up, gw = await harness()
    for framing in (b"Transfer-Encoding: gzip\r\n", b"Transfer-Encoding: xchunked\r\n",
                    b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"):
        raw = (b"POST /echo HTTP/1.1\r\nHost: gateway.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
               + framing + b"\r\n5\r\nhello\r\n0\r\n\r\n" + request("GET", "/echo", [(MARKER, "after")]))
        ex = await exchange(port_of(gw), raw, methods=["POST", "GET"], timeout=BOUND)
        assert ex.responses and ex.responses[0].status == 400, (framing, ex)
        assert len(ex.responses) == 1 and ex.closed, (framing, ex)
    assert up.requests == []


async def test_an_answer_with_a_line_break_in_a_field_is_never_sent() -> None:
    """The last check before a head is written: a field holding a CR, an LF or a CRLF (which would split the answer
    into one the client reads as another) is refused whole, and the client gets a 502 in its place. Upstream fields
    are parsed by llhttp and cannot hold one, so the server is driven here by a handler of its own."""
    from multidict import CIMultiDict

    from gateway.addresses import ProxyTrust
    from gateway.config import ServerSettings
    from gateway.http.listener import ListenerLimits
    from gateway.http.server import PublicRequest, PublicServer, Reply

    values = {"/crlf": "a\r\nSet-Cookie: injected=1", "/lf": "a\nSet-Cookie: injected=1", "/cr": "a\rb",
              "/fine": "a b"}

    async def handler(request: PublicRequest) -> Reply:
        return Reply(200, CIMultiDict({"X-Value": values[request.rel_url.raw_path]}), b"ok")

    loop = asyncio.get_running_loop()
    settings = ServerSettings()
    server = await loop.create_server(PublicServer(handler, ListenerLimits(settings, ProxyTrust(())), loop),
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for path in values:
            ex = await exchange(port, request("GET", path), timeout=BOUND)
            assert len(ex.responses) == 1, (path, ex)
            answer = ex.responses[0]
            if path == "/fine":
                assert answer.status == 200, ex
                continue
            assert answer.status == 502, (path, ex)
            assert answer.header("X-Value") is None and answer.header("Set-Cookie") is None, (path, ex)
            assert b"injected" not in answer.body + ex.trailing, (path, ex)
    finally:
        server.close()
        await server.wait_closed()
