"""The sandbox believes what the gateway verified only through the gateway's signed facts.

The OB standard profile end to end through the shipped policies/ob_standard: a registration authenticated by the
transport certificate alone (no bearer token), a `tls_client_auth` token through the gateway bound to that
certificate, and the token used over it — the certificate travelling from the gateway to the sandbox only inside
the signed facts (the gateway keeps the certificate header to itself). Then what the sandbox refuses when it is
called directly: no facts, facts signed by another key, facts made for another request.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.certificates import parse_dn, subject_rdns
from gateway.jose import JwtSigner, SigningKey, generate_signing_key
from gateway.policy.assertion import FACTS_TYP
from tests.sandbox.conftest import (
    REGISTER,
    SANDBOX_ISSUER,
    Bank,
    BankFactory,
    tpp_key,
    unverified,
    with_overrides,
)
from tests.sandbox.test_token_mtls import CC, CERT, SOFTWARE_ID, SUBJECT, Cert, client_cert, cnf_of

HEADER = "X-DCR-Assertion"


FACTS_KEY = generate_signing_key("EC")
"""The gateway's signing key for its facts (upstream.signed_facts.key_file), so the tests can forge variants."""


@pytest.fixture
async def ob_bank(bank_factory: BankFactory, tmp_path: Path) -> Bank:
    """The OB standard profile: ob_standard policies, client_certificate enforced, certificate-only POST."""
    key_file = tmp_path / "facts-key.pem"
    key_file.write_bytes(FACTS_KEY.to_pem())
    return await bank_factory(shipped_policies=True, enforce_client_certificate=True, profile="ob_standard",
                              facts_key_file=key_file)


async def _request(bank: Bank, cert: Cert, **overrides: Any) -> str:
    """A signed tls_client_auth registration request for SOFTWARE_ID, whose key set lists `cert` (use: tls)."""
    tpp = tpp_key("ob-facts")
    jwks_uri = bank.tpp.publish(tpp.kid, tpp)
    bank.tpp.documents[tpp.kid]["keys"].append(cert.tls_jwk("transport-1"))
    ssa = await bank.mint_ssa(software_id=SOFTWARE_ID, software_jwks_endpoint=jwks_uri,
                              software_redirect_uris=["https://tpp.example.com/callback"])
    claims = bank.registration_claims(ssa, aud=SANDBOX_ISSUER, token_endpoint_auth_method="tls_client_auth",
                                      tls_client_auth_subject_dn=SUBJECT, **overrides)
    return tpp.sign(claims)


async def test_the_ob_flow_runs_on_the_certificate_through_the_gateway(ob_bank: Bank) -> None:
    """POST by certificate alone (201), token by tls_client_auth through the gateway (bound to the certificate),
    GET over it (200) and over another certificate (401), DELETE (204), then 401."""
    status, created, _ = await ob_bank.register(None, await _request(ob_bank, CERT), headers=CERT.header())
    assert status == 201, created
    client_id = created["client_id"]
    status, body, _ = await ob_bank.token_request({"grant_type": CC, "client_id": client_id}, headers=CERT.header())
    assert status == 200, body
    assert cnf_of(body) == {"x5t#S256": CERT.x5t_s256}
    token = body["access_token"]
    path = f"{REGISTER}/{client_id}"
    status, doc, _ = await ob_bank.call("GET", path, token, headers=CERT.header())
    assert status == 200 and doc["client_id"] == client_id, doc
    status, doc, _ = await ob_bank.call("GET", path, token, headers=client_cert().header())
    assert status == 401 and doc["error"] == "invalid_token", doc
    status, _, _ = await ob_bank.call("DELETE", path, token, headers=CERT.header())
    assert status == 204
    status, doc, _ = await ob_bank.call("GET", path, token, headers=CERT.header())
    assert status == 401, doc


async def test_tls_client_auth_through_the_gateway_needs_the_registered_subject(ob_bank: Bank) -> None:
    """The subject DN the sandbox matches comes from the signed facts: another subject's certificate is 401."""
    status, created, _ = await ob_bank.register(None, await _request(ob_bank, CERT), headers=CERT.header())
    assert status == 201, created
    stranger = client_cert("otherSoftware")
    status, body, _ = await ob_bank.token_request({"grant_type": CC, "client_id": created["client_id"]},
                                                  headers=stranger.header())
    assert status == 401 and body["error"] == "invalid_client", body
    status, body, _ = await ob_bank.token_request({"grant_type": CC, "client_id": created["client_id"]})
    assert status == 401 and body["error"] == "invalid_client", body  # no certificate at all


async def _post_to_sandbox(bank: Bank, body: str, headers: dict[str, str]) -> tuple[int, Any]:
    async with bank.http.post(bank.sandbox_url + REGISTER, data=body,
                              headers={"Content-Type": "application/jose", **headers}) as r:
        return r.status, await r.json()


