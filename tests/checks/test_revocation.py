"""Revocations on both state stores: a revoked jti, a client watermark (iat at or before it), shared by instances."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from gateway.checks.revocation import Revocations
from gateway.checks.token import VerifiedToken
from gateway.state import MemoryStore, RedisStore, StateStore
from gateway.state.tracking import LocalCache

ISS = "https://bank.example/as"
NOW = 1_700_000_000.0

Pair = tuple[Revocations, Revocations]


def token(jti: str = "j1", client_id: str = "client-a", iat: float = NOW, iss: str = ISS) -> VerifiedToken:
    return VerifiedToken(issuer_name="bank", iss=iss, client_id=client_id, jti=jti, iat=iat, exp=iat + 300,
                         scopes=frozenset(), kid=None, claims={})


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.process),
                        pytest.param("redis-cached", marks=pytest.mark.process)])
async def pair(request: pytest.FixtureRequest) -> AsyncIterator[Pair]:
    """Two Revocations as two gateway instances would hold them: one memory store shared, or two RedisStores
    (redis-cached: started, each with its local cache of revocation marks and that cache's invalidation link up)."""
    stores: list[StateStore]
    if request.param == "memory":
        memory = MemoryStore()
        stores = [memory, memory]
    else:
        url = request.getfixturevalue("redis_server").url
        prefix = request.getfixturevalue("redis_prefix")
        cached = request.param == "redis-cached"
        stores = [RedisStore.from_url(url, key_prefix=prefix, timeout_seconds=1.0,
                                      local_cache=LocalCache(max_age_seconds=60, max_entries=100) if cached else None)
                  for _ in range(2)]
    pair = (Revocations(stores[0], client_ttl_seconds=3600, skew_seconds=30),
            Revocations(stores[1], client_ttl_seconds=3600, skew_seconds=30))
    if request.param == "redis-cached":
        for store in stores:
            assert isinstance(store, RedisStore)
            await store.start()
            cache = store.local_cache
            assert cache is not None
            deadline = time.monotonic() + 10
            while not cache.trusted:
                assert time.monotonic() < deadline, "invalidation link not up"
                await asyncio.sleep(0.02)
    yield pair
    for store in stores:
        await store.close()


async def test_nothing_revoked(pair: Pair):
    """A token with no mark of either kind passes."""
    _, b = pair
    assert await b.is_revoked(token()) is False


async def test_a_revoked_token_is_refused_by_the_other_instance_and_only_that_token(pair: Pair):
    """revoke_token through one instance: the other refuses that jti, not other tokens of the client."""
    a, b = pair
    assert await b.is_revoked(token("j1")) is False  # with a cache: b now holds "not revoked"
    await a.revoke_token(token("j1"), NOW)
    assert await b.is_revoked(token("j1")) is True
    assert await b.is_revoked(token("j2")) is False
    assert await b.is_revoked(token("j1", iss="https://other.example")) is False  # jti is per issuer


async def test_a_client_watermark_revokes_tokens_issued_at_or_before_it(pair: Pair):
    """revoke_client at `at`: tokens with iat < at and iat == at are refused, later ones and other clients pass."""
    a, b = pair
    assert await b.is_revoked(token(iat=NOW - 10)) is False
    await a.revoke_client(ISS, "client-a", NOW)
    assert await b.is_revoked(token(iat=NOW - 10)) is True
    assert await b.is_revoked(token(iat=NOW)) is True
    assert await b.is_revoked(token(iat=NOW + 0.5)) is False
    assert await b.is_revoked(token(client_id="client-b", iat=NOW - 10)) is False
    assert await b.is_revoked(token(iat=NOW - 10, iss="https://other.example")) is False


async def test_both_marks_together(pair: Pair):
    """A revoked jti stays revoked even when issued after the client's watermark."""
    a, b = pair
    await a.revoke_client(ISS, "client-a", NOW)
    await a.revoke_token(token("late", iat=NOW + 60), NOW + 60)
    assert await b.is_revoked(token("late", iat=NOW + 60)) is True
    assert await b.is_revoked(token("other", iat=NOW + 60)) is False


@pytest.mark.parametrize("mark", ["not-a-number", "nan", "inf", ""])
async def test_a_watermark_the_gateway_did_not_write_revokes(mark: str):
    """The gateway writes a client's watermark as a float's repr; anything else under that key (someone else
    writing under the prefix) revokes every token of the client — fail closed, never a 500 or a pass ("nan"
    compares false with every iat)."""
    from gateway.checks.revocation import _CLIENT_NS, _key

    store = MemoryStore()
    revocations = Revocations(store, client_ttl_seconds=3600, skew_seconds=30)
    await store.put(_CLIENT_NS, _key(ISS, "client-a"), mark, 60)
    assert await revocations.is_revoked(token(iat=NOW)) is True
    assert await revocations.is_revoked(token(client_id="client-b")) is False
