"""Test transport certificates: the sandbox's test CA (kept in the state directory) and the OB-style mTLS client
certificates it issues (`dcr-gateway sandbox mint-cert`), so the whole mTLS path can be tried on a laptop.

The sandbox also plays the QTSP: `mint-cert --type qwac|qseal|obwac` issues eIDAS-style PSD2 certificates, with
the QCStatements of ETSI EN 319 412-5 (QcCompliance, QcType web / eseal) and ETSI TS 119 495 (the PSD2 roles and
the NCA) and the subject organizationIdentifier `PSDGB-FCA-<id>` (ETSI EN 319 412-1), or an OB-style OBWAC
(the organizationIdentifier, no QCStatements). Their DER is written here (`qc_statements_der`), not by the
gateway's reader (gateway/pki/psd2.py), so the two check each other.

X.509 through `cryptography` (JOSE stays behind gateway/jose): SHA-256 signatures, EC P-256 or RSA 2048 keys,
random serials (RFC 5280 §4.1.2.2), the CA limited to issuing end-entity certificates, the leaf to TLS client
authentication (`extendedKeyUsage clientAuth`). Never for production: the CA key lives beside the sandbox's.
"""

from __future__ import annotations

import itertools
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Final, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .keyring import ensure_state_dir, load_or_create_private_file

CA_KEY_FILE: Final = "transport-ca-key.pem"
CA_CERT_FILE: Final = "transport-ca.pem"
CA_NAME: Final = "dcr-gateway sandbox test transport CA"
CA_DAYS: Final = 5 * 365
MAX_LEAF_DAYS: Final = 825
"""Longest leaf validity `mint-cert` issues (the CA/Browser Forum's old ceiling; OB transport certificates last
about two years)."""
_BACKDATE: Final = timedelta(minutes=5)
"""notBefore is set this far in the past, so a clock slightly behind still accepts a certificate minted now."""

KeyType = Literal["ec", "rsa"]
CertType = Literal["transport", "qwac", "qseal", "obwac"]
"""What `mint-cert` issues: the OB-style transport certificate (the default), a QWAC, a QSealC or an OBWAC."""
CERT_TYPES: Final[tuple[CertType, ...]] = ("transport", "qwac", "qseal", "obwac")
PSD2_ROLES: Final = {"PSP_AS": "0.4.0.19495.1.1", "PSP_PI": "0.4.0.19495.1.2", "PSP_AI": "0.4.0.19495.1.3",
                     "PSP_IC": "0.4.0.19495.1.4"}
"""ETSI TS 119 495 §5.1: the PSD2 roles and their OIDs."""
_QC_STATEMENTS: Final = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")
_QC_COMPLIANCE: Final = "0.4.0.1862.1.1"
_QC_TYPE: Final = "0.4.0.1862.1.6"
_QC_TYPE_OF: Final = {"qseal": "0.4.0.1862.1.6.2", "qwac": "0.4.0.1862.1.6.3"}
_PSD2_STATEMENT: Final = "0.4.0.19495.2"
_POLICY_OF: Final = {"qwac": "0.4.0.194112.1.4", "qseal": "0.4.0.194112.1.1"}
"""ETSI EN 319 411-2 policies: QCP-w (QWAC) and QCP-l (QSealC)."""
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertificateError(Exception):
    """A certificate or key file that cannot be used; the message is safe to print."""


def generate_private_key(key_type: KeyType = "ec") -> PrivateKey:
    """EC P-256, or RSA 2048."""
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def private_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (written only to 0600 files)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_pem(cert: x509.Certificate) -> bytes:
    """The PEM of one certificate."""
    return cert.public_bytes(serialization.Encoding.PEM)


def ob_subject(*, org_name: str, org_id: str, software_id: str) -> x509.Name:
    """The OB transport-certificate subject `C=GB, O=<org name>, OU=<org_id>, CN=<software_id>` (written
    RFC 4514 style, most specific first: `CN=…,OU=…,O=…,C=GB`)."""
    for label, value in (("org name", org_name), ("org_id", org_id), ("software_id", software_id)):
        if not value or len(value) > 64:  # RFC 5280 Appendix A upper bounds (ub-organization-name: 64)
            raise CertificateError(f"{label} must be 1 to 64 characters")
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, org_name),
        x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, org_id),
        x509.NameAttribute(NameOID.COMMON_NAME, software_id),
    ])


