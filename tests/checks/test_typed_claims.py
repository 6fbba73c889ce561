"""Every claim the DCR and token checks read is typed and bounded, end to end through the shipped policies: the
attacker's findings of issue 13 (a 400-digit `iat`, `org_name: true`, a lone surrogate in `scope`, deep nesting)
are 4xx answers with the documented reason, and the description never echoes the offending value whole."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from aiohttp import web

from gateway.jose import sign_compact
from tests.checks.world import BANK_ISSUER, REDIRECT, REGISTER, World, keys
from tests.conftest import SHIPPED_POLICIES

HUGE = 10**400


@pytest.fixture
async def world(dcr_world: Any) -> World:
    return await dcr_world()


def _ascii_json(claims: dict[str, Any]) -> bytes:
    """JSON with lone surrogates written as \\u escapes and NaN as a literal (what an attacker can send)."""
    return json.dumps(claims, ensure_ascii=True, allow_nan=True).encode("ascii")


async def _refused(world: World, resp: Any, status: int, error: str, reason: str) -> dict[str, str]:
    body = await resp.json()
    assert (resp.status, body["error"]) == (status, error), body
    assert world.denials(reason) >= 1, (reason, body)
    assert len(body["error_description"]) <= 500 and "9999999999" not in body["error_description"], body
    return body  # type: ignore[no-any-return]


SSA_CASES: list[tuple[str, Any]] = [
    ("org_name", True), ("org_name", 0), ("org_name", "n" * 300), ("software_client_name", ["Name"]),
    ("software_client_name", {"en": "Name"}), ("iat", HUGE), ("iat", -HUGE), ("iat", -5), ("exp", 1e300),
    ("nbf", True), ("software_redirect_uris", [REDIRECT, "u" * 3000]), ("software_roles", ["AISP"] * 17),
    ("org_status", 5), ("software_jwks_endpoint", "https://" + "a" * 3000 + "/jwks"), ("software_id", HUGE),
]


@pytest.mark.parametrize(("claim", "value"), SSA_CASES, ids=[f"{c}={str(v)[:12]}" for c, v in SSA_CASES])
async def test_wrongly_typed_ssa_claims_are_bad_claims(world: World, claim: str, value: Any) -> None:
    """An SSA the directory really signed, with a claim of the wrong type or out of bounds: ssa_bad_claim."""
    resp = await world.post(world.request(software_statement=world.ssa(**{claim: value})))
    await _refused(world, resp, 400, "invalid_software_statement", "ssa_bad_claim")
    assert world.registrations() == 0


REQUEST_CASES: list[tuple[str, Any, str, str]] = [
    ("exp", HUGE, "invalid_client_metadata", "request_bad_claim"),
    ("iat", True, "invalid_client_metadata", "request_bad_claim"),
    ("iat", -HUGE, "invalid_client_metadata", "request_bad_claim"),
    ("jti", "j" * 300, "invalid_client_metadata", "request_bad_claim"),
    ("application_type", 5, "invalid_client_metadata", "metadata_bad_type"),
    ("id_token_signed_response_alg", True, "invalid_client_metadata", "metadata_bad_type"),
    ("scope", ["x" * 5000], "invalid_client_metadata", "metadata_bad_type"),
    ("client_id", "a\tb", "invalid_client_metadata", "metadata_bad_type"),
    ("tls_client_auth_subject_dn", "CN=" + "d" * 1100, "invalid_client_metadata", "metadata_bad_type"),
    ("software_id", ["x"], "invalid_client_metadata", "metadata_bad_type"),
    ("redirect_uris", ["https://" + "a" * 3000], "invalid_redirect_uri", "redirect_uri_invalid"),
    ("redirect_uris", [REDIRECT, 7], "invalid_redirect_uri", "redirect_uri_invalid"),
]


@pytest.mark.parametrize(("claim", "value", "error", "reason"), REQUEST_CASES,
                         ids=[f"{c[0]}={str(c[1])[:12]}" for c in REQUEST_CASES])
async def test_wrongly_typed_request_claims_are_refused(world: World, claim: str, value: Any, error: str,
                                                        reason: str) -> None:
    """A request the TPP really signed, with a claim of the wrong type or out of bounds: the documented reason."""
    resp = await world.post(world.request(**{claim: value}))
    await _refused(world, resp, 400, error, reason)
    assert world.registrations() == 0


RAW_PAYLOADS: list[tuple[str, Any]] = [
    ("scope_lone_surrogate", {"scope": "\ud800"}),
    ("member_name_lone_surrogate", {"\udfff": "x"}),
    ("nbf_nan", {"nbf": float("nan")}),
    ("exp_infinity", {"exp": float("inf")}),
]


@pytest.mark.parametrize("extra", [p[1] for p in RAW_PAYLOADS], ids=[p[0] for p in RAW_PAYLOADS])
async def test_request_payloads_that_are_not_json_text(world: World, extra: dict[str, Any]) -> None:
    """Lone surrogates and NaN / Infinity in a really signed request: 400 request_payload_not_json."""
    resp = await world.post(world.request(payload=_ascii_json({**world.claims(), **extra})))
    body = await _refused(world, resp, 400, "invalid_client_metadata", "request_payload_not_json")
    assert "\ud800" not in body["error_description"]


@pytest.mark.parametrize("depth", [40, 300, 20_000])
async def test_deeply_nested_request_claims_are_refused(world: World, depth: int) -> None:
    """A claim nested hundreds or thousands of levels deep: refused at parse time, not by a RecursionError."""
    claims = json.dumps(world.claims()).encode("ascii")
    deep = b'{"deep":' + b"[" * depth + b"]" * depth + b"," + claims[1:]
    resp = await world.post(world.request(payload=deep))
    await _refused(world, resp, 400, "invalid_client_metadata", "request_payload_not_json")


async def test_deeply_nested_ssa_claims_are_refused(world: World) -> None:
    """The same inside the SSA: ssa_payload_not_json."""
    claims = json.dumps(world.ssa_claims()).encode("ascii")
    deep = b'{"deep":' + b"[" * 400 + b"]" * 400 + b"," + claims[1:]
    ssa = sign_compact({"alg": "PS256", "kid": keys().directory.kid, "typ": "JWT"}, deep, keys().directory)
    resp = await world.post(world.request(software_statement=ssa))
    await _refused(world, resp, 400, "invalid_software_statement", "ssa_payload_not_json")


def _token(**overrides: Any) -> str:
    now = int(time.time())
    claims = {"iss": BANK_ISSUER, "client_id": "app-1", "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()),
              **overrides}
    return sign_compact({"alg": "PS256", "kid": keys().bank.kid, "typ": "at+jwt"}, _ascii_json(claims), keys().bank)


TOKEN_CASES: list[tuple[str, Any, str]] = [
    ("exp", HUGE, "token_bad_claim"), ("iat", True, "token_bad_claim"), ("nbf", -1, "token_bad_claim"),
    ("exp", 253_402_300_800, "token_bad_claim"), ("client_id", 5, "token_bad_claim"),
    ("client_id", "x" * 300, "token_bad_claim"), ("scope", ["accounts"], "token_bad_claim"),
    ("jti", "\ud800", "token_payload_not_json"), ("exp", float("nan"), "token_payload_not_json"),
]


@pytest.mark.parametrize(("claim", "value", "reason"), TOKEN_CASES,
                         ids=[f"{c[0]}={str(c[1])[:12]}" for c in TOKEN_CASES])
async def test_wrongly_typed_token_claims_are_invalid_tokens(world: World, claim: str, value: Any,
                                                             reason: str) -> None:
    """A bearer token the bank really signed, with a claim of the wrong type: 401 invalid_token + challenge."""
    token = _token(**{claim: value})
    resp = await world.gw.client.get(f"{REGISTER}/app-1", headers={"Authorization": f"Bearer {token}",
                                                                   "client_id": "app-1"})
    await _refused(world, resp, 401, "invalid_token", reason)
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="dcr-gateway", error="invalid_token"')
    assert world.backend.hits == []


async def test_well_typed_claims_still_register(world: World) -> None:
    """The bounds leave a genuine registration alone: long-but-bounded names, an empty token scope."""
    ssa = world.ssa(org_name="O" * 255, software_client_name="App")
    resp = await world.gw.client.post(REGISTER, data=world.request(software_statement=ssa),
                                      headers={**world.headers(), "Authorization": f"Bearer {_token(scope='')}"})
    assert resp.status == 201, await resp.text()
    assert world.registrations() == 1


INTROSPECTION_ANSWERS: dict[str, tuple[bytes, int, str]] = {
    # token (the opaque value sent) -> (the issuer's answer, expected status, expected reason)
    "huge-exp": (b'{"active":true,"client_id":"app-1","exp":' + b"9" * 400 + b"}", 401, "token_bad_claim"),
    "bool-exp": (b'{"active":true,"client_id":"app-1","exp":true}', 401, "token_bad_claim"),
    "list-client": (b'{"active":true,"client_id":["app-1"]}', 401, "token_bad_claim"),
    "deep": (b'{"active":true,"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}", 503, "jwks_unavailable"),
    "surrogate": (b'{"active":true,"client_id":"app-1","scope":"\\ud800"}', 503, "jwks_unavailable"),
    "nan": (b'{"active":true,"client_id":"app-1","exp":NaN}', 503, "jwks_unavailable"),
    "huge": (b'{"active":true,"pad":"' + b"p" * 300_000 + b'"}', 503, "jwks_unavailable"),
}


async def test_introspection_answers_of_any_shape_never_reach_a_5xx(start_server: Any, running_gateway: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 7662: an issuer's answer with a huge or wrongly typed exp is an invalid token; one that is not strict,
    bounded JSON text is the issuer's failure (503, fail closed) — never a 500."""
    async def introspect(request: web.Request) -> web.Response:
        token = str((await request.post())["token"])
        return web.Response(body=INTROSPECTION_ANSWERS[token][0], content_type="application/json")

    async def backend(_: web.Request) -> web.Response:
        return web.json_response({"client_id": "app-1"})

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    app.router.add_route("*", "/{tail:.*}", backend)
    base = str((await start_server(app)).make_url("")).rstrip("/")
    monkeypatch.setenv("TEST_INTROSPECTION_SECRET", "s3cret")
    trust = {"token_issuers": {"bank": {"issuer": BANK_ISSUER, "introspection": {
        "endpoint": base + "/introspect", "client_id": "gateway", "client_secret_env": "TEST_INTROSPECTION_SECRET"}}}}
    gw = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust)
    for token, (_, status, reason) in INTROSPECTION_ANSWERS.items():
        resp = await gw.client.get(f"{REGISTER}/app-1", headers={"Authorization": f"Bearer {token}",
                                                                 "client_id": "app-1"})
        body = await resp.json()
        assert resp.status == status, (token, body)
        assert body["error"] == ("invalid_token" if status == 401 else "temporarily_unavailable"), (token, body)
        assert gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_read", "mode": "enforce",
                                                          "decision": "deny", "check": "bearer_token",
                                                          "reason": reason}) >= 1, (token, reason)
