"""`state.backend` → store: every configured backend has a factory, and each builds its store unstarted."""

from __future__ import annotations

from typing import get_args

import pytest

from gateway.config.settings import StateSettings
from gateway.state import BACKENDS, MemoryStore, RedisStore, StateStore, build_store
from gateway.state.memory import MAX_ENTRIES


def test_every_configurable_backend_has_a_factory():
    """The names config accepts for `state.backend` are exactly the keys of BACKENDS."""
    assert set(BACKENDS) == set(get_args(StateSettings.model_fields["backend"].annotation))


@pytest.mark.parametrize(("state", "kind"), [
    ({}, MemoryStore),
    ({"backend": "redis", "redis": {"url": "redis://127.0.0.1:1/0"}}, RedisStore),
])
async def test_the_backend_named_in_config_is_built_as_a_state_store(state: dict[str, object], kind: type):
    """Each backend gives a StateStore of its kind, connected to nothing until it is used."""
    store = build_store(StateSettings.model_validate(state))
    assert isinstance(store, kind) and isinstance(store, StateStore)
    await store.close()


async def test_the_gateways_memory_store_starts_once_and_closes_empty():
    """The gateway's memory store has its bound; start() twice is one sweeper (test_memory covers the sweep);
    close() stops it and empties the store."""
    store = build_store(StateSettings())
    assert isinstance(store, MemoryStore) and store.max_entries == MAX_ENTRIES
    await store.start()
    await store.start()  # idempotent: one sweeper
    await store.put("ns", "k", "v", 60)
    await store.close()
    assert store.stats().entries == 0
