"""The public listener's own server (gateway/http/server.py) under the attacks that found its first weaknesses
(an adversarial review of the branch that introduced it): answers a client does not take, empty lines between
requests, a body behind a full pipeline, the pending-head bound, and the framing of heads asking to switch
protocols. Real sockets, the raw upstream of the harness, no mocks."""

from __future__ import annotations

import asyncio
import socket

from tests.http.rawclient import exchange, request
from tests.http.rawupstream import MARKER
from tests.waiting import eventually

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
    into one the client reads as another), or no text at all, is refused whole, and the client gets a 502 in its
    place — a whole answer and one whose body comes in parts alike. Upstream fields
    are parsed by llhttp and cannot hold one, so the server is driven here by a handler of its own."""
    from multidict import CIMultiDict

    from gateway.addresses import ProxyTrust
    from gateway.config import ServerSettings
    from gateway.http.listener import ListenerLimits
    from gateway.http.server import PublicRequest, PublicServer, Reply

    values = {"/crlf": "a\r\nSet-Cookie: injected=1", "/lf": "a\nSet-Cookie: injected=1", "/cr": "a\rb",
              "/surrogate": "a\ud800b", "/fine": "a b"}

    async def handler(request: PublicRequest) -> Reply | None:
        path = request.rel_url.raw_path
        headers = CIMultiDict({"X-Value": values[path.removeprefix("/stream")]})
        if not path.startswith("/stream"):
            return Reply(200, headers, b"ok")
        parts = [b"o", b"k", b""]

        async def chunks() -> bytes:
            return parts.pop(0)

        await request.stream(200, None, headers, None, chunks)  # an answer whose body comes in parts
        return None

    loop = asyncio.get_running_loop()
    settings = ServerSettings()
    server = await loop.create_server(PublicServer(handler, ListenerLimits(settings, ProxyTrust(())), loop),
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        for path in [*values, *(f"/stream{p}" for p in values)]:
            ex = await exchange(port, request("GET", path), timeout=BOUND)
            assert len(ex.responses) == 1, (path, ex)
            answer = ex.responses[0]
            if path.endswith("/fine"):
                assert answer.status == 200 and answer.body == b"ok", ex
                continue
            assert answer.status == 502, (path, ex)
            assert answer.header("X-Value") is None and answer.header("Set-Cookie") is None, (path, ex)
            assert b"injected" not in answer.body + ex.trailing, (path, ex)
    finally:
        server.close()
        await server.wait_closed()


# --- the connection's one timer (header and keep-alive deadlines) under sequences that mix them -----------------


class _Listener:
    """A PublicServer on 127.0.0.1 with a handler of its own: GET /slow takes `slow` seconds, anything else is
    answered at once; the per-client slots are the listener's own (`held`)."""

    def __init__(self, *, header: float, keepalive: float, slow: float = 0.0) -> None:
        self.header, self.keepalive, self.slow = header, keepalive, slow
        self.server: asyncio.Server | None = None
        self.limits = None
        self.public = None

    async def __aenter__(self) -> _Listener:
        from multidict import CIMultiDict

        from gateway.addresses import ProxyTrust
        from gateway.config import ServerSettings
        from gateway.http.listener import ListenerLimits
        from gateway.http.server import PublicRequest, PublicServer, Reply

        async def handler(request: PublicRequest) -> Reply:
            if request.rel_url.raw_path == "/slow":
                await asyncio.sleep(self.slow)
            return Reply(200, CIMultiDict(), b"ok")

        settings = ServerSettings(timeouts={"header_read_seconds": self.header, "keepalive_seconds": self.keepalive,
                                            "send_seconds": 30})
        self.limits = ListenerLimits(settings, ProxyTrust(()))
        loop = asyncio.get_running_loop()
        self.public = PublicServer(handler, self.limits, loop)
        self.server = await loop.create_server(self.public, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def held(self) -> int:
        assert self.limits is not None
        return int(self.limits.connections.held("127.0.0.1"))


async def _trickle(writer: asyncio.StreamWriter, data: bytes, every: float) -> None:
    """Send `data` a byte at a time, `every` seconds apart, until it is sent or the connection is gone."""
    for byte in data:
        try:
            writer.write(bytes([byte]))
            await writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(every)


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bool, bytes, float]:
    """Whether the server closed the connection within `seconds`, what it sent, and when (loop time)."""
    from tests.http.rawclient import wait_closed

    closed, data = await wait_closed(reader, seconds)
    return closed, data, asyncio.get_running_loop().time()


async def test_a_head_trickled_behind_a_slow_request_is_timed_once_that_one_is_answered() -> None:
    """Slowloris behind a pipelined request: the next head begins while the first request is still being answered
    (1 s) and then trickles a byte every 0.2 s for ever. The header timeout (0.3 s) fires while the connection is
    busy — judged again later, not dropped — so once the answer is out the connection closes within a header
    timeout or two, long before the keep-alive timeout (30 s) or the end of the trickle, and its slot is freed."""
    async with _Listener(header=0.3, keepalive=30, slow=1.0) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        trickle = asyncio.create_task(_trickle(writer, b"X-Slow: " + b"a" * 100, 0.2))
        try:
            writer.write(request("GET", "/slow") + b"GET /fast HTTP/1.1\r\nHost: gateway.test\r\n")
            await writer.drain()
            closed, data, _ = await _closed_within(reader, 6.0)  # the trickle lasts 20 s
            assert data.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1") == 1, data
            assert closed, "a head trickled behind a busy connection held it open"
            await eventually(lambda: listener.held() == 0, "the client's slot freed")
        finally:
            trickle.cancel()
            writer.close()


