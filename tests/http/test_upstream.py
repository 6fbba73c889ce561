"""The upstream client (gateway/http/upstream.py) against scripted raw HTTP/1.1 servers on 127.0.0.1.

test_proxy.py covers the ordinary exchanges through a real aiohttp upstream; here the upstream says exactly the
bytes each case needs: interim responses, HEAD, chunked and close-delimited bodies, connections closed at the
worst moment, garbage, trickles, TLS it cannot verify.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from gateway.http.upstream import UpstreamError, UpstreamPool, header_lines
from gateway.observability.metrics import Metrics
from tests.conftest import GatewayFactory
from tests.waiting import eventually

Script = Callable[["RawUpstream", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


class RawUpstream:
    """A TCP server answering each request with `script(upstream, reader, writer, n)`, n counting per connection."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        n = 0
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                await self.script(self, reader, writer, n)
                n += 1
                if writer.is_closing():
                    return
        finally:
            self.open -= 1
            self.closed.set()
            writer.close()


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Script], Awaitable[RawUpstream]]]:
    servers: list[RawUpstream] = []

    async def start(script: Script) -> RawUpstream:
        up = RawUpstream(script)
        up.server = await asyncio.start_server(up.handle, "127.0.0.1", 0)
        servers.append(up)
        return up

    yield start
    for up in servers:
        assert up.server is not None
        up.server.close()


def answer(raw: bytes) -> Script:
    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(raw)
        await writer.drain()

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
BOUND = 10.0
"""Far above what a timed exchange takes when its timeout holds; a timeout that does not shows as this running out."""


def one_connection_pool(up: RawUpstream, *, read: float, total: float) -> UpstreamPool:
    """A started pool of one connection to `up`, with these read and total timeouts."""
    pool = UpstreamPool(up.url, max_connections=1, keepalive_seconds=5, connect_timeout=1, read_timeout=read,
                        total_timeout=total)
    pool.start()
    return pool


async def quick_exchanges(pool: UpstreamPool, count: int, pause: float = 0.0) -> None:
    """`count` GETs answered `OK` at once, read to the end and released, `pause` seconds after each."""
    for _ in range(count):
        response = await pool.request("GET", "/x", "", None)
        assert await response.read() == b"hello" and await response.read() == b""
        response.release()
        if pause:
            await asyncio.sleep(pause)


async def raw_get(port: int) -> bytes:
    """Every byte the gateway on `port` answers to one GET /x (the connection closes after it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /x HTTP/1.1\r\nHost: gateway.test\r\nConnection: close\r\n\r\n")
        async with asyncio.timeout(5):
            return await reader.read(-1)
    finally:
        writer.close()


async def test_interim_responses_are_skipped(raw_upstream, gateway: GatewayFactory):
    """103 Early Hints and 100 Continue come before the final response; only the final one is relayed."""
    up = await raw_upstream(answer(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
                                   b"HTTP/1.1 100 Continue\r\n\r\n" + OK))
    client = await gateway(up.url)
    resp = await client.get("/x")
    assert resp.status == 200
    assert await resp.read() == b"hello"
    assert "Link" not in resp.headers


async def test_head_keeps_content_length_and_reuses_the_connection(raw_upstream, gateway: GatewayFactory):
    """A HEAD response has no body whatever its Content-Length says; the connection stays usable."""
    up = await raw_upstream(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"))
    client = await gateway(up.url)
    for _ in range(3):
        resp = await client.head("/x")
        assert resp.status == 200
        assert resp.headers["Content-Length"] == "1234"
    assert up.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_no_body_statuses(raw_upstream, gateway: GatewayFactory, status):
    up = await raw_upstream(answer(f"HTTP/1.1 {status} X\r\nETag: \"e\"\r\n\r\n".encode()))
    client = await gateway(up.url)
    for _ in range(2):
        resp = await client.get("/x")
        assert resp.status == status
        assert await resp.read() == b""
    assert up.connections == 1


async def test_chunked_response_is_relayed_whole(raw_upstream, gateway: GatewayFactory):
    up = await raw_upstream(answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                   b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
    client = await gateway(up.url)
    resp = await client.get("/x")
    assert await resp.read() == b"hello world"
    resp = await client.get("/x")
    assert await resp.read() == b"hello world"
    assert up.connections == 1


async def test_close_delimited_body_ends_at_eof(raw_upstream, gateway: GatewayFactory):
    """An HTTP/1.0-style body without length ends when the upstream closes; that connection is not reused."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"all of it")
        await writer.drain()
        writer.close()

    up = await raw_upstream(script)
    client = await gateway(up.url)
    for _ in range(2):
        resp = await client.get("/x")
        assert await resp.read() == b"all of it"
    assert up.connections == 2


