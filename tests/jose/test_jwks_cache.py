"""JwksCache against a real JWKS endpoint on 127.0.0.1: single flight, TTL, rotation, limits, failures."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import structlog.testing
from aiohttp import web

from gateway.jose import (
    EVENTS,
    FAPI_ALGORITHMS,
    ClaimRules,
    JoseError,
    JwksCache,
    JwksCacheSettings,
    JwsVerifier,
    Trust,
    UrlPolicy,
    sign_jwt,
)

from ..conftest import StartServer, free_port
from ..waiting import eventually
from .conftest import TestKeys

LOOPBACK = UrlPolicy(allow_http=True, allow_loopback=True)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class JwksServer:
    """A JWKS endpoint whose answers the test controls; counts every hit."""

    doc: dict[str, Any]
    url: str = ""
    mode: str = "ok"
    hits: int = 0
    other_hits: int = 0
    gate: asyncio.Event | None = None
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.mode == "ok":
            return web.json_response(self.doc)
        if self.mode == "500":
            return web.Response(status=500, text="down")
        if self.mode == "slow":
            await asyncio.wait_for(self.release.wait(), 5)
            return web.json_response(self.doc)
        if self.mode == "redirect":
            raise web.HTTPFound("/other")
        if self.mode == "big":
            return web.Response(body=b" " * 200_000, content_type="application/json")
        if self.mode == "big_chunked":
            resp = web.StreamResponse()
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            for _ in range(50):
                await resp.write(b" " * 8192)
            await resp.write_eof()
            return resp
        if self.mode == "not_json":
            return web.Response(text="<html>hello</html>", content_type="text/html")
        if self.mode == "not_jwks":
            return web.json_response([1, 2, 3])
        raise AssertionError(self.mode)

    async def handle_other(self, request: web.Request) -> web.Response:
        self.other_hits += 1
        return web.json_response(self.doc)


@pytest.fixture
async def jwks_server(start_server: StartServer, keys: TestKeys) -> AsyncIterator[JwksServer]:
    """A JWKS server on 127.0.0.1 publishing the trusted test keys."""
    state = JwksServer(doc=keys.jwks.to_dict())
    app = web.Application()
    app.router.add_get("/jwks", state.handle)
    app.router.add_get("/other", state.handle_other)
    server = await start_server(app)
    state.url = str(server.make_url("/jwks"))
    yield state
    state.release.set()
    if state.gate is not None:
        state.gate.set()


@dataclass
class Harness:
    cache: JwksCache
    clock: FakeClock
    events: list[tuple[str, str]]

    def count(self, kind: str, result: str) -> int:
        return self.events.count((kind, result))


MakeCache = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def make_cache() -> AsyncIterator[MakeCache]:
    """Build caches with a fake clock and an event recorder; all closed at teardown."""
    caches: list[JwksCache] = []

    async def make(**settings: Any) -> Harness:
        clock = FakeClock()
        events: list[tuple[str, str]] = []
        defaults: dict[str, Any] = {
            "ttl_seconds": 300, "min_refetch_interval_seconds": 30, "failed_refetch_interval_seconds": 2,
            "stale_max_seconds": 600, "fetch_timeout_seconds": 2,
        }
        cache = JwksCache(
            policy=LOOPBACK,
            settings=JwksCacheSettings(**{**defaults, **settings}),
            clock=clock,
            on_event=lambda kind, result, origin: events.append((kind, result)),
        )
        await cache.start()
        caches.append(cache)
        return Harness(cache, clock, events)

    yield make
    for cache in caches:
        await cache.close()


async def test_single_flight(jwks_server: JwksServer, make_cache: MakeCache, keys: TestKeys) -> None:
    """N concurrent lookups of a cold URI cause exactly one fetch and all get the key."""
    h = await make_cache()
    jwks_server.gate = asyncio.Event()
    tasks = [asyncio.create_task(h.cache.get_key(jwks_server.url, "ec-1")) for _ in range(25)]
    await eventually(lambda: jwks_server.hits == 1, "the fetch to reach the JWKS server")  # every task has asked
    jwks_server.gate.set()
    found = await asyncio.gather(*tasks)
    assert jwks_server.hits == 1
    assert {k.thumbprint for k in found} == {keys.ec.thumbprint}
    assert h.count("fetch", "ok") == 1


async def test_cancelled_waiter_does_not_cancel_the_fetch(
    jwks_server: JwksServer, make_cache: MakeCache
) -> None:
    """One caller giving up leaves the shared fetch running for the others."""
    h = await make_cache()
    jwks_server.gate = asyncio.Event()
    first = asyncio.create_task(h.cache.get_key(jwks_server.url, "ec-1"))
    second = asyncio.create_task(h.cache.get_key(jwks_server.url, "rsa-1"))
    await eventually(lambda: jwks_server.hits == 1, "the fetch to reach the JWKS server")  # both are waiting on it
    first.cancel()
    jwks_server.gate.set()
    assert (await second).kid == "rsa-1"
    assert jwks_server.hits == 1


async def test_ttl_refetch(jwks_server: JwksServer, make_cache: MakeCache) -> None:
    """Within the TTL the cache answers alone; after it, the next lookup refetches."""
    h = await make_cache(ttl_seconds=300)
    await h.cache.get_key(jwks_server.url, "ec-1")
    h.clock.advance(299)
    await h.cache.get_key(jwks_server.url, "ec-1")
    assert jwks_server.hits == 1
    assert h.count("cache", "hit") == 1
    h.clock.advance(2)
    await h.cache.get_key(jwks_server.url, "ec-1")
    assert jwks_server.hits == 2
    assert h.count("cache", "miss") == 2


async def test_key_rotation(jwks_server: JwksServer, make_cache: MakeCache, keys: TestKeys) -> None:
    """A new kid is picked up by an unknown-kid refetch; the removed kid is refused afterwards."""
    h = await make_cache(min_refetch_interval_seconds=30)
    await h.cache.get_key(jwks_server.url, "ec-1")
    new_doc = {"keys": [keys.rsa.public_jwk(), keys.attacker_ec.public_jwk() | {"kid": "ec-2"}]}
    jwks_server.doc = new_doc
    h.clock.advance(31)
    rotated = await h.cache.get_key(jwks_server.url, "ec-2")
    assert rotated.thumbprint == keys.attacker_ec.thumbprint
    assert jwks_server.hits == 2
    with pytest.raises(JoseError) as info:
        await h.cache.get_key(jwks_server.url, "ec-1")
    assert info.value.reason == "unknown_kid"
    assert jwks_server.hits == 2  # refused without another fetch (within the refetch floor)


async def test_unknown_kid_refetch_is_rate_limited(jwks_server: JwksServer, make_cache: MakeCache) -> None:
    """Random kids cause at most one fetch per minimum interval, even when concurrent."""
    h = await make_cache(min_refetch_interval_seconds=30)
    await h.cache.get_key(jwks_server.url, "ec-1")
    for _ in range(40):
        with pytest.raises(JoseError, match="unknown_kid"):
            await h.cache.get_key(jwks_server.url, secrets.token_hex(8))
    assert jwks_server.hits == 1
    assert h.count("refetch", "rate_limited") == 40
    h.clock.advance(30)
    results = await asyncio.gather(
        *(h.cache.get_key(jwks_server.url, secrets.token_hex(8)) for _ in range(40)), return_exceptions=True
    )
    assert all(isinstance(r, JoseError) and r.reason == "unknown_kid" for r in results)
    assert jwks_server.hits == 2
    assert h.count("refetch", "unknown_kid") == 1


async def test_stale_keys_served_within_bound_then_fail_closed(
    jwks_server: JwksServer, make_cache: MakeCache
) -> None:
    """While the JWKS is down, keys up to ttl + stale_max old are served; then jwks_unavailable."""
    h = await make_cache(ttl_seconds=300, stale_max_seconds=600, failed_refetch_interval_seconds=2)
    await h.cache.get_key(jwks_server.url, "ec-1")
    jwks_server.mode = "500"
    h.clock.advance(301)
    assert (await h.cache.get_key(jwks_server.url, "ec-1")).kid == "ec-1"
    assert jwks_server.hits == 2
    assert h.count("fetch", "error") == 1 and h.count("cache", "stale") == 1
    h.clock.advance(1)  # within the failed-refetch interval: stale, no new attempt
    await h.cache.get_key(jwks_server.url, "ec-1")
    assert jwks_server.hits == 2
    h.clock.advance(597)  # 899 s after the good fetch: still inside ttl + stale_max
    await h.cache.get_key(jwks_server.url, "ec-1")
    assert jwks_server.hits == 3
    h.clock.advance(2)  # 901 s: too old
    with pytest.raises(JoseError) as info:
        await h.cache.get_key(jwks_server.url, "ec-1")
    assert info.value.reason == "jwks_unavailable"
    assert "HTTP 500" in info.value.description
    jwks_server.mode = "ok"
    h.clock.advance(2)
    assert (await h.cache.get_key(jwks_server.url, "ec-1")).kid == "ec-1"


async def test_down_without_cache_fails_closed_and_backs_off(
    jwks_server: JwksServer, make_cache: MakeCache
) -> None:
    """No keys ever fetched: jwks_unavailable, and no retry inside the failed-refetch interval."""
    h = await make_cache(failed_refetch_interval_seconds=2)
    jwks_server.mode = "500"
    for _ in range(5):
        with pytest.raises(JoseError) as info:
            await h.cache.get_key(jwks_server.url, "ec-1")
        assert info.value.reason == "jwks_unavailable"
    assert jwks_server.hits == 1
    h.clock.advance(2)
    with pytest.raises(JoseError):
        await h.cache.get_key(jwks_server.url, "ec-1")
    assert jwks_server.hits == 2


@pytest.mark.parametrize(
    ("mode", "result", "reason"),
    [
        ("slow", "timeout", "jwks_unavailable"),
        ("big", "too_large", "jwks_unavailable"),
        ("big_chunked", "too_large", "jwks_unavailable"),
        ("redirect", "refused", "jwks_url_refused"),
        ("not_json", "error", "jwks_unavailable"),
        ("not_jwks", "error", "jwks_unavailable"),
        ("500", "error", "jwks_unavailable"),
    ],
)
async def test_fetch_failures(
    jwks_server: JwksServer, make_cache: MakeCache, mode: str, result: str, reason: str
) -> None:
    """Each bad answer is one fetch result event and a fail-closed reason."""
    h = await make_cache(fetch_timeout_seconds=0.3, max_bytes=64 * 1024)
    jwks_server.mode = mode
    with pytest.raises(JoseError) as info:
        await h.cache.get_key(jwks_server.url, "ec-1")
    assert info.value.reason == reason
    assert h.events.count(("fetch", result)) == 1
    assert result in EVENTS["fetch"]
    assert jwks_server.other_hits == 0  # the redirect target is never visited


async def test_prefetch_warms(jwks_server: JwksServer, make_cache: MakeCache) -> None:
    """prefetch loads key sets at start and reports failures without raising."""
    h = await make_cache()
    bad = "https://user:pw@127.0.0.1:9/jwks"  # refused for its credentials; loopback whatever happens
    errors = await h.cache.prefetch([jwks_server.url, jwks_server.url, bad])
    assert errors[jwks_server.url] is None
    refused = errors[bad]
    assert refused is not None and refused.reason == "jwks_url_refused"
    await h.cache.get_key(jwks_server.url, "ec-1")
    assert jwks_server.hits == 1
    assert h.count("cache", "hit") == 1


async def test_per_call_policy_applies_to_cached_uri(jwks_server: JwksServer, make_cache: MakeCache) -> None:
    """A stricter per-call policy refuses a URI even when another policy cached it."""
    h = await make_cache()
    await h.cache.get_key(jwks_server.url, "ec-1")
    strict = UrlPolicy.build(allow_http=True, allow_loopback=True, allowed_hosts=["*.openbanking.org.uk"])
    with pytest.raises(JoseError) as info:
        await h.cache.get_key(jwks_server.url, "ec-1", policy=strict)
    assert info.value.reason == "jwks_url_refused"
    assert jwks_server.hits == 1


async def test_lru_bound_on_uris(jwks_server: JwksServer, make_cache: MakeCache) -> None:
    """Beyond max_uris the least recently used URI is forgotten."""
    h = await make_cache(max_uris=2)
    urls = [f"{jwks_server.url}?v={i}" for i in range(3)]
    for url in urls:
        await h.cache.get_keyset(url)
    assert h.cache.cached_uris() == urls[1:]


async def test_event_hook_failure_does_not_break_lookup(jwks_server: JwksServer) -> None:
    """A failing metrics hook is logged, never raised into key lookup."""

    def broken(kind: str, result: str, origin: str) -> None:
        raise RuntimeError("metrics down")

    async with JwksCache(policy=LOOPBACK, on_event=broken) as cache:
        assert (await cache.get_key(jwks_server.url, "ec-1")).kid == "ec-1"


async def test_events_carry_the_origin_of_the_lookups_policy(jwks_server: JwksServer) -> None:
    """A key set looked up under a `configured` policy (the operator's config) is reported as such; one looked up
    under a `software` policy (a TPP's, named by its SSA) as `software`, whether it is fetched or refused."""
    events: list[tuple[str, str, str]] = []
    configured = UrlPolicy(allow_http=True, allow_loopback=True, origin="configured")
    software = UrlPolicy(allow_http=True, allow_loopback=True, origin="software")
    strict = UrlPolicy(origin="software")  # https only, public addresses only
    async with JwksCache(policy=configured, on_event=lambda *event: events.append(event)) as cache:
        await cache.get_keyset(jwks_server.url)
        await cache.get_keyset(jwks_server.url + "?tpp=1", policy=software)
        with pytest.raises(JoseError):
            await cache.get_keyset(jwks_server.url + "?tpp=2", policy=strict)
    fetches = [e for e in events if e[0] == "fetch"]
    assert fetches == [("fetch", "ok", "configured"), ("fetch", "ok", "software")]
    assert ("cache", "miss", "software") in events and ("cache", "miss", "configured") in events


async def test_a_key_set_cached_for_the_config_is_not_handed_to_a_tpp_lookup(jwks_server: JwksServer) -> None:
    """A URI the operator configured (fetched under a policy that allows loopback) and named again by a TPP's SSA is
    judged under the TPP's policy: here it refuses loopback addresses, so the lookup is refused at the address
    check, no connection made, instead of being served the configured fetch's keys."""
    events: list[tuple[str, str, str]] = []
    configured = UrlPolicy(allow_http=True, allow_loopback=True, origin="configured")
    software = UrlPolicy(allow_http=True, origin="software")  # public addresses only
    async with JwksCache(policy=configured, on_event=lambda *event: events.append(event)) as cache:
        assert (await cache.get_keyset(jwks_server.url)).get("ec-1") is not None
        served = jwks_server.hits
        with pytest.raises(JoseError) as refused:
            await cache.get_keyset(jwks_server.url, policy=software)
        assert refused.value.reason == "jwks_url_refused"
        assert jwks_server.hits == served  # the guard refused before any connection
        assert (await cache.get_keyset(jwks_server.url)).get("ec-1") is not None  # the config's entry is intact
    assert ("fetch", "refused", "software") in events


async def test_a_failed_fetch_is_logged_with_its_origin() -> None:
    """The `jwks_fetch_failed` line says whose key set it was, as the metric does."""
    events: list[tuple[str, str, str]] = []
    software = UrlPolicy(allow_http=True, allow_loopback=True, origin="software")
    closed = f"http://127.0.0.1:{free_port()}/jwks"  # nothing listens there
    async with JwksCache(policy=LOOPBACK, on_event=lambda *event: events.append(event)) as cache:
        with structlog.testing.capture_logs() as logs:
            with pytest.raises(JoseError):
                await cache.get_keyset(closed, policy=software)
    failed = [e for e in logs if e["event"] == "jwks_fetch_failed"]
    assert [(e["origin"], e["result"]) for e in failed] == [("software", "error")]
    assert ("fetch", "error", "software") in events


async def test_verifier_end_to_end(jwks_server: JwksServer, make_cache: MakeCache, keys: TestKeys) -> None:
    """JwsVerifier over the JWKS cache verifies a real token; an alg-none token never triggers a fetch."""
    h = await make_cache()
    verifier = JwsVerifier(h.cache, clock=lambda: 1_700_000_000.0)
    source = Trust(algorithms=FAPI_ALGORITHMS, jwks_uri=jwks_server.url, rules=ClaimRules(leeway_seconds=5))
    none_token = sign_jwt({"exp": 1_700_000_100}, keys.ec, "ES256").split(".")
    none_token[0] = "eyJhbGciOiJub25lIiwia2lkIjoiZWMtMSJ9"  # {"alg":"none","kid":"ec-1"}
    with pytest.raises(JoseError, match="alg_not_allowed"):
        await verifier.verify(".".join(none_token[:2]) + ".", source)
    assert jwks_server.hits == 0
    token = sign_jwt({"iss": "tpp", "exp": 1_700_000_100}, keys.rsa, "PS256")
    verified = await verifier.verify(token, source)
    assert verified.claims["iss"] == "tpp" and verified.kid == "rsa-1"
    assert jwks_server.hits == 1
