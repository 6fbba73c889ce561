"""gateway/certificates.py: the three forwarding formats and RFC 4514 DN comparison, with real certificates (the
`client_certificate` check and the sandbox token endpoint both read certificates this way)."""

from __future__ import annotations

import base64
from urllib.parse import quote

import pytest
from cryptography import x509
from multidict import CIMultiDict

from gateway.certificates import (
    MAX_CHAIN,
    CertificateRefused,
    ForwardedCertificateReader,
    certificate_der,
    chain_of,
    parse_dn,
    same_dn,
    subject_rdns,
)
from gateway.policy.testing import forwarded_certificate
from tests.checks.world import SUBJECT, b64, keys
from tests.pki.hierarchy import NOW, root


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
        ("C=GB,O=OpenBanking,OU=0015800001041REAAY,CN=AttackTableSoftware1", True),  # least specific first
        ("C=GB,O=OpenBanking,CN=AttackTableSoftware1,OU=0015800001041REAAY", False),  # another permutation
        ("OU=0015800001041REAAY,CN=AttackTableSoftware1,O=OpenBanking,C=GB", False),
        ("OU=0015800001041REAAY+CN=AttackTableSoftware1,O=OpenBanking,C=GB", False),  # two RDNs made one
        ("C=GB,O=OpenBanking,OU=0015800001041REAAY", False),  # suffix only
        ("CN=AttackTableSoftware1,OU=0015800001041REAAY,O=OpenBanking", False),  # prefix only
        ("CN=AttackTableSoftware1,OU=0015800001041REAAY,O=OpenBanking,C=GB,L=London", False),
        ("CN=AttackTableSoftware2,OU=0015800001041REAAY,O=OpenBanking,C=GB", False),
    ],
)
def test_dn_comparison(dn, same):
    """RFC 4514 DNs compare attribute by attribute, RDNs in order or exactly reversed, ignoring case and
    insignificant spaces; never a prefix, suffix or other permutation."""
    cert = x509.load_der_x509_certificate(keys().cert)
    assert same_dn(parse_dn(dn), subject_rdns(cert)) is same


@pytest.mark.parametrize("dn", ["", "CN", "=x", "XX=1", "CN=a\\", "CN=#0403616263", "CN=\\ff\\fe", "CN=#0c0361",
                                "CN=#0c03616263ff", "CN=#0c0", "CN=#zz", "CN=#", "CN=#1303615f62", "CN=#0c80"])
def test_unparseable_dns_are_errors(dn):
    """A DN that is not RFC 4514 raises ValueError (the check answers client_cert_dn_mismatch)."""
    with pytest.raises(ValueError):
        parse_dn(dn)


def test_escaped_dn_values():
    """A subject value with an escaped comma matches its escaped spelling in the DN claim."""
    assert parse_dn(r"O=Open\, Banking Ltd,C=GB") == [frozenset({("2.5.4.10", "open, banking ltd")}),
                                                      frozenset({("2.5.4.6", "gb")})]


# -- the forwarded chain (chain validation: tests/pki/test_chain.py) -------------------------------------

def _pem_escaped(*ders: bytes) -> str:
    """URL-encoded concatenated PEMs, as Envoy writes XFCC `Chain`."""
    return "".join(forwarded_certificate(der, "nginx") for der in ders)


def _reader(fmt: str, header: str, chain_header: str | None = None) -> ForwardedCertificateReader:
    return ForwardedCertificateReader(header, fmt, ["127.0.0.1"], chain_header=chain_header)  # type: ignore[arg-type]


def test_xfcc_chain_gives_the_intermediates_without_the_leaf():
    """Envoy's Chain key holds the whole chain, leaf first: the reader returns what follows the leaf."""
    r = root()
    inter = r.issue("Issuing CA", ca=True)
    leaf = inter.issue("tpp")
    value = f'Hash=x;Cert="{forwarded_certificate(leaf.der, "nginx")}";Chain="{_pem_escaped(leaf.der, inter.der)}"'
    reader = _reader("xfcc", "x-forwarded-client-cert")
    headers = CIMultiDict({"x-forwarded-client-cert": value})
    assert reader.read(headers, "127.0.0.1", NOW.timestamp())[0] == leaf.der
    assert reader.read_chain(headers, leaf.der) == (inter.cert,)
    no_chain = CIMultiDict({"x-forwarded-client-cert": f'Cert="{forwarded_certificate(leaf.der, "nginx")}"'})
    assert reader.read_chain(no_chain, leaf.der) == ()


def test_rfc9440_chain_header_is_a_list_of_byte_sequences_possibly_over_several_lines():
    """RFC 9440 §2.3: Client-Cert-Chain, DER byte sequences, one list (lines joined as RFC 9110 §5.3 says)."""
    r = root()
    inter = r.issue("Issuing CA", ca=True)
    second = inter.issue("Second CA", ca=True)
    leaf = second.issue("tpp")
    headers = CIMultiDict([("Client-Cert", forwarded_certificate(leaf.der, "rfc9440")),
                           ("Client-Cert-Chain", f":{b64(second.der)}:, :{b64(inter.der)}:"),
                           ("Client-Cert-Chain", f":{b64(r.der)}:")])
    reader = _reader("rfc9440", "Client-Cert")
    assert reader.chain_header == "Client-Cert-Chain"
    assert reader.read_chain(headers, leaf.der) == (second.cert, inter.cert, r.cert)
    assert _reader("rfc9440", "Client-Cert", "X-Chain").read_chain(headers, leaf.der) == ()


def test_nginx_forwards_no_chain():
    """$ssl_client_escaped_cert is the leaf alone: there is no chain to read."""
    leaf = root().issue("CA", ca=True).issue("tpp")
    headers = CIMultiDict({"ssl-client-cert": forwarded_certificate(leaf.der, "nginx"),
                           "Client-Cert-Chain": f":{b64(leaf.der)}:"})
    assert _reader("nginx", "ssl-client-cert").read_chain(headers, leaf.der) == ()


@pytest.mark.parametrize(("fmt", "header", "value"), [
    ("rfc9440", "Client-Cert-Chain", "MIIB"),
    ("rfc9440", "Client-Cert-Chain", ":bm90IGEgY2VydA==:"),
    ("rfc9440", "Client-Cert-Chain", ", ".join([":MIIB:"] * 9)),
    ("xfcc", "x-forwarded-client-cert", 'Cert="x";Chain="not%20pem"'),
])
def test_a_malformed_chain_is_refused_as_malformed(fmt, header, value):
    """Not byte sequences, not DER, more than MAX_CHAIN, not PEM: client_cert_malformed."""
    reader = _reader(fmt, "Client-Cert" if fmt == "rfc9440" else header)
    with pytest.raises(CertificateRefused) as info:
        reader.read_chain(CIMultiDict({header: value}), b"leaf")
    assert info.value.reason == "client_cert_malformed" and "chain is malformed" in info.value.description


def test_chain_of_refuses_more_than_max_chain():
    """A forwarded chain is at most MAX_CHAIN certificates."""
    der = root().der
    assert len(chain_of(", ".join([f":{b64(der)}:"] * MAX_CHAIN), "rfc9440")) == MAX_CHAIN
    with pytest.raises(ValueError, match="more than"):
        chain_of(", ".join([f":{b64(der)}:"] * (MAX_CHAIN + 1)), "rfc9440")
