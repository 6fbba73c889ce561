"""The public listener's connection rules over raw sockets: slow headers and bodies, connections per client,
JSON for what the HTTP parser refuses, no decompression (listener.py, proxy.read_body, inbound.py)."""

from __future__ import annotations

import asyncio
import gzip
import json

import pytest
from aiohttp import web

from tests.conftest import RunningGateway, StartServer
from tests.waiting import eventually


async def _exchange(port: int, data: bytes, *, read_for: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the gateway closes it (bounded by `read_for`)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        got = b""
        async with asyncio.timeout(read_for):
            while chunk := await reader.read(65536):
                got += chunk
        return got
    finally:
        writer.close()


def _status_and_json(raw: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), json.loads(body)


@pytest.fixture
async def recorder(start_server: StartServer) -> tuple[list[tuple[str, bytes]], str]:
    """An upstream that records (method + path, body) of what reaches it."""
    seen: list[tuple[str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((f"{request.method} {request.path}", await request.read()))
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await start_server(app)
    return seen, str(server.make_url("")).rstrip("/")


async def _gateway(running_gateway, url: str, **server: object) -> RunningGateway:
    timeouts = {"header_read_seconds": 0.3, "body_idle_seconds": 0.3, "body_total_seconds": 1.0}
    return await running_gateway(url, server={"timeouts": timeouts, **server})


async def test_gzip_body_is_refused_415_and_nothing_is_decoded_or_forwarded(recorder, running_gateway) -> None:
    """Finding 1: a gzip body (here hiding a second request) is refused before it is read; the upstream sees
    nothing, and the connection carries no hidden request."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    hidden = b"DELETE /echo/x HTTP/1.1\r\nHost: x\r\n\r\n"
    body = gzip.compress(b"{}" + b" " * 64 + hidden)
    raw = await _exchange(gw.client.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\n"
                          b"Connection: close\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
    status, error = _status_and_json(raw)
    assert status == 415 and error["error"] == "invalid_request"
    assert seen == []


async def test_body_is_forwarded_as_framed_de_chunked_with_content_length(recorder, running_gateway) -> None:
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    raw = await _exchange(gw.client.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                          b"Connection: close\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")
    assert seen == [("POST /echo", b"abcde")]


async def test_unfinished_headers_are_cut_off(recorder, running_gateway) -> None:
    """Finding 11: headers that never end do not hold a connection past `header_read_seconds`."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    raw = await _exchange(gw.client.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Slow: 1", read_for=5)
    assert raw == b""  # closed without an answer (bounded by read_for: a hang fails the test)
    assert seen == []


async def test_stalled_body_gets_408_and_holds_no_upstream_connection(recorder, running_gateway) -> None:
    """Finding 11 and 4: Content-Length 100 with 29 bytes sent: 408 after the idle timeout, nothing upstream."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    raw = await _exchange(gw.client.port, b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n" + b"x" * 29)
    status, error = _status_and_json(raw)
    assert status == 408 and error["error"] == "invalid_request"
    assert seen == []


async def test_slow_body_is_cut_at_the_total_deadline(recorder, running_gateway) -> None:
    """A body trickled fast enough for the idle timeout still ends at `body_total_seconds`."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    got = b""
    async with asyncio.timeout(10):
        for _ in range(1000):
            if reader.at_eof():
                break
            writer.write(b"x")
            await asyncio.sleep(0.05)
            try:
                got += await asyncio.wait_for(reader.read(65536), 0.001)
            except TimeoutError:
                pass
            if b"\r\n\r\n" in got:
                break
    writer.close()
    assert got.startswith(b"HTTP/1.1 408")
    assert seen == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Bad: a\x00b\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Bad: a\x7fb\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
    ],
)
async def test_malformed_http_gets_a_json_400_and_reaches_nothing(recorder, running_gateway,
                                                                  request_bytes: bytes) -> None:
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    raw = await _exchange(gw.client.port, request_bytes)
    status, error = _status_and_json(raw)
    assert status == 400 and error["error"] == "invalid_request"
    assert seen == []


