"""The bank's flow end to end: portal app → token → register → token as the new client → GET/PUT/DELETE."""

from __future__ import annotations

import base64

import pytest

from tests.sandbox.conftest import REDIRECT, REDIRECT_2, REGISTER, Bank, tpp_key, unverified, verify_with_jwks


async def test_full_flow_client_secret_basic(bank: Bank) -> None:
    """A TPP registers, authenticates with the returned pair, reads, updates and deletes its client."""
    app_id, app_secret = await bank.create_app("demo")
    app_token = await bank.token(app_id, app_secret)

    tpp = tpp_key("flow")
    jwks_uri = bank.tpp.publish("flow", tpp)
    ssa = await bank.mint_ssa(
        software_jwks_endpoint=jwks_uri,
        software_redirect_uris=[REDIRECT, REDIRECT_2],
        software_roles=["AISP", "PISP"],
        org_name="Flow Ltd",
    )
    claims = bank.registration_claims(ssa)
    status, created, headers = await bank.register(app_token, tpp.sign(claims))
    assert status == 201, created
    assert headers["Cache-Control"] == "no-store"
    client_id, secret = created["client_id"], created["client_secret"]
    assert client_id != app_id and len(client_id) == 36 and 0 < len(secret) <= 36
    assert created["client_secret_expires_at"] == 0
    assert isinstance(created["client_id_issued_at"], int)
    assert created["software_statement"] == ssa
    assert created["redirect_uris"] == [REDIRECT]
    assert created["token_endpoint_auth_method"] == "client_secret_basic"
    assert created["scope"] == "accounts payments"
    # SSA claims flattened as top-level attributes (OB DCR data model), the SSA's own JWT claims are not.
    ssa_claims = unverified(ssa)[1]
    assert created["org_name"] == "Flow Ltd"
    assert created["software_roles"] == ["AISP", "PISP"]
    assert created["org_id"] == ssa_claims["org_id"]
    assert created["software_jwks_endpoint"] == jwks_uri
    assert "iss" not in created and "jti" not in created and "aud" not in created

    token = await bank.token(client_id, secret)
    status, got, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert status == 200
    assert got == {k: v for k, v in created.items() if k != "client_secret"}

    update = bank.registration_claims(ssa, redirect_uris=[REDIRECT, REDIRECT_2], scope=["accounts"])
    status, updated, _ = await bank.call("PUT", f"{REGISTER}/{client_id}", token, tpp.sign(update))
    assert status == 200, updated
    assert updated["client_id"] == client_id
    assert updated["redirect_uris"] == [REDIRECT, REDIRECT_2]
    assert updated["scope"] == ["accounts"]  # v3.1 array form echoed as given
    assert updated["client_id_issued_at"] == created["client_id_issued_at"]
    status, got, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert got == updated
    # PUT keeps the secret and does not invalidate tokens (OB DCR PUT).
    await bank.token(client_id, secret, scope="accounts")

    status, body, _ = await bank.call("DELETE", f"{REGISTER}/{client_id}", token)
    assert (status, body) == (204, None)
    status, body, headers = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Bearer realm="dcr-sandbox", error="invalid_token"')
    assert body["error"] == "invalid_token"
    # The deleted client's token is refused everywhere, and its credentials no longer work.
    status, body, _ = await bank.register(token, tpp.sign(bank.registration_claims(ssa)))
    assert status == 401
    status, body, _ = await bank.token_request({"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert (status, body["error"]) == (401, "invalid_client")


async def test_full_flow_private_key_jwt(bank: Bank) -> None:
    """A client registered with private_key_jwt gets tokens with ES256 assertions from its SSA's JWKS."""
    tpp = tpp_key("pkjwt", "ES256")
    created = await bank.new_client(tpp, method="private_key_jwt")
    client_id = created["client_id"]
    assert created["token_endpoint_auth_method"] == "private_key_jwt"
    assert created["token_endpoint_auth_signing_alg"] == "ES256"
    assert created["client_secret"]  # the page promises the pair, whatever the auth method

    status, body = await bank.assertion_token(tpp, client_id)
    assert status == 200, body
    token = body["access_token"]
    status, got, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert status == 200 and got["client_id"] == client_id

    # aud may also be the issuer (RFC 7523 §3 item 3).
    status, body = await bank.assertion_token(tpp, client_id, aud=[bank.gateway_url, "https://other.example"])
    assert status == 200, body

    status, body, _ = await bank.call("DELETE", f"{REGISTER}/{client_id}", token)
    assert status == 204
    status, body = await bank.assertion_token(tpp, client_id)
    assert (status, body["error"]) == (401, "invalid_client")


async def test_access_token_is_rfc9068_jwt(bank: Bank) -> None:
    """Tokens are at+jwt, PS256, kid from /jwks, with iss, sub, client_id, aud, scope, iat, exp, jti."""
    client_id, secret = await bank.create_app()
    status, body, headers = await bank.token_request(
        {"grant_type": "client_credentials", "scope": "accounts"}, auth=(client_id, secret)
    )
    assert status == 200
    assert headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["scope"] == "accounts"
    async with bank.http.get(bank.gateway_url + "/jwks") as r:
        jwks_doc = await r.json()
    assert all(set(k) >= {"kty", "kid", "n", "e"} and "d" not in k for k in jwks_doc["keys"])
    header, claims = verify_with_jwks(body["access_token"], jwks_doc)
    assert header["typ"] == "at+jwt" and header["alg"] == "PS256"
    assert claims["iss"] == bank.gateway_url and claims["aud"] == bank.gateway_url
    assert claims["sub"] == claims["client_id"] == client_id
    assert claims["scope"] == "accounts"
    assert claims["exp"] - claims["iat"] == 3600
    assert len(claims["jti"]) == 36


async def test_discovery_advertises_the_gateway(bank: Bank) -> None:
    """Discovery names the gateway's public URL as token and registration endpoint."""
    async with bank.http.get(bank.gateway_url + "/.well-known/openid-configuration") as r:
        assert r.status == 200
        doc = await r.json()
    assert doc["issuer"] == bank.gateway_url
    assert doc["token_endpoint"] == bank.gateway_url + "/oauth2/token"
    assert doc["registration_endpoint"] == bank.gateway_url + REGISTER
    assert doc["jwks_uri"] == bank.gateway_url + "/jwks"
    assert doc["token_endpoint_auth_methods_supported"] == [
        "client_secret_basic",
        "client_secret_post",
        "private_key_jwt",
        "tls_client_auth",
        "self_signed_tls_client_auth",
    ]
    assert doc["tls_client_certificate_bound_access_tokens"] is True
    for name in (
        "token_endpoint_auth_signing_alg_values_supported",
        "id_token_signing_alg_values_supported",
        "request_object_signing_alg_values_supported",
    ):
        assert doc[name] == ["PS256", "ES256"]
    assert doc["response_types_supported"] == ["code", "code id_token"]
    assert "client_credentials" in doc["grant_types_supported"]
    assert doc["scopes_supported"] == ["openid", "accounts", "payments", "fundsconfirmations"]


async def test_configured_issuer_and_audience(bank_factory) -> None:
    """sandbox.issuer and sandbox.access_token_audience change discovery and token claims."""
    bank = await bank_factory(
        issuer="https://bank.example/as", access_token_audience="https://api.bank.example"
    )
    async with bank.http.get(bank.gateway_url + "/.well-known/openid-configuration") as r:
        doc = await r.json()
    assert doc["issuer"] == "https://bank.example/as"
    assert doc["token_endpoint"] == bank.gateway_url + "/oauth2/token"
    token = await bank.app_token()
    claims = unverified(token)[1]
    assert claims["iss"] == "https://bank.example/as" and claims["aud"] == "https://api.bank.example"
    status, _, _ = await bank.register(token, b"x")  # the sandbox accepts its own tokens under that issuer
    assert status == 400


@pytest.mark.parametrize(
    "content_type, wrap",
    [
        ("application/jose", lambda s: s),
        ("application/jwt", lambda s: s),
        ("application/json", lambda s: f'"{s}"'),
        ("application/jose; charset=utf-8", lambda s: s + "\n"),
    ],
)
async def test_registration_content_types(bank: Bank, content_type, wrap) -> None:
    """application/jose, application/jwt and application/json carrying the JWS string are all accepted."""
    tpp = tpp_key("ctype")
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    status, body, _ = await bank.register(
        await bank.app_token(), wrap(tpp.sign(bank.registration_claims(ssa))), content_type=content_type
    )
    assert status == 201, body


async def test_one_software_id_many_registrations(bank: Bank) -> None:
    """Several registrations may share one software_id; each gets its own client_id."""
    tpp = tpp_key("multi")
    ssa = await bank.mint_ssa(software_redirect_uris=[REDIRECT])
    token = await bank.app_token()
    ids = set()
    for _ in range(3):
        status, body, _ = await bank.register(token, tpp.sign(bank.registration_claims(ssa)))
        assert status == 201
        ids.add(body["client_id"])
    assert len(ids) == 3


def percent_all(text: str) -> str:
    """Percent-encode every byte (valid form-encoding that changes every character)."""
    return "".join(f"%{b:02X}" for b in text.encode())


async def test_basic_credentials_are_form_decoded(bank: Bank) -> None:
    """client_secret_basic credentials are form-encoded before base64 (RFC 6749 §2.3.1) and decoded again."""
    client_id, secret = await bank.create_app()
    encoded = f"{percent_all(client_id)}:{percent_all(secret)}"
    header = "Basic " + base64.b64encode(encoded.encode()).decode()
    status, body, _ = await bank.token_request(
        {"grant_type": "client_credentials"}, headers={"Authorization": header}
    )
    assert status == 200, body


async def test_client_secret_post(bank: Bank) -> None:
    """client_secret_post authenticates with client_id and client_secret in the form."""
    client_id, secret = await bank.create_app()
    status, body, _ = await bank.token_request(
        {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    )
    assert status == 200, body
    assert unverified(body["access_token"])[1]["client_id"] == client_id


async def test_get_own_portal_app(bank: Bank) -> None:
    """GET on a developer-portal app's own id describes the app (it was not created by DCR)."""
    client_id, secret = await bank.create_app("mine")
    status, body, _ = await bank.call("GET", f"{REGISTER}/{client_id}", await bank.token(client_id, secret))
    assert status == 200
    assert body["client_id"] == client_id and body["client_name"] == "mine" and body["sandbox_app"] is True


async def test_interaction_id_echoed(bank: Bank) -> None:
    """The sandbox echoes a valid x-fapi-interaction-id (FAPI) through the gateway."""
    iid = "7d1f6a8e-3b0c-4e58-9a4f-2a6d3c1b0e9f"
    status, _, headers = await bank.call(
        "GET", "/.well-known/openid-configuration", headers={"x-fapi-interaction-id": iid}
    )
    assert status == 200 and headers["x-fapi-interaction-id"] == iid
