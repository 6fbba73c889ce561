"""The shipped DCR policies end to end: a real gateway, a real JWKS server, a real upstream, signed tokens."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from yarl import URL

from gateway.checks.services import CONFIGURED_URLS
from gateway.jose import JwksCache, JwksCacheSettings, SigningKey, generate_signing_key, sign_jwt
from tests.conftest import SHIPPED_POLICIES, RunningGateway, StartServer
from tests.waiting import Clock

ISSUER = "https://as.bank.test"
REGISTER = "/open-banking/v3.1/register"


class Bank:
    """A JWKS endpoint with rotatable keys, and a registration backend that knows some client ids."""

    def __init__(self) -> None:
        self.key: SigningKey = generate_signing_key("RSA", kid="k1")
        self.published: list[SigningKey] = [self.key]
        self.jwks_fetches = 0
        self.jwks_up = True
        self.known: set[str] = {"client-a", "client-b"}
        self.upstream_hits = 0
        self.app = web.Application()
        self.app.router.add_get("/jwks", self.jwks)
        self.app.router.add_route("*", REGISTER, self.register)
        self.app.router.add_route("*", REGISTER + "/{cid}", self.client)

    async def jwks(self, _: web.Request) -> web.Response:
        self.jwks_fetches += 1
        if not self.jwks_up:
            return web.Response(status=503)
        return web.json_response({"keys": [k.public_jwk(alg="PS256") for k in self.published]})

    async def register(self, request: web.Request) -> web.Response:
        self.upstream_hits += 1
        await request.read()
        return web.json_response({"client_id": "new"}, status=201)

    async def client(self, request: web.Request) -> web.Response:
        self.upstream_hits += 1
        cid = request.match_info["cid"]
        if cid not in self.known:
            return web.json_response({"error": "invalid_token"}, status=401)
        if request.method == "DELETE":
            self.known.discard(cid)
            return web.Response(status=204)
        return web.json_response({"client_id": cid, "x_dcr_client_id": request.headers.getall("X-DCR-Client-Id", [])})

    def token(self, client_id: str = "client-a", *, key: SigningKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "sub": client_id, "client_id": client_id, "aud": "dcr", "iat": now,
                "exp": now + 300, "jti": str(uuid.uuid4()), "scope": "openid"}
        body.update(claims)
        return sign_jwt({k: v for k, v in body.items() if v is not None}, key or self.key, "PS256", typ="at+jwt")


def auth(token: str, client_id: str = "client-a") -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "client_id": client_id}


Starter = Callable[..., Awaitable[RunningGateway]]


@pytest.fixture
async def bank_gw(start_server: StartServer, running_gateway: Starter) -> Callable[..., Awaitable[tuple[Bank, RunningGateway]]]:
    async def make(policies: Path = SHIPPED_POLICIES, jwks: dict[str, Any] | None = None,
                   clock: Clock | None = None, **issuer: Any) -> tuple[Bank, RunningGateway]:
        """With `clock`, the gateway's JWKS cache runs on that clock (the test moves it) instead of sleeping."""
        bank = Bank()
        server = await start_server(bank.app)
        base = str(server.make_url("")).rstrip("/")
        trust = {
            "token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "audiences": ["dcr"],
                                       "token_types": ["at+jwt"], **issuer}},
            "jwks": {"ttl_seconds": 300, "min_refetch_interval_seconds": 0, "stale_max_seconds": 60,
                     **(jwks or {})},
        }
        cache = None
        if clock is not None:
            j = trust["jwks"]
            cache = JwksCache(policy=CONFIGURED_URLS, clock=clock, settings=JwksCacheSettings(
                ttl_seconds=j["ttl_seconds"], min_refetch_interval_seconds=j["min_refetch_interval_seconds"],
                stale_max_seconds=j["stale_max_seconds"]))
        gw = await running_gateway(base, policy_dir=policies, trust=trust, jwks_cache=cache)
        return bank, gw

    return make


async def test_own_client_read_is_forwarded(bank_gw):
    """A valid token, matching client_id header and own ClientId reach the backend."""
    bank, gw = await bank_gw()
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))
    assert resp.status == 200
    assert (await resp.json())["client_id"] == "client-a"
    assert gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                      "decision": "allow", "check": "", "reason": ""}) == 1


async def test_missing_token_gets_bare_challenge(bank_gw):
    """RFC 6750 §3.1: no credentials → 401 with a challenge that carries no error code."""
    bank, gw = await bank_gw()
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={"client_id": "client-a"})
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="dcr-gateway"'
    assert (await resp.json())["error"] == "invalid_token"
    assert resp.headers["Cache-Control"] == "no-store"
    assert bank.upstream_hits == 0


