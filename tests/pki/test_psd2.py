"""gateway/pki/psd2.py and its DER reader: the QCStatements of QWACs and QSealCs (ETSI EN 319 412-5, TS 119 495)
and the PSD organizationIdentifier, from DER assembled by hand in tests/pki/asn1.py; anything malformed is a
ParseError and nothing else (Hypothesis)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gateway.pki import der
from gateway.pki.psd2 import (
    ParseError,
    Psd2Org,
    parse_nca_id,
    parse_organization_identifier,
    parse_qc_statements,
    psd2_certificate,
)
from tests.pki.asn1 import (
    ESEAL,
    ESIGN,
    ROLE_OID,
    WEB,
    certificate,
    compliance,
    oid,
    psd2,
    psd2_subject,
    qc_type,
    qseal,
    qwac,
    seq,
    tlv,
    utf8,
)


def test_a_qwac_says_what_it_is_and_who_holds_it():
    st_ = parse_qc_statements(qwac(["PSP_AI", "PSP_PI"]))
    assert st_.compliance and st_.types == ("web",) and st_.qwac and not st_.qsealc
    assert st_.roles == ("PSP_AI", "PSP_PI")
    assert st_.nca_name == "Financial Conduct Authority" and st_.nca_id == "GB-FCA"


def test_a_qsealc_is_not_a_qwac():
    st_ = parse_qc_statements(qseal(["PSP_IC"]))
    assert st_.qsealc and not st_.qwac and st_.roles == ("PSP_IC",)


def test_qc_type_web_without_compliance_is_not_a_qwac():
    """QcType web alone is not a qualified certificate: QcCompliance is what says "qualified"."""
    st_ = parse_qc_statements(seq(qc_type(WEB), psd2(["PSP_AI"])))
    assert st_.types == ("web",) and not st_.compliance and not st_.qwac


def test_all_four_roles_and_other_statements_skipped_whole():
    """QcSSCD and QcPDS (with content) are skipped; an unknown role OID grants nothing."""
    pds = seq(oid("0.4.0.1862.1.5"), seq(seq(tlv(0x16, b"https://qtsp.example/pds"), tlv(0x13, b"en"))))
    unknown_role = seq(oid("0.4.0.19495.1.9"), utf8("PSP_XX"))
    roles = seq(*(seq(oid(ROLE_OID[r]), utf8(r)) for r in ("PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC")), unknown_role)
    data = seq(compliance(), seq(oid("0.4.0.1862.1.4")), pds, qc_type(WEB, ESIGN),
               seq(oid("0.4.0.19495.2"), seq(roles, utf8("Bank of Lithuania"), utf8("LT-BL"))))
    st_ = parse_qc_statements(data)
    assert st_.roles == ("PSP_AS", "PSP_PI", "PSP_AI", "PSP_IC") and st_.types == ("web", "esign")
    assert st_.nca_id == "LT-BL" and parse_nca_id(st_.nca_id) == ("LT", "BL")


def test_without_psd2_statement_roles_are_none():
    st_ = parse_qc_statements(seq(compliance(), qc_type(WEB)))
    assert st_.roles is None and st_.nca_id is None and st_.qwac


def _long(n: int) -> bytes:
    return b"\x30\x82" + n.to_bytes(2, "big")


MALFORMED = {
    "empty": b"",
    "not a sequence": utf8("x"),
    "truncated": qwac()[:-1],
    "trailing bytes": qwac() + b"\x00",
    "indefinite length": b"\x30\x80" + qwac()[2:] + b"\x00\x00",
    "long form for a short length": b"\x30\x81\x08" + compliance(),
    "length with a leading zero": b"\x30\x82\x00\x08" + compliance(),
    "length beyond the data": _long(0x1000) + compliance(),
    "five length bytes": b"\x30\x85\x00\x00\x00\x00\x08" + compliance(),
    "high tag number": seq(b"\x1f\x81\x01\x00"),
    "statement not a sequence": seq(oid("0.4.0.1862.1.1")),
    "empty statement": seq(seq()),
    "statement id not an oid": seq(seq(utf8("0.4.0.1862.1.1"))),
    "three parts in a statement": seq(seq(oid("0.4.0.1862.1.4"), seq(), seq())),
    "statement twice": seq(compliance(), compliance()),
    "compliance with info": seq(seq(oid("0.4.0.1862.1.1"), seq())),
    "qc type without types": seq(seq(oid("0.4.0.1862.1.6"))),
    "qc type empty": seq(seq(oid("0.4.0.1862.1.6"), seq())),
    "qc type twice": seq(qc_type(WEB, WEB)),
    "qc type not oids": seq(seq(oid("0.4.0.1862.1.6"), seq(utf8("web")))),
    "psd2 without info": seq(seq(oid("0.4.0.19495.2"))),
    "psd2 two fields": seq(seq(oid("0.4.0.19495.2"), seq(seq(), utf8("FCA")))),
    "psd2 four fields": seq(seq(oid("0.4.0.19495.2"), seq(seq(), utf8("a"), utf8("b"), utf8("c")))),
    "role name not its oid": seq(seq(oid("0.4.0.19495.2"), seq(seq(seq(oid(ROLE_OID["PSP_AI"]), utf8("PSP_PI"))),
                                                            utf8("FCA"), utf8("GB-FCA")))),
    "role twice": seq(psd2(["PSP_AI", "PSP_AI"])),
    "role without name": seq(seq(oid("0.4.0.19495.2"), seq(seq(seq(oid(ROLE_OID["PSP_AI"]))), utf8("a"),
                                                           utf8("GB-FCA")))),
    "nca id printable string": seq(seq(oid("0.4.0.19495.2"), seq(seq(), utf8("FCA"), tlv(0x13, b"GB-FCA")))),
    "nca name empty": seq(psd2(["PSP_AI"], nca_name="")),
    "nca name 257 characters": seq(psd2(["PSP_AI"], nca_name="x" * 257)),
    "nca id not utf-8": seq(seq(oid("0.4.0.19495.2"), seq(seq(), utf8("FCA"), tlv(0x0C, b"\xff\xfe")))),
    "oid arc padded": seq(seq(tlv(0x06, b"\x04\x00\x80\x8e\x46\x01\x01"))),
    "oid truncated": seq(seq(tlv(0x06, b"\x04\x00\x8e"))),
    "oid empty": seq(seq(tlv(0x06, b""))),
    "oid arc of 9 bytes": seq(seq(tlv(0x06, b"\x2a" + b"\x81" * 8 + b"\x01"))),
    "33 statements": seq(*(seq(oid(f"1.2.3.{i}")) for i in range(33))),
    "17 roles": seq(seq(oid("0.4.0.19495.2"), seq(seq(*(seq(oid(f"0.4.0.19495.1.{i + 10}"), utf8("x"))
                                                         for i in range(17))), utf8("a"), utf8("GB-FCA")))),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_qc_statements_are_parse_errors(data: bytes):
    with pytest.raises(ParseError):
        parse_qc_statements(data)


def test_a_larger_input_than_the_bound_is_refused_unread():
    big = seq(seq(oid("1.2.3"), tlv(0x04, b"\x00" * der.MAX_INPUT)))
    with pytest.raises(ParseError, match="longer than"):
        parse_qc_statements(big)


def test_long_form_lengths_are_read():
    """A statement longer than 127 bytes (long-form length) is read like any other."""
    pds = seq(oid("0.4.0.1862.1.5"), seq(seq(tlv(0x16, b"https://qtsp.example/" + b"p" * 300), tlv(0x13, b"en"))))
    assert parse_qc_statements(seq(compliance(), pds, qc_type(WEB))).qwac


@pytest.mark.parametrize(("text", "org"), [
    ("PSDGB-FCA-123456", Psd2Org("GB", "FCA", "123456")),
    ("PSDBE-NBB-0123.456.789", Psd2Org("BE", "NBB", "0123.456.789")),
    ("PSDDE-BAFIN-123-456", Psd2Org("DE", "BAFIN", "123-456")),
    ("PSDGB-OB-0015800001041REAAY", Psd2Org("GB", "OB", "0015800001041REAAY")),
    ("VATGB-123456789", None),
    ("NTRGB-12345678", None),
    ("psdgb-fca-123456", None),
    ("PSDGB-FCA-", None),
    ("PSDGBR-FCA-1", None),
    ("PSDGB-F-1", None),
    ("PSDGB-FCAFCAFCA-1", None),
    ("PSDGB-FCA-12\n3", None),
])
def test_organization_identifier_in_its_psd_form(text, org):
    assert parse_organization_identifier(text) == org
    if org is not None:
        assert str(org) == text


def test_psd2_certificate_reads_the_extension_and_the_subject():
    info = psd2_certificate(certificate(psd2_subject("PSDGB-FCA-123456"), qwac(["PSP_AI"])))
    assert info.statements is not None and info.statements.qwac and info.roles == ("PSP_AI",)
    assert info.organization == Psd2Org("GB", "FCA", "123456") and info.organization_identifier == "PSDGB-FCA-123456"
    plain = psd2_certificate(certificate("CN=x,O=y,C=GB"))
    assert plain.statements is None and plain.organization is None and plain.roles == ()
    other_form = psd2_certificate(certificate(psd2_subject("VATGB-123456789")))
    assert other_form.organization_identifier == "VATGB-123456789" and other_form.organization is None


def test_a_malformed_extension_or_two_organization_identifiers_are_parse_errors():
    with pytest.raises(ParseError):
        psd2_certificate(certificate(psd2_subject(), qwac() + b"\x00"))
    two = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-1"),
                     x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-2")])
    with pytest.raises(ParseError, match="more than one"):
        psd2_certificate(certificate(two))


# -- Hypothesis -------------------------------------------------------------------------------------------------

role_lists = st.lists(st.sampled_from(list(ROLE_OID)), unique=True, max_size=4)
texts = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=256)


@given(roles=role_lists, name=texts, nca=texts, web=st.booleans())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_any_well_formed_statement_reads_back(roles, name, nca, web):
    """Every role list and NCA text the spec allows reads back as written."""
    st_ = parse_qc_statements(seq(compliance(), qc_type(WEB if web else ESEAL), psd2(roles, name, nca)))
    assert st_.roles == tuple(roles) and st_.nca_name == name and st_.nca_id == nca and st_.qwac is web


def _mutations() -> st.SearchStrategy[bytes]:
    base = qwac(["PSP_AI", "PSP_PI", "PSP_IC"])

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(base)
        for _ in range(draw(st.integers(1, 4))):
            kind = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
            i = draw(st.integers(0, max(len(data) - 1, 0)))
            if kind == "flip" and data:
                data[i] ^= 1 << draw(st.integers(0, 7))
            elif kind == "insert":
                data.insert(i, draw(st.integers(0, 255)))
            elif kind == "delete" and data:
                del data[i]
            else:
                data = data[:i]
        return bytes(data)

    return mutate()


@given(data=st.one_of(st.binary(max_size=300), _mutations()))
@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@example(data=b"\x30\x84\xff\xff\xff\xff")
@example(data=b"\x30\x02\x30\x80")
@example(data=b"\x30\x04\x30\x02\x06\x00")
def test_any_bytes_parse_or_raise_parse_error_only(data):
    """Random and mutated DER: a result or a ParseError, never another exception."""
    try:
        result = parse_qc_statements(data)
    except ParseError:
        return
    assert result.roles is None or set(result.roles) <= set(ROLE_OID)


@given(tag=st.integers(0, 255), content=st.binary(max_size=64))
def test_der_text_reads_strings_or_raises_parse_error(tag, content):
    element = der.read_one(tlv(tag, content)) if tag & 0x1F != 0x1F else None
    if element is None:
        with pytest.raises(ParseError):
            der.read_one(tlv(tag, content))
        return
    try:
        value = der.text(element, max_chars=64)
    except ParseError:
        return
    assert isinstance(value, str)
