"""The store's pipelined Redis connection (gateway/state/resp.py): framing, order, failures, TLS, Sentinel demotion.

Against a real redis-server where Redis's behaviour is the subject, and against a small RESP server of the
test's own (real sockets on 127.0.0.1) where the subject is what the client does with replies Redis would never
send.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gateway.state.redis import CircuitBreaker, RedisStore
from gateway.state.resp import MAX_ARRAY_ITEMS, MAX_REPLY_BYTES, ReplyError, _Incomplete, _parse, pack
from gateway.state.store import StoreUnavailable
from tests.conftest import RedisServer, free_port

# -- framing -----------------------------------------------------------------------------------------------

_scalar = st.one_of(
    st.binary(max_size=40),  # bulk string (may hold CR, LF, anything)
    st.none(),  # nil
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.binary(max_size=20).filter(lambda b: b"\r" not in b and b"\n" not in b).map(lambda b: ("+", b)),
    st.text(max_size=20).filter(lambda t: "\r" not in t and "\n" not in t).map(lambda t: ("-", t)),
)
_reply = st.one_of(_scalar, st.lists(st.one_of(st.binary(max_size=20), st.none()), max_size=5))


def _encode(reply: Any) -> bytes:
    if reply is None:
        return b"$-1\r\n"
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, tuple):
        kind, body = reply
        return (b"+" + body if kind == "+" else b"-" + body.encode()) + b"\r\n"
    return b"*%d\r\n" % len(reply) + b"".join(_encode(item) for item in reply)


def _expected(reply: Any) -> Any:
    if isinstance(reply, tuple):
        return reply[1] if reply[0] == "+" else ("error", reply[1])
    return reply


def _seen(value: Any) -> Any:
    return ("error", value.args[0]) if isinstance(value, ReplyError) else value


@settings(max_examples=300, deadline=None)
@given(replies=st.lists(_reply, min_size=1, max_size=6), data=st.data())
def test_replies_parse_whole_from_any_prefix_and_never_early(replies: list[Any], data: st.DataObject):
    """A stream of replies parses back to the same values in order; cut anywhere, the prefix yields exactly the
    replies it holds whole and then says it is incomplete (never a wrong or partial value)."""
    stream = b"".join(_encode(r) for r in replies)
    ends, pos = [], 0
    for reply in replies:
        value, pos = _parse(stream, pos)
        assert _seen(value) == _expected(reply)
        ends.append(pos)
    assert pos == len(stream)
    cut = data.draw(st.integers(min_value=0, max_value=len(stream) - 1))
    prefix, pos, whole = stream[:cut], 0, 0
    with pytest.raises(_Incomplete):
        while True:
            value, pos = _parse(prefix, pos)  # at the end of the prefix: _Incomplete
            assert _seen(value) == _expected(replies[whole])
            whole += 1
    assert whole == sum(1 for end in ends if end <= cut)


@pytest.mark.parametrize("data", [
    b"?what\r\n",  # not a RESP type
    b"$abc\r\nxyz\r\n",  # a length that is not a number
    b"$3\r\nabcde\r\n",  # a bulk string longer than it said
    b"*1\r\n*1\r\n$1\r\na\r\n",  # an array in an array: no command of the store's answers with one
    b"*1025\r\n",  # more items than any MGET of the store's asks for: refused before one is read
])
def test_malformed_replies_are_refused(data: bytes):
    with pytest.raises((ValueError, ConnectionError)):
        _parse(data, 0)


def test_pack_is_a_resp_array_of_bulk_strings():
    assert pack(b"SET", b"k\r\n", b"") == b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$0\r\n\r\n"


# -- a RESP server of the test's own -----------------------------------------------------------------------


async def _command(reader: asyncio.StreamReader) -> list[bytes]:
    head = await reader.readline()
    if not head:
        raise ConnectionResetError
    assert head.startswith(b"*"), head
    args = []
    for _ in range(int(head[1:])):
        size = int((await reader.readline())[1:])
        args.append((await reader.readexactly(size + 2))[:-2])
    return args


class FakeRedis:
    """Answers redis-py's handshake (CLIENT ...) with +OK and every other command with what `answer` returns
    (`byte_by_byte`: written one byte per write, a loop turn between bytes)."""

    def __init__(self, answer: Callable[[list[bytes], int], bytes], *, byte_by_byte: bool = False) -> None:
        self.answer = answer
        self.byte_by_byte = byte_by_byte
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = self.connections
        try:
            while True:
                args = await _command(reader)
                reply = b"+OK\r\n" if args[0].upper() == b"CLIENT" else self.answer(args, me)
                for piece in [reply[i:i + 1] for i in range(len(reply))] if self.byte_by_byte else [reply]:
                    writer.write(piece)
                    await writer.drain()
                    if self.byte_by_byte:
                        await asyncio.sleep(0)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def fake() -> AsyncIterator[Callable[[Callable[[list[bytes], int], bytes]], Awaitable[tuple[FakeRedis, RedisStore, list[str]]]]]:
    made: list[tuple[FakeRedis, RedisStore]] = []

    async def make(answer: Callable[[list[bytes], int], bytes]) -> tuple[FakeRedis, RedisStore, list[str]]:
        server = FakeRedis(answer)
        kinds: list[str] = []
        store = RedisStore.from_url(await server.start(), timeout_seconds=2.0, breaker=CircuitBreaker(100, 1.0),
                                    on_error=kinds.append)
        made.append((server, store))
        return server, store, kinds

    yield make
    for server, store in made:
        await store.close()
        await server.close()


def _first_connection_says(bad: bytes) -> Callable[[list[bytes], int], bytes]:
    """The first connection answers GET with `bad`; later ones answer it with the bulk string "ok"."""
    return lambda args, conn: bad if conn == 1 else b"$2\r\nok\r\n"


@pytest.mark.parametrize("bad", [
    b"?garbage\r\n",
    b"*1\r\n*0\r\n",  # nested array
    b"$2\r\nok\r\n$2\r\nok\r\n",  # one reply more than was asked for
    b"-READONLY You can't write against a read only replica.\r\n",  # a demoted Sentinel master
], ids=["not-resp", "nested-array", "unasked-reply", "readonly"])
async def test_a_reply_redis_would_not_send_fails_the_connection_and_the_next_call_connects_afresh(fake, bad: bytes):
    """What is not a reply to the command in flight ends the connection (kind `connection`, never a wrong answer
    or a 500); the next call is served on a new connection."""
    server, store, kinds = await fake(_first_connection_says(bad))
    if bad.count(b"ok") == 2:  # the first GET is answered; the extra reply breaks the connection after it
        assert await store.get("ns", "k") == "ok"
        await _until(lambda: server.connections == 1 and store._pipe._link is not None and not store._pipe._link.alive)
    else:
        with pytest.raises(StoreUnavailable):
            await store.get("ns", "k")
        assert kinds == ["connection"]
    assert await store.get("ns", "k") == "ok"
    assert server.connections == 2


async def test_an_error_reply_is_a_response_error_and_keeps_the_connection(fake):
    """-ERR is Redis refusing one command: kind `response`, and the connection carries the next command."""
    server, store, kinds = await fake(lambda args, conn: b"-ERR no\r\n" if args[1].endswith(b"bad") else b"$-1\r\n")
    with pytest.raises(StoreUnavailable):
        await store.get("ns", "bad")
    assert await store.get("ns", "good") is None
    assert kinds == ["response"] and server.connections == 1


def test_an_array_of_the_most_items_parses_and_one_more_is_refused():
    """MAX_ARRAY_ITEMS nils parse (an MGET of that many keys); an array announcing one more is a broken peer's,
    refused from its header alone: a peer dripping a long array never makes each piece re-parse it all."""
    items, _ = _parse(b"*%d\r\n" % MAX_ARRAY_ITEMS + b"$-1\r\n" * MAX_ARRAY_ITEMS, 0)
    assert items == [None] * MAX_ARRAY_ITEMS
    with pytest.raises(ConnectionError, match="too long"):
        _parse(b"*%d\r\n$-1\r\n" % (MAX_ARRAY_ITEMS + 1), 0)


async def test_get_many_of_more_than_an_array_reply_may_hold_is_a_programming_error(fake):
    """The store never sends an MGET whose reply its parser would refuse."""
    server, store, _kinds = await fake(lambda args, conn: b"*0\r\n")
    with pytest.raises(ValueError, match="at most"):
        await store.get_many([("ns", str(i)) for i in range(MAX_ARRAY_ITEMS + 1)])
    assert server.connections == 0


async def test_a_reply_larger_than_the_bound_fails_before_it_is_read_whole(fake):
    """A peer that sends a never-ending reply: the connection fails once MAX_REPLY_BYTES are held unread, not at
    the timeout and not after buffering all of it."""
    huge = b"$%d\r\n" % (64 * MAX_REPLY_BYTES) + b"x" * (2 * MAX_REPLY_BYTES)
    _server, store, kinds = await fake(lambda args, conn: huge)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.get("ns", "k")
    assert kinds == ["connection"]
    assert time.monotonic() - started < 1.5  # the timeout is 2 s: it was the bound, not the timer


async def test_an_array_of_strings_larger_than_the_bound_together_fails(fake):
    """Each string under the bound, together over it: the connection fails before they are held whole."""
    part = b"x" * (MAX_REPLY_BYTES * 2 // 3)
    _server, store, kinds = await fake(lambda args, conn: b"*2\r\n" + b"$%d\r\n%b\r\n" % (len(part), part) * 2)
    with pytest.raises(StoreUnavailable):
        await store.get_many([("ns", "a"), ("ns", "b")])
    assert kinds == ["connection"]


async def _until(probe: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- against a real redis-server ---------------------------------------------------------------------------


async def _store_connections(raw: Redis) -> list[int]:
    return sorted(int(c["id"]) for c in await raw.client_list() if c.get("name") == "dcr-gateway")


async def test_concurrent_calls_share_one_connection_in_order(redis_server: RedisServer, raw: Redis,
                                                              redis_prefix: str):
    """Two hundred concurrent calls (32 in flight at most): one connection, every caller its own answer."""
    store = RedisStore.from_url(redis_server.url, key_prefix=redis_prefix, pool_size=32)
    try:
        before = await _store_connections(raw)
        keys = [f"k{i}" for i in range(200)]
        await asyncio.gather(*(store.put("ns", k, k.upper(), 60) for k in keys))
        values = await asyncio.gather(*(store.get("ns", k) for k in keys))
        assert values == [k.upper() for k in keys]
        assert len(set(await _store_connections(raw)) - set(before)) == 1
    finally:
        await store.close()


async def test_a_caller_that_gives_up_has_its_reply_dropped_and_the_connection_kept(
    redis_server: RedisServer, raw: Redis, redis_prefix: str
):
    """A call cancelled while its command is held by the server (its client went away): the reply is read and
    dropped when it comes, the next call on the same connection gets its own answer, and nothing is reported."""
    kinds: list[str] = []
    store = RedisStore.from_url(redis_server.url, key_prefix=redis_prefix, timeout_seconds=5.0,
                                on_error=kinds.append)
    try:
        await store.put("ns", "first", "1", 60)
        await store.put("ns", "second", "2", 60)
        before = set(await _store_connections(raw))
        await raw.execute_command("CLIENT", "PAUSE", "300", "ALL")
        gone = asyncio.create_task(store.get("ns", "first"))
        await asyncio.sleep(0.05)  # written and held by the server
        gone.cancel()
        assert await store.get("ns", "second") == "2"
        assert set(await _store_connections(raw)) == before
        assert kinds == [] and store.breaker.state == "closed"
    finally:
        await store.close()


class Forwarder:
    """A TCP forwarder to Redis on 127.0.0.1 whose connections can be frozen: it stops passing Redis's bytes on
    them (a black-holed connection), while new connections pass."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.frozen: set[int] = set()
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    def freeze_all(self) -> None:
        self.frozen.update(range(1, self.connections + 1))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        me = self.connections
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, towards_client: bool) -> None:
            while data := await src.read(65536):
                if towards_client and me in self.frozen:
                    continue
                dst.write(data)
                await dst.drain()

        try:
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))
        except ConnectionError:
            pass
        finally:
            writer.close()
            up_writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_a_stalled_connection_fails_its_calls_within_the_bound_and_is_replaced(
    redis_server: RedisServer, redis_prefix: str
):
    """The connection goes silent (no reply ever comes back on it): every call on it fails with `timeout` within
    the bound, and the next call connects afresh instead of queueing behind replies that will never come."""
    forwarder = Forwarder(redis_server.port)
    url = await forwarder.start()
    kinds: list[str] = []
    store = RedisStore.from_url(url, key_prefix=redis_prefix, timeout_seconds=0.3,
                                breaker=CircuitBreaker(100, 1.0), on_error=kinds.append)
    try:
        await store.put("ns", "k", "v", 60)
        forwarder.freeze_all()
        started = time.monotonic()
        async with asyncio.timeout(5):  # the bound under test is 0.3 s; 5 s only stops a hang
            results = await asyncio.gather(*(store.get("ns", "k") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert time.monotonic() - started < 1.5
        assert kinds == ["timeout"] * 3
        async with asyncio.timeout(5):
            assert await store.get("ns", "k") == "v"
        assert forwarder.connections == 2
    finally:
        await store.close()
        await forwarder.close()


async def test_a_counter_survives_redis_forgetting_its_script(redis_server: RedisServer, raw: Redis,
                                                            redis_prefix: str):
    """SCRIPT FLUSH (or a restart) forgets the counter script: the next incr sends it again (NOSCRIPT → EVAL),
    counts once, and is no failure."""
    kinds: list[str] = []
    store = RedisStore.from_url(redis_server.url, key_prefix=redis_prefix, on_error=kinds.append)
    try:
        assert await store.incr("rate", "c", 1, 60) == 1
        await raw.script_flush()
        assert await store.incr("rate", "c", 1, 60) == 2
        assert await store.incr("rate", "c", 1, 60) == 3
        assert kinds == []
    finally:
        await store.close()


async def test_a_demoted_master_is_left_for_a_fresh_connection(own_redis, redis_prefix: str):
    """The store's Redis becomes a replica (what a Sentinel failover does to the old master): the write is
    refused with READONLY, reported as a connection failure, and the connection dropped, so that the next call
    connects afresh (through Sentinel: to the new master). Promoted again, the next write lands."""
    primary, other = own_redis(), own_redis()
    kinds: list[str] = []
    store = RedisStore.from_url(primary.url, key_prefix=redis_prefix, breaker=CircuitBreaker(100, 1.0),
                                on_error=kinds.append)
    admin = Redis.from_url(primary.url)
    try:
        await store.put("ns", "k", "1", 60)
        first = await _store_connections(admin)
        await admin.execute_command("REPLICAOF", "127.0.0.1", str(other.port))
        with pytest.raises(StoreUnavailable):
            await store.put("ns", "k", "2", 60)
        assert kinds == ["connection"]
        await admin.execute_command("REPLICAOF", "NO", "ONE")
        await store.put("ns", "k", "3", 60)
        assert await store.get("ns", "k") == "3"
        assert set(await _store_connections(admin)).isdisjoint(first)
    finally:
        await store.close()
        await admin.aclose()


# -- TLS: the transport is taken over from redis-py's TLS connection, on both event loops -------------------


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "redis test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
          .not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "ca.pem", directory / "server.pem", directory / "server-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


def _tls_redis(tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    ca, cert, key = _tls_files(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no", "--save", "",
         "--appendonly", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    context = ssl.create_default_context(cafile=str(ca))
    deadline = time.monotonic() + 10
    while True:
        assert proc.poll() is None, "redis-server exited (built without TLS?)"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as raw_sock, \
                    context.wrap_socket(raw_sock, server_hostname="127.0.0.1") as tls:
                tls.sendall(b"PING\r\n")
                if tls.recv(16).startswith(b"+PONG"):
                    return proc, port, ca
        except OSError:
            pass
        assert time.monotonic() < deadline, "TLS redis-server did not answer"
        time.sleep(0.05)


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop], ids=["asyncio", "uvloop"])
def test_tls_redis_through_the_taken_over_transport(tmp_path: Path, loop_factory: Callable[[], asyncio.AbstractEventLoop]):
    """rediss:// with the server verified against its CA: commands, pipelined ones and the counter script all run
    over the TLS transport taken over from redis-py, on asyncio's loop and on uvloop (the gateway's)."""
    proc, port, ca = _tls_redis(tmp_path)

    async def scenario() -> None:
        url = f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        store = RedisStore.from_url(url, key_prefix="tls:")
        try:
            assert await store.add_if_absent("jti", "a", 60) is True
            assert await store.add_if_absent("jti", "a", 60) is False
            assert await store.incr("rate", "c", 5, 60) == 5
            added = await asyncio.gather(*(store.add_if_absent("jti", f"k{i}", 60) for i in range(50)))
            assert all(added)
            assert await store.get_many([("jti", "a"), ("jti", "none")]) == ["1", None]
        finally:
            await store.close()
        untrusting = RedisStore.from_url(f"rediss://127.0.0.1:{port}/0?ssl_cert_reqs=required",
                                         key_prefix="tls:", timeout_seconds=1.0)
        try:
            with pytest.raises(StoreUnavailable):  # the server's certificate is checked: not our CA, no answer
                await untrusting.get("jti", "a")
        finally:
            await untrusting.close()

    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(scenario())
    finally:
        proc.kill()
        proc.wait(10)


# -- Sentinel: after a failover the next connection goes to the new master ---------------------------------


async def test_a_sentinel_url_follows_a_failover(own_redis, tmp_path: Path, redis_prefix: str):
    """`redis+sentinel://`: writes land on the master the sentinel names; after a failover the old master
    refuses writes (READONLY), the store drops its connection and the next one goes to the new master."""
    old = own_redis()
    new = own_redis("--replicaof", "127.0.0.1", str(old.port))
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
                    f"sentinel monitor mymaster 127.0.0.1 {old.port} 1\n"
                    "sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 10000\n")
    binary = shutil.which("redis-server")
    assert binary is not None
    proc = subprocess.Popen([binary, str(conf), "--sentinel", "--loglevel", "warning"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    sentinel = Redis(host="127.0.0.1", port=port)
    old_admin, new_admin = Redis.from_url(old.url), Redis.from_url(new.url)
    store = RedisStore.from_url(f"redis+sentinel://127.0.0.1:{port}/mymaster/0", key_prefix=redis_prefix,
                                timeout_seconds=1.0, breaker=CircuitBreaker(1000, 0.05))

    async def answers(probe: Callable[[], Awaitable[bool]]) -> None:
        deadline = time.monotonic() + 30
        while True:
            try:
                if await probe():
                    return
            except (StoreUnavailable, OSError, RedisError):
                pass
            assert time.monotonic() < deadline, "condition not met in time"
            await asyncio.sleep(0.1)

    async def failed_over() -> bool:  # refused (NOGOODSLAVE) until the sentinel sees the replica synced
        return bool(await sentinel.execute_command("SENTINEL", "FAILOVER", "mymaster"))

    async def written(value: str) -> bool:
        await store.put("ns", "k", value, 60)
        return True

    try:
        await answers(lambda: written("1"))
        assert await old_admin.get(f"{redis_prefix}ns:k") == b"1"
        await answers(failed_over)
        await answers(lambda: _is_master(new_admin))
        await answers(lambda: _is_replica(old_admin))  # until then the old master still takes writes (and loses them)
        await answers(lambda: written("2"))
        assert await new_admin.get(f"{redis_prefix}ns:k") == b"2"
        assert await store.get("ns", "k") == "2"
    finally:
        await store.close()
        for client in (sentinel, old_admin, new_admin):
            await client.aclose()
        proc.kill()
        proc.wait(10)


async def _is_master(client: Redis) -> bool:
    return bool((await client.execute_command("ROLE"))[0] == b"master")


async def _is_replica(client: Redis) -> bool:
    return bool((await client.execute_command("ROLE"))[0] == b"slave")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis+sentinel://127.0.0.1:1/mymaster/0"])
def test_connections_are_handshaken_by_the_parser_that_reads_no_further_than_each_reply(url: str):
    """The transport is taken over after redis-py's handshake: its parser must not have read past the last reply
    (hiredis's, if installed, buffers ahead). Pinned to redis-py's pure-Python RESP2 parser, for Sentinel too."""
    from redis.asyncio.connection import _AsyncRESP2Parser

    store = RedisStore.from_url(url)
    kwargs = store._client.connection_pool.connection_kwargs
    assert kwargs["parser_class"] is _AsyncRESP2Parser
    assert kwargs.get("protocol", 2) == 2  # RESP2 (redis-py's default when not set)
