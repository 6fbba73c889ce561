"""RFC 8705 §3 certificate-bound access tokens, enforced by `bearer_token` itself (issue 15): a token whose `cnf`
carries `x5t#S256` is accepted only over that TLS client certificate, forwarded by a trusted proxy, whether or not
the policy has a `client_certificate` check and whatever mode that check runs in. Real gateways, real signed
tokens, real certificates (one made here with `cryptography`), a real JWKS on 127.0.0.1.

Before issue 15 a bound token passed the bank's read policy (policies/dcr.yaml: `bearer_token`,
`client_id_header`, `client_ownership`; now also a `client_certificate` that is not required and only records the
certificate) over any certificate, or none."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from gateway.checks.bearer_token import BearerToken
from gateway.checks.client_certificate import ClientCertificate
from gateway.jose import cert_thumbprint_s256
from gateway.policy.testing import forwarded_certificate
from tests.checks.unit import make_check, services
from tests.checks.world import BANK_ISSUER, CERT_HEADER, REGISTER, Backend, World, keys
from tests.conftest import ROOT, SHIPPED_POLICIES

OB_STANDARD = ROOT / "policies" / "ob_standard"
READ = f"{REGISTER}/client-7"


@cache
def stranger_cert() -> bytes:
    """A self-signed, current certificate of another key (DER), made here with `cryptography`."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Stranger TPP")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def bound_to(der: bytes) -> dict[str, Any]:
    return {"x5t#S256": cert_thumbprint_s256(der)}


def read_headers(w: World, token: str, cert: bytes | None = None, **extra: str) -> dict[str, str]:
    """A GET of client-7's registration in the bank's profile (token + client_id header), over `cert`."""
    headers = {"Authorization": f"Bearer {token}", "client_id": "client-7", **extra}
    if cert is not None:
        headers.update(w.cert_header(cert))
    return headers


def denied_by(w: World, reason: str, check: str = "bearer_token") -> float:
    """Requests denied (enforced) with `reason` by `check`."""
    total = 0.0
    for metric in w.gw.metrics.registry.collect():
        for s in metric.samples:
            if (s.name == "dcr_gateway_decisions_total" and s.labels.get("reason") == reason
                    and s.labels.get("check") == check and s.labels.get("decision") == "deny"):
                total += s.value
    return total


async def assert_invalid_token(resp: Any, reason: str, w: World) -> None:
    assert resp.status == 401, await resp.text()
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge  # RFC 6750 §3 / RFC 8705 §3
    assert (await resp.json())["error"] == "invalid_token"
    assert denied_by(w, reason) >= 1


# -- end to end ----------------------------------------------------------------------------------------


async def test_bound_token_over_its_certificate_passes_and_over_another_is_refused(dcr_world):
    """The bank's read policy has no client_certificate check: bearer_token alone compares the binding."""
    w = await dcr_world()
    token = w.token("client-7", cnf=bound_to(keys().cert))
    assert (await w.gw.client.get(READ, headers=read_headers(w, token, keys().cert))).status == 200
    resp = await w.gw.client.get(READ, headers=read_headers(w, token, stranger_cert()))
    await assert_invalid_token(resp, "token_cert_binding_mismatch", w)
    assert "bound to another client certificate" in resp.headers["WWW-Authenticate"]
    assert len(w.backend.hits) == 1  # the refused one never reached the bank


async def test_the_binding_is_checked_on_every_request_not_cached_with_the_token(dcr_world):
    """The verifier caches the token; the binding verdict is made again for each request."""
    w = await dcr_world()
    token = w.token("client-7", cnf=bound_to(keys().cert))
    for cert, status in [(keys().cert, 200), (keys().other_cert, 401), (None, 401), (keys().cert, 200)]:
        assert (await w.gw.client.get(READ, headers=read_headers(w, token, cert))).status == status
    assert denied_by(w, "token_cert_binding_mismatch") == 1
    assert denied_by(w, "token_cert_binding_missing") == 1


async def test_bound_token_without_a_certificate_is_refused_an_unbound_one_needs_none(dcr_world):
    w = await dcr_world()
    bound = w.token("client-7", cnf=bound_to(keys().cert))
    resp = await w.gw.client.get(READ, headers=read_headers(w, bound))
    await assert_invalid_token(resp, "token_cert_binding_missing", w)
    unbound = w.token("client-7")
    assert (await w.gw.client.get(READ, headers=read_headers(w, unbound))).status == 200
    assert denied_by(w, "token_cert_binding_missing") == 1


