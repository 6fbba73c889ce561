"""The verified-token cache follows the issuer's key set (issue 13): a cached token is refused once its
signing key has left the JWKS and the key cache has refreshed. Real keys and signatures, a real JWKS served by
aiohttp on 127.0.0.1, the JWKS cache's injectable clock instead of sleeping."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from multidict import CIMultiDict

from gateway.checks.base import RequestView
from gateway.checks.bearer_token import BearerToken, BearerTokenParams
from gateway.checks.services import CONFIGURED_URLS, Services
from gateway.jose import JoseError, JwksCache, JwksCacheSettings, SigningKey, generate_signing_key, sign_jwt
from gateway.runtime import Runtime, build_offline_runtime
from tests.conftest import StartServer, make_settings

ISSUER = "https://as.bank.test"
TTL = 300.0
MIN_REFETCH = 30.0


class Clock:
    """The JWKS cache's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Issuer:
    """An authorization server's JWKS whose published keys the test changes; counts fetches."""

    published: list[SigningKey]
    fetches: int = 0
    app: web.Application = field(default_factory=web.Application)

    def __post_init__(self) -> None:
        self.app.router.add_get("/jwks", self._jwks)

    async def _jwks(self, _: web.Request) -> web.Response:
        self.fetches += 1
        return web.json_response({"keys": [k.public_jwk(alg="PS256") for k in self.published]})

    @staticmethod
    def token(key: SigningKey, lifetime: int = 3600) -> str:
        now = int(time.time())
        return sign_jwt({"iss": ISSUER, "client_id": "client-a", "iat": now, "exp": now + lifetime,
                         "jti": str(uuid.uuid4())}, key, "PS256", typ="at+jwt")


@dataclass
class Setup:
    issuer: Issuer
    clock: Clock
    services: Services
    check: BearerToken

    async def evaluate(self, token: str) -> tuple[int, str, str] | None:
        view = RequestView("GET", "/r", CIMultiDict({"Authorization": f"Bearer {token}"}), now=time.time())
        denial = await self.check.evaluate(view)
        return None if denial is None else (denial.status, denial.error, denial.reason)


KEY_1 = generate_signing_key("RSA", kid="k1")
KEY_2 = generate_signing_key("RSA", kid="k2")
IMPOSTOR_1 = generate_signing_key("RSA", kid="k1")  # other key material under the same kid


@pytest.fixture
async def setup(start_server: StartServer) -> Callable[..., Awaitable[Setup]]:
    made: list[tuple[Runtime, JwksCache]] = []

    async def make() -> Setup:
        issuer = Issuer([KEY_1, KEY_2])
        url = str((await start_server(issuer.app)).make_url("/jwks"))
        clock = Clock()
        cache = JwksCache(policy=CONFIGURED_URLS, clock=clock,
                          settings=JwksCacheSettings(ttl_seconds=TTL, min_refetch_interval_seconds=MIN_REFETCH))
        settings = make_settings("http://127.0.0.1:9", trust={
            "token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": url, "token_types": ["at+jwt"]}}})
        runtime = build_offline_runtime(settings, cache)  # the test's cache: started and closed here
        await cache.start()
        await runtime.start()
        made.append((runtime, cache))
        services = runtime.services
        return Setup(issuer, clock, services, BearerToken(BearerTokenParams(issuers=("bank",)), services))

    yield make  # type: ignore[misc]
    for runtime, cache in made:
        await runtime.close()
        await cache.close()


async def test_a_cached_token_is_refused_once_its_key_left_the_refreshed_key_set(setup: Any):
    """k1 signs a token; it is verified and cached. k1 is withdrawn: while the key cache is fresh the token is
    still served (the gateway cannot know); once the key set has been refetched without k1, invalid_token."""
    s: Setup = await setup()
    token = s.issuer.token(KEY_1)
    assert await s.evaluate(token) is None
    assert s.issuer.fetches == 1
    s.issuer.published = [KEY_2]
    s.clock.now += TTL - 1
    assert await s.evaluate(token) is None  # the key set in hand still has k1
    assert s.issuer.fetches == 1
    s.clock.now += 2  # past the TTL: the next lookup refetches the key set, which no longer has k1
    assert await s.evaluate(token) == (401, "invalid_token", "token_unknown_kid")
    assert s.issuer.fetches == 2
    # It stays refused (no refetch storm: the unknown-kid refetch floor applies), and is not cached again.
    assert await s.evaluate(token) == (401, "invalid_token", "token_unknown_kid")
    assert s.issuer.fetches == 2
    # A token of the key still published is fine.
    assert await s.evaluate(s.issuer.token(KEY_2)) is None


async def test_a_token_refused_for_its_key_is_not_served_from_the_cache_if_the_key_returns(setup: Any):
    """The refusal drops the cache entry; if k1 is published again, the token is verified afresh and passes."""
    s: Setup = await setup()
    token = s.issuer.token(KEY_1)
    assert await s.evaluate(token) is None
    s.issuer.published = [KEY_2]
    s.clock.now += TTL + 1
    assert await s.evaluate(token) == (401, "invalid_token", "token_unknown_kid")
    s.issuer.published = [KEY_1, KEY_2]
    s.clock.now += MIN_REFETCH + 1  # the unknown-kid refetch is allowed again
    assert await s.evaluate(token) is None
    assert s.issuer.fetches == 3


async def test_a_cached_token_is_refused_when_its_kid_now_names_another_key(setup: Any):
    """The issuer reuses kid k1 for a new key: the cached token (signed by the old k1) is verified again
    against the new key and refused; it is not served on the strength of the old verification."""
    s: Setup = await setup()
    token = s.issuer.token(KEY_1)
    assert await s.evaluate(token) is None
    s.issuer.published = [IMPOSTOR_1, KEY_2]
    s.clock.now += TTL + 1
    assert await s.evaluate(token) == (401, "invalid_token", "token_bad_signature")


async def test_the_verifier_raises_unknown_kid_for_a_cached_token_whose_key_is_gone(setup: Any):
    """At the verifier's own interface: JoseError unknown_kid, the reason bearer_token maps to invalid_token."""
    s: Setup = await setup()
    token = s.issuer.token(KEY_1)
    issuers = {ISSUER: ("bank", s.services.trust.token_issuers["bank"])}  # iss -> (name, settings)
    first = await s.services.tokens.verify(token, issuers, time.time())
    assert first.kid == "k1"
    assert await s.services.tokens.verify(token, issuers, time.time()) is first  # served from the cache
    s.issuer.published = [KEY_2]
    s.clock.now += TTL + 1
    with pytest.raises(JoseError) as exc:
        await s.services.tokens.verify(token, issuers, time.time())
    assert exc.value.reason == "unknown_kid"