@pytest.mark.parametrize(
    ("make_token", "reason"),
    [
        (lambda b: b.token(exp=int(time.time()) - 120), "token_expired"),
        (lambda b: b.token(nbf=int(time.time()) + 600), "token_not_yet_valid"),
        (lambda b: b.token(iat=int(time.time()) + 600, exp=int(time.time()) + 900), "token_iat_in_future"),
        (lambda b: b.token(aud="someone-else"), "token_aud_mismatch"),
        (lambda b: b.token(iss="https://evil.test"), "token_iss_mismatch"),
        (lambda b: b.token(key=generate_signing_key("RSA", kid="k1")), "token_bad_signature"),
        (lambda b: b.token(client_id=None), "token_missing_claim"),
        (lambda b: b.token()[:-4] + "AAAA", "token_bad_signature"),
        (lambda b: "eyJhbGciOiJub25lIiwidHlwIjoiYXQrand0In0." + b.token().split(".")[1] + ".", "token_alg_not_allowed"),
    ],
    ids=["expired", "nbf-future", "iat-future", "wrong-aud", "wrong-iss", "other-key", "no-client-id",
         "tampered-signature", "alg-none"],
)
async def test_invalid_tokens_are_refused(bank_gw, make_token, reason):
    """Each token defect is a 401 invalid_token with its own reason, and nothing reaches the backend."""
    bank, gw = await bank_gw()
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(make_token(bank)))
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert bank.upstream_hits == 0
    assert gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                      "decision": "deny", "check": "bearer_token",
                                                      "reason": reason}) == 1


async def test_client_id_header_mismatch_never_revokes(bank_gw):
    """A wrong client_id header is refused, but the genuine token it came with keeps working."""
    bank, gw = await bank_gw()
    token = bank.token()
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(token, "client-b"))
    assert resp.status == 401
    assert (await resp.json())["error_description"] == "client_id header does not match the access token"
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))
    assert resp.status == 200


async def test_other_clients_id_is_401_and_revokes_the_token(bank_gw):
    """The bank's rule: a ClientId that is not the token's own → 401 and the token is revoked at once."""
    bank, gw = await bank_gw()
    token = bank.token()
    resp = await gw.client.get(f"{REGISTER}/client-b", headers=auth(token))
    assert resp.status == 401
    assert bank.upstream_hits == 0
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))
    assert resp.status == 401
    assert (await resp.json())["error_description"] == "the access token has been revoked"
    other = bank.token()
    assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(other))).status == 200


async def test_forged_token_cannot_revoke_a_genuine_one(bank_gw):
    """A forged token carrying a genuine token's jti and aimed at another ClientId revokes nothing."""
    bank, gw = await bank_gw()
    jti = str(uuid.uuid4())
    genuine = bank.token(jti=jti)
    forged = bank.token(jti=jti, key=generate_signing_key("RSA", kid="k1"))
    resp = await gw.client.get(f"{REGISTER}/client-b", headers=auth(forged))
    assert resp.status == 401
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(genuine))
    assert resp.status == 200


async def test_upstream_401_revokes_the_token(bank_gw):
    """The backend does not know the ClientId (401): the token is revoked before the answer is relayed."""
    bank, gw = await bank_gw()
    token = bank.token("client-z")
    resp = await gw.client.get(f"{REGISTER}/client-z", headers=auth(token, "client-z"))
    assert resp.status == 401
    assert bank.upstream_hits == 1
    resp = await gw.client.get(f"{REGISTER}/client-z", headers=auth(token, "client-z"))
    assert resp.status == 401
    assert bank.upstream_hits == 1  # refused by the gateway this time
    assert (await resp.json())["error_description"] == "the access token has been revoked"


async def test_confirmed_delete_revokes_every_token_of_the_client(bank_gw):
    """DELETE answered 204 → all tokens issued to the client so far are refused; other clients unaffected."""
    bank, gw = await bank_gw()
    first, second = bank.token(), bank.token()
    other = bank.token("client-b")
    resp = await gw.client.delete(f"{REGISTER}/client-a", headers=auth(first))
    assert resp.status == 204
    for token in (first, second):
        resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))
        assert resp.status == 401
        assert (await resp.json())["error_description"] == "the access token has been revoked"
    assert (await gw.client.get(f"{REGISTER}/client-b", headers=auth(other, "client-b"))).status == 200


