"""The bank's flow through the gateway with the SHIPPED policies, in front of the real sandbox bank.

Portal app → token → POST register → 201 → token as the new client → GET 200 → PUT 200 → DELETE 204 →
GET 401 → the old token refused; plus the bank page's refusals as the gateway applies them.
"""

from __future__ import annotations

from gateway.sandbox import client_auth
from tests.sandbox.conftest import REDIRECT, REGISTER, SANDBOX_ISSUER, Bank, TppKey, tpp_key
from tests.sandbox.test_token_mtls import CERT, SOFTWARE_ID, SUBJECT, TRUST_LOOPBACK, self_signed_cert, token_at_sandbox


async def _register(bank: Bank) -> tuple[str, str, str, str]:
    """A new private_key_jwt DCR client (the shipped policy allows the FAPI methods only);
    returns (app_id, app_token, client_id, client access token)."""
    app_id, app_secret = await bank.create_app("flow")
    app_token = await bank.token(app_id, app_secret)
    tpp = tpp_key("gwflow")
    ssa = await bank.mint_ssa(software_jwks_endpoint=bank.tpp.publish("gwflow", tpp),
                              software_redirect_uris=[REDIRECT], software_roles=["AISP", "PISP"])
    claims = bank.registration_claims(ssa, aud=SANDBOX_ISSUER, token_endpoint_auth_method="private_key_jwt",
                                      token_endpoint_auth_signing_alg="PS256")
    status, created, _ = await bank.register(app_token, tpp.sign(claims), headers={"client_id": app_id})
    assert status == 201, created
    status, body = await bank.assertion_token(tpp, created["client_id"])
    assert status == 200, body
    return app_id, app_token, created["client_id"], body["access_token"]


async def test_the_banks_flow_through_the_shipped_policies(bank_factory) -> None:
    """Every step of the bank's page through the gateway's shipped policies and the sandbox."""
    bank: Bank = await bank_factory(shipped_policies=True)
    _, _, client_id, token = await _register(bank)
    me = {"client_id": client_id}

    status, got, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token, headers=me)
    assert status == 200 and got["client_id"] == client_id

    tpp = tpp_key("gwflow")
    update = bank.registration_claims(got["software_statement"], aud=SANDBOX_ISSUER, scope="accounts",
                                      token_endpoint_auth_method="private_key_jwt",
                                      token_endpoint_auth_signing_alg="PS256")
    status, updated, _ = await bank.call("PUT", f"{REGISTER}/{client_id}", token, tpp.sign(update), headers=me)
    assert status == 200, updated

    status, body, _ = await bank.call("DELETE", f"{REGISTER}/{client_id}", token, headers=me)
    assert status == 204
    status, body, headers = await bank.call("GET", f"{REGISTER}/{client_id}", token, headers=me)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Bearer realm="dcr-gateway", error="invalid_token"')
    assert body["error_description"] == "the access token has been revoked"


async def test_unknown_client_id_is_401_and_revokes_the_token(bank_factory) -> None:
    """GET on a ClientId the token was not issued to: 401, and the token is refused from then on."""
    bank: Bank = await bank_factory(shipped_policies=True)
    _, _, client_id, token = await _register(bank)
    status, body, headers = await bank.call("GET", f"{REGISTER}/no-such-client", token,
                                            headers={"client_id": client_id})
    assert status == 401 and body["error"] == "invalid_token"
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    status, body, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token, headers={"client_id": client_id})
    assert status == 401 and body["error_description"] == "the access token has been revoked"


