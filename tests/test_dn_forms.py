"""Every DN form TPPs send for `tls_client_auth_subject_dn` / `tls_client_auth_dn` (gateway/certificates.py
`parse_dn` and `same_dn`, used by `client_certificate` and the sandbox's tls_client_auth): RFC 4514 and the
reverse (least specific first) order, short names and OIDs in any case, escapes, multi-valued RDNs, `#`-hex BER
values. Hypothesis: a subject written by cryptography's `rfc4514_string()` and by an independent least-specific-
first writer (tests' own escaping, hex pairs, `#`-hex DER) names the subject; a different subject never does."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gateway.certificates import name_rdns, parse_dn, same_dn, subject_rdns
from tests.pki.asn1 import certificate, tlv

SUBJECT = x509.Name([
    x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COUNTRY_NAME, "GB")]),
    x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Open, Banking+Ltd")]),
    x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "0015800001041REAAY"),
                                    x509.NameAttribute(NameOID.ORGANIZATION_IDENTIFIER, "PSDGB-FCA-123456")]),
    x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, "app ")]),
])
"""C=GB, O with a comma and a plus, a two-valued RDN (OU + organizationIdentifier), CN with a trailing space."""

FORMS = {
    "cryptography": SUBJECT.rfc4514_string(),
    "rfc2253 order reversed": r"C=GB,O=Open\, Banking\+Ltd,OU=0015800001041REAAY+2.5.4.97=PSDGB-FCA-123456,CN=app\ ",
    "long names any case": r"commonName=app\ ,organizationIdentifier=PSDGB-FCA-123456+organizationalUnitName="
                           r"0015800001041REAAY,ORGANIZATIONNAME=Open\, Banking\+Ltd,countryName=GB",
    "OID. prefix": r"OID.2.5.4.3=app,oid.2.5.4.97=PSDGB-FCA-123456+OID.2.5.4.11=0015800001041REAAY,"
                   r"OID.2.5.4.10=Open\, Banking\+Ltd,OID.2.5.4.6=GB",
    "hex escapes": r"CN=app\20,2.5.4.97=PSDGB-FCA-123456+OU=0015800001041REAAY,O=Open\2C Banking\2BLtd,C=GB",
    "spaces around separators": r"CN = app , 2.5.4.97 = PSDGB-FCA-123456 + OU = 0015800001041REAAY , "
                                r"O = Open\, Banking\+Ltd , C = GB",
    "#-hex utf8 and printable": "CN=#0c03617070,2.5.4.97=PSDGB-FCA-123456+OU=0015800001041REAAY,"
                                r"O=Open\, Banking\+Ltd,C=#13024742",
    "#-hex bmp string": "C=GB,O=Open\\, Banking\\+Ltd,OU=0015800001041REAAY+2.5.4.97=PSDGB-FCA-123456,"
                        "CN=#1e06006100700070",
    "case and inner spaces": r"cn=APP,2.5.4.97=psdgb-fca-123456+ou=0015800001041reaay,o=open\,   banking\+ltd,c=gb",
}


@pytest.mark.parametrize("dn", FORMS.values(), ids=FORMS.keys())
def test_every_form_names_the_subject(dn):
    assert same_dn(parse_dn(dn), subject_rdns(certificate(SUBJECT)))


NOT_THE_SUBJECT = {
    "multi-valued RDN split": r"CN=app,OU=0015800001041REAAY,2.5.4.97=PSDGB-FCA-123456,O=Open\, Banking\+Ltd,C=GB",
    "one attribute of the RDN": r"CN=app,OU=0015800001041REAAY,O=Open\, Banking\+Ltd,C=GB",
    "unescaped comma": "CN=app,2.5.4.97=PSDGB-FCA-123456+OU=0015800001041REAAY,O=Open, Banking\\+Ltd,C=GB",
    "unescaped plus": "CN=app,2.5.4.97=PSDGB-FCA-123456+OU=0015800001041REAAY,O=Open\\, Banking+Ltd,C=GB",
    "another organizationIdentifier": r"CN=app,2.5.4.97=PSDGB-FCA-123457+OU=0015800001041REAAY,"
                                      r"O=Open\, Banking\+Ltd,C=GB",
    "rotated": r"C=GB,CN=app,2.5.4.97=PSDGB-FCA-123456+OU=0015800001041REAAY,O=Open\, Banking\+Ltd",
}


@pytest.mark.parametrize("dn", NOT_THE_SUBJECT.values(), ids=NOT_THE_SUBJECT.keys())
def test_near_misses_do_not(dn):
    try:
        wanted = parse_dn(dn)
    except ValueError:
        return
    assert not same_dn(wanted, subject_rdns(certificate(SUBJECT)))


@pytest.mark.parametrize("dn, message", [
    ("CN=#040361626364", "character string"),  # an OCTET STRING
    ("CN=#0203010001", "character string"),  # an INTEGER
    ("CN=#0c0361626364", "DER"),  # the length says 3, 4 bytes follow
    ("CN=#0c8103616263", "DER"),  # long form for a short length
    ("CN=#1303615f62", "DER"),  # PrintableString with '_'
    ("CN=#0c036", "hex digits"),
])
def test_hex_values_that_are_not_a_character_string_are_refused_with_a_reason(dn, message):
    with pytest.raises(ValueError, match=message):
        parse_dn(dn)


def _cn(value: str) -> x509.Name:
    return x509.Name([x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.COMMON_NAME, value)])])


# Found by the property tests below: RFC 4514 §2.4 escapes only a leading SPACE or `#`, so rfc4514_string() writes
# a value that begins with a tab, an NBSP or another Unicode space unescaped, and the parser stripped that
# whitespace (str.strip) and read the rest as a `#`-hex value. Only SPACE (U+0020) around the separators is
# insignificant (RFC 2253 §4); any other whitespace is part of the value.
LEADING_WHITESPACE_THEN_HASH = ["\t#", "\n#", "\u00a0#", "\u2002#", "\u3000#", "\u2028#", "\t#0c0161",
                                "\u00a0#13024742"]


@pytest.mark.parametrize("value", LEADING_WHITESPACE_THEN_HASH, ids=ascii)
def test_a_value_beginning_with_other_whitespace_then_hash_is_text(value):
    dn = _cn(value).rfc4514_string()
    assert dn == "CN=" + value  # written unescaped: the case this is about
    assert same_dn(parse_dn(dn), subject_rdns(certificate(_cn(value))))


@pytest.mark.parametrize("dn, not_named", [
    ("CN=\t#0c0161", "a"),  # was read as the UTF8String "a"
    ("CN=\u00a0#13024742", "GB"),  # was read as the PrintableString "GB"
    ("CN=\t#", "\t"),  # the property's counterexample: was refused instead of compared
    ("CN=\u2003#", " "),
])
def test_other_whitespace_then_hash_names_no_other_subject(dn, not_named):
    wanted = parse_dn(dn)
    assert not same_dn(wanted, name_rdns(_cn(not_named)))
    assert same_dn(wanted, name_rdns(_cn(dn[3:])))


@pytest.mark.parametrize("dn, value", [
    (r"CN=\ #", " #"),  # what rfc4514_string() writes for " #": the escaped space stays in the value
    (r"CN=\20#", " #"),
    (r"CN=\ #0c0161", " #0c0161"),  # text, never a #-value
    (r"CN= \ #0c0161", " #0c0161"),  # the SPACE after `=` is insignificant, the escaped one is not
    (r"CN=\#0c0161", "#0c0161"),
])
def test_an_escaped_leading_space_or_hash_is_text(dn, value):
    assert _cn(value).rfc4514_string() in (dn, dn.replace(r"\20", "\\ "), dn.replace("= ", "="))
    wanted = parse_dn(dn)
    assert same_dn(wanted, subject_rdns(certificate(_cn(value))))
    assert not same_dn(wanted, name_rdns(_cn("a")))


@pytest.mark.parametrize("dn", ["CN= #0c0161", "CN =  #0c0161 ", "CN=#0c0161 , O = x"])
def test_spaces_around_a_hash_value_are_still_insignificant(dn):
    assert parse_dn(dn)[0] == name_rdns(_cn("a"))[0]


@pytest.mark.parametrize("dn", ["\tCN=a", "CN\t=a", "CN=a,\nO=b", "\u00a0CN=a"])
def test_whitespace_other_than_space_around_a_type_is_refused(dn):
    with pytest.raises(ValueError, match="unknown attribute type"):
        parse_dn(dn)


# -- Hypothesis -------------------------------------------------------------------------------------------------

_TYPES = {  # OID → names a TPP may write for it
    NameOID.COMMON_NAME: ["CN", "commonName", "cn"],
    NameOID.ORGANIZATION_NAME: ["O", "organizationName"],
    NameOID.ORGANIZATIONAL_UNIT_NAME: ["OU", "organizationalUnitName"],
    NameOID.LOCALITY_NAME: ["L", "localityName"],
    NameOID.STATE_OR_PROVINCE_NAME: ["ST", "stateOrProvinceName"],
    NameOID.ORGANIZATION_IDENTIFIER: ["organizationIdentifier", "ORGANIZATIONIDENTIFIER"],
    NameOID.TITLE: ["title"],
}
_SPECIAL = ',+"\\<>;=# '
_WHITESPACE = "\t\n\u00a0\u2003\u3000"
"""Whitespace other than SPACE: part of the value, written unescaped by rfc4514_string() (RFC 4514 §2.4)."""
# A list of characters, not st.text(one_of(...)): text() merges its alphabet into one character set, and the
# special characters and whitespace would be drawn no more often than any other (a third of the draws here).
values = st.lists(st.one_of(st.sampled_from(list(_SPECIAL)), st.sampled_from(list(_WHITESPACE)),
                            st.characters(exclude_categories=("Cs", "Cc"))),
                  min_size=1, max_size=10).map("".join)


@st.composite
def names(draw: st.DrawFn) -> x509.Name:
    rdns = []
    for _ in range(draw(st.integers(1, 5))):
        types = draw(st.lists(st.sampled_from(list(_TYPES)), min_size=1, max_size=2, unique=True))
        rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(t, draw(values)) for t in types]))
    return x509.Name(rdns)


def _escape(draw: st.DrawFn, value: str) -> str:
    """RFC 4514 §2.4, written here: `#`-hex DER of a UTF8String, or char by char with `\\c` / `\\XX` escapes."""
    if draw(st.integers(0, 5)) == 0:
        return "#" + tlv(0x0C, value.encode()).hex()
    out = []
    for i, ch in enumerate(value):
        must = ch in ',+"\\<>;=' or (i == 0 and ch in "# ") or (i == len(value) - 1 and ch == " ")
        how = draw(st.integers(0, 3))
        if how == 0 or (must and how == 1):
            out.append("".join(f"\\{b:02X}" if draw(st.booleans()) else f"\\{b:02x}" for b in ch.encode()))
        elif must or (how == 1 and ch in _SPECIAL):
            out.append("\\" + ch)  # `\c` only for the special characters: `\3` then `0` would read as `\30`
        else:
            out.append(ch)
    return "".join(out)


def _type(draw: st.DrawFn, oid: x509.ObjectIdentifier) -> str:
    return draw(st.sampled_from([*_TYPES[oid], oid.dotted_string, "OID." + oid.dotted_string,
                                 "oid." + oid.dotted_string]))


def least_specific_first(draw: st.DrawFn, name: x509.Name) -> str:
    """The DN in DER order (as OpenSSL prints it), types and escapes drawn at random."""
    rdns = []
    for rdn in name.rdns:
        avas = [f"{_type(draw, a.oid)}={_escape(draw, str(a.value))}" for a in rdn]
        rdns.append("+".join(draw(st.permutations(avas))))
    return draw(st.sampled_from([",", ", ", " , "])).join(rdns)


def _independent(name: x509.Name) -> list[frozenset[tuple[str, str]]]:
    """The test's own reading of equality: types by OID, values case-folded with runs of spaces as one."""
    return [frozenset((a.oid.dotted_string, " ".join(str(a.value).split()).casefold()) for a in rdn)
            for rdn in reversed(name.rdns)]


