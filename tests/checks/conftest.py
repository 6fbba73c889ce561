"""Fixtures for the DCR checks: a whole DCR world (directory, TPP, bank, gateway) on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from tests.checks.world import World, make_world
from tests.conftest import RunningGateway, StartServer


@pytest.fixture
async def dcr_world(
    start_server: StartServer, running_gateway: Callable[..., Awaitable[RunningGateway]]
) -> AsyncIterator[Callable[..., Awaitable[World]]]:
    """Start a DCR world (shipped bank profile by default); keyword arguments go to make_world."""
    worlds: list[World] = []

    async def start(**kwargs: Any) -> World:
        world = await make_world(start_server, running_gateway, **kwargs)
        worlds.append(world)
        return world

    yield start
    for world in worlds:
        await world.session.close()