async def test_every_call_needs_the_token_and_the_client_id_header(bank_factory) -> None:
    """No token → 401; no client_id header → 401; a foreign client_id header → 401 (token not revoked)."""
    bank: Bank = await bank_factory(shipped_policies=True)
    app_id, app_token, client_id, token = await _register(bank)
    status, _, headers = await bank.call("GET", f"{REGISTER}/{client_id}", None, headers={"client_id": client_id})
    assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="dcr-gateway"'
    status, body, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token)
    assert status == 401 and body["error_description"] == "client_id header is required"
    status, _, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token, headers={"client_id": app_id})
    assert status == 401
    status, _, _ = await bank.call("GET", f"{REGISTER}/{client_id}", token, headers={"client_id": client_id})
    assert status == 200
    # POST without the client_id header
    status, body, _ = await bank.register(app_token, "x.y.z")
    assert status == 401 and body["error_description"] == "client_id header is required"


async def test_delete_of_a_portal_app_is_405_from_the_bank(bank_factory) -> None:
    """The sandbox answers 405 for a ClientId that was not created by DCR; the gateway relays it."""
    bank: Bank = await bank_factory(shipped_policies=True)
    app_id, app_secret = await bank.create_app("portal")
    token = await bank.token(app_id, app_secret)
    status, _, headers = await bank.call("DELETE", f"{REGISTER}/{app_id}", token, headers={"client_id": app_id})
    assert status == 405 and headers["Allow"] == "GET"


async def test_sandbox_portal_paths_are_not_reachable_through_the_gateway(bank_factory) -> None:
    """The developer portal stays on the sandbox port: the gateway has no policy for it."""
    bank: Bank = await bank_factory(shipped_policies=True)
    for path in ("/sandbox/apps", "/sandbox/ssa", "/directory/jwks"):
        status, body, _ = await bank.call("POST" if path != "/directory/jwks" else "GET", path)
        assert status == 404 and body["error"] == "not_found"



async def _register_for(bank: Bank, method: str, **claims: str) -> tuple[str, TppKey]:
    """A DCR client of `method` registered through the shipped policies (software SOFTWARE_ID); its client_id
    and its TPP key, whose key set is published at the SSA's software_jwks_endpoint."""
    app_id, app_secret = await bank.create_app(method)
    tpp = tpp_key(f"gw-{method}")
    ssa = await bank.mint_ssa(software_jwks_endpoint=bank.tpp.publish(tpp.kid, tpp), software_id=SOFTWARE_ID,
                              software_redirect_uris=[REDIRECT])
    request = bank.registration_claims(ssa, aud=SANDBOX_ISSUER, token_endpoint_auth_method=method, **claims)
    status, created, _ = await bank.register(await bank.token(app_id, app_secret), tpp.sign(request),
                                             headers={"client_id": app_id})
    assert status == 201, (method, created)
    return created["client_id"], tpp


async def test_the_fapi_methods_register_and_get_a_token_through_the_shipped_policies(bank_factory) -> None:
    """Each method the sandbox advertises for registered clients and FAPI allows (private_key_jwt,
    tls_client_auth, self_signed_tls_client_auth) registers through the shipped policies and then gets a
    token (the client_secret_* methods are the portal apps', refused for DCR: policies/dcr_test.yaml)."""
    bank: Bank = await bank_factory(shipped_policies=True, trust=TRUST_LOOPBACK)
    assert {"private_key_jwt", "tls_client_auth", "self_signed_tls_client_auth"} <= set(client_auth.AUTH_METHODS)
    client_id, tpp = await _register_for(bank, "private_key_jwt", token_endpoint_auth_signing_alg="PS256")
    status, body = await bank.assertion_token(tpp, client_id)
    assert status == 200, body
    client_id, _ = await _register_for(bank, "tls_client_auth", tls_client_auth_subject_dn=SUBJECT)
    status, body, _ = await token_at_sandbox(bank, {"grant_type": "client_credentials", "client_id": client_id}, CERT)
    assert status == 200, body
    cert = self_signed_cert()
    client_id, tpp = await _register_for(bank, "self_signed_tls_client_auth")
    bank.tpp.documents[tpp.kid]["keys"].append(cert.tls_jwk("transport-1"))
    status, body, _ = await token_at_sandbox(bank, {"grant_type": "client_credentials", "client_id": client_id}, cert)
    assert status == 200, body
