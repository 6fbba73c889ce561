"""Every error status on the bank's page, through the gateway: 400, 401 (+ revocation), 403, 405."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from jwcrypto import jwk

from tests.sandbox.conftest import REDIRECT, REGISTER, Bank, sign_jws, tpp_key, unverified

UNKNOWN = "00000000-0000-4000-8000-000000000000"


def assert_bearer_401(status: int, body: dict, headers: dict) -> None:
    """A 401 with an RFC 6750 challenge and a JSON error body."""
    assert status == 401, body
    assert headers["WWW-Authenticate"].startswith('Bearer realm="dcr-sandbox"')
    assert body["error"] == "invalid_token" and body["error_description"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_unknown_client_id_is_401_and_revokes_the_token(bank: Bank, method) -> None:
    """An unknown ClientId is 401 and the presented token is revoked at once, then refused everywhere."""
    client_id, secret = await bank.create_app()
    token = await bank.token(client_id, secret)
    body = tpp_key("tpp").sign({"x": 1}) if method == "PUT" else None
    status, err, headers = await bank.call(method, f"{REGISTER}/{UNKNOWN}", token, body)
    assert_bearer_401(status, err, headers)
    assert "revoked" in err["error_description"]
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    # The same token is now refused on every endpoint that takes one.
    for m, path in (("GET", f"{REGISTER}/{client_id}"), ("POST", REGISTER), ("GET", f"{REGISTER}/{UNKNOWN}")):
        status, err, headers = await bank.call(m, path, token, b"x" if m == "POST" else None)
        assert_bearer_401(status, err, headers)
        assert "revoked" in err["error_description"]
    # The client itself is fine: a new token works.
    status, _, _ = await bank.call("GET", f"{REGISTER}/{client_id}", await bank.token(client_id, secret))
    assert status == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_other_clients_id_is_403(bank: Bank, method) -> None:
    """A valid token of another existing client is 403, and the registration is untouched."""
    victim = await bank.new_client()
    other = await bank.new_client()
    token = await bank.token(other["client_id"], other["client_secret"])
    body = None
    if method == "PUT":
        body = tpp_key("tpp").sign(bank.registration_claims(victim["software_statement"]))
    status, err, _ = await bank.call(method, f"{REGISTER}/{victim['client_id']}", token, body)
    assert status == 403 and err["error"] == "access_denied"
    own = await bank.token(victim["client_id"], victim["client_secret"])
    status, got, _ = await bank.call("GET", f"{REGISTER}/{victim['client_id']}", own)
    assert status == 200 and got["redirect_uris"] == victim["redirect_uris"]
    # 403 does not revoke the caller's token.
    status, _, _ = await bank.call("GET", f"{REGISTER}/{other['client_id']}", token)
    assert status == 200


async def test_portal_app_token_on_a_dcr_client_is_403(bank: Bank) -> None:
    """A developer-portal app's token may not read a DCR client."""
    created = await bank.new_client()
    status, _, _ = await bank.call("GET", f"{REGISTER}/{created['client_id']}", await bank.app_token())
    assert status == 403


@pytest.mark.parametrize(
    "overrides, error",
    [
        ({"redirect_uris": ["https://evil.example/cb"]}, "invalid_redirect_uri"),
        ({"token_endpoint_auth_method": "client_secret_jwt"}, "invalid_client_metadata"),
        ({"grant_types": None}, "invalid_client_metadata"),
        ({"id_token_signed_response_alg": "RS256"}, "invalid_client_metadata"),
        ({"software_statement": "not-a-jws"}, "invalid_software_statement"),
        ({"exp": 1_000_000}, "invalid_client_metadata"),
    ],
)
async def test_put_bad_metadata_is_400(bank: Bank, overrides, error) -> None:
    """PUT validates the full request like POST: bad metadata is 400 (RFC 7591 code), nothing changes."""
    created = await bank.new_client()
    token = await bank.token(created["client_id"], created["client_secret"])
    claims = bank.registration_claims(created["software_statement"], **overrides)
    status, err, headers = await bank.call(
        "PUT", f"{REGISTER}/{created['client_id']}", token, tpp_key("tpp").sign(claims)
    )
    assert status == 400 and err["error"] == error, err
    assert headers["Content-Type"].startswith("application/json")
    status, got, _ = await bank.call("GET", f"{REGISTER}/{created['client_id']}", token)
    assert got == {k: v for k, v in created.items() if k != "client_secret"}


