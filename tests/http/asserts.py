"""Assertions and helpers shared by the harness's tests (tests/http)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from tests.conftest import RunningGateway
from tests.http.conftest import server_overrides
from tests.http.rawclient import Exchange, Response
from tests.http.rawupstream import RawUpstream

SETTLE = 0.2
"""Pause before asserting that nothing reached the upstream, so that anything in flight has landed."""
BOUND = 5.0
"""Outer bound on any single wait: only to keep a failing test from hanging, never asserted."""


def long_keepalive() -> dict[str, Any]:
    """The test timeouts with a keep-alive timeout far beyond BOUND: what closes a connection is then not it."""
    server = server_overrides()
    if "timeouts" in server:
        server["timeouts"] = {**server["timeouts"], "keepalive_seconds": 60}
    return server


def marker() -> str:
    return f"m{uuid.uuid4().hex[:16]}"


def port_of(gw: RunningGateway) -> int:
    port = gw.client.port
    assert port is not None
    return port


def assert_refused(resp: Response, *statuses: int) -> None:
    """A refusal: one of `statuses`, a JSON error body (never aiohttp's text/plain), in an HTTP/1.x response."""
    assert resp.status in statuses, resp
    assert resp.version in ("HTTP/1.1", "HTTP/1.0"), f"status line of another protocol: {resp!r}"
    assert resp.is_json, f"refusal is not JSON: {resp!r}"
    assert "error" in resp.json(), resp


def assert_refused_or_closed(ex: Exchange, *statuses: int) -> None:
    """Refused with a JSON error, or the connection closed with no response at all."""
    if not ex.responses:
        assert ex.closed, f"no response and the connection still open: {ex!r}"
        return
    assert_refused(ex.responses[0], *statuses)


def assert_own(resp: Response, mark: str) -> None:
    """A 200 from the upstream that answers this very request, and nothing of any other response."""
    assert resp.status == 200, resp
    assert resp.header("X-Echo-Marker") == mark, f"answer to another request: {resp!r}"
    assert [v for n, v in resp.headers if n.lower() == "x-echo-marker"] == [mark], f"headers mixed: {resp!r}"
    assert resp.header("X-Evil") is None and resp.header("Set-Cookie") is None, f"headers mixed: {resp!r}"
    assert resp.is_json and resp.json()["marker"] == mark, resp


async def nothing_upstream(up: RawUpstream) -> None:
    await asyncio.sleep(SETTLE)
    assert up.requests == [], f"reached the upstream: {up.requests!r}"
    assert up.garbage == [], f"unparseable bytes reached the upstream: {up.garbage!r}"


def assert_gateway_framed(up: RawUpstream, mark: str, body: bytes) -> None:
    """Exactly one upstream request for `mark`, framed by Content-Length with exactly `body`."""
    got = up.by_marker(mark)
    assert len(got) == 1, got
    req = got[0]
    assert req.body == body
    assert not req.chunked and not req.has("Transfer-Encoding"), req.headers
    assert req.values("Content-Length") == [str(len(body))] or (not body and not req.has("Content-Length")), req
    assert not req.has("Expect") and not req.has("Content-Encoding"), req.headers
    assert up.garbage == [], up.garbage
