"""The forwarder end to end: a real gateway in front of a real upstream, both on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.observability.metrics import Metrics
from tests.conftest import GatewayFactory, StartServer, free_port


class Upstream:
    """A test upstream that records what reached it."""

    def __init__(self) -> None:
        self.hits = 0
        self.peers: set[int] = set()
        self.received_bytes = 0
        self.first_chunk = asyncio.Event()
        self.client_got_first = asyncio.Event()
        self.app = web.Application(client_max_size=1 << 30)
        self.app.router.add_route("*", "/echo{tail:.*}", self.echo)
        self.app.router.add_get("/slow", self.slow)
        self.app.router.add_post("/sink", self.sink)
        self.app.router.add_post("/stream", self.sink)
        self.app.router.add_get("/source", self.source)
        self.app.router.add_get("/gzip", self.gzip)

    async def echo(self, request: web.Request) -> web.Response:
        self.hits += 1
        self.peers.add(request.transport.get_extra_info("peername")[1])
        body = await request.read()
        resp = web.json_response(
            {"method": request.method, "path_qs": request.path_qs, "headers": dict(request.headers),
             "body_len": len(body)},
            headers={"Connection": "X-Upstream-Hop", "X-Upstream-Hop": "1", "Keep-Alive": "timeout=5",
                     "Proxy-Authenticate": "Basic", "X-Kept": "yes"},
        )
        return resp

    async def slow(self, request: web.Request) -> web.Response:
        self.hits += 1
        await asyncio.sleep(float(request.query.get("delay", "3")))
        return web.json_response({"slow": True})

    async def sink(self, request: web.Request) -> web.Response:
        self.hits += 1
        async for chunk in request.content.iter_any():
            self.received_bytes += len(chunk)
            self.first_chunk.set()
        return web.json_response({"received": self.received_bytes})

    async def source(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/octet-stream"
        await resp.prepare(request)
        await resp.write(b"a" * 65536)
        # The rest is only sent once the client has the first part: a gateway that buffers deadlocks.
        await asyncio.wait_for(self.client_got_first.wait(), 5)
        for _ in range(64):
            await resp.write(b"b" * 65536)
        await resp.write_eof()
        return resp

    async def gzip(self, request: web.Request) -> web.Response:
        import gzip as gz

        return web.Response(body=gz.compress(b"x" * 1000), headers={"Content-Encoding": "gzip",
                                                                       "Content-Type": "text/plain"})


@pytest.fixture
async def upstream(start_server: StartServer) -> tuple[Upstream, str]:
    up = Upstream()
    server = await start_server(up.app)
    return up, str(server.make_url("")).rstrip("/")


async def test_request_hop_by_hop_headers_removed_and_forwarded_headers_set(upstream, gateway: GatewayFactory):
    """Hop-by-hop fields (RFC 9110 §7.6.1) never reach the upstream; X-Forwarded-* and ids are the gateway's
    (a client that is not a trusted proxy cannot add X-Forwarded-For entries)."""
    up, url = upstream
    client = await gateway(url)
    resp = await client.get(
        "/echo/a?b=1",
        headers={"Connection": "keep-alive, TE", "Keep-Alive": "timeout=5",
                 "Proxy-Authorization": "Basic Zm9vOmJhcg==", "TE": "trailers", "X-Forwarded-For": "203.0.113.9",
                 "X-Forwarded-Proto": "gopher", "X-Request-Id": "spoofed", "X-Normal": "kept"},
    )
    assert resp.status == 200
    seen = (await resp.json())["headers"]
    lowered = {k.lower(): v for k, v in seen.items()}
    for name in ("keep-alive", "proxy-authorization", "te"):
        assert name not in lowered, name
    assert lowered["x-normal"] == "kept"
    assert lowered["x-forwarded-for"] == "127.0.0.1"
    assert lowered["x-forwarded-proto"] == "http"
    assert lowered["x-forwarded-host"] == f"127.0.0.1:{client.port}"
    assert lowered["x-request-id"] != "spoofed"
    assert (await resp.json())["path_qs"] == "/echo/a?b=1"
    assert up.hits == 1


@pytest.mark.parametrize("named", ["X-Client-Hop", "Authorization", "client_id", "Content-Type"])
async def test_connection_naming_an_end_to_end_field_is_refused(upstream, gateway: GatewayFactory, named: str):
    """`Connection` may name only hop-by-hop fields: naming another (which a proxy would have to drop, after the
    checks read it) is refused with 400 and nothing reaches the upstream."""
    up, url = upstream
    client = await gateway(url)
    resp = await client.get("/echo/a", headers={"Connection": f"keep-alive, {named}", named: "value"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"
    assert up.hits == 0


async def test_response_hop_by_hop_headers_removed(upstream, gateway: GatewayFactory):
    """Hop-by-hop fields in the upstream response are not relayed; ordinary ones are."""
    _, url = upstream
    client = await gateway(url)
    resp = await client.get("/echo")
    assert resp.headers["X-Kept"] == "yes"
    for name in ("X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate"):
        assert name not in resp.headers, name


async def test_interaction_id_kept_when_uuid(upstream, gateway: GatewayFactory):
    """A valid x-fapi-interaction-id is sent upstream and echoed back unchanged."""
    _, url = upstream
    client = await gateway(url)
    iid = str(uuid.uuid4())
    resp = await client.get("/echo", headers={"x-fapi-interaction-id": iid})
    assert resp.headers["x-fapi-interaction-id"] == iid
    assert {k.lower(): v for k, v in (await resp.json())["headers"].items()}["x-fapi-interaction-id"] == iid


@pytest.mark.parametrize("given", [None, "not-a-uuid", "x" * 36, "<script>"])
async def test_interaction_id_generated_when_missing_or_invalid(upstream, gateway: GatewayFactory, given):
    """A missing or malformed interaction id is replaced by a fresh UUID, upstream and in the response."""
    _, url = upstream
    client = await gateway(url)
    headers = {"x-fapi-interaction-id": given} if given else {}
    resp = await client.get("/echo", headers=headers)
    iid = resp.headers["x-fapi-interaction-id"]
    assert str(uuid.UUID(iid)) == iid and iid != given
    assert {k.lower(): v for k, v in (await resp.json())["headers"].items()}["x-fapi-interaction-id"] == iid


async def test_interaction_id_on_error_responses(gateway: GatewayFactory):
    """Errors (here upstream down) carry the interaction id too."""
    client = await gateway(f"http://127.0.0.1:{free_port()}")
    iid = str(uuid.uuid4())
    resp = await client.get("/x", headers={"x-fapi-interaction-id": iid})
    assert resp.status == 502
    assert resp.headers["x-fapi-interaction-id"] == iid


async def test_content_length_over_limit_is_413_without_reaching_upstream(upstream, gateway: GatewayFactory):
    """A declared Content-Length over the limit is refused before the body is read."""
    up, url = upstream
    client = await gateway(url, server={"max_body_bytes": 1000})
    resp = await client.post("/echo", data=b"x" * 1001)
    assert resp.status == 413
    assert (await resp.json())["error"] == "request_too_large"
    assert up.hits == 0


async def test_chunked_body_over_limit_is_413(upstream, gateway: GatewayFactory):
    """A chunked body is cut off with 413 as soon as it crosses the limit."""
    up, url = upstream
    client = await gateway(url, server={"max_body_bytes": 100_000})

    async def body() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b"y" * 50_000

    resp = await client.post("/sink", data=body())
    assert resp.status == 413
    assert resp.headers["Content-Type"].startswith("application/json")
    assert up.received_bytes <= 100_000 + 65536


async def test_body_at_limit_passes(upstream, gateway: GatewayFactory):
    """A body exactly at the limit is forwarded whole."""
    _, url = upstream
    client = await gateway(url, server={"max_body_bytes": 1000})
    resp = await client.post("/echo", data=b"x" * 1000)
    assert resp.status == 200
    assert (await resp.json())["body_len"] == 1000


async def test_request_body_is_buffered_before_the_upstream_is_contacted(upstream, gateway: GatewayFactory):
    """Request buffering: while the client is still sending, nothing reaches the upstream (a stalled body holds
    no upstream connection); then the upstream gets the whole body at once, framed by Content-Length."""
    up, url = upstream
    client = await gateway(url, server={"max_body_bytes": 64 << 20})
    sent_first = asyncio.Event()
    release = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield b"z" * 65536
        sent_first.set()
        await asyncio.wait_for(release.wait(), 5)
        for _ in range(255):
            yield b"z" * 65536

    post = asyncio.ensure_future(client.post("/sink", data=body()))
    await asyncio.wait_for(sent_first.wait(), 5)
    for _ in range(20):  # give a streaming gateway every chance to reach the upstream
        await asyncio.sleep(0.01)
    assert up.hits == 0 and not up.first_chunk.is_set()
    release.set()
    resp = await asyncio.wait_for(post, 10)
    assert resp.status == 200
    assert (await resp.json())["received"] == 256 * 65536


async def test_a_route_that_streams_forwards_the_body_as_it_arrives(upstream, gateway: GatewayFactory):
    """`stream_body` (an explicit per-route choice): the upstream receives the first bytes before the client has
    sent the rest, under the client's own framing."""
    up, url = upstream
    client = await gateway(url)

    async def body() -> AsyncIterator[bytes]:
        yield b"z" * 65536
        await asyncio.wait_for(up.first_chunk.wait(), 5)  # would time out if the gateway buffered
        for _ in range(255):
            yield b"z" * 65536

    resp = await client.post("/stream", data=body())
    assert resp.status == 200
    assert (await resp.json())["received"] == 256 * 65536


