"""Fixtures shared by the state store tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from tests.conftest import RedisServer


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain redis-py client on the session server, to look at or change what the stores wrote."""
    client = Redis.from_url(redis_server.url)
    yield client
    await client.aclose()