async def test_put_cannot_change_software_id(bank: Bank) -> None:
    """PUT with an SSA of another software_id is refused (400), the client keeps its SSA."""
    created = await bank.new_client()
    token = await bank.token(created["client_id"], created["client_secret"])
    other_ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    status, err, _ = await bank.call(
        "PUT",
        f"{REGISTER}/{created['client_id']}",
        token,
        tpp_key("tpp").sign(bank.registration_claims(other_ssa)),
    )
    assert status == 400 and "software_id" in err["error_description"]


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer not-a-jwt", "Basic dXNlcjpwYXNz", "Bearer a b", "bearer eyJ.eyJ.sig"],
)
async def test_missing_or_malformed_token_is_401(bank: Bank, method, authorization) -> None:
    """No token, a non-Bearer scheme or a malformed token is 401 with a Bearer challenge."""
    created = await bank.new_client()
    headers = {"Authorization": authorization} if authorization else {}
    body = b"x" if method == "PUT" else None
    status, err, resp_headers = await bank.call(
        method, f"{REGISTER}/{created['client_id']}", None, body, headers=headers
    )
    assert_bearer_401(status, err, resp_headers)
    if authorization is None:
        assert "error=" not in resp_headers["WWW-Authenticate"]  # RFC 6750 §3.1: no code without a token


async def test_post_without_token_is_401(bank: Bank) -> None:
    """POST /register requires a sandbox access token (the bank's page: bearer token on every call)."""
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    status, err, headers = await bank.register(None, tpp_key("tpp").sign(bank.registration_claims(ssa)))
    assert_bearer_401(status, err, headers)


async def test_token_signed_by_another_key_is_401(bank: Bank) -> None:
    """A token with the right shape and kid but another key's signature is refused."""
    created = await bank.new_client()
    genuine = await bank.token(created["client_id"], created["client_secret"])
    header, claims = unverified(genuine)
    forged = sign_jws(jwk.JWK.generate(kty="RSA", size=2048), "PS256", header["kid"], claims, "at+jwt")
    status, err, headers = await bank.call("GET", f"{REGISTER}/{created['client_id']}", forged)
    assert_bearer_401(status, err, headers)


def sandbox_token_key(bank: Bank) -> jwk.JWK:
    """The sandbox's own token-signing key, read from its state directory (to forge near-valid tokens)."""
    return jwk.JWK.from_pem((Path(bank.settings.sandbox.state_dir) / "token-signing-key.pem").read_bytes())


FORGED = [
    ("typ JWT instead of at+jwt", {}, "JWT"),
    ("no typ", {}, None),
    ("wrong issuer", {"iss": "https://other.example"}, "at+jwt"),
    ("wrong audience", {"aud": "https://other.example"}, "at+jwt"),
    ("sub differs from client_id", {"sub": "someone-else"}, "at+jwt"),
    ("no jti", {"jti": None}, "at+jwt"),
    ("no exp", {"exp": None}, "at+jwt"),
    ("exp a string", {"exp": "never"}, "at+jwt"),
    ("iat in the future", {"iat": int(time.time()) + 3600}, "at+jwt"),
]


@pytest.mark.parametrize("case, overrides, typ", FORGED, ids=[c[0] for c in FORGED])
async def test_tokens_signed_by_the_sandbox_key_with_bad_claims_are_401(
    bank: Bank, case, overrides, typ
) -> None:
    """Signature alone is not enough: typ (RFC 9068 §4), iss, aud, sub, jti, exp and iat are all checked."""
    client_id, secret = await bank.create_app()
    genuine = await bank.token(client_id, secret)
    _, claims = unverified(genuine)
    key = sandbox_token_key(bank)
    resigned = sign_jws(key, "PS256", key.thumbprint(), claims, "at+jwt")
    status, _, _ = await bank.call("GET", f"{REGISTER}/{client_id}", resigned)
    assert status == 200  # the re-signing itself is faithful
    for name, value in overrides.items():
        if value is None:
            claims.pop(name)
        else:
            claims[name] = value
    forged = sign_jws(key, "PS256", key.thumbprint(), claims, typ)
    status, err, headers = await bank.call("GET", f"{REGISTER}/{client_id}", forged)
    assert_bearer_401(status, err, headers)


async def test_ssa_is_not_an_access_token(bank: Bank) -> None:
    """A JWT that is not typ at+jwt (here an SSA) is refused as a bearer token."""
    ssa = await bank.mint_ssa()
    status, err, headers = await bank.call("GET", f"{REGISTER}/{UNKNOWN}", ssa)
    assert_bearer_401(status, err, headers)


async def test_expired_token_is_401(bank_factory) -> None:
    """A token past its exp (lifetime 2 s, no leeway) is refused: the sandbox's own token service issues the same
    token 3.1 s in the past (its `now=`) instead of the test sleeping."""
    bank = await bank_factory(access_token_lifetime_seconds=2, clock_skew_seconds=0)
    client_id, secret = await bank.create_app()
    token = await bank.token(client_id, secret)
    status, _, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert status == 200
    _, claims = unverified(token)
    assert bank.service is not None
    token, _ = bank.service().resources.tokens.issue(client_id, claims["scope"], now=time.time() - 3.1)
    status, err, headers = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert_bearer_401(status, err, headers)
    assert "expired" in err["error_description"]


