"""A local CA hierarchy for chain tests, made with cryptography: roots, intermediates and leaves with the
extensions a test chooses (real keys, real signatures)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
"""The moment the tests validate at (certificates are dated around it)."""
DAY = timedelta(days=1)

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
EMAIL = ExtendedKeyUsageOID.EMAIL_PROTECTION


QC_STATEMENTS = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")
"""id-pe-qcStatements (RFC 3739)."""


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"), x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _usage(*, sign: bool = False, cert_sign: bool = False, non_repudiation: bool = False,
           encipher: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=sign, content_commitment=non_repudiation, key_encipherment=encipher,
                         data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


@dataclass(frozen=True)
class Issued:
    """A certificate with its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def der(self) -> bytes:
        """DER."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    @property
    def pem(self) -> bytes:
        """PEM."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def write(self, path: Path) -> str:
        """Write the PEM to `path`; its name (as a config path relative to the directory)."""
        path.write_bytes(self.pem)
        return path.name

    def issue(self, cn: str, *, ca: bool = False, ca_flag: bool | None = None, key_cert_sign: bool | None = None,
              eku: Sequence[x509.ObjectIdentifier] | None = (CLIENT_AUTH,), usage: x509.KeyUsage | None = None,
              not_before: datetime = NOW - 30 * DAY, not_after: datetime = NOW + 365 * DAY,
              key: ec.EllipticCurvePrivateKey | None = None, public_key: PublicKey | None = None,
              crl_url: str | None = None, qc_statements: bytes | None = None) -> Issued:
        """A certificate this one signs: a CA (`ca`) or a leaf. `ca_flag` / `key_cert_sign` override what a CA
        or a leaf would normally carry (a CA:false intermediate); `eku` None: no extendedKeyUsage; `public_key`:
        certify a key held elsewhere (a TPP's JWK); `qc_statements`: the DER of a QCStatements extension."""
        return make(cn, self, ca=ca, ca_flag=ca_flag, key_cert_sign=key_cert_sign, eku=eku, usage=usage,
                    not_before=not_before, not_after=not_after, key=key, public_key=public_key, crl_url=crl_url,
                    qc_statements=qc_statements)


def make(cn: str, issuer: Issued | None, *, ca: bool, ca_flag: bool | None = None,
         key_cert_sign: bool | None = None, eku: Sequence[x509.ObjectIdentifier] | None = None,
         usage: x509.KeyUsage | None = None, not_before: datetime = NOW - 30 * DAY,
         not_after: datetime = NOW + 365 * DAY, key: ec.EllipticCurvePrivateKey | None = None,
         public_key: PublicKey | None = None, crl_url: str | None = None,
         qc_statements: bytes | None = None) -> Issued:
    """A certificate signed by `issuer` (None: self-signed), naming `crl_url` as its CRL distribution point."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    subject_key = public_key or key.public_key()
    signer_key = issuer.key if issuer else key
    issuer_name = issuer.cert.subject if issuer else _name(cn)
    cert_sign = ca if key_cert_sign is None else key_cert_sign
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn)).issuer_name(issuer_name).public_key(subject_key)
        .serial_number(x509.random_serial_number()).not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca if ca_flag is None else ca_flag, path_length=None),
                       critical=True)
        .add_extension(usage or _usage(sign=not ca, cert_sign=cert_sign), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), critical=False)
    )
    if eku is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    if qc_statements is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(QC_STATEMENTS, qc_statements), critical=False)
    if crl_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
    return Issued(builder.sign(signer_key, hashes.SHA256()), key)


def crl(issuer: Issued, revoked: Sequence[Issued], now: datetime) -> bytes:
    """A DER CRL `issuer` signs, valid a day from `now`, listing `revoked`."""
    builder = (x509.CertificateRevocationListBuilder().issuer_name(issuer.cert.subject).last_update(now - DAY)
               .next_update(now + DAY))
    for cert in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(cert.cert.serial_number).revocation_date(now - DAY).build())
    return builder.sign(issuer.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def root(cn: str = "Test Root CA", **kw: object) -> Issued:
    """A self-signed root."""
    return make(cn, None, ca=True, **kw)  # type: ignore[arg-type]


def signing_usage() -> x509.KeyUsage:
    """digitalSignature + nonRepudiation (a QSealC / OB signing certificate)."""
    return _usage(sign=True, non_repudiation=True)


def encipher_only_usage() -> x509.KeyUsage:
    """keyEncipherment alone: for neither purpose."""
    return _usage(encipher=True)