@given(name=names(), data=st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_both_orders_name_the_subject(name, data):
    """cryptography's rfc4514_string() and an independent least-specific-first rendering both name the
    certificate's subject."""
    subject = subject_rdns(certificate(name))
    assert same_dn(parse_dn(name.rfc4514_string()), subject)
    other = least_specific_first(data.draw, name)
    assume(len(other) <= 1024)
    assert same_dn(parse_dn(other), subject), other


@st.composite
def changed(draw: st.DrawFn, name: x509.Name) -> x509.Name:
    rdns = list(name.rdns)
    kind = draw(st.sampled_from(["value", "drop", "add", "merge", "swap", "type"]))
    i = draw(st.integers(0, len(rdns) - 1))
    attrs = list(rdns[i])
    if kind == "value":
        j = draw(st.integers(0, len(attrs) - 1))
        attrs[j] = x509.NameAttribute(attrs[j].oid, str(attrs[j].value) + draw(st.sampled_from("x,+#1é")))
        rdns[i] = x509.RelativeDistinguishedName(attrs)
    elif kind == "drop":
        assume(len(rdns) > 1)
        del rdns[i]
    elif kind == "add":
        rdns.insert(i, x509.RelativeDistinguishedName([x509.NameAttribute(NameOID.LOCALITY_NAME, draw(values))]))
    elif kind == "merge":
        assume(i + 1 < len(rdns))
        merged = list(rdns[i]) + list(rdns[i + 1])
        assume(len({a.oid for a in merged}) == len(merged))
        rdns[i : i + 2] = [x509.RelativeDistinguishedName(merged)]
    elif kind == "swap":
        assume(i + 1 < len(rdns))
        rdns[i], rdns[i + 1] = rdns[i + 1], rdns[i]
    else:
        j = draw(st.integers(0, len(attrs) - 1))
        other = draw(st.sampled_from([t for t in _TYPES if t not in {a.oid for a in attrs}]))
        attrs[j] = x509.NameAttribute(other, str(attrs[j].value))
        rdns[i] = x509.RelativeDistinguishedName(attrs)
    return x509.Name(rdns)


@given(name=names(), data=st.data())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_different_subject_never_matches(name, data):
    """A name changed in one way (a value, an RDN dropped, added, merged, swapped, a type) names another subject
    unless, by the test's own reading, it is the same RDNs in the same or reversed order."""
    other = data.draw(changed(name))
    mine, theirs = _independent(name), _independent(other)
    assume(theirs != mine and theirs != mine[::-1])
    subject = name_rdns(name)
    assert not same_dn(parse_dn(other.rfc4514_string()), subject)
    text = least_specific_first(data.draw, other)
    assume(len(text) <= 1024)
    assert not same_dn(parse_dn(text), subject), text