async def test_bound_token_with_a_certificate_header_from_an_untrusted_peer_is_refused(dcr_world):
    """The header is only believed from a configured TLS-terminating proxy (127.0.0.1 is not one here): its
    certificate does not prove possession, even when it is the right one."""
    w = await dcr_world(trust={"client_certificate": {"header": CERT_HEADER, "trusted_proxies": ["10.1.2.3/32"]}})
    bound = w.token("client-7", cnf=bound_to(keys().cert))
    resp = await w.gw.client.get(READ, headers=read_headers(w, bound, keys().cert))
    await assert_invalid_token(resp, "token_cert_binding_missing", w)
    assert "trusted TLS-terminating proxy" in resp.headers["WWW-Authenticate"]
    # An unbound token does not need the certificate, so the untrusted header does not matter to bearer_token;
    # the read policy's client_certificate (which records the certificate for the backend) refuses it.
    unbound = w.token("client-7")
    assert (await w.gw.client.get(READ, headers=read_headers(w, unbound, keys().cert))).status == 401
    assert denied_by(w, "client_cert_untrusted_proxy", check="client_certificate") == 1
    assert (await w.gw.client.get(READ, headers=read_headers(w, unbound))).status == 200


@pytest.mark.parametrize("header", ["expired", "malformed"])
async def test_bound_token_with_an_unusable_certificate_header_is_refused(dcr_world, header: str):
    """An expired or malformed certificate header fails closed for a bound token (a repeated one is refused
    before any check: tests/http)."""
    w = await dcr_world()
    bound = w.token("client-7", cnf=bound_to(keys().expired_cert if header == "expired" else keys().cert))
    headers = read_headers(w, bound, keys().expired_cert if header == "expired" else None)
    items = list(headers.items())
    if header == "malformed":
        items.append((CERT_HEADER, "-----BEGIN%20CERTIFICATE-----%0AAAAA%0A-----END%20CERTIFICATE-----"))
    resp = await w.gw.client.get(READ, headers=items)
    await assert_invalid_token(resp, "token_cert_binding_missing", w)


@pytest.mark.parametrize("cnf,reason", [
    ("x5t", "token_cnf_malformed"),
    (["x5t#S256"], "token_cnf_malformed"),
    ({}, "token_cnf_malformed"),
    (None, "token_cnf_malformed"),
    ({"x5t#S256": ""}, "token_cnf_malformed"),
    ({"x5t#S256": 42}, "token_cnf_malformed"),
    ({"x5t#S256": ["a"]}, "token_cnf_malformed"),
    ({"x5t#S256": "not-a-thumbprint"}, "token_cnf_malformed"),
    ({"jkt": "0ZcOCORZNYy-DWpqq30jZyJGHTN0d2HglBV3uiguA4I"}, "token_cnf_unsupported"),  # DPoP (RFC 9449)
    ({"jwk": {"kty": "EC"}}, "token_cnf_unsupported"),
], ids=["string", "array", "empty", "null", "empty-thumbprint", "number", "list-thumbprint", "short", "jkt", "jwk"])
async def test_a_cnf_the_gateway_cannot_check_is_refused(dcr_world, cnf: Any, reason: str):
    """Fail closed: a confirmation the gateway cannot verify is not treated as a plain bearer token, even over
    the TPP's certificate."""
    w = await dcr_world()
    token = w.token("client-7", cnf=cnf)
    resp = await w.gw.client.get(READ, headers=read_headers(w, token, keys().cert))
    await assert_invalid_token(resp, reason, w)
    assert not w.backend.hits


async def test_members_beside_a_valid_thumbprint_are_ignored(dcr_world):
    """RFC 7800 §3.1: confirmation members not understood are ignored once x5t#S256 is proven."""
    w = await dcr_world()
    token = w.token("client-7", cnf={**bound_to(keys().cert), "x-vendor": {"a": 1}})
    assert (await w.gw.client.get(READ, headers=read_headers(w, token, keys().cert))).status == 200
    resp = await w.gw.client.get(READ, headers=read_headers(w, token, keys().other_cert))
    await assert_invalid_token(resp, "token_cert_binding_mismatch", w)