async def test_token_from_another_sandbox_is_401(bank_factory, tmp_path: Path) -> None:
    """A token issued by a different sandbox (other keys) is not accepted."""
    one = await bank_factory(tmp_path / "one")
    two = await bank_factory(tmp_path / "two")
    created = await one.new_client()
    token = await two.app_token()
    status, err, headers = await one.call("GET", f"{REGISTER}/{created['client_id']}", token)
    assert_bearer_401(status, err, headers)


async def test_client_id_header_must_match_the_token(bank: Bank) -> None:
    """The optional client_id header, when sent, must name the token's client (else 401)."""
    created = await bank.new_client()
    token = await bank.token(created["client_id"], created["client_secret"])
    path = f"{REGISTER}/{created['client_id']}"
    status, _, _ = await bank.call("GET", path, token, headers={"client_id": created["client_id"]})
    assert status == 200
    status, err, headers = await bank.call("GET", path, token, headers={"client_id": UNKNOWN})
    assert_bearer_401(status, err, headers)


async def test_delete_portal_app_is_405(bank: Bank) -> None:
    """DELETE of a developer-portal app's id (not created by DCR) is 405 with Allow; the app keeps working."""
    client_id, secret = await bank.create_app()
    token = await bank.token(client_id, secret)
    status, err, headers = await bank.call("DELETE", f"{REGISTER}/{client_id}", token)
    assert status == 405 and err["error"] == "method_not_allowed"
    assert headers["Allow"] == "GET"
    status, _, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert status == 200


async def test_put_portal_app_is_403(bank: Bank) -> None:
    """PUT on a developer-portal app's id is 403: apps are not managed through DCR."""
    client_id, secret = await bank.create_app()
    token = await bank.token(client_id, secret)
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    status, err, _ = await bank.call(
        "PUT", f"{REGISTER}/{client_id}", token, tpp_key("tpp").sign(bank.registration_claims(ssa))
    )
    assert status == 403 and err["error"] == "access_denied"


async def test_delete_invalidates_every_token_of_the_client(bank: Bank) -> None:
    """DELETE invalidates all tokens issued to the client, not only the one used to delete."""
    created = await bank.new_client()
    tokens = [await bank.token(created["client_id"], created["client_secret"]) for _ in range(3)]
    status, _, _ = await bank.call("DELETE", f"{REGISTER}/{created['client_id']}", tokens[0])
    assert status == 204
    for token in tokens:
        status, err, headers = await bank.call("GET", f"{REGISTER}/{created['client_id']}", token)
        assert_bearer_401(status, err, headers)
    # A second DELETE (RFC 7592 §2.3, OIDF DCR tests) also fails.
    status, _, _ = await bank.call("DELETE", f"{REGISTER}/{created['client_id']}", tokens[1])
    assert status == 401
    # With another valid token the deleted id is simply unknown: 401, and that token is revoked.
    app_token = await bank.app_token()
    status, err, _ = await bank.call("GET", f"{REGISTER}/{created['client_id']}", app_token)
    assert status == 401 and "revoked" in err["error_description"]


@pytest.mark.parametrize(
    "body, content_type, needle",
    [
        (b"", "application/jose", "missing"),
        (b"not a jws", "application/jose", "not a JWS"),
        (b"a.b.c", "application/jwt", "not a JWS"),
        (b'{"redirect_uris": []}', "application/json", "not a JWS"),
        (b'"unterminated', "application/json", "JSON string"),
        (b"\xff\xfe", "application/jose", "UTF-8"),
        (b"x", "text/plain", "application/jose"),
        (b"x" * 70_000, "application/jose", "exceeds"),
    ],
)
async def test_post_malformed_body_is_400(bank: Bank, body, content_type, needle) -> None:
    """Unreadable registration bodies are 400 invalid_client_metadata, never 500."""
    status, err, headers = await bank.register(await bank.app_token(), body, content_type=content_type)
    assert status == 400, err
    assert err["error"] == "invalid_client_metadata" and needle in err["error_description"]
    assert headers["Cache-Control"] == "no-store"


async def test_registration_request_unsigned_payload_still_validated(bank: Bank) -> None:
    """The backend does not verify signatures (the gateway does), but it validates every claim."""
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    claims = bank.registration_claims(ssa, jti="not-a-uuid")
    status, err, _ = await bank.register(await bank.app_token(), tpp_key("tpp").sign(claims))
    assert status == 400 and "jti" in err["error_description"]


async def test_expired_registration_request_is_400(bank: Bank) -> None:
    """A request JWT past its exp is refused (OB: ASPSP MUST reject if now > exp)."""
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    now = int(time.time())
    claims = bank.registration_claims(ssa, iat=now - 900, exp=now - 600)
    status, err, _ = await bank.register(await bank.app_token(), tpp_key("tpp").sign(claims))
    assert status == 400 and "expired" in err["error_description"]
