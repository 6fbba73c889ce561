"""Property tests: no claim value reaches a 5xx. Registration-request, SSA and bearer-token claims are replaced by
huge and negative integers, floats (NaN and infinities written as JSON literals), booleans, lone surrogates,
deep nesting and values of the wrong type; every token is signed with the world's real keys and sent through a
real gateway on 127.0.0.1 with the shipped policies. The answer is a success or a 4xx with an RFC 7591 / RFC 6750
JSON error body (and a Bearer challenge on a 401) — never a 5xx."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.jose import sign_compact
from tests.checks.world import BANK_ISSUER, REGISTER, World, keys

PROPERTY = settings(max_examples=200, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
OB_MAX_DESCRIPTION = 500  # OB RegistrationError: error_description 1..500 characters


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` arrays deep, written as JSON text (the stdlib encoder would recurse)."""

    depth: int
    wrap: str = "["


@dataclass(frozen=True)
class Literal:
    """JSON-like text written as is: NaN, Infinity, 1e400."""

    text: str


def to_json(value: Any) -> str:
    """JSON text for a generated value: ASCII (lone surrogates as \\u escapes), Deep and Literal written raw."""
    if isinstance(value, Deep):
        close = "]" if value.wrap == "[" else "}"
        opener = "[" if value.wrap == "[" else '{"a":'
        return opener * value.depth + "1" + close * value.depth
    if isinstance(value, Literal):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(k)}:{to_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=True)


def payload(claims: dict[str, Any]) -> bytes:
    return to_json(claims).encode("ascii")


HUGE_INTS = st.one_of(st.integers(min_value=2**53, max_value=10**400), st.integers(min_value=-(10**400),
                      max_value=-(2**53)), st.sampled_from([10**400, -(10**400), 2**63, 2**64 + 1, -(2**63) - 1]))
NUMBERS = st.one_of(st.integers(min_value=-(2**40), max_value=2**40), HUGE_INTS, st.booleans(),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.sampled_from([Literal("NaN"), Literal("Infinity"), Literal("-Infinity"), Literal("1e400"),
                                     Literal("-1e400"), Literal("1E+309"), -1, 0, 0.5, 253_402_300_800]))
SURROGATES = st.builds(lambda a, s, b: a + s + b, st.text(max_size=8),
                       st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), st.text(max_size=8))
STRINGS = st.one_of(st.text(max_size=40), SURROGATES, st.sampled_from(["", " ", "\r\n", "AISP", "Active"]),
                    st.integers(min_value=300, max_value=5000).map(lambda n: "x" * n))
DEEP = st.builds(Deep, st.integers(min_value=30, max_value=3000), st.sampled_from(["[", "{"]))
SCALARS = st.one_of(st.none(), NUMBERS, STRINGS)
NASTY = st.one_of(
    SCALARS,
    DEEP,
    st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(STRINGS, inner, max_size=3),
                 max_leaves=6),
)

SSA_CLAIMS = ["iss", "iat", "exp", "nbf", "jti", "software_id", "org_id", "org_status", "org_name",
              "software_client_name", "software_jwks_endpoint", "software_redirect_uris", "software_roles"]
REQUEST_CLAIMS = ["iss", "aud", "iat", "exp", "nbf", "jti", "software_statement", "redirect_uris", "software_id",
                  "token_endpoint_auth_method", "token_endpoint_auth_signing_alg", "grant_types", "response_types",
                  "application_type", "id_token_signed_response_alg", "request_object_signing_alg", "scope",
                  "tls_client_auth_subject_dn", "tls_client_auth_dn", "client_id"]
TOKEN_CLAIMS = ["iss", "aud", "iat", "exp", "nbf", "jti", "sub", "client_id", "scope", "cnf"]


async def assert_spec_answer(resp: aiohttp.ClientResponse) -> dict[str, Any] | None:
    """Never a 5xx; a 4xx carries exactly {"error", "error_description"}, bounded; a 401 a Bearer challenge."""
    text = await resp.text()
    assert resp.status < 500, f"{resp.status}: {text[:300]}"
    if resp.status < 400:
        return None
    body = json.loads(text)
    assert set(body) == {"error", "error_description"}, body
    assert isinstance(body["error"], str) and isinstance(body["error_description"], str), body
    assert 0 < len(body["error_description"]) <= OB_MAX_DESCRIPTION, body
    if resp.status == 401:
        assert resp.headers["WWW-Authenticate"].startswith("Bearer "), resp.headers
    return body  # type: ignore[no-any-return]


REGISTRATION_ERRORS = {"invalid_client_metadata", "invalid_software_statement", "unapproved_software_statement",
                       "invalid_redirect_uri"}


