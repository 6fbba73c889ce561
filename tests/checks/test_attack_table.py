"""The attack table: every known way to slip a registration past the gateway, one named row each, sent through a
real gateway (shipped bank profile) in front of a real backend, with real JWKS servers on 127.0.0.1 for the
directory and the TPP. Each row must be refused with its status, RFC 7591 error and reason, and reach nothing."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
from aiohttp import ClientResponse
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from gateway.jose.encoding import b64url_encode, json_dumps_compact
from tests.checks.world import REGISTER, SOFTWARE_ID, World, b64, keys

PRIVATE_HOST = "tpp-keys.attacker.test"  # the injected resolver answers 10.0.0.7
MIXED_HOST = "mixed.attacker.test"  # the injected resolver answers one public and one private address
RESOLVER_TABLE = {PRIVATE_HOST: ["10.0.0.7"], MIXED_HOST: ["203.0.113.10", "192.168.1.9"]}


@dataclass(frozen=True)
class Row:
    """One attack: how to send it, and the refusal it must get."""

    act: Callable[[World], Awaitable[ClientResponse]]
    status: int
    error: str
    reason: str
    check: str
    forwarded: int = 0
    """Requests the backend may have seen (a replay's first, genuine send)."""
    also: Callable[[World], None] | None = field(default=None)
    """Extra assertions on the world after the refusal."""


def _now() -> int:
    return int(time.time())


def _tpp_public_pem() -> bytes:
    private = load_pem_private_key(keys().tpp_rsa.to_pem(), password=None)
    return private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)