async def test_unmatched_and_wrong_method(bank_gw):
    """No policy → 404 not forwarded; a known path with another method → 405 with Allow."""
    bank, gw = await bank_gw()
    resp = await gw.client.get("/admin/secret")
    assert resp.status == 404 and (await resp.json())["error"] == "not_found"
    resp = await gw.client.patch(f"{REGISTER}/client-a", headers=auth(bank.token()))
    assert resp.status == 405
    assert resp.headers["Allow"] == "DELETE, GET, PUT"
    assert bank.upstream_hits == 0


@pytest.mark.parametrize("client_id", ["%0A", "a%0Ab", "%0D%0A", "%E2%80%A8"])
async def test_a_line_break_in_a_path_parameter_reaches_the_policy(bank_gw, client_id):
    """Every path reaches the policy router (and its audited decision): a percent-encoded line break in ClientId
    is another client's id to `client_ownership` (401), not a 404 from aiohttp's router, whose catch-all `.*`
    did not match a newline (found by the live conformance test, tests/sandbox/test_conformance_live.py)."""
    bank, gw = await bank_gw()
    path = URL(f"{REGISTER}/{client_id}", encoded=True)
    resp = await gw.client.get(path)
    assert resp.status == 401 and (await resp.json())["error"] == "invalid_token"
    resp = await gw.client.get(path, headers=auth(bank.token()))
    assert resp.status == 401
    assert (await resp.json())["error_description"] == "the access token was not issued to this client"
    assert bank.upstream_hits == 0


async def test_insufficient_scope_is_403(bank_gw, tmp_path):
    """A token without a required scope gets 403 insufficient_scope with the scope in the challenge."""
    (tmp_path / "p.yaml").write_text(
        "policies:\n  - name: read\n    match: {methods: [GET], path: '/open-banking/v3.1/register/{ClientId}'}\n"
        "    checks:\n      - bearer_token: {issuers: [bank], required_scopes: [openid, dcr:read]}\n"
    )
    bank, gw = await bank_gw(policies=tmp_path)
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))
    assert resp.status == 403
    challenge = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge and 'scope="dcr:read openid"' in challenge
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token(scope="openid dcr:read")))
    assert resp.status == 200


async def test_audit_mode_forwards_and_reports_without_side_effects(bank_gw, tmp_path):
    """In audit mode a would-be denial is counted and forwarded, and nothing is revoked."""
    text = (SHIPPED_POLICIES / "dcr.yaml").read_text().replace(
        "match: {methods: [GET]", "mode: audit\n    match: {methods: [GET]"
    )
    (tmp_path / "dcr.yaml").write_text(text)
    bank, gw = await bank_gw(policies=tmp_path)
    token = bank.token()
    resp = await gw.client.get(f"{REGISTER}/client-b", headers=auth(token))
    assert resp.status == 200 and bank.upstream_hits == 1
    assert gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "audit",
                                                      "decision": "audit_deny", "check": "client_ownership",
                                                      "reason": "client_not_owned"}) == 1
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))
    assert resp.status == 200
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={"client_id": "client-a"})
    assert resp.status == 200  # no token at all, still forwarded in audit mode


async def test_key_rotation_new_kid_picked_up_and_removed_kid_refused(bank_gw):
    """A token signed with a newly published kid is accepted without restart; a retired kid is refused."""
    clock = Clock()
    bank, gw = await bank_gw(jwks={"ttl_seconds": 0.2}, clock=clock)
    old = bank.token()
    assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(old))).status == 200
    new_key = generate_signing_key("RSA", kid="k2")
    bank.published = [new_key]
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token(key=new_key)))
    assert resp.status == 200
    clock.now += 0.3  # past the key set's TTL
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token(key=bank.key)))
    assert resp.status == 401
    assert gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                      "decision": "deny", "check": "bearer_token",
                                                      "reason": "token_unknown_kid"}) == 1


async def test_unknown_kids_do_not_cause_fetch_storms(bank_gw):
    """Many random kids trigger at most one refetch per minimum interval."""
    bank, gw = await bank_gw(jwks={"min_refetch_interval_seconds": 60})
    await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))
    before = bank.jwks_fetches
    for i in range(20):
        key = generate_signing_key("RSA", kid=f"random-{i}") if i < 2 else bank.key
        token = bank.token(key=key) if i < 2 else bank.token()[:10] + "x"
        await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))
    assert bank.jwks_fetches - before <= 1