class Sender:
    """Posts registration requests with one bearer token for the whole property run."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.headers = world.headers()

    async def register(self, request_jws: str) -> None:
        resp = await self.world.gw.client.post(REGISTER, data=request_jws, headers=self.headers)
        body = await assert_spec_answer(resp)
        if body is not None:
            assert resp.status == 400 and body["error"] in REGISTRATION_ERRORS, (resp.status, body)


@pytest.fixture
async def world(dcr_world: Any) -> World:
    """One DCR world per property (shared by its examples: each example sends its own request)."""
    return await dcr_world()


@pytest.fixture
def sender(world: World) -> Sender:
    return Sender(world)


def signed_request(claims: dict[str, Any]) -> str:
    """A registration request with these claims, signed with the TPP's real PS256 key."""
    header = {"alg": "PS256", "kid": keys().tpp_rsa.kid}
    return sign_compact(header, payload(claims), keys().tpp_rsa)


def signed_ssa(claims: dict[str, Any]) -> str:
    """An SSA with these claims, signed with the directory's real PS256 key."""
    header = {"alg": "PS256", "kid": keys().directory.kid, "typ": "JWT"}
    return sign_compact(header, payload(claims), keys().directory)


@PROPERTY
@given(overrides=st.dictionaries(st.sampled_from(SSA_CLAIMS), NASTY, min_size=1, max_size=3))
async def test_ssa_claims_never_reach_a_5xx(world: World, sender: Sender, overrides: dict[str, Any]) -> None:
    """Any SSA claim of any shape, in an SSA the trusted directory really signed: 201 or a 400 RFC 7591 error."""
    ssa = signed_ssa({**world.ssa_claims(), **overrides})
    await sender.register(signed_request(world.claims(ssa=ssa)))


@PROPERTY
@given(overrides=st.dictionaries(st.sampled_from(REQUEST_CLAIMS), NASTY, min_size=1, max_size=3))
async def test_request_claims_never_reach_a_5xx(world: World, sender: Sender, overrides: dict[str, Any]) -> None:
    """Any registration-request claim of any shape, signed by the TPP's registered key: 201 or a 400."""
    await sender.register(signed_request({**world.claims(), **overrides}))


@PROPERTY
@given(value=NASTY, where=st.sampled_from(["request", "ssa"]), name=st.sampled_from(["x-ext", "kid", "typ", "crit"]))
async def test_jws_headers_never_reach_a_5xx(world: World, sender: Sender, value: Any, where: str, name: str) -> None:
    """Header members of any shape (deep, surrogates, huge numbers), in the request or in its SSA, really signed."""
    if where == "ssa":
        header = {"alg": "PS256", "kid": keys().directory.kid, "typ": "JWT", name: value}
        ssa = sign_compact(to_json(header).encode("ascii"), payload(world.ssa_claims()), keys().directory, alg="PS256")
        await sender.register(signed_request(world.claims(ssa=ssa)))
    else:
        header = {"alg": "PS256", "kid": keys().tpp_rsa.kid, name: value}
        await sender.register(sign_compact(to_json(header).encode("ascii"), payload(world.claims()), keys().tpp_rsa,
                                           alg="PS256"))


def signed_token(claims: dict[str, Any]) -> str:
    """An access token with these claims, signed with the bank's real PS256 key (typ at+jwt)."""
    return sign_compact({"alg": "PS256", "kid": keys().bank.kid, "typ": "at+jwt"}, payload(claims), keys().bank)


@PROPERTY
@given(overrides=st.dictionaries(st.sampled_from(TOKEN_CLAIMS), NASTY, min_size=1, max_size=3))
async def test_bearer_token_claims_never_reach_a_5xx(world: World, overrides: dict[str, Any]) -> None:
    """Any access-token claim of any shape, in a token the bank really signed: 200 or 401/403 with a challenge."""
    now = int(time.time())
    claims = {"iss": BANK_ISSUER, "client_id": "app-1", "iat": now, "exp": now + 300, "jti": str(uuid.uuid4()),
              **overrides}
    token = signed_token(claims)
    if len(token) > 8000:
        return  # beyond aiohttp's 8190-byte header line: its parser answers before the gateway runs (no claim read)
    resp = await world.gw.client.get(f"{REGISTER}/app-1", headers={"Authorization": f"Bearer {token}",
                                                                   "client_id": "app-1"})
    body = await assert_spec_answer(resp)
    if body is not None:
        assert (resp.status, body["error"]) in {(401, "invalid_token"), (403, "insufficient_scope")}, body
