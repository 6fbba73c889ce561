"""`rate_limit` and the engine's `on_store_error`: per-key budgets, 429 with RateLimit fields, a budget shared
by two gateways on Redis, and fail-open / fail-closed behaviour when Redis dies and comes back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.checks.base import RequestView
from gateway.checks.facts import Facts
from gateway.checks.rate_limit import RateLimit, RateLimitParams
from gateway.checks.token import TOKEN, VerifiedToken
from gateway.config import Settings
from gateway.policy.loader import PolicyError, load_policies
from gateway.runtime import build_runtime
from tests.conftest import RedisServer, RunningGateway, StartServer

Starter = Callable[..., Awaitable[RunningGateway]]

WINDOW = 3600


def policy(checks: str, name: str = "limited", path: str = "/limited") -> str:
    return f"policies:\n  - name: {name}\n    match: {{methods: [GET], path: {path}}}\n    checks:\n{checks}"


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "p.yaml").write_text(text)
    return directory


async def away_from_window_edge(window: int = WINDOW, margin: float = 3.0) -> None:
    """Wait (at most `margin` s) if the current fixed window ends within `margin` s, so a test stays in one."""
    left = window - time.time() % window
    if left < margin:
        await asyncio.sleep(left + 0.05)


def view(now: float, peer: str = "10.0.0.1", client_id: str | None = None, policy_name: str = "p") -> RequestView:
    facts = Facts()
    if client_id is not None:
        facts.set(TOKEN, VerifiedToken("bank", "https://as", client_id, "jti", now, now + 60, frozenset(), None, {}))
    return RequestView("GET", "/x", CIMultiDict(), peer=peer, facts=facts, now=now, policy=policy_name)


def check(**params: Any) -> RateLimit:
    return RateLimit(RateLimitParams.model_validate(params), build_runtime(Settings(), None).services)


# -- the check on the memory store -------------------------------------------------------------------------


async def test_budget_per_peer_with_ietf_fields_and_next_window():
    """The third request of a peer in a window is 429 with Retry-After and RateLimit fields; others unaffected."""
    c = check(limit=2, window_seconds=60, key="peer")
    start = 6000.0 + 15  # 45 s before the window [6000, 6060) ends
    assert await c.evaluate(view(start)) is None
    assert await c.evaluate(view(start + 1)) is None
    denial = await c.evaluate(view(start + 2.5))
    assert denial is not None
    assert (denial.status, denial.error, denial.reason, denial.check) == (429, "too_many_requests", "rate_limited",
                                                                          "rate_limit")
    assert dict(denial.headers) == {"Retry-After": "43", "RateLimit-Policy": '"p";q=2;w=60',
                                    "RateLimit": '"p";r=0;t=43'}
    assert await c.evaluate(view(start + 3, peer="10.0.0.2")) is None
    assert await c.evaluate(view(6060.0)) is None  # a new window


async def test_budget_per_client_id_needs_a_verified_token():
    """key client_id: one budget per verified client; no token → 401 token_missing."""
    c = check(limit=1, key="client_id")
    assert await c.evaluate(view(100.0, client_id="a")) is None
    assert await c.evaluate(view(100.0, client_id="b")) is None
    assert (await c.evaluate(view(100.0, client_id="a"))).reason == "rate_limited"
    missing = await c.evaluate(view(100.0))
    assert (missing.status, missing.reason) == (401, "token_missing")


async def test_key_route_is_one_budget_for_everyone_and_buckets_default_to_the_policy():
    """key route: all peers share a budget; another policy has its own unless it names the same bucket."""
    c = check(limit=1, key="route")
    assert await c.evaluate(view(100.0, peer="1.1.1.1")) is None
    assert (await c.evaluate(view(100.0, peer="2.2.2.2"))).reason == "rate_limited"
    assert await c.evaluate(view(100.0, policy_name="other")) is None
    shared = check(limit=1, key="route", bucket="shared")
    assert await shared.evaluate(view(100.0, policy_name="x")) is None
    denial = await shared.evaluate(view(100.0, policy_name="y"))
    assert ('RateLimit-Policy', '"shared";q=1;w=60') in denial.headers


@pytest.mark.parametrize(
    ("checks", "expected"),
    [
        ("      - rate_limit: {limit: 0}\n", "limit: expected a positive integer"),
        ("      - rate_limit: {limit: 5, key: ip}\n", "rate_limit.key"),
        ("      - rate_limit: {limit: 5, bucket: 'Bad Name'}\n", "expected a snake_case name"),
        ("      - rate_limit: {limit: 5, on_store_error: ignore}\n", "rate_limit.on_store_error"),
        ("      - bearer_token: {issuers: [bank], on_store_error: fail_open}\n",
         "fail_open is not allowed for bearer_token: a store failure there must refuse the request "
         "(checks that allow fail_open: rate_limit)"),
    ],
    ids=["zero-limit", "unknown-key", "bad-bucket", "bad-on-store-error", "fail-open-not-allowed"],
)
def test_policy_errors(tmp_path: Path, checks: str, expected: str):
    """Bad rate_limit parameters and a fail_open the check does not allow are load-time errors with the key."""
    settings = Settings.model_validate(
        {"trust": {"token_issuers": {"bank": {"issuer": "https://as", "jwks_uri": "http://127.0.0.1:9/jwks"}}}})
    with pytest.raises(PolicyError) as err:
        load_policies(write(tmp_path, policy(checks)), build_runtime(settings, None).services)
    assert any(expected in m and "p.yaml:" in m for m in err.value.messages), err.value.messages


def test_on_store_error_is_accepted_on_every_check(tmp_path: Path):
    """on_store_error: fail_closed is a common parameter of any check; fail_open where the check allows it."""
    checks = ("      - required_headers: {names: [x-a], on_store_error: fail_closed}\n"
              "      - rate_limit: {limit: 5, on_store_error: fail_open, key: peer}\n")
    policies = load_policies(write(tmp_path, policy(checks)), build_runtime(Settings(), None).services)
    assert policies.policies[0].on_store_error == ("fail_closed", "fail_open")


# -- end to end --------------------------------------------------------------------------------------------


@pytest.fixture
async def upstream(start_server: StartServer) -> str:
    async def ok(_: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/limited", ok)
    server = await start_server(app)
    return str(server.make_url("")).rstrip("/")


async def test_429_response_end_to_end(tmp_path: Path, upstream: str, running_gateway: Starter):
    """Over the limit: a JSON 429 with Retry-After and RateLimit fields, counted as a rate_limited denial."""
    await away_from_window_edge()
    gw = await running_gateway(upstream, policy_dir=write(tmp_path, policy(
        f"      - rate_limit: {{limit: 2, window_seconds: {WINDOW}, key: peer}}\n")))
    assert [(await gw.client.get("/limited")).status for _ in range(2)] == [200, 200]
    resp = await gw.client.get("/limited")
    assert resp.status == 429
    assert (await resp.json())["error"] == "too_many_requests"
    retry = int(resp.headers["Retry-After"])
    assert 1 <= retry <= WINDOW
    assert resp.headers["RateLimit-Policy"] == f'"limited";q=2;w={WINDOW}'
    assert resp.headers["RateLimit"] == f'"limited";r=0;t={retry}'
    assert gw.sample("dcr_gateway_decisions_total", {"policy": "limited", "mode": "enforce", "decision": "deny",
                                                      "check": "rate_limit", "reason": "rate_limited"}) == 1


def _redis_state(url: str, prefix: str, **extra: Any) -> dict[str, Any]:
    return {"backend": "redis", "redis": {"url": url, "key_prefix": prefix, **extra}}


async def test_budget_is_shared_by_two_gateways_on_redis(tmp_path: Path, upstream: str, running_gateway: Starter,
                                                         redis_server: RedisServer, redis_prefix: str):
    """limit 3 over two gateways sharing Redis: the fourth request is refused whichever gateway it reaches."""
    await away_from_window_edge()
    policies = write(tmp_path, policy(f"      - rate_limit: {{limit: 3, window_seconds: {WINDOW}, key: route}}\n"))
    state = _redis_state(redis_server.url, redis_prefix)
    a = await running_gateway(upstream, policy_dir=policies, state=state)
    b = await running_gateway(upstream, policy_dir=policies, state=state)
    statuses = [(await gw.client.get("/limited")).status for gw in (a, b, a, b, a)]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.parametrize(
    ("on_store_error", "status_while_down"),
    [("fail_open", 200), ("fail_closed", 503)],
)
async def test_redis_down_gives_the_configured_behaviour_then_recovers(
    tmp_path: Path, upstream: str, running_gateway: Starter, own_redis, redis_prefix: str,
    on_store_error: str, status_while_down: int,
):
    """Redis killed: fail_open forwards (counted), fail_closed answers 503 + Retry-After, both promptly; Redis
    restarted on the same port: the limit applies again."""
    await away_from_window_edge(margin=15)
    server: RedisServer = own_redis()
    policies = write(tmp_path, policy(
        f"      - rate_limit: {{limit: 1, window_seconds: {WINDOW}, key: route, on_store_error: {on_store_error}}}\n"))
    gw = await running_gateway(upstream, policy_dir=policies, state=_redis_state(
        server.url, redis_prefix, timeout_seconds=0.3, breaker={"failure_threshold": 2, "open_seconds": 0.5}))
    assert (await gw.client.get("/limited")).status == 200
    assert (await gw.client.get("/limited")).status == 429
    server.stop()
    for _ in range(4):
        async with asyncio.timeout(5):  # each store call is bounded by 0.3 s; this only stops a hang
            resp = await gw.client.get("/limited")
        assert resp.status == status_while_down
        if status_while_down == 503:
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"] == "temporarily_unavailable"
    fail_open = gw.sample("dcr_gateway_state_fail_open_total", {"policy": "limited", "check": "rate_limit"})
    assert fail_open == (4 if on_store_error == "fail_open" else 0)
    server.start()  # empty again: the window's count starts over

    async def limited_again() -> bool:
        return (await gw.client.get("/limited")).status == 429

    deadline = time.monotonic() + 10
    while not await limited_again():
        assert time.monotonic() < deadline, "the rate limit did not come back with Redis"
        await asyncio.sleep(0.1)
    assert gw.sample("dcr_gateway_state_store_breaker_transitions_total", {"state": "closed"}) >= 1


async def test_allowed_responses_carry_the_budget(tmp_path: Path, upstream: str, running_gateway: Starter):
    """Before the budget runs out, each forwarded response says what is left (one item per rate_limit check)."""
    await away_from_window_edge()
    gw = await running_gateway(upstream, policy_dir=write(tmp_path, policy(
        f"      - rate_limit: {{limit: 3, window_seconds: {WINDOW}, key: peer}}\n"
        f"      - rate_limit: {{limit: 10, window_seconds: {WINDOW}, key: route, bucket: everyone}}\n")))
    remaining = []
    for _ in range(3):
        resp = await gw.client.get("/limited")
        assert resp.status == 200
        assert resp.headers["RateLimit-Policy"] == f'"limited";q=3;w={WINDOW}, "everyone";q=10;w={WINDOW}'
        items = resp.headers["RateLimit"].split(", ")
        assert [item.split(";")[0] for item in items] == ['"limited"', '"everyone"']
        remaining.append([int(item.split(";r=")[1].split(";")[0]) for item in items])
        assert 1 <= int(items[0].split(";t=")[1]) <= WINDOW
    assert remaining == [[2, 9], [1, 8], [0, 7]]
    assert (await gw.client.get("/limited")).status == 429


async def test_peer_budget_behind_a_trusted_load_balancer(tmp_path: Path, upstream: str, running_gateway: Starter):
    """Behind server.trusted_proxies each forwarded client has its own budget; a client-written entry to the
    left of the balancer's does not buy a fresh budget, and without the trust X-Forwarded-For is ignored."""
    await away_from_window_edge()
    checks = f"      - rate_limit: {{limit: 1, window_seconds: {WINDOW}, key: peer}}\n"
    gw = await running_gateway(upstream, policy_dir=write(tmp_path / "a", policy(checks)),
                               server={"trusted_proxies": ["127.0.0.1/32"]})

    async def status(xff: str) -> int:
        return (await gw.client.get("/limited", headers={"X-Forwarded-For": xff})).status

    assert await status("198.51.100.1") == 200
    assert await status("198.51.100.2") == 200
    assert await status("198.51.100.1") == 429
    assert await status("203.0.113.99, 198.51.100.1") == 429  # the balancer appended .1; the rest is the client's
    plain = await running_gateway(upstream, policy_dir=write(tmp_path / "b", policy(checks)))
    assert (await plain.client.get("/limited", headers={"X-Forwarded-For": "198.51.100.3"})).status == 200
    assert (await plain.client.get("/limited", headers={"X-Forwarded-For": "198.51.100.4"})).status == 429