async def test_a_pooled_connection_that_dies_unanswered_is_502_and_never_retried(raw_upstream,
                                                                                  gateway: GatewayFactory):
    """A reused connection that closes without a byte of answer: 502, for GET as for POST, and the request is not
    sent again (the upstream may have acted on it); the next request gets a new connection."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 0:
            writer.write(OK)
            await writer.drain()
        else:
            writer.transport.abort()  # the second request on a connection dies unanswered

    up = await raw_upstream(script)
    metrics = Metrics()
    client = await gateway(up.url, metrics=metrics)
    for method in ("GET", "POST"):
        assert (await client.get("/x")).status == 200  # a fresh connection, then pooled
        resp = await client.request(method, "/x", data=b"{}" if method == "POST" else None)
        assert resp.status == 502
        assert (await resp.json())["error"] == "bad_gateway"
    assert len(up.requests) == 4 and up.connections == 2
    assert metrics.registry.get_sample_value("dcr_gateway_upstream_errors_total", {"kind": "protocol"}) == 2


async def test_garbage_and_upgrades_are_502(raw_upstream, gateway: GatewayFactory):
    metrics = Metrics()
    garbage = await raw_upstream(answer(b"NOT HTTP AT ALL\r\n\r\n"))
    client = await gateway(garbage.url, metrics=metrics)
    resp = await client.get("/x")
    assert resp.status == 502
    upgrade = await raw_upstream(answer(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n"
                                        b"Connection: Upgrade\r\n\r\n"))
    client = await gateway(upgrade.url, metrics=metrics)
    resp = await client.get("/x")
    assert resp.status == 502
    assert metrics.registry.get_sample_value("dcr_gateway_upstream_errors_total", {"kind": "protocol"}) == 2


async def test_upstream_dying_mid_body_cuts_the_client_connection(raw_upstream, gateway: GatewayFactory):
    """Once the status is sent the only honest signal is a cut connection, never a short 'complete' body."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    up = await raw_upstream(script)
    client = await gateway(up.url)
    resp = await client.get("/x")
    assert resp.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()


async def test_trickling_upstream_hits_the_total_timeout(raw_upstream, gateway: GatewayFactory):
    """Bytes every 0.1 s keep the read timeout (0.3 s) happy; the total timeout (0.6 s) still ends it: 504."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 40:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.1)

    up = await raw_upstream(script)
    metrics = Metrics()
    loop = asyncio.get_running_loop()
    client = await gateway(up.url, metrics=metrics,
                           upstream={"url": up.url, "timeouts": {"connect": 1, "read": 0.3, "total": 0.6}})
    started = loop.time()
    resp = await client.get("/x")
    assert resp.status == 504
    assert loop.time() - started > 0.5  # the total timeout (0.6 s) ended it, not the read timeout (0.3 s)
    assert metrics.registry.get_sample_value("dcr_gateway_upstream_errors_total", {"kind": "timeout"}) == 1


async def test_timeouts_hold_on_a_reused_connection(raw_upstream):
    """The exchanges of one connection share its timer: an exchange that stalls on a connection reused after a
    pause still ends at the read timeout, and one that trickles after quick ones still ends at the total timeout."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        k = len(up.requests)  # counted over both connections
        if k == 4:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe")  # then nothing
        elif k < 8:
            writer.write(OK)
        else:
            for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 40:  # a byte every 0.1 s
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)
        await writer.drain()

    up = await raw_upstream(script)
    pool = one_connection_pool(up, read=0.3, total=0.8)
    loop = asyncio.get_running_loop()
    try:
        await quick_exchanges(pool, 3)
        await asyncio.sleep(0.4)  # idle past the read timeout: the connection's timer has nothing left to time
        response = await pool.request("GET", "/x", "", None)  # the same connection, stalling mid-body
        started = loop.time()
        with pytest.raises(UpstreamError) as stalled:
            async with asyncio.timeout(5):
                while await response.read():
                    pass
        assert stalled.value.kind == "timeout" and "read timeout" in stalled.value.detail
        assert loop.time() - started < 0.8
        response.release()
        assert up.connections == 1
        await quick_exchanges(pool, 3)  # a fresh connection: quick ones, then one trickling past the total timeout
        with pytest.raises(UpstreamError) as trickled:
            async with asyncio.timeout(5):
                await pool.request("GET", "/x", "", None)
        assert trickled.value.kind == "timeout" and "total timeout" in trickled.value.detail
        assert up.connections == 2
    finally:
        await pool.close()


