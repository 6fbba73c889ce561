"""`server.server_header`: no `Server: Python/3.11 aiohttp/3.x` on any answer of any listener (public, admin,
sandbox), the parser's own 400s included; a fixed value when configured."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from pydantic import ValidationError

from gateway.config import Settings
from gateway.http.app import Health, build_admin_app
from gateway.observability.metrics import Metrics
from tests.conftest import OPEN_POLICIES, GatewayTestServer, StartServer, free_port, make_settings
from tests.http.rawclient import exchange
from tests.test_lifecycle import wait_ready

MALFORMED = b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n"  # no colon: llhttp refuses it (400)
GOOD = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


async def _servers(port: int, request: bytes) -> tuple[int, list[str]]:
    """(status, every Server field value) of the one answer to `request` on 127.0.0.1:`port`, read raw."""
    result = await exchange(port, request)
    [response] = result.responses
    return response.status, [v for n, v in response.headers if n.lower() == "server"]


async def _upstream(start_server: StartServer) -> str:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True}, headers={"Server": "backend/9.9"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", ok)
    return str((await start_server(app)).make_url("")).rstrip("/")


@pytest.mark.parametrize(("configured", "expected"), [({}, []), ({"server_header": "dcr-gateway"}, ["dcr-gateway"])])
async def test_public_listener(start_server: StartServer, running_gateway, configured, expected):
    """Forwarded answers (the backend's own Server dropped), refusals, and the parser's 400 over a raw socket."""
    gw = await running_gateway(await _upstream(start_server), policy_dir=OPEN_POLICIES, server=configured)
    port = gw.client.port
    assert port is not None
    for target in (b"/echo", b"/no/policy/here"):
        status, servers = await _servers(port, b"GET " + target + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        assert servers == expected, (target, status)
    assert await _servers(port, MALFORMED) == (400, expected)
    assert await _servers(port, b"GET / HTTP/2.0\r\nHost: x\r\n\r\n") == (505, expected)


@pytest.mark.parametrize(("configured", "expected"), [({}, []), ({"server_header": "bank gateway"}, ["bank gateway"])])
async def test_admin_listener(configured, expected):
    """Probes, metrics, aiohttp's 404 and the parser's 400, raw."""
    settings = make_settings("http://127.0.0.1:9", server=configured)
    server = GatewayTestServer(build_admin_app(settings, Metrics(), Health(blockers={})), host="127.0.0.1")
    await server.start_server()
    try:
        assert server.port is not None
        assert await _servers(server.port, GOOD) == (200, expected)
        assert await _servers(server.port, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n") == (404, expected)
        assert await _servers(server.port, MALFORMED) == (400, expected)
    finally:
        await server.close()


@pytest.mark.parametrize("value", ["dcr\r\nSet-Cookie: x=1", " padded", "caf\u00e9", "x" * 257])
def test_a_header_value_that_could_inject_or_mislead_is_refused(value: str):
    """CR/LF, control or non-ASCII characters, outer spaces and overlong values are config errors."""
    with pytest.raises(ValidationError, match="server_header"):
        Settings.model_validate({"server": {"server_header": value}})


@pytest.mark.process
async def test_the_three_listeners_of_a_served_process(tmp_path: Path):
    """`dcr-gateway serve` with the sandbox: public, admin and sandbox answer without a Server field, good and
    malformed requests alike."""
    ports = {name: free_port() for name in ("public", "admin", "sandbox")}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"server:\n  public: {{port: {ports['public']}}}\n  admin: {{port: {ports['admin']}}}\n"
        f"upstream:\n  url: http://127.0.0.1:{ports['sandbox']}\n"
        "shutdown: {readiness_delay_seconds: 0, drain_timeout_seconds: 2}\n"
        "logging: {format: json, level: warning}\naudit: {sink: off}\n"
        f"policies: {{dir: {OPEN_POLICIES}}}\n"
        f"sandbox: {{enabled: true, listen: {{port: {ports['sandbox']}}}, state_dir: {tmp_path / 'state'}}}\n"
    )
    with (tmp_path / "out.log").open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)], stdout=sink,
                                stderr=subprocess.STDOUT)
    try:
        async with aiohttp.ClientSession() as session:
            try:
                await wait_ready(session, f"http://127.0.0.1:{ports['admin']}/readyz", timeout=60)
            except AssertionError:
                raise AssertionError(f"not ready (exit {proc.poll()}): {(tmp_path / 'out.log').read_text()}") from None
        seen: dict[str, Any] = {}
        for name, port in ports.items():
            good = b"GET /.well-known/openid-configuration HTTP/1.1\r\nHost: x\r\n\r\n" if name != "admin" else GOOD
            seen[name] = (await _servers(port, good), await _servers(port, MALFORMED))
        assert all(good[1] == [] and bad == (400, []) for good, bad in seen.values()), seen
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 20)