async def test_connections_per_client_are_capped(recorder, running_gateway) -> None:
    """Beyond `max_connections_per_client`, a client's new connections are closed at once; its open ones and
    its later ones (after it let go) are served."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url, max_connections_per_client=3)
    held = [await asyncio.open_connection("127.0.0.1", gw.client.port) for _ in range(3)]
    for _, writer in held:  # the connections are counted once the server has accepted them
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
    for reader, _ in held:
        async with asyncio.timeout(5):
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    refused = await _exchange(gw.client.port, b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
    assert refused == b""
    for _, writer in held:
        writer.close()
        await writer.wait_closed()
    answers: list[bytes] = []

    async def served_again() -> bool:  # the server sees the closes asynchronously
        answers.append(await _exchange(gw.client.port, b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        return bool(answers[-1])

    await eventually(served_again, "a connection slot to be free again")
    assert answers[-1].startswith(b"HTTP/1.1 200")
    assert len(seen) == 4


async def test_100_continue_only_once_the_body_is_wanted(recorder, running_gateway, tmp_path) -> None:
    """`Expect: 100-continue` is answered when the gateway reads the body: a request refused before that (here
    for a body on GET) gets its refusal and no 100; an allowed one gets 100, then sends, then 200."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n")
    async with asyncio.timeout(5):
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        writer.write(b"{}")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
    writer.close()
    raw = await _exchange(gw.client.port, b"DELETE /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                          b"Content-Length: 2\r\nConnection: close\r\n\r\n", read_for=5)
    assert raw.startswith(b"HTTP/1.1 400") and b"100 Continue" not in raw
    assert seen == [("POST /echo", b"{}")]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /echo HTTP/1.1\r\nHost: x\r\nExpect: something\r\nConnection: close\r\n\r\n", 417),
        (b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\nConnection: close\r\n\r\n"
         b"0\r\n\r\n", 501),
        (b"GET /echo HTTP/2.0\r\nHost: x\r\nConnection: close\r\n\r\n", 505),
    ],
)
async def test_what_the_gateway_does_not_speak_is_refused_in_json(recorder, running_gateway, request_bytes: bytes,
                                                                  status: int) -> None:
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    got, error = _status_and_json(await _exchange(gw.client.port, request_bytes))
    assert (got, error["error"]) == (status, "invalid_request")
    assert seen == []


@pytest.mark.parametrize("request_bytes", [
    b"GET /echo HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"A" * 9000 + b"\r\n\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
])
async def test_oversized_lines_get_431_in_json_without_echoing_them(recorder, running_gateway,
                                                                    request_bytes: bytes) -> None:
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    raw = await _exchange(gw.client.port, request_bytes)
    status, error = _status_and_json(raw)
    assert status == 431 and error["error"] == "invalid_request"
    assert b"AAAA" not in raw and b"aaaa" not in raw
    assert seen == []