def _facts(bank: Bank, key: SigningKey = FACTS_KEY, **claims: Any) -> str:
    """Signed facts for a POST to the register path as the bank's gateway makes them (its key, FACTS_KEY),
    with `claims` replacing (None deleting) members."""
    gw = bank.gateway
    assert gw is not None
    now = int(time.time())
    base: dict[str, Any] = {"iss": gw.settings.server.public_url, "aud": bank.sandbox_url, "iat": now,
                            "exp": now + 60, "jti": "j1", "method": "POST", "path": REGISTER,
                            "policy": "dcr_register_create", "interaction_id": "test",
                            "cnf": {"x5t#S256": CERT.x5t_s256}, "software_id": SOFTWARE_ID}
    return JwtSigner(key, typ=FACTS_TYP).sign(with_overrides(base, claims))


async def test_a_direct_post_without_signed_facts_is_401(ob_bank: Bank) -> None:
    """Straight to the sandbox port (bypassing the gateway): no facts, no registration."""
    request = await _request(ob_bank, CERT)
    status, body = await _post_to_sandbox(ob_bank, request, CERT.header())
    assert status == 401 and body["error"] == "invalid_client", body


async def test_facts_the_sandbox_cannot_believe_are_401(ob_bank: Bank) -> None:
    """Signed by another key, made for another request, expired, for another backend or software, without a
    certificate, or typed otherwise: each refused; the same facts made right are accepted (so each refusal is
    about the one thing changed)."""
    request = await _request(ob_bank, CERT)
    for forged in (
        _facts(ob_bank, generate_signing_key("EC")),
        _facts(ob_bank, path=REGISTER + "/x"),
        _facts(ob_bank, method="PUT"),
        _facts(ob_bank, exp=int(time.time()) - 600),
        _facts(ob_bank, aud="http://other.backend"),
        _facts(ob_bank, iss="http://other.gateway"),
        _facts(ob_bank, software_id="otherSoftware"),
        _facts(ob_bank, cnf=None),
        JwtSigner(FACTS_KEY, typ="at+jwt").sign(unverified(_facts(ob_bank))[1]),
    ):
        status, body = await _post_to_sandbox(ob_bank, request, {HEADER: forged})
        assert status == 401, body
    status, body = await _post_to_sandbox(ob_bank, request, {HEADER: _facts(ob_bank)})
    assert status == 201, body


async def test_two_facts_headers_are_refused(ob_bank: Bank) -> None:
    request = await _request(ob_bank, CERT)
    good = _facts(ob_bank)
    async with ob_bank.http.post(ob_bank.sandbox_url + REGISTER, data=request,
                                 headers=[("Content-Type", "application/jose"), (HEADER, good), (HEADER, good)]) as r:
        assert r.status == 401


def test_the_signed_subject_reads_back_as_the_certificate_subject() -> None:
    """The gateway signs cert.subject.rfc4514_string(); the sandbox's parse of it equals the certificate's own
    RDNs (what tls_client_auth compares), escapes and all."""
    tricky = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, 'Tricky, Ltd + "Co"'),
        x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-123456"),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "0015800001041REAAY"),
        x509.NameAttribute(NameOID.COMMON_NAME, " spaced#cn "),
    ])
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(tricky).issuer_name(tricky).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256()))
    for each in (CERT.cert, cert):
        assert parse_dn(each.subject.rfc4514_string()) == subject_rdns(each)


@pytest.mark.parametrize("published", ["the gateway's", "another"])
async def test_a_sandbox_on_its_own_fetches_the_gateways_key(bank_factory: BankFactory, start_server,
                                                              tmp_path: Path, published: str) -> None:
    """Not handed the key, the sandbox fetches it from sandbox.gateway_jwks_uri (the gateway's admin listener
    in a real deployment) and believes the facts only when that key signed them."""
    key = FACTS_KEY if published == "the gateway's" else generate_signing_key("EC")
    async def publish(_: web.Request) -> web.Response:
        return web.json_response(JwtSigner(key, typ=FACTS_TYP).jwks())

    jwks = web.Application()
    jwks.router.add_get("/facts/jwks.json", publish)
    server = await start_server(jwks)
    key_file = tmp_path / "facts-key.pem"
    key_file.write_bytes(FACTS_KEY.to_pem())
    bank = await bank_factory(shipped_policies=True, enforce_client_certificate=True, profile="ob_standard",
                              facts_key_file=key_file, hand_key=False,
                              gateway_jwks_uri=str(server.make_url("/facts/jwks.json")))
    status, body, _ = await bank.register(None, await _request(bank, CERT), headers=CERT.header())
    if published == "the gateway's":
        assert status == 201, body
    else:
        assert status == 401 and body["error"] == "invalid_client", body