async def test_pool_never_opens_more_than_max_connections(raw_upstream, gateway: GatewayFactory):
    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await asyncio.sleep(0.1)
        writer.write(OK)
        await writer.drain()

    up = await raw_upstream(script)
    client = await gateway(up.url, upstream={"url": up.url, "pool": {"max_connections": 2}})
    statuses = await asyncio.gather(*(client.get("/x") for _ in range(6)))
    assert [r.status for r in statuses] == [200] * 6
    assert up.max_open == 2
    assert len(up.requests) == 6


async def test_idle_connections_are_closed_after_keepalive(raw_upstream):
    up = await raw_upstream(answer(OK))
    pool = UpstreamPool(up.url, max_connections=4, keepalive_seconds=0.2, connect_timeout=1, read_timeout=1,
                        total_timeout=2)
    pool.start()
    try:
        response = await pool.request("GET", "/x", "", None)
        assert await response.read() == b"hello" and await response.read() == b""
        response.release()
        assert pool.idle_count == 1
        await asyncio.wait_for(up.closed.wait(), 2)
        assert pool.idle_count == 0 and pool.open_count == 0
    finally:
        await pool.close()


async def test_line_breaks_never_reach_the_upstream(raw_upstream):
    """A header value carrying CR, LF or NUL (say, from a claim) is refused before a byte is sent."""
    up = await raw_upstream(answer(OK))
    pool = UpstreamPool(up.url, max_connections=4, keepalive_seconds=5, connect_timeout=1, read_timeout=1,
                        total_timeout=2)
    try:
        for value in ("a\r\nX-Injected: 1", "a\nX-Injected: 1", "a\rb", "a\x00b"):
            with pytest.raises(UpstreamError) as caught:
                header_lines([("X-Software-Id", value)])
            assert caught.value.kind == "protocol"
        for block in ("X-Software-Id: a\nX-Injected: 1\r\n", "X-Software-Id: a\rb\r\n"):
            with pytest.raises(UpstreamError):
                await pool.request("GET", "/x", block, None)
        assert up.requests == []
        response = await pool.request("GET", "/x", header_lines([("X-Software-Id", "fine")]), None)
        assert response.status == 200
        response.release()
        assert b"X-Software-Id: fine\r\n" in up.requests[0]
    finally:
        await pool.close()