async def test_a_stalled_streamed_body_gets_408_and_the_upstream_connection_is_dropped(upstream,
                                                                                       gateway: GatewayFactory):
    """The route's own idle timeout cuts a stalled stream: 408 to the client, the upstream's request is cut off
    (its connection closed), and the next request still gets through."""
    up, url = upstream
    client = await gateway(url)

    async def body() -> AsyncIterator[bytes]:
        yield b"z" * 1000
        await asyncio.sleep(5)  # stalls past idle_seconds (0.5)
        yield b"z"

    resp = await asyncio.wait_for(client.post("/stream", data=body(), headers={"Content-Length": "1001"}), 4)
    assert resp.status == 408
    assert up.received_bytes == 1000
    resp = await client.get("/echo")
    assert resp.status == 200


async def test_large_response_body_is_streamed(upstream, gateway: GatewayFactory):
    """The client gets the first bytes before the upstream has produced the rest."""
    up, url = upstream
    client = await gateway(url)
    resp = await client.get("/source")
    assert resp.status == 200
    first = await resp.content.readexactly(65536)
    assert first == b"a" * 65536
    up.client_got_first.set()
    rest = await resp.read()
    assert len(rest) == 64 * 65536


async def test_encoded_response_passes_through_unchanged(upstream, gateway: GatewayFactory):
    """Content-Encoding is relayed as the upstream sent it, not decoded by the gateway."""
    _, url = upstream
    client = await gateway(url)
    resp = await client.get("/gzip", auto_decompress=False)
    assert resp.headers["Content-Encoding"] == "gzip"
    import gzip

    assert gzip.decompress(await resp.read()) == b"x" * 1000


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
async def test_upstream_down_is_502_json(gateway: GatewayFactory, method):
    """A refused upstream connection is a 502 with a JSON error body, never a 500."""
    metrics = Metrics()
    client = await gateway(f"http://127.0.0.1:{free_port()}", metrics=metrics)
    body = b"{}" if method in ("POST", "PUT") else None
    resp = await client.request(method, "/open-banking/v3.1/register", data=body)
    assert resp.status == 502
    body = await resp.json()
    assert body["error"] == "bad_gateway"
    assert metrics.registry.get_sample_value("dcr_gateway_upstream_errors_total", {"kind": "connect"}) == 1


