"""A throwaway CA hierarchy made in the test: a root, the certificates it issues (leaves, delegated OCSP
responders), the CRLs it signs, and the `index.txt` Debian's `openssl ocsp` answers from."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
"""The moment every certificate and CRL is made around (the real time: `openssl ocsp` stamps its answers with it;
tests of CRLs move their own clock from here)."""


def name(cn: str) -> x509.Name:
    """`CN=<cn>,O=revocation tests,C=GB`."""
    return x509.Name([x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "revocation tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def pem(obj: x509.Certificate | ec.EllipticCurvePrivateKey) -> bytes:
    """The PEM of a certificate or (unencrypted PKCS#8) private key."""
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass
class Issued:
    """A certificate with its key."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate


@dataclass
class TestCa:
    """A self-signed CA that issues certificates naming `crl_url` / `ocsp_url` and signs CRLs."""

    __test__ = False

    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    cn: str = "Revocation Test CA"
    cert: x509.Certificate = field(init=False)
    issued: list[x509.Certificate] = field(default_factory=list)

    def __post_init__(self) -> None:
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        self.cert = (
            x509.CertificateBuilder().subject_name(name(self.cn)).issuer_name(name(self.cn))
            .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=365)).not_valid_after(NOW + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, cn: str, *, crl_url: str | None = None, ocsp_url: str | None = None,
              eku: list[x509.ObjectIdentifier] | None = None, nocheck: bool = False) -> Issued:
        """A certificate for a fresh P-256 key, naming the given CRL distribution point and OCSP responder."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder().subject_name(name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - dt.timedelta(days=30)).not_valid_after(NOW + dt.timedelta(days=300))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        )
        if crl_url is not None:
            point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
            builder = builder.add_extension(x509.CRLDistributionPoints([point]), critical=False)
        if ocsp_url is not None:
            access = x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                            x509.UniformResourceIdentifier(ocsp_url))
            builder = builder.add_extension(x509.AuthorityInformationAccess([access]), critical=False)
        if nocheck:
            builder = builder.add_extension(x509.OCSPNoCheck(), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        self.issued.append(cert)
        return Issued(key, cert)

    def crl(self, revoked: list[x509.Certificate], *, this_update: dt.datetime = NOW,
            next_update: dt.datetime | None = NOW + dt.timedelta(days=1),
            key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
        """A DER CRL listing `revoked` (reason keyCompromise), signed by `key` (default: the CA's)."""
        builder = x509.CertificateRevocationListBuilder().issuer_name(self.cert.subject).last_update(this_update)
        if next_update is not None:
            builder = builder.next_update(next_update)
        for cert in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(NOW)
                .add_extension(x509.CRLReason(x509.ReasonFlags.key_compromise), critical=False).build())
        return builder.sign(key or self.key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)

    def write_index(self, path: Path, revoked: list[x509.Certificate], unknown: tuple[x509.Certificate, ...] = ()) -> None:
        """The `openssl ca` database `openssl ocsp -index` answers from: every issued certificate (V or R) except
        those in `unknown`."""
        stamp = "%y%m%d%H%M%SZ"
        lines = []
        for cert in self.issued:
            if cert in unknown:
                continue
            state, when = ("R", NOW.strftime(stamp) + ",keyCompromise") if cert in revoked else ("V", "")
            dn = "/" + "/".join(a.rfc4514_string() for a in cert.subject)
            serial = f"{cert.serial_number:X}"
            serial = "0" * (len(serial) % 2) + serial  # whole bytes, as openssl's BN_bn2hex writes it
            lines.append(f"{state}\t{cert.not_valid_after_utc.strftime(stamp)}\t{when}\t{serial}"
                         f"\tunknown\t{dn}\n")
        path.write_text("".join(lines))
