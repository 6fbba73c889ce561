"""Fixtures of the HTTP harness: the recording raw upstream and a gateway in front of it (tests/http)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.config import ServerSettings
from tests.conftest import RunningGateway
from tests.http.rawupstream import RawUpstream

POLICIES = Path(__file__).resolve().parent / "policies"
STREAM_POLICIES = Path(__file__).resolve().parent / "policies_stream"

TARGET_TIMEOUTS: dict[str, Any] = {
    "timeouts": {"header_read_seconds": 0.3, "body_idle_seconds": 0.3, "body_total_seconds": 1.0,
                 "keepalive_seconds": 5},
    "max_connections_per_client": 1000,
}
"""The issue-13 server keys (small, for tests). Tests of slow clients need them; the framing tests use them when
the config knows them (see `server_overrides`)."""


def config_has_timeouts() -> bool:
    """Whether `server.timeouts` / `server.max_connections_per_client` exist in this version of the config."""
    return "timeouts" in ServerSettings.model_fields and "max_connections_per_client" in ServerSettings.model_fields


def server_overrides(**extra: Any) -> dict[str, Any]:
    """`server` overrides for framing tests: the target's small timeouts when the config has them."""
    return {**(TARGET_TIMEOUTS if config_has_timeouts() else {}), **extra}


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[..., Awaitable[RawUpstream]]]:
    """Start recording raw upstreams on 127.0.0.1; all closed at teardown."""
    started: list[RawUpstream] = []

    async def start(default_script: str = "ok") -> RawUpstream:
        up = await RawUpstream(default_script=default_script).start()
        started.append(up)
        return up

    yield start
    for up in started:
        await up.close()


@pytest.fixture
async def harness(
    raw_upstream: Callable[..., Awaitable[RawUpstream]],
    running_gateway: Callable[..., Awaitable[RunningGateway]],
) -> Callable[..., Awaitable[tuple[RawUpstream, RunningGateway]]]:
    """A raw upstream and a gateway (tests/http/policies) in front of it; `server` / `upstream` overrides merge."""

    async def start(*, server: dict[str, Any] | None = None, policy_dir: Path = POLICIES,
                    **overrides: Any) -> tuple[RawUpstream, RunningGateway]:
        up = await raw_upstream()
        gw = await running_gateway(up.url, policy_dir=policy_dir, server={"public": {"port": 0}, "admin": {"port": 0},
                                                                          **(server or {})}, **overrides)
        return up, gw

    return start
