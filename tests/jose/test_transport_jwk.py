"""`transport_jwk`: the `use: tls` JWK of a certificate chain, as OB Directory software key sets list them."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from gateway.jose import JoseError, JwkSet, jwk_thumbprint, transport_jwk


def _cert(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, cn: str,
          issuer: tuple[ec.EllipticCurvePrivateKey, str] | None = None) -> bytes:
    """A DER certificate for `key`, signed by `issuer` (key, CN) or self-signed."""
    signer, issuer_cn = issuer or (key, cn)
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=1))
            .sign(signer, hashes.SHA256()))
    return cert.public_bytes(Encoding.DER)


def test_the_chain_becomes_x5c_and_the_leaf_key_the_jwk() -> None:
    """x5c is the chain in standard base64, leaf first; x5t#S256 the leaf's; the key set finds it by the leaf."""
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = _cert(ca_key, "CA")
    leaf = _cert(leaf_key, "leaf", (ca_key, "CA"))
    jwk = transport_jwk([leaf, ca])
    assert jwk["use"] == "tls" and jwk["kty"] == "EC" and jwk["crv"] == "P-256"
    assert jwk["x5c"] == [base64.b64encode(leaf).decode(), base64.b64encode(ca).decode()]
    assert jwk["x5t#S256"] == base64.urlsafe_b64encode(hashlib.sha256(leaf).digest()).rstrip(b"=").decode()
    assert jwk["kid"] == jwk_thumbprint(jwk)
    assert transport_jwk([leaf], kid="t1")["kid"] == "t1"
    keyset = JwkSet.from_dict({"keys": [jwk]})
    assert keyset.tls_key_for_cert(leaf) is not None and len(keyset) == 0  # never a signing key


@pytest.mark.parametrize("chain", [[], [b"not DER"]], ids=["empty", "not-a-certificate"])
def test_no_usable_certificate_is_key_invalid(chain) -> None:
    """Nothing to list: JoseError key_invalid."""
    with pytest.raises(JoseError) as caught:
        transport_jwk(chain)
    assert caught.value.reason == "key_invalid"


def test_a_weak_rsa_key_is_refused() -> None:
    """The leaf's key passes the one key validation (RSA below 2048 bits is refused)."""
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(JoseError, match="below"):
        transport_jwk([_cert(weak, "weak")])