async def test_upstream_slow_is_504(upstream, gateway: GatewayFactory):
    """An upstream that does not answer within the read timeout gives 504."""
    _, url = upstream
    client = await gateway(url, upstream={"url": url, "timeouts": {"connect": 1, "read": 0.3, "total": 5}})
    resp = await client.get("/slow?delay=2")
    assert resp.status == 504
    assert (await resp.json())["error"] == "gateway_timeout"


async def test_methods_and_status_relayed(upstream, gateway: GatewayFactory):
    """Methods, query strings and bodies arrive unchanged."""
    _, url = upstream
    client = await gateway(url)
    for method in ("GET", "POST", "PUT", "DELETE", "PATCH"):
        resp = await client.request(method, "/echo/x?q=%20a", data=b"{}" if method not in ("GET", "DELETE") else None)
        assert resp.status == 200
        got = await resp.json()
        assert got["method"] == method
        assert got["path_qs"] == "/echo/x?q=%20a"


async def test_keepalive_connections_are_reused(upstream, gateway: GatewayFactory):
    """Sequential requests reuse one pooled upstream connection."""
    up, url = upstream
    client = await gateway(url)
    for _ in range(5):
        resp = await client.get("/echo")
        assert resp.status == 200
        await resp.read()
    # The upstream sees one client port when the pooled connection is reused.
    assert len(up.peers) == 1


