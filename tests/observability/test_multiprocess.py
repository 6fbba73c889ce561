"""Several worker processes: prometheus-client multiprocess mode, merged on every admin endpoint."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import OPEN_POLICIES, ROOT, StartServer, free_port
from tests.observability.conftest import run_promtool
from tests.test_lifecycle import wait_ready


def values(scrape: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of one series name: sorted labels → value."""
    return {tuple(sorted(s.labels.items())): s.value
            for f in text_string_to_metric_families(scrape) for s in f.samples if s.name == name}


async def scrape_until(session: aiohttp.ClientSession, admin: str, done: Callable[[str], bool]) -> str:
    """GET /metrics until `done(text)` (bounded); the last text either way, for the assertions to judge."""
    deadline = time.monotonic() + 15
    while True:
        async with session.get(admin + "/metrics") as r:
            text = await r.text()
        if done(text) or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.02)


_FORKED = textwrap.dedent("""
    import os, sys
    from gateway.observability.metrics import Metrics, configure_multiprocess, mark_process_dead
    configure_multiprocess(sys.argv[1], wipe=True)
    m = Metrics()
    m.requests.labels("/r", "GET", "2xx", "allow").inc()
    m.in_flight.inc()
    pid = os.fork()
    if pid == 0:  # a worker: its own values, merged by whoever renders
        m.requests.labels("/r", "GET", "2xx", "allow").inc(2)
        m.in_flight.inc()
        os._exit(0)
    os.waitpid(pid, 0)
    sys.stdout.write(m.render().decode() + "#SPLIT\\n")
    mark_process_dead(pid)
    sys.stdout.write(m.render().decode())
""")


@pytest.mark.parametrize("run", [1, 2])
def test_configure_multiprocess_merges_forked_workers(tmp_path: Path, run: int):
    """Counters add up across a parent and its forked worker; a dead worker's live gauges go; wipe resets."""
    directory = tmp_path / "prom"
    for _ in range(run):  # the second run reuses the directory: wipe=True must drop the first run's files
        proc = subprocess.run([sys.executable, "-c", _FORKED, str(directory)], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, env={k: v for k, v in os.environ.items()
                                                         if k != "PROMETHEUS_MULTIPROC_DIR"})
        assert proc.returncode == 0, proc.stderr
    before, after = proc.stdout.split("#SPLIT\n")
    key = (("decision", "allow"), ("method", "GET"), ("route", "/r"), ("status_class", "2xx"))
    assert values(before, "dcr_gateway_requests_total") == {key: 3.0}
    assert values(before, "dcr_gateway_requests_in_flight") == {(): 2.0}
    assert values(after, "dcr_gateway_requests_in_flight") == {(): 1.0}
    assert values(after, "dcr_gateway_build_info") == {(("version", "0.1.0"),): 1.0}
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr


class Gateways:
    """Gateway processes sharing one PROMETHEUS_MULTIPROC_DIR, like the workers of one pod."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.public: list[str] = []
        self.admin: list[str] = []


@pytest.fixture
async def gateways(tmp_path: Path, start_server: StartServer) -> AsyncIterator[Callable[[int], Gateways]]:
    async def echo(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/echo", echo)
    upstream = await start_server(app)
    prom = tmp_path / "prom"
    prom.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(prom)}
    started = Gateways()

    async def start(count: int) -> Gateways:
        for i in range(count):
            public, admin = free_port(), free_port()
            cfg = tmp_path / f"config-{i}.yaml"
            cfg.write_text(
                f"server: {{public: {{port: {public}}}, admin: {{port: {admin}}}}}\n"
                f"upstream: {{url: '{str(upstream.make_url('')).rstrip('/')}'}}\n"
                "shutdown: {readiness_delay_seconds: 0, drain_timeout_seconds: 5}\n"
                "logging: {format: json}\n"
                "audit: {sink: 'off'}\n"
                f"policies: {{dir: '{OPEN_POLICIES}', reload_interval_seconds: 0}}\n"
            )
            log = (tmp_path / f"gateway-{i}.log").open("wb")
            started.procs.append(subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(cfg)],
                                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT))
            log.close()
            started.public.append(f"http://127.0.0.1:{public}")
            started.admin.append(f"http://127.0.0.1:{admin}")
        async with aiohttp.ClientSession() as s:
            for url in started.admin:
                await wait_ready(s, url + "/readyz")
        return started

    yield start
    for proc in started.procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


async def test_every_worker_serves_the_merged_metrics(gateways, promtool, tmp_path: Path):
    """Two gateway processes on one multiprocess directory: either /metrics shows the sum, promtool-clean."""
    gw = await gateways(2)
    async with aiohttp.ClientSession() as s:
        for public, count in zip(gw.public, (3, 2), strict=True):
            for _ in range(count):
                async with s.get(public + "/echo") as r:
                    assert r.status == 200
        key = (("decision", "allow"), ("method", "GET"), ("route", "/echo"), ("status_class", "2xx"))
        # A proxied response reaches the client before the middleware counts it: wait for the count to land.
        scrapes = [await scrape_until(s, admin, lambda t: values(t, "dcr_gateway_requests_total").get(key) == 5)
                   for admin in gw.admin]
    for scrape in scrapes:
        assert values(scrape, "dcr_gateway_requests_total") == {key: 5.0}
        assert values(scrape, "dcr_gateway_requests_in_flight") == {(): 0.0}
        assert values(scrape, "dcr_gateway_build_info") == {(("version", "0.1.0"),): 1.0}
        assert values(scrape, "dcr_gateway_policies_loaded") == {(): 10.0}
        code, output = run_promtool(promtool, "check", "metrics", stdin=scrape)
        assert (code, output.strip()) == (0, "")
    for proc in gw.procs:
        proc.send_signal(signal.SIGTERM)
    assert [await asyncio.to_thread(p.wait, 15) for p in gw.procs] == [0, 0]
    for i in range(2):
        out = (tmp_path / f"gateway-{i}.log").read_text()
        assert "Traceback" not in out and "Warning" not in out, out