@pytest.mark.parametrize("which", ["admin", "sandbox"])
async def test_every_listener_cuts_off_unfinished_headers(which: str, tmp_path) -> None:
    """The admin and sandbox listeners are served like the public one (listener.ListenerRunner): unfinished
    headers are cut off, malformed requests get JSON."""
    from gateway.http.app import Health, build_admin_app
    from gateway.http.listener import ListenerRunner
    from gateway.observability.metrics import Metrics
    from gateway.sandbox import build_sandbox_app
    from tests.conftest import make_settings

    settings = make_settings("http://127.0.0.1:9", server={"timeouts": {"header_read_seconds": 0.3}},
                             sandbox={"state_dir": str(tmp_path)})
    app = build_admin_app(settings, Metrics(), Health()) if which == "admin" else build_sandbox_app(settings)
    runner = ListenerRunner(app)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        assert await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1") == b""
        status, error = _status_and_json(await _exchange(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: \x00\r\n\r\n"))
        assert (status, error["error"]) == (400, "invalid_request")
    finally:
        await runner.cleanup()


async def test_a_route_may_accept_a_coded_body_forwarded_byte_for_byte(running_gateway, tmp_path) -> None:
    """`accept_content_encoding`: the coded body goes upstream as sent, with its Content-Encoding, never decoded;
    a check that needs the plaintext refuses it (415); other routes still refuse coded bodies."""
    seen: list[tuple[str, bytes]] = []

    async def handle(request: web.Request) -> web.Response:
        seen.append((f"{request.method} {request.path} {request.headers.get('Content-Encoding')}",
                     await request.read()))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, auto_decompress=False)  # records the bytes as they arrived
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    (tmp_path / "p.yaml").write_text("""policies:
  - name: upload
    match: {methods: [POST], path: /upload}
    accept_content_encoding: [gzip]
  - name: checked
    match: {methods: [POST], path: /checked}
    accept_content_encoding: [gzip]
    checks:
      - body_size: {max_bytes: 100000}
  - name: plain
    match: {methods: [POST], path: /plain}
""")
    gw = await running_gateway(url, policy_dir=tmp_path)
    coded = gzip.compress(b'{"a": 1}' * 100)
    for path, status in (("/upload", 200), ("/checked", 415), ("/plain", 415)):
        resp = await gw.client.post(path, data=coded, headers={"Content-Encoding": "gzip"})
        assert resp.status == status, path
    resp = await gw.client.post("/upload", data=coded, headers={"Content-Encoding": "br"})
    assert resp.status == 415
    await runner.cleanup()
    assert seen == [("POST /upload gzip", coded)]


async def test_configured_headers_are_dropped_in_any_spelling(running_gateway, start_server) -> None:
    got: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(dict(request.headers))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await start_server(app)
    gw = await running_gateway(str(server.make_url("")).rstrip("/"),
                               server={"drop_request_headers": ["X-Internal-Auth"]})
    resp = await gw.client.get("/echo", headers={"x_internal_auth": "forged", "X-INTERNAL-AUTH": "forged",
                                                 "X-Other": "kept"})
    assert resp.status == 400  # two spellings of one name: ambiguous
    resp = await gw.client.get("/echo", headers={"x_internal_auth": "forged", "X-Other": "kept"})
    assert resp.status == 200
    assert "x_internal_auth" not in {k.lower() for k in got[0]} and got[0]["X-Other"] == "kept"


@pytest.mark.parametrize("target", [b"/echo", b"127.0.0.1:9"])
async def test_connect_is_refused_and_its_body_never_read_as_requests(recorder, running_gateway, target: bytes) -> None:
    """llhttp ignores CONNECT's framing: its body would be parsed as more requests. Refused 405, closed."""
    seen, url = recorder
    gw = await _gateway(running_gateway, url)
    inner = b"GET /echo/x HTTP/1.1\r\nHost: a\r\nssl-client-cert: SMUGGLED\r\n\r\n"
    raw = await _exchange(gw.client.port, b"CONNECT %b HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n%b"
                          % (target, len(inner), inner))
    status, error = _status_and_json(raw)
    assert (status, error["error"]) == (405, "method_not_allowed")
    assert raw.count(b"HTTP/1.") == 1
    assert seen == []


async def test_an_upgrade_request_does_not_switch_the_header_timer_off(recorder, running_gateway) -> None:
    """After a request asking to upgrade (served as plain HTTP), a head trickled on the same connection is still
    cut off at header_read_seconds (found black-box: it used to last until the keep-alive timeout)."""
    _, url = recorder
    gw = await running_gateway(url, server={"timeouts": {"header_read_seconds": 0.3, "keepalive_seconds": 30}})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
    try:
        async with asyncio.timeout(5):
            writer.write(b"GET /echo HTTP/1.1\r\nHost: a\r\n\r\n")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await reader.readexactly(12)  # {"ok": true}
            writer.write(b"POST /echo HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n"
                         b"Content-Length: 5\r\n\r\nhello")
            assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await reader.readexactly(12)
            closed = False
            for byte in b"GET /echo HTTP/1.1\r\nHost: a\r\n":  # about 3 s in all, 0.3 s allowed
                writer.write(bytes([byte]))
                await asyncio.sleep(0.1)
                if reader.at_eof() or writer.is_closing():
                    closed = True
                    break
                try:
                    if await asyncio.wait_for(reader.read(1), 0.001) == b"":
                        closed = True
                        break
                except TimeoutError:
                    pass
        assert closed
    finally:
        writer.close()


async def test_admin_errors_are_json(running_gateway) -> None:
    from gateway.http.app import Health, build_admin_app
    from gateway.observability.metrics import Metrics
    from tests.conftest import GatewayTestServer, make_settings

    settings = make_settings("http://127.0.0.1:9")
    server = GatewayTestServer(build_admin_app(settings, Metrics(), Health()), host="127.0.0.1")
    await server.start_server()
    try:
        for method, path, status in (("GET", "/nope", 404), ("DELETE", "/healthz", 405)):
            raw = await _exchange(server.port, b"%b %b HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
                                  % (method.encode(), path.encode()))
            got, error = _status_and_json(raw)
            assert got == status and error["error"] in ("not_found", "method_not_allowed")
    finally:
        await server.close()


@pytest.mark.parametrize(("request_line", "host", "forwarded"), [
    (b"GET /echo", b"gateway.test:8443", "gateway.test:8443"),
    (b"GET /echo", b"a, evil", None),
    (b"GET /echo", b"a@evil:1/x?", None),
    (b"GET http://evil.example/echo", b"a", "a"),
])
async def test_x_forwarded_host_is_a_host_the_client_named_in_host(running_gateway, start_server, request_line,
                                                                    host, forwarded) -> None:
    got: list[str | None] = []

    async def handle(request: web.Request) -> web.Response:
        got.append(request.headers.get("X-Forwarded-Host"))
        return web.json_response({})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = await start_server(app)
    gw = await _gateway(running_gateway, str(server.make_url("")).rstrip("/"))
    raw = await _exchange(gw.client.port, request_line + b" HTTP/1.1\r\nHost: " + host + b"\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200")
    assert got == [forwarded]


@pytest.mark.parametrize("target", [b"*", b"http://gateway.test/nowhere", b"/%0A"])
async def test_every_target_reaches_the_policy_router_and_is_audited(recorder, running_gateway, tmp_path,
                                                                      target: bytes) -> None:
    """The public listener has no router of its own: whatever the target (asterisk form, an
    absolute form naming no policy's path, a percent-encoded line break), the gateway's one handler answers it —
    a JSON refusal carrying the interaction id — and the decision is audited; nothing reaches the upstream."""
    seen, url = recorder
    audit = tmp_path / "audit.log"
    gw = await running_gateway(url, audit_path=audit)
    raw = await _exchange(gw.client.port, b"OPTIONS " + target + b" HTTP/1.1\r\nHost: gateway.test\r\n"
                          b"Connection: close\r\n\r\n")
    status, body = _status_and_json(raw)
    assert status == 404 and body["error"] == "not_found", raw
    head = raw.partition(b"\r\n\r\n")[0].lower()
    assert b"\r\nx-fapi-interaction-id: " in head and b"\r\nserver:" not in head, raw
    assert gw.audit is not None
    gw.audit.flush()

    def decided() -> list[dict[str, object]]:
        events = [json.loads(line) for line in audit.read_text().splitlines()] if audit.exists() else []
        return [e for e in events if e.get("event") == "decision"]

    await eventually(lambda: bool(decided()), "the decision event")
    events = decided()
    assert [(e["method"], e["route"], e["decision"], e["status"]) for e in events] == [
        ("OPTIONS", "unmatched", "deny", 404)]
    assert seen == []


async def test_a_head_growing_past_its_bound_is_refused_before_it_is_buffered(recorder, running_gateway) -> None:
    """One header field sent in many pieces and never finished: llhttp's binding would buffer it whole before the
    field limit could see it, so the server bounds the head as it arrives (64 KiB): 431 in JSON and a close, well
    before the header timeout, with nothing upstream."""
    seen, url = recorder
    gw = await running_gateway(url, server={"timeouts": {"header_read_seconds": 30}})
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.client.port)
    try:
        writer.write(b"GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: ")
        got = b""
        async with asyncio.timeout(10):  # far below the 30 s header timeout
            for _ in range(200):  # up to 400 KiB, in 2 KiB writes; the gateway answers once it has 64 KiB
                try:
                    writer.write(b"v" * 2048)
                    await writer.drain()
                except ConnectionError:
                    break
                await asyncio.sleep(0)
            while chunk := await reader.read(65536):
                got += chunk
    finally:
        writer.close()
    status, error = _status_and_json(got)
    assert status == 431 and error["error"] == "invalid_request", got
    assert seen == []