async def test_client_certificate_in_audit_mode_does_not_weaken_the_binding(dcr_world):
    """The shipped config runs client_certificate in audit mode; a bound token over another certificate is still
    refused (by bearer_token, enforced), on a registration too."""
    w = await dcr_world(policies={"check_modes": {"client_certificate": "audit"}})
    bound = w.token("app-1", cnf=bound_to(keys().cert))
    headers = {**w.headers(cert=False), "Authorization": f"Bearer {bound}", **w.cert_header(stranger_cert())}
    resp = await w.gw.client.post(REGISTER, data=w.request(), headers=headers)
    await assert_invalid_token(resp, "token_cert_binding_mismatch", w)
    assert w.registrations() == 0
    headers.update(w.cert_header())
    assert (await w.gw.client.post(REGISTER, data=w.request(), headers=headers)).status == 201


async def test_ob_profile_refuses_in_bearer_token_before_client_certificate(dcr_world):
    """The OB profile also has client_certificate (status 401): the binding is refused by bearer_token, once."""
    w = await dcr_world(policy_dir=OB_STANDARD)
    bound = w.token("client-7", cnf=bound_to(keys().cert))
    resp = await w.gw.client.get(READ, headers={"Authorization": f"Bearer {bound}", **w.cert_header(stranger_cert())})
    await assert_invalid_token(resp, "token_cert_binding_mismatch", w)
    assert denied_by(w, "token_cert_binding_mismatch", "client_certificate") == 0


async def test_both_checks_read_the_certificate_through_one_reader(dcr_world):
    """One parse memo per process, shared by bearer_token and client_certificate (Services.certificates): the
    read policy (bearer_token only) parses the header, the create policy's client_certificate reuses it."""
    w = await dcr_world()
    reader = w.gw.services.certificates
    assert reader.remembered() == 0
    bound = w.token("client-7", cnf=bound_to(keys().cert))
    assert (await w.gw.client.get(READ, headers=read_headers(w, bound, keys().cert))).status == 200
    assert reader.remembered() == 1 and reader.remembers(w.cert_header()[CERT_HEADER])
    assert (await w.post(w.request())).status == 201  # client_certificate over the same header text
    assert reader.remembered() == 1


# -- units ------------------------------------------------------------------------------------------------


def test_token_binding_is_no_longer_a_client_certificate_parameter() -> None:
    """Removed, not ignored: a policy that turned the binding off must not load believing it still does."""
    with pytest.raises(ValidationError) as err:
        make_check(ClientCertificate, services(), token_binding=False)
    assert "bearer_token enforces RFC 8705" in str(err.value)


def test_bearer_token_has_no_switch_for_the_binding() -> None:
    """A security decision that cannot be turned off silently: no parameter names it."""
    assert not any("bind" in name or "cnf" in name for name in BearerToken.Params.model_fields)


async def test_an_introspected_token_is_bound_by_the_cnf_of_the_answer(start_server, running_gateway, monkeypatch):
    """RFC 8705 §3.2: an introspection answer's `cnf` binds an opaque token just as a JWT's does."""
    async def introspect(request: web.Request) -> web.Response:
        form = await request.post()
        cnf = bound_to(keys().cert) if form["token"] == "opaque-bound" else None
        answer = {"active": True, "client_id": "client-7", "iss": BANK_ISSUER, "exp": 4_000_000_000, "cnf": cnf}
        return web.json_response({k: v for k, v in answer.items() if v is not None})

    backend = Backend()
    backend.app.router.add_post("/introspect", introspect)
    base = str((await start_server(backend.app)).make_url("")).rstrip("/")
    monkeypatch.setenv("TEST_INTROSPECTION_SECRET", "s3cret")
    trust = {"token_issuers": {"bank": {"issuer": BANK_ISSUER, "introspection": {
                 "endpoint": base + "/introspect", "client_id": "gateway",
                 "client_secret_env": "TEST_INTROSPECTION_SECRET", "cache_seconds": 30}}},
             "client_certificate": {"header": CERT_HEADER, "trusted_proxies": ["127.0.0.1/32", "::1/128"]}}
    gw = await running_gateway(base, policy_dir=SHIPPED_POLICIES, trust=trust)

    def headers(token: str, cert: bytes | None) -> dict[str, str]:
        h = {"Authorization": f"Bearer {token}", "client_id": "client-7"}
        if cert is not None:
            h[CERT_HEADER] = forwarded_certificate(cert, "nginx")
        return h

    assert (await gw.client.get(READ, headers=headers("opaque-bound", keys().cert))).status == 200
    resp = await gw.client.get(READ, headers=headers("opaque-bound", stranger_cert()))  # served from the cache
    assert resp.status == 401 and "bound to another client certificate" in resp.headers["WWW-Authenticate"]
    assert (await gw.client.get(READ, headers=headers("opaque-bound", None))).status == 401
    assert (await gw.client.get(READ, headers=headers("opaque-unbound", None))).status == 200
