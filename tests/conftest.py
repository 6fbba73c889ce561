"""Shared fixtures: real aiohttp servers on 127.0.0.1 ephemeral ports, and gateways in front of them."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.checks.services import Services
from gateway.config import Settings
from gateway.http.app import Health, build_public_app
from gateway.http.listener import LIMITS, ListenerRunner
from gateway.jose import JwksCache
from gateway.observability.audit import AuditLog
from gateway.observability.metrics import Metrics
from gateway.policy import FactAssertion
from gateway.policy.loader import load_policies
from gateway.policy.reload import PolicyHolder
from gateway.runtime import Runtime, build_offline_runtime, build_runtime
from tests.tiers import pytest_collection_modifyitems, pytest_runtest_protocol  # noqa: F401  (the tier hooks)

ROOT = Path(__file__).resolve().parent.parent
OPEN_POLICIES = ROOT / "tests" / "data" / "open_policies"
SHIPPED_POLICIES = ROOT / "policies"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (closed again before use)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_settings(upstream_url: str, **overrides: Any) -> Settings:
    """Settings for an in-process gateway in front of `upstream_url`; overrides are nested dicts."""
    data: dict[str, Any] = {
        "server": {"public": {"port": 0}, "admin": {"port": 0}},
        "upstream": {"url": upstream_url, "timeouts": {"connect": 1, "read": 1, "total": 3}},
        "shutdown": {"readiness_delay_seconds": 0, "drain_timeout_seconds": 5},
    }
    for section, values in overrides.items():
        data.setdefault(section, {}).update(values)
    return Settings.model_validate(data)


StartServer = Callable[[web.Application], Awaitable[TestServer]]


class GatewayTestServer(TestServer):
    """An in-process public listener served exactly as `serve` serves it (listener.ListenerRunner)."""

    async def _make_runner(self, **kwargs: Any) -> ListenerRunner:
        return ListenerRunner(self.app, **kwargs)


class RedisServer:
    """A real `redis-server` (Debian package) on 127.0.0.1:<port>: no persistence, stoppable and restartable."""

    def __init__(self, port: int, *extra: str) -> None:
        self.port = port
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start on the same port as before and wait (bounded) until it answers PING."""
        binary = shutil.which("redis-server")
        assert binary is not None
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--daemonize", "no", "--loglevel", "warning", *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"redis-server exited with {self.proc.returncode}"
            if self.ping():
                return
            time.sleep(0.02)
        raise AssertionError(f"redis-server on port {self.port} did not answer within 10 s")

    def ping(self) -> bool:
        """True when the server answers PING (or asks for a password, which also means it is up)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the server (as a crash would) and wait for it to be gone."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed: CI must install Debian's redis-server (.ci/run PACKAGES)")
        pytest.skip("redis-server not installed (apt-get install redis-server): Redis tests skipped")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One real redis-server for the whole session, on a free loopback port; killed at teardown."""
    _need_redis_server()
    server = RedisServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[Callable[..., RedisServer]]:
    """A redis-server of the test's own, for tests that kill and restart it (extra args: e.g. requirepass)."""
    _need_redis_server()
    started: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(free_port(), *extra)
        server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def redis_prefix() -> str:
    """A key prefix of the test's own on the shared server."""
    return f"t{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start any aiohttp app on 127.0.0.1:<ephemeral>; all are closed at teardown."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        # An app with listener limits is served as `serve` serves it (the public app has no other way in).
        server = GatewayTestServer(app, host="127.0.0.1") if LIMITS in app else TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


@dataclass
class RunningGateway:
    """An in-process gateway: its client, services, policy holder and metrics."""

    client: TestClient[Any, Any]
    services: Services
    holder: PolicyHolder
    metrics: Metrics
    settings: Settings
    audit: AuditLog | None = None
    assertion: FactAssertion | None = None
    """The signer of `upstream.signed_facts` when enabled (its `jwks()` is what the admin listener publishes)."""

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A metric sample value (0 when absent)."""
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0


GatewayFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def running_gateway() -> AsyncIterator[Callable[..., Awaitable[RunningGateway]]]:
    """Start a gateway (public app + services + policies) in front of an upstream URL; `jwks_cache` replaces the
    one the settings would build (a test's cache on a clock it moves; the services then report no metrics);
    `public_socket` is a bound socket to serve on."""
    started: list[tuple[RunningGateway, Runtime]] = []

    async def start(
        upstream_url: str,
        *,
        policy_dir: Path = OPEN_POLICIES,
        metrics: Metrics | None = None,
        audit_path: Path | None = None,
        jwks_cache: JwksCache | None = None,
        public_socket: socket.socket | None = None,
        **overrides: Any,
    ) -> RunningGateway:
        overrides["policies"] = {"dir": str(policy_dir), "reload_interval_seconds": 0, **overrides.get("policies", {})}
        settings = make_settings(upstream_url, **overrides)
        metrics = metrics or Metrics()
        if jwks_cache is None:
            runtime = build_runtime(settings, metrics)
        else:  # the test's own cache, started and closed with the rest
            offline = build_offline_runtime(settings, jwks_cache)
            runtime = Runtime(offline.services, (jwks_cache, *offline.resources))
        services = runtime.services
        await runtime.start()
        holder = PolicyHolder(load_policies(policy_dir, services, unmatched_status=settings.policies.unmatched_status))
        audit = AuditLog("file", str(audit_path)) if audit_path is not None else None
        assertion = FactAssertion.from_settings(settings)
        app = build_public_app(settings, metrics, Health(blockers={}), holder, audit, assertion)
        # `public_socket`: a socket the caller bound already (its URL must be known before the gateway starts).
        where: dict[str, Any] = {} if public_socket is None else {
            "port": public_socket.getsockname()[1], "socket_factory": lambda *_: public_socket}
        client = TestClient(GatewayTestServer(app, host="127.0.0.1", **where))
        await client.start_server()
        gw = RunningGateway(client, services, holder, metrics, settings, audit, assertion)
        started.append((gw, runtime))
        return gw

    yield start
    for gw, runtime in reversed(started):
        await gw.client.close()
        await runtime.close()
        if gw.audit is not None:
            gw.audit.close()


@pytest.fixture
async def gateway(running_gateway: Callable[..., Awaitable[RunningGateway]]) -> GatewayFactory:
    """Start a gateway in front of an upstream URL (open policies by default); returns its client."""

    async def start(upstream_url: str, **kwargs: Any) -> TestClient[Any, Any]:
        return (await running_gateway(upstream_url, **kwargs)).client

    return start