async def test_keepalive_shorter_than_the_header_timeout_still_closes_an_idle_connection() -> None:
    """The timer armed when the connection opened is for the header timeout (2 s); the keep-alive deadline set
    after the first answer is far earlier (0.3 s) and must not wait for it."""
    async with _Listener(header=2.0, keepalive=0.3) as listener:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        try:
            writer.write(request("GET", "/fast"))
            await writer.drain()
            async with asyncio.timeout(BOUND):
                head = await reader.readuntil(b"\r\n\r\n")
            answered = loop.time()
            assert head.startswith(b"HTTP/1.1 200"), head
            closed, _, when = await _closed_within(reader, BOUND)
            assert closed
            assert when - answered < 1.5, f"idle connection closed after {when - answered:.2f} s, keep-alive 0.3 s"
        finally:
            writer.close()


async def test_header_timeout_shorter_than_keepalive_still_ends_a_head_begun_on_an_idle_connection() -> None:
    """Once the first head's deadline has passed, the connection's timer is armed for the keep-alive deadline
    (3 s); a head that begins on the idle connection and then trickles must still end at the header timeout
    (0.3 s) after it began, not at the keep-alive deadline."""
    async with _Listener(header=0.3, keepalive=3.0) as listener:
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        trickle = None
        try:
            writer.write(request("GET", "/fast"))
            await writer.drain()
            async with asyncio.timeout(BOUND):
                await reader.readuntil(b"ok")
            await asyncio.sleep(0.5)  # past the header deadline the connection's first timer was armed for
            begun = loop.time()
            trickle = asyncio.create_task(_trickle(writer, b"GET /fast HTTP/1.1\r\nX-Slow: " + b"a" * 100, 0.1))
            closed, data, when = await _closed_within(reader, BOUND)
            assert closed and data == b"", data
            assert when - begun < 1.5, f"slow head closed after {when - begun:.2f} s, header timeout 0.3 s"
        finally:
            if trickle is not None:
                trickle.cancel()
            writer.close()


async def test_empty_lines_before_the_first_request_do_not_hold_a_new_connection() -> None:
    """A new connection owes its first head within the header timeout (0.3 s); empty lines, which llhttp skips
    without beginning a request, trickled every 0.1 s must not hold it (nor its slot) for the keep-alive timeout
    (30 s) or for ever."""
    async with _Listener(header=0.3, keepalive=30) as listener:
        reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
        trickle = asyncio.create_task(_trickle(writer, b"\r\n" * 100, 0.1))
        try:
            closed, data, _ = await _closed_within(reader, 6.0)
            assert closed and data == b"", data
            await eventually(lambda: listener.held() == 0, "the client's slot freed")
        finally:
            trickle.cancel()
            writer.close()


async def test_a_graceful_stop_ends_idle_half_headed_and_busy_connections_without_their_timers() -> None:
    """Timeouts far beyond the test (30 s): only the graceful stop can end these. An idle keep-alive connection and
    one inside its first head close at once; a busy one (a 1 s answer, a head trickling behind it) gets its answer,
    saying Connection: close, nothing for the head behind it, and closes; every slot is freed."""
    async with _Listener(header=30, keepalive=30, slow=1.0) as listener:
        assert listener.public is not None
        port = listener.port
        idle_r, idle_w = await asyncio.open_connection("127.0.0.1", port)
        half_r, half_w = await asyncio.open_connection("127.0.0.1", port)
        busy_r, busy_w = await asyncio.open_connection("127.0.0.1", port)
        trickle = None
        try:
            idle_w.write(request("GET", "/fast"))
            async with asyncio.timeout(BOUND):
                await idle_r.readuntil(b"ok")
            half_w.write(b"GET /fast HTTP/1.1\r\nHost: gateway.test\r\nX-A: ")
            busy_w.write(request("GET", "/slow") + b"GET /fast HTTP/1.1\r\n")
            await asyncio.sleep(0.2)
            trickle = asyncio.create_task(_trickle(busy_w, b"X-Slow: " + b"a" * 100, 0.1))
            listener.public.pre_shutdown()
            for reader in (idle_r, half_r):
                closed, data, _ = await _closed_within(reader, 2.0)
                assert closed and data == b"", data
            await listener.public.shutdown(BOUND)
            closed, data, _ = await _closed_within(busy_r, BOUND)
            assert closed, data
            assert data.startswith(b"HTTP/1.1 200") and data.count(b"HTTP/1.1") == 1, data
            assert b"\r\nConnection: close\r\n" in data, data
            await eventually(lambda: listener.held() == 0, "every slot freed")
        finally:
            if trickle is not None:
                trickle.cancel()
            for writer in (idle_w, half_w, busy_w):
                writer.close()
