"""Real keys for the JOSE tests, generated once per session (RSA generation is the slow part)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.jose import JwkSet, SigningKey, generate_signing_key

NOW = 1_700_000_000.0
"""The fixed 'current time' every claim test uses (2023-11-14T22:13:20Z)."""


@dataclass(frozen=True)
class TestKeys:
    """The trusted keys (in `jwks`) and some untrusted ones an attacker might hold."""

    __test__ = False

    ec: SigningKey  # ES256, kid "ec-1", trusted
    rsa: SigningKey  # PS256/RS256, kid "rsa-1", trusted
    ec384: SigningKey  # P-384, kid "ec384-1", trusted (for curve/alg mismatch)
    attacker_ec: SigningKey  # kid "ec-1" too, NOT trusted
    attacker_rsa: SigningKey  # kid "rsa-1" too, NOT trusted
    jwks: JwkSet


@pytest.fixture(scope="session")
def keys() -> TestKeys:
    """One set of real keys for the whole test session."""
    ec_key = generate_signing_key("EC", kid="ec-1")
    rsa_key = generate_signing_key("RSA", kid="rsa-1")
    ec384 = generate_signing_key("EC", crv="P-384", kid="ec384-1")
    jwks = JwkSet.from_dict({"keys": [k.public_jwk() for k in (ec_key, rsa_key, ec384)]})
    return TestKeys(
        ec=ec_key,
        rsa=rsa_key,
        ec384=ec384,
        attacker_ec=generate_signing_key("EC", kid="ec-1"),
        attacker_rsa=generate_signing_key("RSA", kid="rsa-1"),
        jwks=jwks,
    )


def self_signed_cert(private_key: ec.EllipticCurvePrivateKey, cn: str = "tpp.example") -> bytes:
    """A DER self-signed certificate for `private_key` (stands in for an OB transport certificate)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=365))
        .sign(private_key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.DER)
