"""What a PSD2 certificate says about its holder: the QCStatements extension (RFC 3739 `id-pe-qcStatements`,
1.3.6.1.5.5.7.1.3) read for the ETSI EN 319 412-5 statements that say what kind of certificate it is
(QcCompliance, QcType web = QWAC / eseal = QSealC) and the ETSI TS 119 495 §5.1 PSD2 statement (the PSP's
roles and its national competent authority); and the subject's organizationIdentifier (2.5.4.97) in its PSD form
(ETSI EN 319 412-1 §5.1.4: `PSDGB-FCA-123456`).

    QCStatements ::= SEQUENCE OF QCStatement
    QCStatement  ::= SEQUENCE { statementId OBJECT IDENTIFIER, statementInfo ANY DEFINED BY statementId OPTIONAL }
    QcType       ::= SEQUENCE OF OBJECT IDENTIFIER            -- statementId 0.4.0.1862.1.6
    PSD2QcType   ::= SEQUENCE { rolesOfPSP RolesOfPSP, nCAName NCAName, nCAId NCAId }   -- 0.4.0.19495.2
    RolesOfPSP   ::= SEQUENCE OF RoleOfPSP
    RoleOfPSP    ::= SEQUENCE { roleOfPspOid OBJECT IDENTIFIER, roleOfPspName UTF8String (SIZE(1..256)) }
    NCAName      ::= UTF8String (SIZE (1..256))
    NCAId        ::= UTF8String (SIZE (1..256))

Read with the strict bounded reader of `gateway.pki.der`: anything malformed raises `ParseError`, nothing else.
Whether the certificate is genuine (its chain, its revocation) is not decided here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier

from . import der
from .der import ParseError

__all__ = ["ParseError", "Psd2Certificate", "Psd2Org", "QcStatements", "organization_identifier",
           "parse_organization_identifier", "parse_qc_statements", "psd2_certificate", "qc_statements_of"]

QC_STATEMENTS_OID: Final = ObjectIdentifier("1.3.6.1.5.5.7.1.3")
QC_COMPLIANCE: Final = "0.4.0.1862.1.1"
QC_TYPE: Final = "0.4.0.1862.1.6"
QC_TYPE_ESIGN: Final = "0.4.0.1862.1.6.1"
QC_TYPE_ESEAL: Final = "0.4.0.1862.1.6.2"
QC_TYPE_WEB: Final = "0.4.0.1862.1.6.3"
PSD2_STATEMENT: Final = "0.4.0.19495.2"
ORGANIZATION_IDENTIFIER: Final = ObjectIdentifier("2.5.4.97")

Role = Literal["PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC"]
ROLE_OIDS: Final[dict[str, Role]] = {
    "0.4.0.19495.1.1": "PSP_AS",  # account servicing
    "0.4.0.19495.1.2": "PSP_PI",  # payment initiation
    "0.4.0.19495.1.3": "PSP_AI",  # account information
    "0.4.0.19495.1.4": "PSP_IC",  # issuing of card-based payment instruments
}
ROLES: Final[tuple[Role, ...]] = tuple(ROLE_OIDS.values())
QC_TYPES: Final = {QC_TYPE_ESIGN: "esign", QC_TYPE_ESEAL: "eseal", QC_TYPE_WEB: "web"}

MAX_STATEMENTS: Final = 32
MAX_ROLES: Final = 16
MAX_QC_TYPES: Final = 8
MAX_TEXT: Final = 256
"""ETSI TS 119 495: roleOfPspName, nCAName and nCAId are at most 256 characters."""

_NCA_ID: Final = re.compile(r"^([A-Z]{2})-([A-Z]{2,8})$")
_ORG_ID: Final = re.compile(r"^PSD([A-Z]{2})-([A-Z]{2,8})-([^\x00-\x1f\x7f]{1,256})$")


@dataclass(frozen=True, slots=True)
class QcStatements:
    """What a certificate's QCStatements say (only the statements read here; others are skipped whole)."""

    compliance: bool
    """QcCompliance (0.4.0.1862.1.1): issued as an EU qualified certificate."""
    types: tuple[str, ...]
    """QcType values: `esign`, `eseal`, `web` (other type OIDs dotted)."""
    roles: tuple[Role, ...] | None
    """The PSD2 statement's roles (TS 119 495 role OIDs; unknown role OIDs are left out), None without one."""
    nca_name: str | None
    nca_id: str | None
    """The national competent authority: `GB-FCA` (country, `-`, NCA), as TS 119 495 §5.2.3 writes it."""

    @property
    def qwac(self) -> bool:
        """A qualified website authentication certificate: QcCompliance and QcType web."""
        return self.compliance and "web" in self.types

    @property
    def qsealc(self) -> bool:
        """A qualified electronic seal certificate: QcCompliance and QcType eseal."""
        return self.compliance and "eseal" in self.types


@dataclass(frozen=True, slots=True)
class Psd2Org:
    """A PSD organizationIdentifier (EN 319 412-1 §5.1.4): `PSD` country `-` NCA `-` registration number."""

    country: str
    nca: str
    id: str

    def __str__(self) -> str:
        return f"PSD{self.country}-{self.nca}-{self.id}"


@dataclass(frozen=True, slots=True)
class Psd2Certificate:
    """What a certificate says as a PSD2 certificate: its QCStatements (None without the extension) and its
    subject's organizationIdentifier (the raw text, and its PSD form when it has one)."""

    statements: QcStatements | None
    organization_identifier: str | None
    organization: Psd2Org | None

    @property
    def roles(self) -> tuple[Role, ...]:
        """The PSD2 roles (empty without the PSD2 statement)."""
        return (self.statements.roles or ()) if self.statements is not None else ()