async def test_https_upstream_is_verified(tmp_path, gateway: GatewayFactory):
    """TLS to the upstream checks the certificate: a self-signed one is refused (502), never trusted blindly."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    (tmp_path / "c.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "k.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                       serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    handshakes = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal handshakes
        handshakes += 1
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    try:
        url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        client = await gateway(url)
        resp = await client.get("/x")
        assert resp.status == 502
        assert handshakes == 0  # the handshake failed on the gateway's side: the server never got a request
    finally:
        server.close()


async def test_early_answer_while_uploading_is_relayed_and_the_connection_dropped(raw_upstream,
                                                                                   gateway: GatewayFactory):
    """The upstream answers 413 without reading the body and stops reading: the gateway stops uploading,
    relays the answer at once, and never reuses that connection (the unsent rest would read as a request)."""
    import socket

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if up.connections == 1:
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\n\r\nbig!")
            await writer.drain()
            await asyncio.sleep(5)  # keeps the connection open, reads nothing more
            writer.transport.abort()
        else:
            writer.write(OK)
            await writer.drain()

    up = await raw_upstream(script)
    client = await gateway(up.url, server={"max_body_bytes": 64 << 20})

    async def body() -> AsyncIterator[bytes]:
        for _ in range(128):  # 8 MiB: more than the socket buffers hold, so the upload has to wait
            yield b"u" * 65536

    resp = await asyncio.wait_for(client.post("/x", data=body()), 4)
    assert resp.status == 413 and await resp.read() == b"big!"
    resp = await asyncio.wait_for(client.get("/x"), 4)
    assert resp.status == 200
    assert up.connections == 2


async def test_endless_response_headers_are_cut_off(raw_upstream, gateway: GatewayFactory):
    """An upstream that sends header after header is refused (502) once past 64 KiB, not buffered forever."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n")
        for i in range(2000):
            writer.write(b"X-Filler-%d: %s\r\n" % (i, b"f" * 100))
        writer.write(b"Content-Length: 0\r\n\r\n")
        await writer.drain()

    up = await raw_upstream(script)
    metrics = Metrics()
    client = await gateway(up.url, metrics=metrics)
    resp = await client.get("/x")
    assert resp.status == 502
    assert metrics.registry.get_sample_value("dcr_gateway_upstream_errors_total", {"kind": "protocol"}) == 1


@pytest.mark.parametrize("extra", [
    b"HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nsecret",  # a second, complete response
    b"HTTP/1.1 201 Cre",  # the start of one
    b"garbage",
])
async def test_bytes_beyond_a_response_close_the_connection(raw_upstream, gateway: GatewayFactory, extra: bytes):
    """Finding 2: whatever follows a complete response in the same read is never handed to the next client:
    parsing stops, the first response stands, the connection is closed, the next request gets a new one."""
    up = await raw_upstream(lambda up, r, w, n: answer(OK + extra if up.connections == 1 else OK)(up, r, w, n))
    client = await gateway(up.url)
    resp = await client.get("/x")
    assert resp.status == 200 and await resp.read() == b"hello"
    resp = await client.get("/x")
    assert resp.status == 200 and await resp.read() == b"hello"
    assert up.connections == 2


async def test_bytes_after_a_response_in_a_later_read_close_the_connection(raw_upstream, gateway: GatewayFactory):
    """The same when the extra bytes arrive after the response, while the connection sits idle in the pool."""
    sent_extra = asyncio.Event()

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        writer.write(OK)
        await writer.drain()
        if up.connections == 1:
            await asyncio.sleep(0.05)
            writer.write(b"HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nsecret")
            await writer.drain()
            sent_extra.set()

    up = await raw_upstream(script)
    client = await gateway(up.url)
    resp = await client.get("/x")
    assert await resp.read() == b"hello"
    await asyncio.wait_for(sent_extra.wait(), 5)
    await eventually(lambda: up.open == 0, "the gateway to see the stray bytes and close the idle connection")
    resp = await client.get("/x")
    assert resp.status == 200 and await resp.read() == b"hello"
    assert up.connections == 2