async def test_jwks_down_serves_stale_keys_then_fails_closed(bank_gw):
    """When the JWKS endpoint fails, cached keys serve within the stale bound, then requests fail closed (503)."""
    clock = Clock()
    bank, gw = await bank_gw(jwks={"ttl_seconds": 0.1, "stale_max_seconds": 0.6}, clock=clock)
    assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))).status == 200
    bank.jwks_up = False
    clock.now += 0.2  # past the TTL, within the stale bound
    gw.services.tokens.clear()  # force real verification, not the verified-token cache
    assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))).status == 200
    clock.now += 0.7  # past the stale bound
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))
    assert resp.status == 503
    assert (await resp.json())["error"] == "temporarily_unavailable"
    assert resp.headers["Retry-After"]
    bank.jwks_up = True
    clock.now += 2.1  # past the failed-refetch back-off
    assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(bank.token()))).status == 200


async def test_verified_token_cache_skips_reverification_but_not_revocation(bank_gw):
    """A cached verification is reused, yet a revoked token is refused on the very next request."""
    bank, gw = await bank_gw()
    token = bank.token()
    for _ in range(3):
        assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 200
    await gw.client.get(f"{REGISTER}/client-b", headers=auth(token))  # revokes it
    assert (await gw.client.get(f"{REGISTER}/client-a", headers=auth(token))).status == 401


async def test_opaque_tokens_are_introspected_and_cached_within_exp(start_server: StartServer, running_gateway,
                                                                     monkeypatch, tmp_path):
    """RFC 7662: an opaque token is sent to the introspection endpoint once, then served from the cache."""
    calls: list[str] = []

    async def introspect(request: web.Request) -> web.Response:
        form = await request.post()
        assert request.headers["Authorization"].startswith("Basic ")
        calls.append(str(form["token"]))
        if form["token"] == "opaque-good":
            return web.json_response({"active": True, "client_id": "client-a", "iss": ISSUER,
                                      "exp": int(time.time()) + 60, "scope": "openid"})
        return web.json_response({"active": False})

    bank = Bank()
    bank.app.router.add_post("/introspect", introspect)
    server = await start_server(bank.app)
    base = str(server.make_url("")).rstrip("/")
    monkeypatch.setenv("TEST_INTROSPECTION_SECRET", "s3cret")
    trust = {"token_issuers": {"bank": {"issuer": ISSUER, "introspection": {
        "endpoint": base + "/introspect", "client_id": "gateway", "client_secret_env": "TEST_INTROSPECTION_SECRET",
        "cache_seconds": 30}}}}
    gw = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust)
    for _ in range(3):
        resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth("opaque-good"))
        assert resp.status == 200
    assert calls == ["opaque-good"]
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth("opaque-revoked-at-the-as"))
    assert resp.status == 401
    # Not an RFC 6750 b64token ('!'): refused as malformed, and never sent to the authorization server.
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=auth("opaque!good"))
    assert resp.status == 401 and 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert calls == ["opaque-good", "opaque-revoked-at-the-as"]
    # Ownership still applies to introspected tokens.
    resp = await gw.client.get(f"{REGISTER}/client-b", headers=auth("opaque-good"))
    assert resp.status == 401


async def test_verified_client_id_is_forwarded_and_spoofed_copies_stripped(bank_gw):
    """The backend gets X-DCR-Client-Id from the verified token only, never the client's own copy."""
    bank, gw = await bank_gw()
    headers = {**auth(bank.token()), "X-DCR-Client-Id": "client-b"}
    resp = await gw.client.get(f"{REGISTER}/client-a", headers=headers)
    assert (await resp.json())["x_dcr_client_id"] == ["client-a"]


async def test_check_modes_audit_reports_without_enforcing(start_server: StartServer, running_gateway):
    """config policies.check_modes: {client_id_header: audit} forwards and counts that check's denials only."""
    bank = Bank()
    server = await start_server(bank.app)
    base = str(server.make_url("")).rstrip("/")
    trust = {"token_issuers": {"bank": {"issuer": ISSUER, "jwks_uri": base + "/jwks", "token_types": ["at+jwt"]}}}
    gw = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust,
                               policies={"check_modes": {"client_id_header": "audit"}})
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={"Authorization": f"Bearer {bank.token()}"})
    assert resp.status == 200
    assert gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                      "decision": "audit_deny", "check": "client_id_header",
                                                      "reason": "client_id_missing"}) == 1
    resp = await gw.client.get(f"{REGISTER}/client-a", headers={"client_id": "client-a"})
    assert resp.status == 401  # bearer_token is still enforced