def parse_qc_statements(data: bytes) -> QcStatements:
    """The QCStatements extension value (DER); ParseError when it is malformed or repeats a statement."""
    top = der.read_one(data, der.SEQUENCE)
    seen: set[str] = set()
    compliance = False
    types: tuple[str, ...] = ()
    roles: tuple[Role, ...] | None = None
    nca_name = nca_id = None
    for statement in der.children(top, limit=MAX_STATEMENTS):
        der.expect(statement, der.SEQUENCE, "QCStatement")
        parts = list(der.children(statement, limit=2))
        if not parts:
            raise ParseError("QCStatement without a statementId")
        sid = der.oid(parts[0])
        if sid in seen:
            raise ParseError(f"QCStatement {sid} appears twice")
        seen.add(sid)
        info = parts[1] if len(parts) == 2 else None
        if sid == QC_COMPLIANCE:
            if info is not None:
                raise ParseError("QcCompliance takes no statementInfo")
            compliance = True
        elif sid == QC_TYPE:
            types = _qc_types(info)
        elif sid == PSD2_STATEMENT:
            roles, nca_name, nca_id = _psd2(info)
    return QcStatements(compliance, types, roles, nca_name, nca_id)


def _qc_types(info: der.Element | None) -> tuple[str, ...]:
    if info is None:
        raise ParseError("QcType without its types")
    der.expect(info, der.SEQUENCE, "QcType")
    out: list[str] = []
    for element in der.children(info, limit=MAX_QC_TYPES):
        dotted = der.oid(element)
        name = QC_TYPES.get(dotted, dotted)
        if name in out:
            raise ParseError(f"QcType {name} appears twice")
        out.append(name)
    if not out:
        raise ParseError("QcType without its types")
    return tuple(out)


def _psd2(info: der.Element | None) -> tuple[tuple[Role, ...], str, str]:
    if info is None:
        raise ParseError("PSD2 QCStatement without its PSD2QcType")
    der.expect(info, der.SEQUENCE, "PSD2QcType")
    parts = list(der.children(info, limit=3))
    if len(parts) != 3:
        raise ParseError("PSD2QcType must be rolesOfPSP, nCAName, nCAId")
    der.expect(parts[0], der.SEQUENCE, "rolesOfPSP")
    roles: list[Role] = []
    for role in der.children(parts[0], limit=MAX_ROLES):
        der.expect(role, der.SEQUENCE, "RoleOfPSP")
        fields = list(der.children(role, limit=2))
        if len(fields) != 2:
            raise ParseError("RoleOfPSP must be roleOfPspOid, roleOfPspName")
        role_oid = der.oid(fields[0])
        name = _utf8(fields[1], "roleOfPspName")
        known = ROLE_OIDS.get(role_oid)
        if known is None:
            continue  # a role this gateway does not know grants nothing
        if name != known:
            raise ParseError(f"roleOfPspName {name[:32]!r} does not name role {role_oid} ({known})")
        if known in roles:
            raise ParseError(f"role {known} appears twice")
        roles.append(known)
    nca_name = _utf8(parts[1], "nCAName")
    nca_id = _utf8(parts[2], "nCAId")
    return tuple(roles), nca_name, nca_id


def _utf8(element: der.Element, what: str) -> str:
    der.expect(element, der.UTF8_STRING, what)
    value = der.text(element, max_chars=MAX_TEXT)
    if not value:
        raise ParseError(f"{what} is empty")
    return value


def parse_nca_id(value: str) -> tuple[str, str] | None:
    """`GB-FCA` as (country, NCA), None when not in that form."""
    m = _NCA_ID.match(value)
    return (m.group(1), m.group(2)) if m else None


def parse_organization_identifier(value: str) -> Psd2Org | None:
    """A PSD organizationIdentifier (`PSDGB-FCA-123456`) as (country, NCA, id); None when it is not one (an
    organizationIdentifier may have other forms: `VATGB-…`, `NTRGB-…`)."""
    m = _ORG_ID.match(value)
    return Psd2Org(m.group(1), m.group(2), m.group(3)) if m else None


def qc_statements_of(cert: x509.Certificate) -> QcStatements | None:
    """The certificate's QCStatements, None without the extension; ParseError when it cannot be read."""
    try:
        ext = cert.extensions.get_extension_for_oid(QC_STATEMENTS_OID)
    except x509.ExtensionNotFound:
        return None
    except ValueError as exc:  # cryptography refuses a duplicate or malformed known extension
        raise ParseError(f"the certificate's extensions cannot be read: {exc}") from None
    value = ext.value
    if not isinstance(value, x509.UnrecognizedExtension):  # pragma: no cover - cryptography does not parse it
        raise ParseError("the QCStatements extension was not left raw")
    return parse_qc_statements(value.value)


def organization_identifier(cert: x509.Certificate) -> str | None:
    """The subject's organizationIdentifier (2.5.4.97); ParseError when there are several."""
    values = cert.subject.get_attributes_for_oid(ORGANIZATION_IDENTIFIER)
    if len(values) > 1:
        raise ParseError("the subject has more than one organizationIdentifier")
    if not values:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def psd2_certificate(cert: x509.Certificate) -> Psd2Certificate:
    """Everything this module reads from a certificate; ParseError when any of it is malformed."""
    org_text = organization_identifier(cert)
    org = parse_organization_identifier(org_text) if org_text is not None else None
    return Psd2Certificate(qc_statements_of(cert), org_text, org)