async def test_an_error_answer_to_a_request_with_a_body_is_not_followed_by_reuse(raw_upstream,
                                                                                   gateway: GatewayFactory):
    """An upstream may answer 4xx without reading the body: that connection is not reused."""
    up = await raw_upstream(answer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"))
    client = await gateway(up.url)
    for _ in range(2):
        resp = await client.post("/x", data=b"{}")
        assert resp.status == 400
    assert up.connections == 2


async def test_a_client_that_stops_reading_does_not_hold_the_pool(raw_upstream, gateway: GatewayFactory):
    """Found black-box: a client that never reads a large response held its upstream connection (and so a pool
    slot) until it went away. Now the slot is freed when the upstream exchange fails (its total timeout), and the
    write to the stalled client gives up after `server.timeouts.send_seconds`."""
    import socket

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if b"GET /x?big=1 " in up.requests[-1]:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 33554432\r\n\r\n")
            try:
                for _ in range(512):
                    writer.write(b"b" * 65536)
                    await writer.drain()
            except ConnectionError:
                return
        else:
            writer.write(OK)
            await writer.drain()

    up = await raw_upstream(script)
    client = await gateway(up.url, upstream={"url": up.url, "pool": {"max_connections": 1},
                                             "timeouts": {"connect": 1, "read": 1, "total": 1}},
                           server={"timeouts": {"send_seconds": 0.5}})
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stalled.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(stalled, ("127.0.0.1", client.port))
        await asyncio.get_running_loop().sock_sendall(stalled, b"GET /x?big=1 HTTP/1.1\r\nHost: a\r\n\r\n")
        await eventually(lambda: any(b"GET /x?big=1 " in r for r in up.requests), "the upstream to send the big body")
        statuses: list[int] = []

        async def served() -> bool:  # waits for the one pool slot at most connect (1 s)…
            statuses.append((await asyncio.wait_for(client.get("/x"), 8)).status)
            return statuses[-1] == 200

        await eventually(served, "the pool slot to be free once the stalled exchange has let go", interval=0.5)
        assert statuses[-1] == 200, statuses
    finally:
        stalled.close()


async def test_a_control_character_in_the_upstream_reason_phrase_never_reaches_the_client(raw_upstream,
                                                                                             gateway: GatewayFactory):
    """llhttp takes any byte but CR and LF in a response's reason phrase (it refuses the same bytes in a header
    value): a NUL or another control character there must not be relayed onto the client's status line (RFC 9112
    §4: reason-phrase is HTAB, SP, VCHAR and obs-text only), whole answer (Content-Length) or streamed (chunked)."""
    for framing in (b"Content-Length: 5\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"):
        for reason in (b"O\x00K", b"O\x01K", b"O\x1bK", b"O\x7fK"):
            up = await raw_upstream(answer(b"HTTP/1.1 200 " + reason + b"\r\n" + framing))
            client = await gateway(up.url)
            received = await raw_get(client.port)
            head = received.split(b"\r\n\r\n", 1)[0]
            assert head.startswith(b"HTTP/1.1 "), received
            bad = [b for b in head.replace(b"\r\n", b"") if (b < 0x20 and b != 0x09) or b == 0x7F]
            assert not bad, (reason, framing, head)


async def test_a_reason_phrase_split_across_reads_is_relayed_whole(raw_upstream, gateway: GatewayFactory):
    """llhttp hands a reason phrase over in parts when it spans two reads (an interim response's too): the client
    gets the final response's whole reason, not its last part nor the interim one's."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        for part in (b"HTTP/1.1 100 Cont", b"inue\r\n\r\nHTTP/1.1 299 Quite ", b"Fine\r\nContent-Length: 5\r\n\r\nhello"):
            writer.write(part)
            await writer.drain()
            await asyncio.sleep(0.05)

    up = await raw_upstream(script)
    client = await gateway(up.url)
    received = await raw_get(client.port)
    assert received.startswith(b"HTTP/1.1 299 Quite Fine\r\n"), received


async def test_a_header_that_is_not_text_is_refused_and_frees_its_connection(raw_upstream):
    """A fact header's value comes from a verified claim, whose JSON may hold a lone surrogate ("\\ud800"): such a
    value has no UTF-8 bytes. The request is refused as an upstream protocol error (a 502, not an unhandled error)
    and the connection it had taken goes back: with one connection allowed, the next request still gets it (a
    leaked slot would leave it waiting for the connect timeout, then refused)."""
    up = await raw_upstream(answer(OK))
    pool = one_connection_pool(up, read=1, total=2)
    try:
        for value in ("a\ud800b", "\udfff"):
            with pytest.raises(UpstreamError) as refused:
                await pool.request("GET", "/x", header_lines([("X-Client-Id", value)]), None)
            assert refused.value.kind == "protocol"
            response = await pool.request("GET", "/x", "", None)
            assert await response.read() == b"hello"
            response.release()
        assert pool.open_count == 1
    finally:
        await pool.close()


async def test_an_upload_the_upstream_stops_reading_is_timed_on_a_reused_connection(raw_upstream):
    """A streamed request body that the upstream stops taking (the send buffers fill, the upload waits to drain) on a
    connection reused after an idle pause: the read timeout still ends the exchange, and its slot is free again."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 0:
            writer.write(OK)
            await writer.drain()
        else:
            await asyncio.sleep(BOUND)  # reads nothing of the upload, answers nothing

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(400):  # 100 MiB: far more than the loopback buffers hold
            yield b"u" * 262_144

    up = await raw_upstream(script)
    pool = one_connection_pool(up, read=0.3, total=BOUND)
    loop = asyncio.get_running_loop()
    try:
        await quick_exchanges(pool, 1)
        await asyncio.sleep(0.5)  # idle past the read timeout: the connection's timer has stopped
        started = loop.time()
        with pytest.raises(UpstreamError) as stalled:
            async with asyncio.timeout(BOUND):
                await pool.request("POST", "/x", "", upload())
        assert stalled.value.kind == "timeout", stalled.value
        assert loop.time() - started < BOUND / 2
        assert up.connections == 1 and pool.open_count == 0
    finally:
        await pool.close()


async def test_a_response_paused_for_a_slow_client_is_still_ended_by_the_total_timeout(raw_upstream):
    """A response whose reading the pool paused (its reader, the client, takes nothing) is not the upstream's
    delay, so the read timeout does not run — but the total timeout does, on a connection reused after a pause:
    the exchange fails and its connection slot is freed, not held as long as the client dawdles."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n == 0:
            writer.write(OK)
        else:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"b" * 1_048_576)
        await writer.drain()

    up = await raw_upstream(script)
    pool = one_connection_pool(up, read=0.2, total=1.0)
    try:
        await quick_exchanges(pool, 1)
        await asyncio.sleep(0.4)
        response = await pool.request("GET", "/x", "", None)
        await eventually(lambda: pool.open_count == 0, "the paused exchange's slot freed by the total timeout",
                         bound=BOUND)
        with pytest.raises(UpstreamError) as ended:
            async with asyncio.timeout(BOUND):
                while await response.read():
                    pass
        assert ended.value.kind == "timeout" and "total timeout" in ended.value.detail
        response.release()
    finally:
        await pool.close()


async def test_a_total_timeout_shorter_than_the_read_timeout_holds_on_a_reused_connection(raw_upstream):
    """total 0.4 s, read 30 s: after quick exchanges (the connection's timer still armed for an earlier one), an
    exchange whose upstream answers nothing ends at the total timeout, not the read timeout."""

    async def script(up: RawUpstream, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        if n < 3:
            writer.write(OK)
            await writer.drain()

    up = await raw_upstream(script)
    pool = one_connection_pool(up, read=30, total=0.4)
    loop = asyncio.get_running_loop()
    try:
        # the stalled exchange begins well after the timer was armed, before it fires
        await quick_exchanges(pool, 3, pause=0.1)
        started = loop.time()
        with pytest.raises(UpstreamError) as stalled:
            async with asyncio.timeout(BOUND):
                await pool.request("GET", "/x", "", None)
        assert stalled.value.kind == "timeout" and "total timeout" in stalled.value.detail
        assert loop.time() - started < 3.0
        assert up.connections == 1
    finally:
        await pool.close()


async def test_bytes_above_ascii_in_upstream_fields_reach_the_client_unchanged(raw_upstream, gateway: GatewayFactory):
    """obs-text (bytes 0x80-0xFF) in an upstream header value or reason phrase is relayed byte for byte, whole
    answer or streamed: not decoded one way and encoded another (each byte above 0x7F would become two)."""
    value = b"caf\xc3\xa9 \xe9\xff"
    for framing in (b"Content-Length: 5\r\n\r\nhello", b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"):
        up = await raw_upstream(answer(b"HTTP/1.1 200 Tr\xe8s bien\r\nX-Name: " + value + b"\r\n" + framing))
        client = await gateway(up.url)
        received = await raw_get(client.port)
        assert received.startswith(b"HTTP/1.1 200 Tr\xe8s bien\r\n"), received
        assert b"\r\nX-Name: " + value + b"\r\n" in received, received
