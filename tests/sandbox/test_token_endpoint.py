"""The token endpoint through the gateway: malformed requests and bad assertions give RFC 6749 errors."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
from jwcrypto import jwk, jws

from tests.sandbox.conftest import Bank, sign_jws, tpp_key, unverified

CC = "client_credentials"
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FORM = "application/x-www-form-urlencoded"


def basic(raw: bytes) -> dict[str, str]:
    """An Authorization: Basic header over raw bytes."""
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


# (case id, body, extra headers, use the app's Basic credentials, expected status, expected error)
MALFORMED = [
    ("missing grant_type", {}, {}, True, 400, "invalid_request"),
    ("empty grant_type", {"grant_type": ""}, {}, True, 400, "invalid_request"),
    (
        "authorization_code grant",
        {"grant_type": "authorization_code", "code": "x"},
        {},
        True,
        400,
        "unsupported_grant_type",
    ),
    (
        "password grant",
        {"grant_type": "password", "username": "u", "password": "p"},
        {},
        True,
        400,
        "unsupported_grant_type",
    ),
    ("no client authentication", {"grant_type": CC}, {}, False, 401, "invalid_client"),
    (
        "Basic header not base64",
        {"grant_type": CC},
        {"Authorization": "Basic !!!notbase64"},
        False,
        401,
        "invalid_client",
    ),
    ("Basic header without colon", {"grant_type": CC}, basic(b"nocolon"), False, 401, "invalid_client"),
    ("Basic header empty id", {"grant_type": CC}, basic(b":secret"), False, 401, "invalid_client"),
    ("Basic header not UTF-8", {"grant_type": CC}, basic(b"\xff\xfe:\xff"), False, 401, "invalid_client"),
    (
        "Basic header bad percent-encoding",
        {"grant_type": CC},
        basic(b"%ff:%fe"),
        False,
        401,
        "invalid_client",
    ),
    ("Basic scheme only", {"grant_type": CC}, {"Authorization": "Basic"}, False, 401, "invalid_client"),
    (
        "Bearer instead of Basic",
        {"grant_type": CC},
        {"Authorization": "Bearer abc"},
        False,
        401,
        "invalid_client",
    ),
    (
        "unknown client",
        {"grant_type": CC},
        basic(b"00000000-0000-4000-8000-000000000000:secret"),
        False,
        401,
        "invalid_client",
    ),
    (
        "two authentication methods",
        {"grant_type": CC, "client_id": "x", "client_secret": "y"},
        {},
        True,
        400,
        "invalid_request",
    ),
    (
        "body client_id differs from Basic",
        {"grant_type": CC, "client_id": "someone-else"},
        {},
        True,
        400,
        "invalid_request",
    ),
    (
        "client_secret_post without client_id",
        {"grant_type": CC, "client_secret": "y"},
        {},
        False,
        401,
        "invalid_client",
    ),
    ("unknown scope", {"grant_type": CC, "scope": "admin"}, {}, True, 400, "invalid_scope"),
    (
        "scope with double space",
        {"grant_type": CC, "scope": "accounts  payments"},
        {},
        True,
        400,
        "invalid_scope",
    ),
    (
        "wrong client_assertion_type",
        {"grant_type": CC, "client_assertion_type": "urn:x", "client_assertion": "a.b.c"},
        {},
        False,
        400,
        "invalid_request",
    ),
    (
        "client_assertion missing",
        {"grant_type": CC, "client_assertion_type": JWT_BEARER},
        {},
        False,
        400,
        "invalid_request",
    ),
    (
        "client_assertion garbage",
        {"grant_type": CC, "client_assertion_type": JWT_BEARER, "client_assertion": "garbage"},
        {},
        False,
        401,
        "invalid_client",
    ),
    (
        "client_assertion for unknown client",
        {
            "grant_type": CC,
            "client_assertion_type": JWT_BEARER,
            "client_assertion": "eyJhbGciOiJQUzI1NiJ9.eyJpc3MiOiJ4Iiwic3ViIjoieCJ9.c2ln",
        },
        {},
        False,
        401,
        "invalid_client",
    ),
]


@pytest.mark.parametrize(
    "case, form, headers, use_basic, status, error", MALFORMED, ids=[c[0] for c in MALFORMED]
)
async def test_malformed_token_requests(bank: Bank, case, form, headers, use_basic, status, error) -> None:
    """Each malformed token request gets its RFC 6749 §5.2 error as JSON, never a 500."""
    auth = await bank.create_app() if use_basic else None
    got_status, body, resp_headers = await bank.token_request(form, auth=auth, headers=headers)
    assert (got_status, body["error"]) == (status, error), body
    assert body["error_description"]
    assert resp_headers["Content-Type"].startswith("application/json")
    assert resp_headers["Cache-Control"] == "no-store"
    if status == 401:
        assert resp_headers["WWW-Authenticate"] == 'Basic realm="dcr-sandbox"'


async def test_wrong_secret_is_401(bank: Bank) -> None:
    """A known client with a wrong secret gets 401 invalid_client with a Basic challenge."""
    client_id, secret = await bank.create_app()
    for attempt in (secret + "x", secret[:-1], ""):
        status, body, headers = await bank.token_request(
            {"grant_type": CC}, headers=basic(f"{client_id}:{attempt}".encode())
        )
        assert (status, body["error"]) == (401, "invalid_client")
        assert headers["WWW-Authenticate"].startswith("Basic")
    status, body, _ = await bank.token_request(
        {"grant_type": CC, "client_id": client_id, "client_secret": secret + "x"}
    )
    assert (status, body["error"]) == (401, "invalid_client")


@pytest.mark.parametrize(
    "body, content_type, error",
    [
        (b'{"grant_type": "client_credentials"}', "application/json", "invalid_request"),
        (b"grant_type=client_credentials", "text/plain", "invalid_request"),
        (b"grant_type=client_credentials&grant_type=client_credentials", FORM, "invalid_request"),
        (b"grant_type", FORM, "invalid_request"),
        (b"grant_type=%ff%fe", FORM, "invalid_request"),
        (b"grant_type=client_credentials&scope=accounts%zz", FORM, "invalid_request"),
        (b"grant_type=client_credentials&scope%=accounts", FORM, "invalid_request"),
        (b"grant_type=client_credentials&scope=%ED%A0%80", FORM, "invalid_request"),
        (b"\xff\xfe=\x00", FORM, "invalid_request"),
        (b"grant_type=client_credentials&pad=" + b"x" * 70_000, FORM, "invalid_request"),
        (b"&".join(b"p%d=1" % i for i in range(60)), FORM, "invalid_request"),
    ],
    ids=[
        "json body",
        "text/plain",
        "repeated parameter",
        "no equals sign",
        "bad percent-encoding",
        "invalid percent-escape",
        "lone percent sign",
        "encoded lone surrogate",
        "binary body",
        "oversize body",
        "too many fields",
    ],
)
async def test_unreadable_bodies_are_400(bank: Bank, body, content_type, error) -> None:
    """Wrong content types, malformed or oversize forms are 400 invalid_request."""
    auth = await bank.create_app()
    status, got, _ = await bank.token_request(body, auth=auth, headers={"Content-Type": content_type})
    assert (status, got["error"]) == (400, error), got


async def test_dcr_client_scope_is_limited_to_registration(bank: Bank) -> None:
    """A DCR client gets its registered scope by default and invalid_scope beyond it."""
    created = await bank.new_client(scope="accounts")
    status, body, _ = await bank.token_request(
        {"grant_type": CC}, auth=(created["client_id"], created["client_secret"])
    )
    assert status == 200 and body["scope"] == "accounts"
    status, body, _ = await bank.token_request(
        {"grant_type": CC, "scope": "payments"}, auth=(created["client_id"], created["client_secret"])
    )
    assert (status, body["error"]) == (400, "invalid_scope")


async def test_client_without_client_credentials_grant_is_unauthorized(bank: Bank) -> None:
    """A DCR client that did not register client_credentials may not use it (unauthorized_client)."""
    created = await bank.new_client(grant_types=["authorization_code"])
    status, body, _ = await bank.token_request(
        {"grant_type": CC}, auth=(created["client_id"], created["client_secret"])
    )
    assert (status, body["error"]) == (400, "unauthorized_client")


@pytest.fixture
async def pkjwt(bank: Bank):
    """A client registered with private_key_jwt (PS256) and its TPP key."""
    tpp = tpp_key("assert")
    created = await bank.new_client(tpp, method="private_key_jwt")
    return created["client_id"], tpp


class _In(int):
    """A time `seconds` from when the test runs, not from collection (a long run makes a collection-time
    "600 s in the future" a past time by the time the test runs)."""

    def at(self) -> int:
        return int(time.time()) + int(self)


def _in(seconds: int) -> _In:
    return _In(seconds)


def _at_run_time(overrides: dict[str, Any]) -> dict[str, Any]:
    """`overrides` with every relative time made absolute now."""
    return {k: v.at() if isinstance(v, _In) else v for k, v in overrides.items()}


ASSERTION_CASES = [
    ("wrong aud", {"aud": "https://elsewhere.example/token"}, None),
    ("aud missing", {"aud": None}, None),
    ("expired", {"exp": _in(-600), "iat": _in(-900)}, None),
    ("exp missing", {"exp": None}, None),
    ("lifetime over an hour", {"exp": _in(7200)}, None),
    ("iat in the future", {"iat": _in(600)}, None),
    ("nbf in the future", {"nbf": _in(600)}, None),
    ("jti missing", {"jti": None}, None),
    ("iss differs from sub", {"iss": "someone-else"}, None),
    ("signed by a key not in the JWKS", {}, "other-key"),
    ("kid not in the JWKS", {}, "unknown-kid"),
    ("RS256 not allowed", {}, "RS256"),
    ("HS256 not allowed", {}, "HS256"),
    ("ES256 when PS256 was registered", {}, "ES256"),
    ("a key URL in the header (jku), even signed by the registered key", {}, "jku"),
]


def _signed_differently(bank: Bank, tpp, client_id: str, variant: str) -> str:
    """A valid assertion payload, signed the way `variant` says."""
    payload = unverified(bank.assertion(tpp, client_id))[1]
    if variant == "other-key":
        return sign_jws(jwk.JWK.generate(kty="RSA", size=2048), "PS256", tpp.kid, payload)
    if variant == "unknown-kid":
        return tpp.sign(payload, kid="nope")
    if variant == "RS256":
        return tpp.sign(payload, alg="RS256")
    if variant == "HS256":
        secret = jwk.JWK(kty="oct", k=base64.urlsafe_b64encode(b"k" * 32).decode().rstrip("="))
        return sign_jws(secret, "HS256", tpp.kid, payload)
    if variant == "jku":
        # The one JWS path (gateway/jose) refuses jwk/jku/x5u/x5c headers before any key lookup (RFC 8725 §3.10).
        token = jws.JWS(json.dumps(payload).encode())
        header = {"alg": tpp.alg, "kid": tpp.kid, "jku": "https://attacker.example/jwks"}
        token.add_signature(tpp.key, alg=tpp.alg, protected=json.dumps(header))
        return str(token.serialize(compact=True))
    assert variant == "ES256"
    es = tpp_key("assert-es", "ES256")
    bank.tpp.documents[tpp.kid]["keys"].append(es.public())  # in the JWKS, but not the registered alg
    return es.sign(payload)


@pytest.mark.parametrize("case, overrides, variant", ASSERTION_CASES, ids=[c[0] for c in ASSERTION_CASES])
async def test_invalid_client_assertions_are_401(bank: Bank, pkjwt, case, overrides, variant) -> None:
    """A client assertion that breaks RFC 7523 §3 or the algorithm allow-list is 401 invalid_client."""
    client_id, tpp = pkjwt
    if variant is None:
        assertion = bank.assertion(tpp, client_id, **_at_run_time(overrides))
    else:
        assertion = _signed_differently(bank, tpp, client_id, variant)
    form = {"grant_type": CC, "client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    status, body, headers = await bank.token_request(form)
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert headers["WWW-Authenticate"].startswith("Basic")
    # The same client gets a token with a correct assertion: the failure was the assertion's.
    status, body = await bank.assertion_token(tpp, client_id)
    assert status == 200, body


async def test_assertion_without_kid_uses_the_only_signature_key(bank: Bank, pkjwt) -> None:
    """No `kid` (the OB conformance tool's assertion header is {alg, typ}): verified with the key set's only
    signature key; once the set has two, a `kid` is required again (401), and another key's signature is 401."""
    client_id, tpp = pkjwt
    form = {"grant_type": CC, "client_assertion_type": JWT_BEARER}
    payload = unverified(bank.assertion(tpp, client_id))[1]
    status, body, _ = await bank.token_request({**form, "client_assertion": sign_jws(tpp.key, "PS256", None, payload)})
    assert status == 200, body
    stranger = jwk.JWK.generate(kty="RSA", size=2048)
    fresh = unverified(bank.assertion(tpp, client_id))[1]
    status, body, _ = await bank.token_request({**form, "client_assertion": sign_jws(stranger, "PS256", None, fresh)})
    assert (status, body["error"]) == (401, "invalid_client"), body

    two = tpp_key("assert-two-keys")
    other = await bank.new_client(two, method="private_key_jwt")
    bank.tpp.documents[two.kid]["keys"].append(tpp_key("assert-second").public())  # before the first fetch
    claims = unverified(bank.assertion(two, other["client_id"]))[1]
    status, body, _ = await bank.token_request({**form, "client_assertion": sign_jws(two.key, "PS256", None, claims)})
    assert (status, body["error"]) == (401, "invalid_client"), body
    assert "kid" in body["error_description"]


async def test_assertion_jti_is_single_use(bank: Bank, pkjwt) -> None:
    """The same client assertion cannot be used twice (RFC 7523 §3 item 7)."""
    client_id, tpp = pkjwt
    assertion = bank.assertion(tpp, client_id)
    form = {"grant_type": CC, "client_assertion_type": JWT_BEARER, "client_assertion": assertion}
    status, _, _ = await bank.token_request(form)
    assert status == 200
    status, body, _ = await bank.token_request(form)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "already been used" in body["error_description"]


async def test_assertion_client_id_in_body_must_match(bank: Bank, pkjwt) -> None:
    """client_id in the body, when sent with an assertion, must be the assertion's subject."""
    client_id, tpp = pkjwt
    form = {
        "grant_type": CC,
        "client_assertion_type": JWT_BEARER,
        "client_id": client_id,
        "client_assertion": bank.assertion(tpp, client_id),
    }
    status, _, _ = await bank.token_request(form)
    assert status == 200
    form["client_id"] = str(uuid.uuid4())
    form["client_assertion"] = bank.assertion(tpp, client_id)
    status, body, _ = await bank.token_request(form)
    assert (status, body["error"]) == (400, "invalid_request")


async def test_jwks_is_fetched_only_for_private_key_jwt_clients(bank: Bank) -> None:
    """An assertion for a client registered with client_secret_basic fails without fetching any JWKS."""
    tpp = tpp_key("secretclient")
    created = await bank.new_client(tpp, method="client_secret_basic")
    hits_before = dict(bank.tpp.hits)
    status, body = await bank.assertion_token(tpp, created["client_id"])
    assert (status, body["error"]) == (401, "invalid_client")
    assert bank.tpp.hits == hits_before


async def test_jwks_host_not_allowed_is_refused_without_fetching(bank: Bank) -> None:
    """A software_jwks_endpoint outside sandbox.tpp_jwks_allowed_hosts is never fetched (SSRF guard)."""
    tpp = tpp_key("offhost")
    ssa = await bank.mint_ssa(
        software_jwks_endpoint="https://jwks.example.invalid/tpp.jwks",
        software_redirect_uris=["https://tpp.example.com/callback"],
    )
    claims = bank.registration_claims(
        ssa, token_endpoint_auth_method="private_key_jwt", token_endpoint_auth_signing_alg="PS256"
    )
    status, created, _ = await bank.register(await bank.app_token(), tpp.sign(claims))
    assert status == 201
    status, body = await bank.assertion_token(tpp, created["client_id"])
    assert (status, body["error"]) == (401, "invalid_client")
    assert "tpp_jwks_allowed_hosts" in body["error_description"]


async def test_jwks_unavailable_is_401(bank: Bank, pkjwt) -> None:
    """When the TPP's JWKS endpoint answers 404 the assertion cannot be checked: 401 invalid_client."""
    client_id, tpp = pkjwt
    del bank.tpp.documents[tpp.kid]
    status, body = await bank.assertion_token(tpp, client_id)
    assert (status, body["error"]) == (401, "invalid_client")
    assert "HTTP 404" in body["error_description"]


async def test_jwks_is_cached_and_unknown_kid_does_not_storm(bank: Bank, pkjwt) -> None:
    """The TPP JWKS is fetched once and reused; an unknown kid within the refetch floor does not refetch."""
    client_id, tpp = pkjwt
    for _ in range(3):
        status, body = await bank.assertion_token(tpp, client_id)
        assert status == 200, body
    assert bank.tpp.hits[tpp.kid] == 1
    rotated = tpp_key("assert-rotated")
    bank.tpp.documents[tpp.kid]["keys"].append(rotated.public())
    status, body = await bank.assertion_token(rotated, client_id)
    assert (status, body["error"]) == (401, "invalid_client")
    assert bank.tpp.hits[tpp.kid] == 1


async def test_jwks_cache_ttl_zero_refetches(bank_factory) -> None:
    """With tpp_jwks_cache_seconds 0 every assertion fetches the JWKS again (a rotated key works at once)."""
    bank = await bank_factory(tpp_jwks_cache_seconds=0)
    tpp = tpp_key("ttl0")
    created = await bank.new_client(tpp, method="private_key_jwt")
    for _ in range(2):
        status, body = await bank.assertion_token(tpp, created["client_id"])
        assert status == 200, body
    assert bank.tpp.hits[tpp.kid] == 2