@dataclass(frozen=True, slots=True)
class Psd2Profile:
    """What a PSD2 certificate (`qwac`, `qseal`, `obwac`) says of its holder."""

    cert_type: CertType
    roles: tuple[str, ...]
    nca_country: str
    nca: str
    nca_name: str
    registration_id: str

    def __post_init__(self) -> None:
        if self.cert_type == "transport":
            raise CertificateError("a transport certificate has no PSD2 profile")
        unknown = [r for r in self.roles if r not in PSD2_ROLES]
        if unknown or not self.roles or len(set(self.roles)) != len(self.roles):
            raise CertificateError(f"roles must be one or more distinct of {', '.join(PSD2_ROLES)}")
        if not (len(self.nca_country) == 2 and self.nca_country.isascii() and self.nca_country.isupper()):
            raise CertificateError("the NCA country must be two capital letters (ISO 3166, e.g. GB)")
        if not (2 <= len(self.nca) <= 8 and self.nca.isascii() and self.nca.isalpha() and self.nca.isupper()):
            raise CertificateError("the NCA id must be 2 to 8 capital letters (e.g. FCA)")
        if not 1 <= len(self.nca_name) <= 256:
            raise CertificateError("the NCA name must be 1 to 256 characters")
        if not (1 <= len(self.registration_id) <= 35 and self.registration_id.isascii()
                and self.registration_id.isprintable() and " " not in self.registration_id):
            raise CertificateError("the registration id must be 1 to 35 visible ASCII characters")

    @property
    def organization_identifier(self) -> str:
        """ETSI EN 319 412-1 §5.1.4: `PSD` + country + `-` + NCA + `-` + registration number."""
        return f"PSD{self.nca_country}-{self.nca}-{self.registration_id}"

    @property
    def nca_id(self) -> str:
        """ETSI TS 119 495 §5.2.3: country + `-` + NCA."""
        return f"{self.nca_country}-{self.nca}"


def psd2_subject(profile: Psd2Profile, *, org_name: str, org_id: str, software_id: str) -> x509.Name:
    """The OB subject with the organizationIdentifier: `C=GB, O=…, OU=<org_id>, 2.5.4.97=PSDGB-FCA-<id>,
    CN=<software_id>` (least specific first, as in the DER)."""
    base = ob_subject(org_name=org_name, org_id=org_id, software_id=software_id)
    attrs = list(base)
    return x509.Name([*attrs[:3], x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER,
                                                      profile.organization_identifier), attrs[3]])


