"""Property tests: hostile SSA and registration claims never make the sandbox answer 5xx or half-commit.

The real sandbox app on 127.0.0.1 (called on its own port: the backend is what is under test), SSAs signed
with its real directory key, requests signed with a TPP key. For every example: 201/200 or an RFC 7591 400;
a refused registration leaves no client row; every stored client reads back, by GET when it can have a token.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any, Final

import aiohttp
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from tests.sandbox.conftest import JOSE, REDIRECT, REDIRECT_2, REGISTER, Bank, tpp_key
from tests.sandbox.fuzzing import (
    FUZZ,
    HOSTILE,
    RFC7591_ERRORS,
    Deep,
    assert_error_body,
    directory_key,
    sign_raw,
    stored_registrations,
    strict_json,
    to_json,
)

SOFTWARE_ID: Final = "FuzzSoftware0000000001"
SSA_CLAIMS: Final = (
    "org_name", "software_client_name", "software_jwks_endpoint", "software_roles", "software_redirect_uris",
    "software_id", "org_contacts", "organisation_competent_authority_claims", "software_logo_uri", "x-extra",
    "iat", "exp", "client_secret", "client_id_issued_at", "client_secret_expires_at",
)
REQUEST_CLAIMS: Final = (
    "scope", "redirect_uris", "grant_types", "token_endpoint_auth_method", "iat", "exp", "aud", "jti",
    "software_id", "client_id", "tls_client_auth_subject_dn", "tls_client_auth_dn", "response_types",
    "application_type", "token_endpoint_auth_signing_alg", "id_token_signed_response_alg", "x-extra",
)
VALID_CHOICES: Final = {  # valid values the fuzzer mixes in, so the 201 path is explored as well
    "scope": ["accounts", ["payments", "openid"], "fundsconfirmations accounts"],
    "grant_types": [["client_credentials", "authorization_code"], ["authorization_code"]],
    "token_endpoint_auth_method": ["client_secret_post", "tls_client_auth", "private_key_jwt"],
    "tls_client_auth_subject_dn": ["CN=tpp,O=TPP Ltd,C=GB"],
    "response_types": [["code"], ["code id_token"]],
    "token_endpoint_auth_signing_alg": ["ES256", "PS256"],
    "org_name": ["Ünïcödé Org 😀", "x" * 2048],
    "software_client_name": ["name", ""],
    "software_roles": [["AISP"], ["CBPII", "PISP"], []],
}


def claim_overrides(names: tuple[str, ...]) -> st.SearchStrategy[dict[str, Any]]:
    """0 to 3 claims, each a hostile value or one of its valid values."""
    def value_for(name: str) -> st.SearchStrategy[Any]:
        return st.one_of(HOSTILE, st.sampled_from(VALID_CHOICES.get(name, [None])))

    return st.lists(st.sampled_from(names), max_size=3, unique=True).flatmap(
        lambda chosen: st.fixed_dictionaries({n: value_for(n) for n in chosen})
    )


def ssa_text(bank: Bank, overrides: dict[str, Any]) -> str:
    """An SSA (signed with the sandbox directory's real key) whose claims are `overrides` over sane defaults."""
    claims: dict[str, Any] = {
        "iss": "OpenBanking Ltd",
        "iat": int(time.time()),
        "jti": str(uuid.uuid4()),
        "software_id": SOFTWARE_ID,
        "software_client_name": "Fuzz TPP",
        "software_redirect_uris": [REDIRECT, REDIRECT_2],
        "software_roles": ["AISP", "PISP"],
        "software_jwks_endpoint": bank.tpp.publish("fuzz", tpp_key("fuzz")),
        "org_id": "0015800001041REAAY",
        "org_name": "Fuzz TPP Ltd",
    }
    claims.update(overrides)
    key, kid = directory_key(bank)
    return sign_raw(key, kid, to_json(claims))


def request_jws(bank: Bank, ssa: str, overrides: dict[str, Any]) -> str:
    """A registration request signed by the TPP key: a valid OBClientRegistrationRequest1 with `overrides`."""
    # The fixture's claims, for a stand-in SSA: it would decode the real one, which may be 5000 levels deep.
    stand_in = ".".join(("e30", base64.urlsafe_b64encode(json.dumps({"software_id": SOFTWARE_ID}).encode())
                         .decode().rstrip("="), "e30"))
    claims = bank.registration_claims(stand_in, software_statement=ssa)
    claims.update(overrides)
    key = tpp_key("fuzz")
    return sign_raw(key.key, key.kid, to_json(claims))


async def call(bank: Bank, method: str, path: str, token: str, body: str | bytes | None = None,
               content_type: str | None = JOSE) -> tuple[int, Any]:
    """Call the sandbox itself; (status, JSON body or None). Asserts a JSON body and no 5xx."""
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    async with bank.http.request(method, bank.sandbox_url + path, data=body, headers=headers,
                                 skip_auto_headers=("Content-Type",)) as r:
        raw = await r.read()
        assert r.status < 500, (method, path, r.status, raw[:500])
        parsed = strict_json(raw) if raw else None
        assert raw == b"" or r.content_type == "application/json", (r.status, r.content_type)
        return r.status, parsed


async def read_back(bank: Bank, client: dict[str, Any], token: str | None) -> None:
    """A stored client is readable: its row is JSON equal to what its TPP was told, and GET is 200."""
    client_id = client["client_id"]
    expected = {k: v for k, v in client.items() if k != "client_secret"}
    row = stored_registrations(bank)[client_id]
    assert row is not None and json.loads(row) == expected
    if token is not None:
        status, body = await call(bank, "GET", f"{REGISTER}/{client_id}", token)
        assert status == 200 and body == expected, (status, body)


async def client_token(bank: Bank, client: dict[str, Any]) -> str | None:
    """A token for a DCR client by client_secret_basic, or None when it did not register client_credentials."""
    data = {"grant_type": "client_credentials"}
    basic = aiohttp.encode_basic_auth(client["client_id"], client["client_secret"])
    async with bank.http.post(bank.sandbox_url + "/oauth2/token", data=data, headers={"Authorization": basic}) as r:
        body = await r.json()
        if "client_credentials" not in client["grant_types"]:
            assert r.status == 400 and body["error"] == "unauthorized_client", body
            return None
        assert r.status == 200, body
        return str(body["access_token"])


async def caller_token(bank: Bank) -> str:
    """One developer-app token per test (POST accepts any client's token)."""
    if "token" not in bank.extra:
        bank.extra["token"] = await bank.app_token()
    return str(bank.extra["token"])


@settings(FUZZ, max_examples=200)
@given(ssa_overrides=claim_overrides(SSA_CLAIMS), request_overrides=claim_overrides(REQUEST_CLAIMS))
@example(ssa_overrides={"org_name": Deep(300)}, request_overrides={})  # stored in full, answered truncated
@example(ssa_overrides={"software_client_name": "\ud800"}, request_overrides={})  # 500 from SQLite
@example(ssa_overrides={"org_name": 2**64}, request_overrides={})
@example(ssa_overrides={"client_secret": "not-the-secret"}, request_overrides={})  # replaced the real one
@example(ssa_overrides={"software_jwks_endpoint": "https://[::1/jwks"},
         request_overrides={"token_endpoint_auth_method": "private_key_jwt",
                            "token_endpoint_auth_signing_alg": "PS256"})  # urlsplit raised: 500
async def test_fuzzed_registration_is_201_or_a_400_that_stores_nothing(
    bank: Bank, ssa_overrides: dict[str, Any], request_overrides: dict[str, Any]
) -> None:
    token = await caller_token(bank)
    before = stored_registrations(bank)
    body = request_jws(bank, ssa_text(bank, ssa_overrides), request_overrides)
    status, answer = await call(bank, "POST", REGISTER, token, body)
    event(f"POST {status} {answer.get('error', '')}")
    after = stored_registrations(bank)
    if status != 201:
        assert_error_body(status, answer, RFC7591_ERRORS, "POST")
        assert status == 400 and after == before, (status, answer)
        return
    assert set(after) - set(before) == {answer["client_id"]} and len(after) == len(before) + 1
    await read_back(bank, answer, await client_token(bank, answer))


@settings(FUZZ, max_examples=200)
@given(ssa_overrides=claim_overrides(SSA_CLAIMS), request_overrides=claim_overrides(REQUEST_CLAIMS))
async def test_fuzzed_update_is_200_or_a_400_that_changes_nothing(
    bank: Bank, ssa_overrides: dict[str, Any], request_overrides: dict[str, Any]
) -> None:
    if "client" not in bank.extra:  # one client per test, updated by every example
        status, created = await call(bank, "POST", REGISTER, await caller_token(bank),
                                     request_jws(bank, ssa_text(bank, {}), {}))
        assert status == 201, created
        bank.extra["client"] = created
        bank.extra["own"] = await client_token(bank, created)
    client, own = bank.extra["client"], bank.extra["own"]
    before = stored_registrations(bank)
    body = request_jws(bank, ssa_text(bank, ssa_overrides), request_overrides)
    status, answer = await call(bank, "PUT", f"{REGISTER}/{client['client_id']}", own, body)
    event(f"PUT {status} {answer.get('error', '')}")
    if status == 200:
        assert answer["client_id"] == client["client_id"] and "client_secret" not in answer
        bank.extra["client"] = {**answer, "client_secret": client["client_secret"]}
    else:
        assert_error_body(status, answer, RFC7591_ERRORS, "PUT")
        assert status == 400 and stored_registrations(bank) == before, (status, answer)
    # PUT does not invalidate tokens, so the client's first token reads it whatever grant types it now has.
    await read_back(bank, bank.extra["client"], own)


BODY_TYPES: Final = st.sampled_from([
    "application/jose", "application/jwt", "application/json", "application/json; charset=utf-8", "text/plain",
    "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jose; charset=latin1",
    None,
])


@settings(FUZZ, max_examples=300)
@given(
    content_type=BODY_TYPES,
    body=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(lambda t: t.encode()),
        HOSTILE.map(lambda v: to_json(v).encode("utf-8", "surrogatepass")),
        st.sampled_from([b'"a.b.c"', b'"\\ud800.x.y"', b"a.b.c", b"..", b"x" * 70_000, b'"' + b"[" * 5000]),
    ),
)
async def test_fuzzed_registration_bodies_are_400(bank: Bank, content_type: str | None, body: bytes) -> None:
    token = await caller_token(bank)
    before = stored_registrations(bank)
    status, answer = await call(bank, "POST", REGISTER, token, body, content_type)
    assert_error_body(status, answer, RFC7591_ERRORS, "POST")
    assert status == 400 and stored_registrations(bank) == before