async def test_malformed_requests_never_500(upstream, gateway: GatewayFactory):
    """Odd but parseable client input is forwarded or refused, never a 500."""
    _, url = upstream
    client = await gateway(url)
    for path in ("/%", "/echo/%ff%fe", "/echo/../../etc/passwd", "/echo?" + "a=" * 1000):
        resp = await client.get(path)
        assert resp.status < 500, (path, resp.status)
    resp = await client.post("/echo", data=json.dumps({"a": 1}), headers={"Content-Type": "text/x-nonsense"})
    assert resp.status == 200


async def test_invented_methods_share_one_metric_series(upstream, gateway: GatewayFactory):
    """Methods beyond the usual seven (the parser knows dozens: WebDAV, RTSP…) all count as method="other"."""
    _, url = upstream
    metrics = Metrics()
    client = await gateway(url, metrics=metrics)
    for method in ("PROPFIND", "MKCOL", "LOCK"):
        resp = await client.request(method, "/echo")
        assert resp.status == 405
    samples = [s for family in metrics.registry.collect() if family.name == "dcr_gateway_requests"
               for s in family.samples if s.name == "dcr_gateway_requests_total"]
    assert {s.labels["method"] for s in samples} == {"other"}
    assert sum(s.value for s in samples) == 3


def test_generated_interaction_ids_are_version_4_uuids():
    """The fast generator makes what uuid.uuid4() makes: canonical text, version 4, RFC 4122 variant, random."""
    from gateway.http.handler import new_uuid4

    ids = {new_uuid4() for _ in range(1000)}
    assert len(ids) == 1000
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 4 and parsed.variant == uuid.RFC_4122


async def test_every_request_gets_ids_of_its_own(upstream, gateway: GatewayFactory):
    """Through the gateway, 300 requests: every interaction id and request id the backend sees is new, and no
    request's two ids come from the same random bytes."""
    _, url = upstream
    client = await gateway(url)
    interaction_ids, request_ids = set(), set()
    for _ in range(300):
        resp = await client.get("/echo")
        headers = {k.lower(): v for k, v in (await resp.json())["headers"].items()}
        interaction, request_id = headers["x-fapi-interaction-id"], headers["x-request-id"]
        assert resp.headers["x-fapi-interaction-id"] == interaction
        interaction_ids.add(interaction)
        request_ids.add(request_id)
        # a version 4 UUID keeps its first six bytes as drawn: they never equal the request id's
        assert uuid.UUID(interaction).bytes[:6] != bytes.fromhex(request_id)[:6]
    assert len(interaction_ids) == 300 and len(request_ids) == 300


async def test_client_certificate_header_stays_at_the_gateway(upstream, gateway: GatewayFactory):
    """The ingress's certificate header is for the gateway's check: the backend sees only verified facts."""
    _, url = upstream
    client = await gateway(url, trust={"client_certificate": {"header": "X-Client-Cert"}})
    resp = await client.get("/echo", headers={"X-Client-Cert": "-----BEGIN%20CERTIFICATE-----", "X-Other": "1"})
    seen = {k.lower() for k in (await resp.json())["headers"]}
    assert "x-client-cert" not in seen and "x-other" in seen
