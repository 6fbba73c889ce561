"""Shared fixtures: real aiohttp servers on 127.0.0.1 ephemeral ports, and gateways in front of them."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from gateway.config import Settings
from gateway.observability.metrics import Metrics
from gateway.server import Health, build_public_app


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


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start any aiohttp app on 127.0.0.1:<ephemeral>; all are closed at teardown."""
    servers: list[TestServer] = []

    async def start(app: web.Application) -> TestServer:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return server

    yield start
    for server in reversed(servers):
        await server.close()


GatewayFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture
async def gateway() -> AsyncIterator[GatewayFactory]:
    """Start a gateway (public app) in front of an upstream URL; returns a client for it."""
    clients: list[TestClient[Any, Any]] = []

    async def start(upstream_url: str, *, metrics: Metrics | None = None, **overrides: Any) -> TestClient[Any, Any]:
        settings = make_settings(upstream_url, **overrides)
        app = build_public_app(settings, metrics or Metrics(), Health(blockers={}))
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in reversed(clients):
        await client.close()