@settings(FUZZ, max_examples=100)
@given(which=st.sampled_from(["request", "software_statement"]),
       header=st.one_of(st.fixed_dictionaries({"kid": HOSTILE}), st.fixed_dictionaries({"alg": HOSTILE}),
                        st.dictionaries(st.text(max_size=8), HOSTILE, max_size=2)))
async def test_fuzzed_jws_headers_are_201_or_a_400_that_stores_nothing(
    bank: Bank, which: str, header: dict[str, Any]
) -> None:
    """The sandbox does not verify signatures, but it does read both JWS headers."""
    token = await caller_token(bank)
    before = stored_registrations(bank)
    raw_header = to_json({"alg": "PS256", "typ": "JWT", **header})
    key, kid = directory_key(bank)
    ssa = ssa_text(bank, {})
    if which == "software_statement":
        ssa = sign_raw(key, kid, base64.urlsafe_b64decode(ssa.split(".")[1] + "==").decode(), header=raw_header)
    claims = json.loads(base64.urlsafe_b64decode(request_jws(bank, ssa, {}).split(".")[1] + "=="))
    tpp = tpp_key("fuzz")
    status, answer = await call(bank, "POST", REGISTER, token, sign_raw(tpp.key, tpp.kid, to_json(claims),
                                                                        header=raw_header if which == "request"
                                                                        else None))
    event(f"{which} {status} {answer.get('error', '')}")
    if status != 201:
        assert_error_body(status, answer, RFC7591_ERRORS, "POST")
        assert status == 400 and stored_registrations(bank) == before
    else:
        assert len(stored_registrations(bank)) == len(before) + 1
