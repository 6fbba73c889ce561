"""The real process: `dcr-gateway serve` starts, reports ready, drains on SIGTERM and exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import OPEN_POLICIES, StartServer, free_port
from tests.waiting import eventually


class HeldUpstream:
    """What the upstream has received, and the event that releases every request it holds."""

    def __init__(self) -> None:
        self.arrived = 0
        self.release = asyncio.Event()


UPSTREAM = web.AppKey("upstream", HeldUpstream)


async def _slow(request: web.Request) -> web.Response:
    """Answers once the test releases it (`?hold=1`; the test decides when, no timer), else at once."""
    upstream = request.app[UPSTREAM]
    upstream.arrived += 1
    if request.query.get("hold"):
        await asyncio.wait_for(upstream.release.wait(), 30)
    return web.json_response({"ok": True})


class GatewayProcess:
    """A gateway subprocess with known ports, in front of an in-process upstream that can hold requests."""

    def __init__(self, proc: subprocess.Popen[bytes], public: int, admin: int, upstream: HeldUpstream,
                 out: Path) -> None:
        self.proc = proc
        self.out = out
        """The process's stdout, a file: a pipe nobody reads until the end fills (64 KiB) and blocks its logging."""
        self.public = f"http://127.0.0.1:{public}"
        self.admin = f"http://127.0.0.1:{admin}"
        self.upstream = upstream


async def wait_ready(session: aiohttp.ClientSession, url: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            async with session.get(url) as r:
                if r.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} not ready")


@pytest.fixture
async def gateway_process(tmp_path: Path, start_server: StartServer) -> AsyncIterator[GatewayProcess]:
    app = web.Application()
    app[UPSTREAM] = held = HeldUpstream()
    app.router.add_get("/slow", _slow)
    upstream = await start_server(app)
    public, admin = free_port(), free_port()
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        f"server:\n  public: {{port: {public}}}\n  admin: {{port: {admin}}}\n"
        f"upstream:\n  url: {str(upstream.make_url('')).rstrip('/')}\n"
        "shutdown: {readiness_delay_seconds: 0.7, drain_timeout_seconds: 10}\n"
        "logging: {format: json}\n"
        f"policies: {{dir: {OPEN_POLICIES}}}\n"
    )
    out = tmp_path / "stdout.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                                stdout=sink, stderr=subprocess.PIPE)
    gp = GatewayProcess(proc, public, admin, held, out)
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, gp.admin + "/readyz")
        yield gp
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        if proc.stderr:
            proc.stderr.close()


