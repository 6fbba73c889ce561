"""Hand-assembled DER for the tests (X.690 §8, written out here), independent of the reader under test
(gateway/pki/der.py) and of the sandbox's writer: the QCStatements of test certificates, and certificates that
carry them, made with `cryptography`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

QC_STATEMENTS = x509.ObjectIdentifier("1.3.6.1.5.5.7.1.3")
ROLE_OID = {"PSP_AS": "0.4.0.19495.1.1", "PSP_PI": "0.4.0.19495.1.2", "PSP_AI": "0.4.0.19495.1.3",
            "PSP_IC": "0.4.0.19495.1.4"}
WEB, ESEAL, ESIGN = "0.4.0.1862.1.6.3", "0.4.0.1862.1.6.2", "0.4.0.1862.1.6.1"


def tlv(tag: int, content: bytes) -> bytes:
    """One element: tag, definite length (short or long form), content."""
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = (n.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + n.to_bytes(size, "big") + content


def oid(dotted: str) -> bytes:
    """An OBJECT IDENTIFIER: the first two arcs as 40·a + b, each arc base-128 big-endian."""
    arcs = [int(a) for a in dotted.split(".")]
    out = bytearray()
    for arc in [40 * arcs[0] + arcs[1], *arcs[2:]]:
        groups = [arc & 0x7F]
        while arc > 0x7F:
            arc >>= 7
            groups.append(0x80 | (arc & 0x7F))
        out += bytes(reversed(groups))
    return tlv(0x06, bytes(out))


def seq(*items: bytes) -> bytes:
    return tlv(0x30, b"".join(items))


def utf8(text: str) -> bytes:
    return tlv(0x0C, text.encode("utf-8"))


def compliance() -> bytes:
    return seq(oid("0.4.0.1862.1.1"))


def qc_type(*types: str) -> bytes:
    return seq(oid("0.4.0.1862.1.6"), seq(*(oid(t) for t in types)))


def psd2(roles: Sequence[str], nca_name: str = "Financial Conduct Authority", nca_id: str = "GB-FCA") -> bytes:
    return seq(oid("0.4.0.19495.2"),
               seq(seq(*(seq(oid(ROLE_OID[r]), utf8(r)) for r in roles)), utf8(nca_name), utf8(nca_id)))


def qwac(roles: Sequence[str] = ("PSP_AI", "PSP_PI")) -> bytes:
    """The QCStatements of a QWAC with these roles."""
    return seq(compliance(), qc_type(WEB), psd2(roles))


def qseal(roles: Sequence[str] = ("PSP_AI", "PSP_PI")) -> bytes:
    return seq(compliance(), qc_type(ESEAL), psd2(roles))


_KEY = ec.generate_private_key(ec.SECP256R1())


def certificate(subject: x509.Name | str, statements: bytes | None = None) -> x509.Certificate:
    """A self-signed certificate with `subject` (RFC 4514 text or a Name) and, when given, that QCStatements
    extension value (its raw DER)."""
    name = x509.Name.from_rfc4514_string(subject) if isinstance(subject, str) else subject
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(_KEY.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
               .not_valid_after(now + timedelta(days=30)))
    if statements is not None:
        builder = builder.add_extension(x509.UnrecognizedExtension(QC_STATEMENTS, statements), critical=False)
    return builder.sign(_KEY, hashes.SHA256())


def psd2_subject(org_identifier: str | None = "PSDGB-FCA-123456", cn: str = "AttackTableSoftware1",
                 ou: str = "0015800001041REAAY") -> x509.Name:
    """C=GB, O=OpenBanking, OU, [organizationIdentifier], CN (least specific first)."""
    attrs = [x509.NameAttribute(NameOID.COUNTRY_NAME, "GB"), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "OpenBanking"),
             x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou)]
    if org_identifier is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, org_identifier))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)