def _tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    length = bytes([n]) if n < 0x80 else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes(
        (n.bit_length() + 7) // 8, "big")
    return bytes([tag]) + length + content


def _oid(dotted: str) -> bytes:
    arcs = [int(a) for a in dotted.split(".")]
    body = bytearray()
    for arc in [arcs[0] * 40 + arcs[1], *arcs[2:]]:
        chunk = [arc & 0x7F]
        arc >>= 7
        while arc:
            chunk.insert(0, 0x80 | (arc & 0x7F))
            arc >>= 7
        body += bytes(chunk)
    return _tlv(0x06, bytes(body))


def _seq(*items: bytes) -> bytes:
    return _tlv(0x30, b"".join(items))


def _utf8(text: str) -> bytes:
    return _tlv(0x0C, text.encode("utf-8"))


def qc_statements_der(profile: Psd2Profile) -> bytes:
    """The QCStatements extension value of a QWAC or QSealC: QcCompliance, QcType, and the PSD2 statement."""
    qc_type = _QC_TYPE_OF.get(profile.cert_type)
    if qc_type is None:
        raise CertificateError(f"a {profile.cert_type} certificate carries no QCStatements")
    roles = _seq(*(_seq(_oid(PSD2_ROLES[r]), _utf8(r)) for r in profile.roles))
    return _seq(
        _seq(_oid(_QC_COMPLIANCE)),
        _seq(_oid(_QC_TYPE), _seq(_oid(qc_type))),
        _seq(_oid(_PSD2_STATEMENT), _seq(roles, _utf8(profile.nca_name), _utf8(profile.nca_id))),
    )


def certificate_der(cert: x509.Certificate) -> bytes:
    """The DER of one certificate (what `x5c` and `x5t#S256` are made of)."""
    return cert.public_bytes(serialization.Encoding.DER)


def read_certificates(data: bytes) -> list[x509.Certificate]:
    """Every certificate of a PEM file, in order; CertificateError when there is none or one is not PEM."""
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError("no PEM certificate could be read") from None
    if not certs:
        raise CertificateError("no PEM certificate could be read")
    return certs


def check_chain(certs: list[x509.Certificate]) -> None:
    """Each certificate must be issued by the next (leaf first, RFC 7517 §4.7 `x5c` order)."""
    for index, (cert, issuer) in enumerate(itertools.pairwise(certs)):
        try:
            cert.verify_directly_issued_by(issuer)
        except (ValueError, TypeError, InvalidSignature) as exc:
            raise CertificateError(
                f"certificate {index + 1} of the file is not issued by certificate {index + 2} "
                "(the file must list the leaf first, then its issuers)"
            ) from exc


def _write_public(path: Path, data: bytes) -> None:
    """Replace `path` atomically with `data` (0644: a certificate is public)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class SandboxCa:
    """The sandbox's test CA: its key (0600) and self-signed certificate, both in the state directory."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    cert_path: Path

    @classmethod
    def load(cls, state_dir: Path, *, now: datetime | None = None) -> SandboxCa:
        """The CA of `state_dir`, created on first use (key 0600 never replaced; certificate remade if missing)."""
        ensure_state_dir(state_dir)
        key_path, cert_path = state_dir / CA_KEY_FILE, state_dir / CA_CERT_FILE
        pem = load_or_create_private_file(key_path, lambda: private_pem(generate_private_key("ec")))
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            raise CertificateError(f"{key_path} is not a PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CertificateError(f"{key_path} is not an EC private key")
        cert = None
        if cert_path.exists():
            cert = read_certificates(cert_path.read_bytes())[0]
            if cert.public_key() != key.public_key():
                raise CertificateError(f"{cert_path} does not hold the key of {key_path}; remove both to start afresh")
        if cert is None:
            cert = _self_signed_ca(key, now or datetime.now(UTC))
            _write_public(cert_path, certificate_pem(cert))
        return cls(key, cert, cert_path)

    def issue(
        self, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, subject: x509.Name, *, days: int,
        now: datetime | None = None, psd2: Psd2Profile | None = None,
    ) -> x509.Certificate:
        """A TLS client certificate for `public_key` (clientAuth only), valid `days` from now, within the CA's;
        with `psd2`, the certificate of that type: a QWAC or OBWAC (clientAuth and serverAuth, as QTSPs issue
        them; a QWAC with its QCStatements) or a QSealC (digitalSignature and nonRepudiation, no TLS usage)."""
        if not 1 <= days <= MAX_LEAF_DAYS:
            raise CertificateError(f"the validity must be 1 to {MAX_LEAF_DAYS} days")
        start = (now or datetime.now(UTC)) - _BACKDATE
        end = min(start + _BACKDATE + timedelta(days=days), self.cert.not_valid_after_utc)
        if end <= start:
            raise CertificateError(f"the test CA in {self.cert_path} has expired; remove it and its key")
        ski = x509.SubjectKeyIdentifier.from_public_key(self.key.public_key())
        cert_type = psd2.cert_type if psd2 is not None else "transport"
        rsa_key = isinstance(public_key, rsa.RSAPublicKey)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        )
        if cert_type == "qseal":
            builder = builder.add_extension(_key_usage(digital_signature=True, non_repudiation=True), critical=True)
        else:
            builder = builder.add_extension(_key_usage(digital_signature=True, key_encipherment=rsa_key),
                                            critical=True)
            usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
            if cert_type in ("qwac", "obwac"):
                usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
            builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        if psd2 is not None and cert_type in _POLICY_OF:
            builder = builder.add_extension(
                x509.CertificatePolicies([x509.PolicyInformation(x509.ObjectIdentifier(_POLICY_OF[cert_type]),
                                                                 None)]), critical=False)
            builder = builder.add_extension(x509.UnrecognizedExtension(_QC_STATEMENTS, qc_statements_der(psd2)),
                                            critical=False)
        return (
            builder
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .sign(self.key, hashes.SHA256())
        )


def _key_usage(*, digital_signature: bool = False, key_encipherment: bool = False, non_repudiation: bool = False,
               cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature, content_commitment=non_repudiation, key_encipherment=key_encipherment,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
        encipher_only=False, decipher_only=False,
    )


def _self_signed_ca(key: ec.EllipticCurvePrivateKey, now: datetime) -> x509.Certificate:
    name = x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "dcr-gateway sandbox"),
        x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + timedelta(days=CA_DAYS))
        # SECURITY: the test CA issues end-entity certificates only (path length 0).
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
