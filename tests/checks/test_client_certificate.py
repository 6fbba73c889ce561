"""`client_certificate`: trusted proxies, the forwarding formats end to end, the tls_client_auth DN and audit mode,
through real gateways with real certificates (the header formats and the DN comparison themselves:
tests/test_certificates.py; RFC 8705 token binding, enforced by bearer_token: test_token_binding.py)."""

from __future__ import annotations

import pytest

from gateway.jose import cert_thumbprint_s256
from gateway.policy.testing import forwarded_certificate
from tests.checks.world import CERT_HEADER, REGISTER, SUBJECT, keys
from tests.conftest import ROOT

OB_STANDARD = ROOT / "policies" / "ob_standard"


async def test_header_from_an_untrusted_peer_is_refused(dcr_world):
    """Only the configured TLS-terminating proxies may vouch for a certificate: anyone else could forge it."""
    w = await dcr_world(trust={"client_certificate": {"header": CERT_HEADER, "trusted_proxies": ["10.1.2.3/32"]}})
    resp = await w.post(w.request())
    assert resp.status == 400
    assert "not set by a trusted" in (await resp.json())["error_description"]
    assert w.denials("client_cert_untrusted_proxy") == 1
    assert w.registrations() == 0


async def test_no_trusted_proxy_configured_means_no_certificate_is_trusted(dcr_world):
    """The default (no trusted proxies) fails closed."""
    w = await dcr_world(trust={"client_certificate": {"header": CERT_HEADER}})
    assert (await w.post(w.request())).status == 400
    assert w.denials("client_cert_untrusted_proxy") == 1


@pytest.mark.parametrize("fmt,header", [("xfcc", "x-forwarded-client-cert"), ("rfc9440", "Client-Cert")])
async def test_other_ingress_formats_end_to_end(dcr_world, fmt, header):
    """Envoy XFCC and RFC 9440 headers work end to end when configured."""
    w = await dcr_world(trust={"client_certificate": {"header": header, "format": fmt,
                                                      "trusted_proxies": ["127.0.0.1"]}})
    headers = {**w.headers(cert=False), header: forwarded_certificate(keys().cert, fmt)}
    resp = await w.gw.client.post(REGISTER, data=w.request(), headers=headers)
    assert resp.status == 201, await resp.text()
    assert w.backend.hits[0][2]["X-DCR-Client-Cert-S256"] == cert_thumbprint_s256(keys().cert)


async def test_tls_client_auth_dn_matching_the_certificate_is_accepted(dcr_world):
    """tls_client_auth with the OB 3.1 claim name and the certificate's DN passes."""
    w = await dcr_world()
    resp = await w.post(w.request(token_endpoint_auth_method="tls_client_auth", tls_client_auth_dn=SUBJECT,
                                  token_endpoint_auth_signing_alg=None))
    assert resp.status == 201, await resp.text()


async def test_sandbox_audit_mode_forwards_and_counts(dcr_world):
    """check_modes {client_certificate: audit} (the sandbox config): reported as audit_deny, then forwarded."""
    w = await dcr_world(policies={"check_modes": {"client_certificate": "audit"}})
    resp = await w.post(w.request(), cert=False)
    assert resp.status == 201
    assert w.gw.sample("dcr_gateway_decisions_total", {
        "policy": "dcr_register_create", "mode": "enforce", "decision": "audit_deny", "check": "client_certificate",
        "reason": "client_cert_missing"}) == 1
    # Everything else is still enforced.
    resp = await w.post(w.request(iss="SomeoneElse"), cert=False)
    assert resp.status == 400


async def test_certificate_bound_token_over_another_certificate_is_401(dcr_world):
    """RFC 8705 §3: a token with cnf.x5t#S256 used over another certificate is invalid_token (OB profile GET);
    bearer_token refuses it, before client_certificate runs."""
    w = await dcr_world(policy_dir=OB_STANDARD)
    bound = w.token("client-7", cnf={"x5t#S256": cert_thumbprint_s256(keys().cert)})
    url = f"{REGISTER}/client-7"
    good = {"Authorization": f"Bearer {bound}", **w.cert_header()}
    assert (await w.gw.client.get(url, headers=good)).status == 200
    other = {"Authorization": f"Bearer {bound}", **w.cert_header(keys().other_cert)}
    resp = await w.gw.client.get(url, headers=other)
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    assert w.denials("token_cert_binding_mismatch") == 1
    resp = await w.gw.client.get(url, headers={"Authorization": f"Bearer {bound}"})
    assert resp.status == 401
    assert w.denials("token_cert_binding_missing") == 1
    assert w.denials("client_cert_missing") == 0
    # An unbound token without a certificate: client_certificate (required) refuses it.
    resp = await w.gw.client.get(url, headers={"Authorization": f"Bearer {w.token('client-7')}"})
    assert resp.status == 401
    assert w.denials("client_cert_missing") == 1
