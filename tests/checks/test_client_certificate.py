"""`client_certificate`: the three forwarding formats, RFC 4514 DN comparison, trusted proxies, audit mode and
RFC 8705 token binding, through real gateways with real certificates."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography import x509

from gateway.certificates import certificate_der, parse_dn, subject_rdns
from gateway.jose import cert_thumbprint_s256
from gateway.policy.testing import forwarded_certificate
from tests.checks.world import CERT_HEADER, REGISTER, SUBJECT, keys
from tests.conftest import ROOT

OB_STANDARD = ROOT / "policies" / "ob_standard"


@pytest.mark.parametrize("fmt", ["nginx", "xfcc", "rfc9440"])
def test_each_forwarding_format_yields_the_certificate(fmt):
    """ingress-nginx (URL-encoded PEM), Envoy XFCC and RFC 9440 headers all give back the same DER."""
    der = keys().cert
    assert certificate_der(forwarded_certificate(der, fmt), fmt) == der


def test_xfcc_with_other_keys_and_quoted_subject():
    """An XFCC element with a quoted Subject holding commas and semicolons still yields its Cert."""
    pem = quote(forwarded_certificate(keys().cert, "nginx"), safe="")  # doubly escaped is not a certificate
    value = f'By=spiffe://gw;Hash=abc;Subject="CN=a,O=b;c";Cert="{forwarded_certificate(keys().cert, "nginx")}"'
    assert certificate_der(value, "xfcc") == keys().cert
    with pytest.raises(ValueError):
        certificate_der(f'Cert="{pem}"', "xfcc")


@pytest.mark.parametrize(
    ("value", "fmt"),
    [
        (f'Cert="{forwarded_certificate(keys().cert, "nginx")}",Cert="{forwarded_certificate(keys().cert, "nginx")}"',
         "xfcc"),
        ('By=x;Hash=y', "xfcc"),
        ('Cert="unterminated', "xfcc"),
        ("MIIB", "rfc9440"),
        (":not base64!:", "rfc9440"),
        (":" + base64.b64encode(b"not a certificate").decode() + ":", "rfc9440"),
        (forwarded_certificate(keys().cert, "nginx") * 2, "nginx"),
    ],
    ids=["xfcc-two-elements", "xfcc-no-cert", "xfcc-unbalanced", "rfc9440-no-colons", "rfc9440-not-base64",
         "rfc9440-not-der", "nginx-two-certificates"],
)
def test_ambiguous_or_broken_headers_are_refused(value, fmt):
    """Anything but exactly one certificate is a ValueError (the check answers client_cert_malformed)."""
    with pytest.raises(ValueError):
        der = certificate_der(value, fmt)
        x509.load_der_x509_certificate(der)


@pytest.mark.parametrize(
    ("dn", "same"),
    [
        (SUBJECT, True),
        ("cn=AttackTableSoftware1, ou=0015800001041REAAY, o=openbanking, c=gb", True),
        ("CN = AttackTableSoftware1 , OU=0015800001041REAAY,O=Open  Banking,C=GB".replace("Open  Banking",
                                                                                         "OpenBanking"), True),
        ("2.5.4.3=AttackTableSoftware1,OU=0015800001041REAAY,O=OpenBanking,C=GB", True),
        ("C=GB,O=OpenBanking,OU=0015800001041REAAY,CN=AttackTableSoftware1", False),  # reversed order
        ("CN=AttackTableSoftware1,OU=0015800001041REAAY,O=OpenBanking", False),  # prefix only
        ("CN=AttackTableSoftware1,OU=0015800001041REAAY,O=OpenBanking,C=GB,L=London", False),
        ("CN=AttackTableSoftware2,OU=0015800001041REAAY,O=OpenBanking,C=GB", False),
    ],
)
def test_dn_comparison(dn, same):
    """RFC 4514 DNs compare attribute by attribute, in order, ignoring case and insignificant spaces."""
    cert = x509.load_der_x509_certificate(keys().cert)
    assert (parse_dn(dn) == subject_rdns(cert)) is same


@pytest.mark.parametrize("dn", ["", "CN", "=x", "XX=1", "CN=a\\", "CN=#0403616263", "CN=\\ff\\fe"])
def test_unparseable_dns_are_errors(dn):
    """A DN that is not RFC 4514 raises ValueError (the check answers client_cert_dn_mismatch)."""
    with pytest.raises(ValueError):
        parse_dn(dn)


def test_escaped_dn_values():
    """A subject value with an escaped comma matches its escaped spelling in the DN claim."""
    assert parse_dn(r"O=Open\, Banking Ltd,C=GB") == [frozenset({("2.5.4.10", "open, banking ltd")}),
                                                      frozenset({("2.5.4.6", "gb")})]


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
    """RFC 8705 §3: a token with cnf.x5t#S256 used over another certificate is invalid_token (OB profile GET)."""
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
    assert w.denials("client_cert_missing") == 1