async def test_admin_endpoints(gateway_process: GatewayProcess):
    """/healthz and /readyz answer 200, /metrics is Prometheus text."""
    async with aiohttp.ClientSession() as s:
        async with s.get(gateway_process.admin + "/healthz") as r:
            assert r.status == 200
        async with s.get(gateway_process.admin + "/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
        async with s.get(gateway_process.admin + "/metrics") as r:
            assert r.status == 200
            assert "dcr_gateway_build_info" in await r.text()


async def test_sigterm_drains_in_flight_requests_and_exits_zero(gateway_process: GatewayProcess):
    """After SIGTERM: readiness 503 at once, in-flight requests all complete, then exit 0."""
    gp = gateway_process
    async with aiohttp.ClientSession() as s:

        async def call() -> int:
            async with s.get(gp.public + "/slow?hold=1") as r:
                await r.read()
                return r.status

        async def not_ready() -> bool:
            async with s.get(gp.admin + "/readyz") as r:
                return r.status == 503 and (await r.json())["status"] == "not_ready"

        tasks = [asyncio.create_task(call()) for _ in range(8)]
        await eventually(lambda: gp.upstream.arrived == 8, "the requests to be in flight at the upstream")
        gp.proc.send_signal(signal.SIGTERM)
        await eventually(not_ready, "readiness to turn 503 after SIGTERM")
        assert not any(task.done() for task in tasks)  # held at the upstream: nothing has been cut
        gp.upstream.release.set()
        statuses = await asyncio.gather(*tasks)
    assert statuses == [200] * 8
    assert await asyncio.to_thread(gp.proc.wait, 15) == 0
    out = gp.out.read_text()
    assert '"event":"shutdown_complete"' in out


async def test_lines_logged_while_a_request_is_handled_carry_its_ids(gateway_process: GatewayProcess):
    """The request's interaction id (the client's, when a UUID) and request id are on every line logged while it is
    handled — the request line included — and on no line logged after it."""
    gp = gateway_process
    interaction = "0f8fad5b-d9cb-469f-a165-70867728950e"
    async with aiohttp.ClientSession() as s:
        async with s.get(gp.public + "/slow", headers={"x-fapi-interaction-id": interaction}) as r:
            assert r.status == 200 and r.headers["x-fapi-interaction-id"] == interaction
    gp.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(gp.proc.wait, 15) == 0
    lines = [json.loads(line) for line in gp.out.read_text().splitlines() if line.startswith('{"')]
    logs = [line for line in lines if line.get("kind") != "dcr_gateway_audit"]
    (request,) = [line for line in logs if line["event"] == "request"]
    assert request["interaction_id"] == interaction and len(request["request_id"]) == 32
    (decision,) = [line for line in lines if line.get("event") == "decision"]
    assert decision["request_id"] == request["request_id"]
    after = [line for line in logs if line["event"] in ("shutdown_started", "shutdown_complete")]
    assert after and not any("interaction_id" in line or "request_id" in line for line in after)


async def test_listener_closes_after_readiness_delay(gateway_process: GatewayProcess):
    """New connections are refused once the readiness delay has passed and the listener stopped."""
    gp = gateway_process
    async with aiohttp.ClientSession() as s:
        slow = asyncio.create_task(s.get(gp.public + "/slow?hold=1"))
        await eventually(lambda: gp.upstream.arrived == 1, "the request to be in flight at the upstream")
        gp.proc.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                async with aiohttp.ClientSession() as fresh, fresh.get(gp.public + "/slow") as r:
                    await r.read()
            except aiohttp.ClientConnectionError:
                return True
            return False

        # Once the readiness delay has passed the listening socket is closed, while the held request still
        # keeps the process draining (so the refusal cannot come from a process that has already exited).
        await eventually(refused, "the listener to close after the readiness delay")
        assert not slow.done()
        gp.upstream.release.set()
        resp = await slow
        assert resp.status == 200
        resp.release()
    assert await asyncio.to_thread(gp.proc.wait, 15) == 0


def test_port_in_use_is_a_clear_error(tmp_path):
    """A busy port gives a one-line error and a non-zero exit, not a traceback."""
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        cfg = tmp_path / "c.yaml"
        cfg.write_text(f"server:\n  public: {{port: {port}}}\n  admin: {{port: {free_port()}}}\n"
                       f"policies: {{dir: {OPEN_POLICIES}}}\n")
        proc = subprocess.run([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                              capture_output=True, text=True, timeout=30, env={**os.environ})
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert "address already in use" in proc.stderr.lower()


MIXED_URLS = ("server: {{public_url: 'https://dcr.bank.example', public: {{port: {public}}}, admin: {{port: {admin}}}}}\n"
              "upstream: {{url: 'http://127.0.0.1:{admin}'}}\n"
              "logging: {{format: json}}\nshutdown: {{readiness_delay_seconds: 0.1, drain_timeout_seconds: 5}}\n"
              f"policies: {{{{dir: {OPEN_POLICIES}}}}}\n"
              "trust: {{registration_audiences: [{audiences}]}}\n")
"""An https public URL; `audiences` decides what `config check` finds (ports: free ones, never bound on refusal)."""


def _run(*argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", *argv], capture_output=True, text=True, timeout=timeout,
                          env={k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")})


def test_serve_refuses_to_start_on_a_config_check_error(tmp_path):
    """An https public URL with an http registration audience on its host is a `config check` error: serve exits
    2 before listening, with the very lines `config check` prints (warnings, then errors)."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(MIXED_URLS.format(public=free_port(), admin=free_port(),
                                     audiences="'http://dcr.bank.example', 'https://elsewhere.example'"))
    check = _run("config", "check", "--config", str(cfg))
    assert check.returncode == 2, check.stderr
    errors = [line for line in check.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: {cfg}: trust.registration_audiences[0]: http://dcr.bank.example is server.public_url's "
                      "host over plain http, but server.public_url is https://dcr.bank.example: left behind when "
                      "public_url moved to https? (leave the key out to derive it from server.public_url) (line 6)"]
    serve = _run("serve", "--config", str(cfg))
    assert serve.returncode == 2, serve.stderr
    assert "Traceback" not in serve.stderr
    assert [line for line in serve.stderr.splitlines() if line.startswith("error: ")] == errors


async def test_serve_logs_config_check_warnings_at_start(tmp_path):
    """Warnings only: serve starts, and logs each as `config_warning` with its key path and `config check`'s
    text; it then serves and drains as usual."""
    public, admin = free_port(), free_port()
    cfg = tmp_path / "c.yaml"
    cfg.write_text(MIXED_URLS.format(public=public, admin=admin, audiences="'https://elsewhere.example'"))
    check = _run("config", "check", "--config", str(cfg))
    assert check.returncode == 0, check.stderr
    (warning,) = check.stderr.splitlines()
    out = tmp_path / "stdout.log"
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)], stdout=sink,
                                stderr=subprocess.DEVNULL,
                                env={k: v for k, v in os.environ.items() if not k.startswith("DCRGW_")})
    try:
        async with aiohttp.ClientSession() as s:
            await wait_ready(s, f"http://127.0.0.1:{admin}/readyz")
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    events = [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]
    warnings = [e for e in events if e.get("event") == "config_warning"]
    assert [(e["key"], e["message"], e["level"]) for e in warnings] == [
        ("trust.registration_audiences[0]", warning.removeprefix("warning: "), "warning")]
    assert warning.startswith(f"warning: {cfg}: trust.registration_audiences[0]: https://elsewhere.example names")