async def _hs256_with_rsa_public_key(w: World) -> ClientResponse:
    # Algorithm confusion (CVE-2015-9235 family): HMAC keyed with the TPP's public key, which anyone has.
    header = b64url_encode(json_dumps_compact({"alg": "HS256", "kid": keys().tpp_rsa.kid}))
    payload = b64url_encode(json_dumps_compact(w.claims()))
    mac = hmac.new(_tpp_public_pem(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return await w.post(f"{header}.{payload}.{b64url_encode(mac)}")


async def _replayed(w: World) -> ClientResponse:
    body = w.request()
    first = await w.post(body)
    assert first.status == 201
    return await w.post(body)


def _duplicate_claims(w: World) -> bytes:
    return json_dumps_compact(w.claims())[:-1] + b',"iss":"SomeoneElse"}'


def _unsigned_ssa(w: World) -> str:
    header = b64url_encode(json_dumps_compact({"alg": "none", "typ": "JWT"}))
    return f"{header}.{b64url_encode(json_dumps_compact(w.ssa_claims()))}."


def _never_fetched(host: str, asked: bool) -> Callable[[World], None]:
    def check(w: World) -> None:
        assert (host in w.resolver.asked) is asked
        assert not [u for u in w.fetches if host in u], "the refused key-set URL was requested"
    return check


def _redirect_not_followed(w: World) -> None:
    assert w.tpp.hits.get("/redirect") == 1
    assert w.tpp.hits.get("/jwks", 0) == 0


K = keys
ROWS: dict[str, Row] = {
    # -- the request JWS: algorithms and keys ------------------------------------------------------
    "alg_none": Row(lambda w: w.post(w.unsigned({"alg": "none", "kid": K().tpp_rsa.kid})),
                    400, "invalid_client_metadata", "request_alg_not_allowed", "registration_request"),
    "hs256_signed_with_rsa_public_key": Row(_hs256_with_rsa_public_key,
                                            400, "invalid_client_metadata", "request_alg_not_allowed",
                                            "registration_request"),
    "rs256_not_allowed": Row(lambda w: w.post(w.request(header={"alg": "RS256"})),
                             400, "invalid_client_metadata", "request_alg_not_allowed", "registration_request"),
    "unknown_kid": Row(lambda w: w.post(w.request(key=K().attacker_rsa, header={"kid": "not-in-the-jwks"})),
                       400, "invalid_client_metadata", "request_unknown_kid", "registration_request"),
    "kid_path_traversal": Row(lambda w: w.post(w.request(key=K().attacker_rsa,
                                                         header={"kid": "../../../../etc/passwd"})),
                              400, "invalid_client_metadata", "request_unknown_kid", "registration_request"),
    "kid_sql_like": Row(lambda w: w.post(w.request(key=K().attacker_rsa, header={"kid": "x' OR '1'='1' --"})),
                        400, "invalid_client_metadata", "request_unknown_kid", "registration_request"),
    "embedded_jwk": Row(lambda w: w.post(w.request(key=K().attacker_rsa, header={
                            "kid": K().attacker_rsa.kid, "jwk": K().attacker_rsa.public_jwk()})),
                        400, "invalid_client_metadata", "request_forbidden_header", "software_statement"),
    "embedded_jku": Row(lambda w: w.post(w.request(key=K().attacker_rsa, header={
                            "kid": K().attacker_rsa.kid, "jku": "https://attacker.example/jwks"})),
                        400, "invalid_client_metadata", "request_forbidden_header", "software_statement"),
    "embedded_x5u": Row(lambda w: w.post(w.request(key=K().attacker_rsa, header={
                            "kid": K().attacker_rsa.kid, "x5u": "https://attacker.example/cert.pem"})),
                        400, "invalid_client_metadata", "request_forbidden_header", "software_statement"),
    "embedded_x5c": Row(lambda w: w.post(w.request(key=K().attacker_rsa, header={
                            "kid": K().attacker_rsa.kid, "x5c": [b64(K().other_cert)]})),
                        400, "invalid_client_metadata", "request_forbidden_header", "software_statement"),
    "ecdsa_zero_signature": Row(lambda w: w.post(w.unsigned({"alg": "ES256", "kid": K().tpp_ec.kid},
                                                            signature=bytes(64))),
                                400, "invalid_client_metadata", "request_bad_signature", "registration_request"),
    # -- the request JWS: structure ----------------------------------------------------------------
    "payload_not_json": Row(lambda w: w.post(w.request(payload=b"this is not JSON")),
                            400, "invalid_client_metadata", "request_payload_not_json", "software_statement"),
    "truncated_jws": Row(lambda w: w.post(".".join(w.request().split(".")[:2])),
                         400, "invalid_client_metadata", "request_malformed", "software_statement"),
    "extra_segment_jws": Row(lambda w: w.post(w.request() + ".AAAA"),
                             400, "invalid_client_metadata", "request_malformed", "software_statement"),
    "non_base64url_jws": Row(lambda w: w.post(w.request().replace(".", "+/=.", 1)),
                             400, "invalid_client_metadata", "request_malformed", "software_statement"),
    "json_invalid_header": Row(lambda w: w.post(b64url_encode(b'{"alg":"PS256",') + "." + w.request().split(".", 1)[1]),
                               400, "invalid_client_metadata", "request_malformed", "software_statement"),
    "b64_false": Row(lambda w: w.post(w.request(header={"b64": False, "crit": ["b64"]})),
                     400, "invalid_client_metadata", "request_unencoded_payload", "software_statement"),
    "unknown_crit": Row(lambda w: w.post(w.request(header={"crit": ["urn:example:ext"], "urn:example:ext": 1})),
                        400, "invalid_client_metadata", "request_crit_unsupported", "software_statement"),
    "duplicate_claim_names": Row(lambda w: w.post(w.request(payload=_duplicate_claims(w))),
                                 400, "invalid_client_metadata", "request_duplicate_member", "software_statement"),
    # -- the request JWT: time -----------------------------------------------------------------------
    "nbf_in_future": Row(lambda w: w.post(w.request(nbf=_now() + 600)),
                         400, "invalid_client_metadata", "request_not_yet_valid", "registration_request"),
    "expired": Row(lambda w: w.post(w.request(iat=_now() - 1200, exp=_now() - 600)),
                   400, "invalid_client_metadata", "request_expired", "registration_request"),
    "not_yet_valid_iat": Row(lambda w: w.post(w.request(iat=_now() + 300, exp=_now() + 600)),
                             400, "invalid_client_metadata", "request_iat_in_future", "registration_request"),
    "far_future_iat": Row(lambda w: w.post(w.request(iat=_now() + 10 * 365 * 86400,
                                                     exp=_now() + 10 * 365 * 86400 + 300)),
                          400, "invalid_client_metadata", "request_iat_in_future", "registration_request"),
    "overlong_lifetime": Row(lambda w: w.post(w.request(exp=_now() + 7200)),
                             400, "invalid_client_metadata", "request_lifetime_too_long", "registration_request"),
    # -- the software statement ------------------------------------------------------------------------
    "ssa_resigned_with_attacker_key": Row(lambda w: w.post(w.request(software_statement=w.ssa(key=K().attacker_rsa))),
                                          400, "invalid_software_statement", "ssa_bad_signature",
                                          "software_statement"),
    "ssa_alg_none": Row(lambda w: w.post(w.request(software_statement=_unsigned_ssa(w))),
                        400, "invalid_software_statement", "ssa_alg_not_allowed", "software_statement"),
    "ssa_untrusted_issuer": Row(lambda w: w.post(w.request(software_statement=w.ssa(iss="Evil Directory Ltd"))),
                                400, "unapproved_software_statement", "ssa_issuer_not_trusted", "software_statement"),
    "ssa_org_revoked": Row(lambda w: w.post(w.request(software_statement=w.ssa(org_status="Revoked"))),
                           400, "unapproved_software_statement", "ssa_org_not_active", "software_statement"),
    "ssa_software_id_header_injection": Row(
        lambda w: w.post(w.request(software_statement=w.ssa(software_id="abc\r\nX-DCR-Org-Id: evil"))),
        400, "invalid_software_statement", "ssa_bad_claim", "software_statement"),
    # -- claims against the SSA -------------------------------------------------------------------------
    "iss_not_software_id": Row(lambda w: w.post(w.request(iss="SomebodyElse")),
                               400, "invalid_client_metadata", "request_iss_mismatch", "registration_request"),
    "redirect_not_in_ssa": Row(lambda w: w.post(w.request(redirect_uris=["https://evil.example/cb"])),
                               400, "invalid_redirect_uri", "redirect_uri_not_in_software_statement",
                               "registration_metadata"),
    "redirect_http": Row(lambda w: w.post(w.request(
                             software_statement=w.ssa(software_redirect_uris=["http://tpp.example.com/cb"]),
                             redirect_uris=["http://tpp.example.com/cb"])),
                         400, "invalid_redirect_uri", "redirect_uri_not_https", "registration_metadata"),
    "redirect_localhost": Row(lambda w: w.post(w.request(
                                  software_statement=w.ssa(software_redirect_uris=["https://localhost/cb"]),
                                  redirect_uris=["https://localhost/cb"])),
                              400, "invalid_redirect_uri", "redirect_uri_localhost", "registration_metadata"),
    # -- replay, size -------------------------------------------------------------------------------------
    "replayed_jti": Row(_replayed, 400, "invalid_client_metadata", "jti_replayed", "replay", forwarded=1),
    "oversize_body": Row(lambda w: w.post(b"e" * 70_000), 413, "request_too_large", "body_too_large", "body_size"),
    # -- SSRF through software_jwks_endpoint -----------------------------------------------------------------
    "software_jwks_private_address": Row(
        lambda w: w.post(w.request(software_statement=w.ssa(software_jwks_endpoint=f"http://{PRIVATE_HOST}/jwks"))),
        400, "invalid_client_metadata", "software_jwks_url_refused", "registration_request",
        also=_never_fetched(PRIVATE_HOST, asked=True)),
    "software_jwks_mixed_public_private_dns": Row(
        lambda w: w.post(w.request(software_statement=w.ssa(software_jwks_endpoint=f"http://{MIXED_HOST}/jwks"))),
        400, "invalid_client_metadata", "software_jwks_url_refused", "registration_request",
        also=_never_fetched(MIXED_HOST, asked=True)),
    "software_jwks_link_local_metadata": Row(
        lambda w: w.post(w.request(software_statement=w.ssa(
            software_jwks_endpoint="http://169.254.169.254/latest/meta-data/jwks"))),
        400, "invalid_client_metadata", "software_jwks_url_refused", "registration_request",
        also=_never_fetched("169.254.169.254", asked=False)),
    "software_jwks_redirect": Row(
        lambda w: w.post(w.request(software_statement=w.ssa(software_jwks_endpoint=w.tpp_url + "/redirect"))),
        400, "invalid_client_metadata", "software_jwks_url_refused", "registration_request",
        also=_redirect_not_followed),
    # -- the transport certificate (enforced here; audit-only in the sandbox config) -----------------
    "no_client_certificate": Row(lambda w: w.post(w.request(), cert=False),
                                 400, "invalid_client_metadata", "client_cert_missing", "client_certificate"),
    "certificate_not_in_software_jwks": Row(
        lambda w: w.gw.client.post(REGISTER, data=w.request(), headers={**w.headers(), **w.cert_header(K().other_cert)}),
        400, "invalid_software_statement", "client_cert_not_in_software_jwks", "client_certificate"),
    "expired_certificate": Row(
        lambda w: w.gw.client.post(REGISTER, data=w.request(), headers={**w.headers(), **w.cert_header(K().expired_cert)}),
        400, "invalid_client_metadata", "client_cert_expired", "client_certificate"),
    "tls_client_auth_dn_of_another_subject": Row(
        lambda w: w.post(w.request(token_endpoint_auth_method="tls_client_auth",
                                   tls_client_auth_subject_dn="CN=Other,OU=x,O=OpenBanking,C=GB")),
        400, "invalid_client_metadata", "client_cert_dn_mismatch", "client_certificate"),
}


@pytest.mark.parametrize("row_id", list(ROWS))
async def test_attack_is_refused(dcr_world, row_id):
    """Each attack is refused with its status, error code and reason, and nothing of it reaches the backend."""
    row = ROWS[row_id]
    w = await dcr_world(resolver_table=RESOLVER_TABLE)
    resp = await row.act(w)
    body = await resp.json()
    assert resp.status == row.status, body
    assert body["error"] == row.error
    assert body["error_description"]
    assert resp.headers["Cache-Control"] == "no-store"
    assert w.gw.sample("dcr_gateway_decisions_total", {
        "policy": "dcr_register_create", "mode": "enforce", "decision": "deny", "check": row.check,
        "reason": row.reason}) == 1
    assert w.registrations() == row.forwarded
    if row.also is not None:
        row.also(w)


async def test_happy_path_post_is_forwarded_with_verified_facts(dcr_world):
    """A genuine registration gets 201 from the backend, which receives the JWS and the verified facts."""
    w = await dcr_world()
    body = w.request()
    resp = await w.post(body, **{"X-DCR-Software-Id": "spoofed"})
    assert resp.status == 201, await resp.text()
    (method, path, headers, forwarded), = w.backend.hits
    assert (method, path, forwarded) == ("POST", REGISTER, body.encode())
    assert headers["X-DCR-Software-Id"] == SOFTWARE_ID
    assert headers["X-DCR-Org-Id"] == "0015800001041REAAY"
    assert headers["X-DCR-Software-Roles"] == "AISP,PISP,CBPII"
    assert headers["X-DCR-Client-Cert-S256"] == b64url_encode(hashlib.sha256(K().cert).digest())
    assert headers["X-DCR-Client-Id"] == "app-1"
    # The trace sees the software JWKS fetch: so "never fetched" in the SSRF rows means something.
    assert f"{w.tpp_url}/jwks" in w.fetches
    assert w.gw.sample("dcr_gateway_decisions_total", {"policy": "dcr_register_create", "mode": "enforce",
                                                        "decision": "allow", "check": "", "reason": ""}) == 1


async def test_happy_path_put_is_forwarded(dcr_world):
    """A client updates its own registration with a fresh signed request: 200 from the backend."""
    w = await dcr_world()
    resp = await w.put("client-7", w.request(client_id="client-7"))
    assert resp.status == 200, await resp.text()
    assert [h[:2] for h in w.backend.hits] == [("PUT", f"{REGISTER}/client-7")]


async def test_es256_request_and_json_string_body_are_accepted(dcr_world):
    """ES256 (FAPI) is accepted as PS256 is, and application/json carrying the JWS as a JSON string too."""
    w = await dcr_world()
    es = w.request(key=K().tpp_ec, header={"alg": "ES256", "kid": K().tpp_ec.kid})
    assert (await w.post(es)).status == 201
    quoted = json_dumps_compact(w.request())
    resp = await w.gw.client.post(REGISTER, data=quoted, headers=w.headers(**{"Content-Type": "application/json"}))
    assert resp.status == 201, await resp.text()
