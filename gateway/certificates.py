"""Client certificates forwarded by a TLS-terminating proxy: the three header formats (ingress-nginx, Envoy XFCC,
RFC 9440) and RFC 4514 distinguished names compared with a certificate's subject.

One path for every reader: the gateway's checks (`client_certificate`, and `bearer_token` for RFC 8705
certificate-bound tokens) through one `ForwardedCertificateReader` per process (`Services.certificates`), and the
sandbox token endpoint's RFC 8705 client authentication. Whether the header may be believed at all (its sender
is a trusted proxy) is decided by `read_forwarded` with the caller's `gateway.addresses.ProxyTrust`.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Final, Literal, TypeVar
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from multidict import MultiMapping

from .addresses import ProxyTrust
from .jose import cert_thumbprint_s256
from .jose.errors import quoted
from .pki import der

DN_CLAIMS: Final = ("tls_client_auth_subject_dn", "tls_client_auth_dn")
"""Where registration metadata names the certificate subject of a `tls_client_auth` client (RFC 8705 §2.1.2;
`tls_client_auth_dn` in OB DCR 3.1)."""


def registered_dn(metadata: Mapping[str, object]) -> str | None:
    """The subject DN a client's registration metadata names: the first of `DN_CLAIMS` that is a string."""
    return next((value for name in DN_CLAIMS if isinstance(value := metadata.get(name), str)), None)


MAX_HEADER_BYTES: Final = 16384
"""A forwarded certificate header longer than this is refused (a leaf certificate is 1-3 kB)."""
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----"

Format = Literal["nginx", "xfcc", "rfc9440"]
RFC9440_CHAIN_HEADER: Final = "Client-Cert-Chain"
"""RFC 9440 §2.3: the header with the rest of the client's chain."""
T = TypeVar("T")
Forwarded = tuple[bytes, x509.Certificate, str]
"""A forwarded certificate: DER, the parsed certificate, its x5t#S256 thumbprint (RFC 8705 §3.1)."""
Parsed = tuple[Forwarded, float, float]
"""A parse `ForwardedCertificateReader` remembers: the certificate, and its notBefore and notAfter in POSIX
seconds (compared with the request's time on every read, without building datetimes)."""


class CertificateRefused(Exception):
    """A forwarded certificate that cannot be believed or used; `reason` is a stable snake_case code (the
    `client_cert_*` reasons of the `client_certificate` check)."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def read_forwarded(
    values: Sequence[str],
    peer: str | None,
    now: float,
    *,
    header: str,
    proxies: ProxyTrust,
    parse: Callable[[str], Parsed],
) -> Forwarded | None:
    """The certificate the TLS-terminating proxy forwarded in `header` (`values`: every value of it), None when
    the header is absent; CertificateRefused when its sender is not a trusted proxy, when it is not exactly one
    certificate, or when the certificate is out of date at `now`. `parse` may remember its results."""
    if not values:
        return None
    # SECURITY: the header is only as trustworthy as whoever set it: the TLS-terminating ingress.
    if not proxies.trusts(peer):
        raise CertificateRefused("client_cert_untrusted_proxy",
                                 f"the {header} header was not set by a trusted TLS-terminating proxy")
    if len(values) > 1:
        raise CertificateRefused("client_cert_malformed", f"the {header} header must be sent once")
    try:
        parsed, not_before, not_after = parse(values[0])
    except ValueError as exc:
        raise CertificateRefused("client_cert_malformed", f"the TLS client certificate is malformed: {exc}") from None
    # Validity is judged on every request: only the parse is remembered, never a verdict.
    if now < not_before:
        raise CertificateRefused("client_cert_not_yet_valid", "the TLS client certificate is not valid yet")
    if now > not_after:
        raise CertificateRefused("client_cert_expired", "the TLS client certificate has expired")
    return parsed


def parse_forwarded(value: str, fmt: Format) -> Parsed:
    """The certificate a forwarding header value carries, with its thumbprint, and its validity period in POSIX
    seconds (X.509 times are whole seconds: comparing seconds compares the instants); ValueError when malformed."""
    der, cert = certificate_of(value, fmt)
    return ((der, cert, cert_thumbprint_s256(der)), cert.not_valid_before_utc.timestamp(),
            cert.not_valid_after_utc.timestamp())


PARSED_CERTIFICATES: Final = 512
"""Forwarded certificate headers whose parse a `ForwardedCertificateReader` remembers (a TPP sends the same one
every time); beyond this the oldest is forgotten. At most `MAX_HEADER_BYTES` each: a few MB in the worst case."""


class ForwardedCertificateReader:
    """The TLS client certificate the ingress forwards (config `trust.client_certificate`: header, format,
    trusted proxies), read by `read_forwarded` with a bounded memo of parses.

    The gateway builds one per process (`Services.certificates`) and every check that needs the certificate
    reads it through that one object (`client_certificate`; `bearer_token` for RFC 8705 certificate-bound
    tokens), so they cannot disagree on which certificate a request came with. Only the parse of a header text
    is remembered (a pure function of it; failures are not): trust in the sender and the validity dates are
    judged on every read.
    """

    __slots__ = ("_chains", "_format", "_parsed", "_proxies", "chain_header", "header")

    def __init__(self, header: str, fmt: Format, trusted_proxies: Sequence[str], *,
                 chain_header: str | None = None) -> None:
        self.header: Final = header
        """The header the certificate comes in."""
        self.chain_header: Final = (chain_header or RFC9440_CHAIN_HEADER) if fmt == "rfc9440" else None
        """The header the rest of the client's chain comes in (RFC 9440 only; XFCC carries it in `header`)."""
        self._format: Format = fmt
        self._proxies = ProxyTrust(trusted_proxies)
        self._parsed: dict[str, Parsed] = {}
        self._chains: dict[str, tuple[x509.Certificate, ...]] = {}

    def read(self, headers: MultiMapping[str], peer: str | None, now: float) -> Forwarded | None:
        """The forwarded certificate, None when the header is absent; CertificateRefused when its sender is not
        a trusted proxy, or it is not exactly one well-formed certificate, or it is out of date at `now`."""
        return read_forwarded(headers.getall(self.header, []), peer, now, header=self.header,
                              proxies=self._proxies, parse=self._parse)

    def _parse(self, value: str) -> Parsed:
        """The certificate a header value carries, parsed once per distinct value (ValueError when malformed)."""
        parsed = self._parsed.get(value)
        if parsed is None:
            parsed = parse_forwarded(value, self._format)
            _remember(self._parsed, value, parsed)
        return parsed


    def read_chain(self, headers: MultiMapping[str], leaf_der: bytes) -> tuple[x509.Certificate, ...]:
        """The intermediates the ingress forwarded with the certificate (XFCC `Chain=`, RFC 9440
        `Client-Cert-Chain`; nginx forwards none), without the leaf; CertificateRefused client_cert_malformed when
        they cannot be parsed. Call it only after `read` returned the leaf: `read` decides whether the sender is
        trusted, and the chain comes from the same sender."""
        if self._format == "xfcc":
            values = headers.getall(self.header, [])
            text = values[0] if len(values) == 1 else ""
        elif self.chain_header is not None:
            text = ", ".join(headers.getall(self.chain_header, []))
        else:
            return ()
        if not text:
            return ()
        chain = self._chains.get(text)
        if chain is None:
            try:
                chain = chain_of(text, self._format)
            except ValueError as exc:
                raise CertificateRefused("client_cert_malformed",
                                         f"the forwarded certificate chain is malformed: {exc}") from None
            _remember(self._chains, text, chain)
        # XFCC's Chain includes the leaf (Envoy: "the entire client certificate chain"): it is not its own issuer.
        return tuple(c for c in chain if c.public_bytes(Encoding.DER) != leaf_der)

    def remembered(self) -> int:
        """How many header texts' parses are remembered (tests, diagnostics)."""
        return len(self._parsed)

    def remembers(self, value: str) -> bool:
        """True when the parse of this exact header text is remembered."""
        return value in self._parsed


def _remember(memo: dict[str, T], text: str, parsed: T) -> None:
    """Remember a parse, forgetting the oldest beyond `PARSED_CERTIFICATES`."""
    if len(memo) >= PARSED_CERTIFICATES:
        del memo[next(iter(memo))]  # the oldest
    memo[text] = parsed


# -- header formats -------------------------------------------------------------------------------------


def certificate_der(value: str, fmt: Format) -> bytes:
    """The DER certificate a forwarding header carries; ValueError when it is not exactly one certificate."""
    return certificate_of(value, fmt)[0]


def certificate_of(value: str, fmt: Format) -> tuple[bytes, x509.Certificate]:
    """The DER and the parsed certificate a forwarding header carries; ValueError unless exactly one."""
    if len(value) > MAX_HEADER_BYTES:
        raise ValueError("header too long")
    if fmt == "rfc9440":
        # RFC 9440 §2.2: an RFC 8941 byte sequence, `:` base64 `:`.
        der = _byte_sequence(value)
        return der, x509.load_der_x509_certificate(der)
    pem = unquote(_xfcc_cert(value) if fmt == "xfcc" else value.strip(), errors="strict")
    if pem.count(_PEM_BEGIN) != 1:
        raise ValueError("expected exactly one PEM certificate")
    cert = x509.load_pem_x509_certificate(pem.strip().encode("ascii", "strict"))
    return cert.public_bytes(Encoding.DER), cert


MAX_CHAIN: Final = 8
"""Most certificates a forwarded chain may hold."""


def chain_of(value: str, fmt: Format) -> tuple[x509.Certificate, ...]:
    """The certificates of a forwarded chain: RFC 9440 §2.3 `Client-Cert-Chain` (an RFC 8941 list of byte
    sequences, DER), or the URL-encoded PEMs of an XFCC element's `Chain` key (empty without one); ValueError
    when malformed or longer than `MAX_CHAIN`."""
    if len(value) > MAX_HEADER_BYTES:
        raise ValueError("header too long")
    if fmt == "rfc9440":
        items = [item for item in value.split(",") if item.strip()]
        if len(items) > MAX_CHAIN:
            raise ValueError(f"more than {MAX_CHAIN} certificates")
        return tuple(x509.load_der_x509_certificate(_byte_sequence(item)) for item in items)
    if fmt != "xfcc":
        return ()
    chain = _xfcc_value(value, "chain")
    if chain is None:
        return ()
    pem = unquote(chain, errors="strict")
    if pem.count(_PEM_BEGIN) > MAX_CHAIN:
        raise ValueError(f"more than {MAX_CHAIN} certificates")
    return tuple(x509.load_pem_x509_certificates(pem.strip().encode("ascii", "strict")))


def _byte_sequence(value: str) -> bytes:
    """The bytes of an RFC 8941 byte sequence, `:` base64 `:` (RFC 9440 §2.2)."""
    text = value.strip()
    if len(text) < 3 or text[0] != ":" or text[-1] != ":":
        raise ValueError("not an RFC 9440 byte sequence (:base64:)")
    try:
        return base64.b64decode(text[1:-1], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts, buf, quoted_, escaped = [], [], False, False
    for ch in text:
        if escaped:
            buf.append(ch)
            escaped = False
        elif ch == "\\" and quoted_:
            buf.append(ch)
            escaped = True
        elif ch == '"':
            buf.append(ch)
            quoted_ = not quoted_
        elif ch == sep and not quoted_:
            parts.append("".join(buf))
            buf = []
        else:
            buf.append(ch)
    if quoted_:
        raise ValueError("unbalanced quotes")
    parts.append("".join(buf))
    return parts


def _xfcc_cert(value: str) -> str:
    """The URL-encoded PEM of the `Cert` key of a single-element Envoy x-forwarded-client-cert header."""
    cert = _xfcc_value(value, "cert")
    if cert is None:
        raise ValueError("no Cert key in x-forwarded-client-cert")
    return cert


def _xfcc_value(value: str, name: str) -> str | None:
    """The value of key `name` (lower case) of a single-element Envoy x-forwarded-client-cert header, unquoted;
    None when the element has no such key."""
    elements = [e for e in _split_outside_quotes(value, ",") if e.strip()]
    if len(elements) != 1:
        # SECURITY: several elements mean several proxies added certificates; which is the TPP's is ambiguous.
        raise ValueError(f"expected one x-forwarded-client-cert element, got {len(elements)}")
    for pair in _split_outside_quotes(elements[0], ";"):
        key, sep, val = pair.partition("=")
        if sep and key.strip().lower() == name:
            val = val.strip()
            return val[1:-1] if len(val) >= 2 and val[0] == val[-1] == '"' else val
    return None


# -- distinguished names (RFC 4514 / RFC 2253) -------------------------------------------------------------
#
# TPPs write the DN of their certificate in every form there is: RFC 4514 / RFC 2253 strings (most specific RDN
# first, as cryptography's `rfc4514_string()` and Java's `getName()` write them) or the same RDNs least specific
# first (OpenSSL's `-nameopt` and `X509_NAME_oneline` order, the order of the DER); attribute types as short
# names or OIDs (`organizationIdentifier=`, `2.5.4.97=`, `OID.2.5.4.97=`), in any case; `\,` `\+` `\2C` escapes;
# multi-valued RDNs joined by `+`; `#`-hex BER values. `parse_dn` reads them all into normalised RDNs and
# `same_dn` compares: equal RDN by RDN in the one order or exactly reversed, never a prefix or a subset.

_ATTRIBUTE_OIDS: Final[Mapping[str, str]] = {
    "cn": "2.5.4.3", "commonname": "2.5.4.3",
    "l": "2.5.4.7", "localityname": "2.5.4.7",
    "st": "2.5.4.8", "stateorprovincename": "2.5.4.8",
    "o": "2.5.4.10", "organizationname": "2.5.4.10",
    "ou": "2.5.4.11", "organizationalunitname": "2.5.4.11",
    "c": "2.5.4.6", "countryname": "2.5.4.6",
    "street": "2.5.4.9", "streetaddress": "2.5.4.9",
    "dc": "0.9.2342.19200300.100.1.25", "domaincomponent": "0.9.2342.19200300.100.1.25",
    "uid": "0.9.2342.19200300.100.1.1", "userid": "0.9.2342.19200300.100.1.1",
    "serialnumber": "2.5.4.5",
    "organizationidentifier": "2.5.4.97",
    "emailaddress": "1.2.840.113549.1.9.1", "e": "1.2.840.113549.1.9.1",
    "title": "2.5.4.12",
    "sn": "2.5.4.4", "surname": "2.5.4.4",
    "givenname": "2.5.4.42", "gn": "2.5.4.42",
    "postalcode": "2.5.4.17",
    "businesscategory": "2.5.4.15",
    "jurisdictionc": "1.3.6.1.4.1.311.60.2.1.3", "jurisdictioncountryname": "1.3.6.1.4.1.311.60.2.1.3",
}
_OID: Final = re.compile(r"^(?:oid\.)?([0-2](?:\.(?:0|[1-9][0-9]*))+)$", re.IGNORECASE)
_HEX2: Final = re.compile(r"[0-9a-fA-F]{2}")

Rdn = frozenset[tuple[str, str]]


def _norm(value: str) -> str:
    # X.520 caseIgnoreMatch with insignificant-space handling, approximately: case-fold, collapse spaces.
    return " ".join(value.split()).casefold()


def _unescape(raw: str) -> str:
    out = bytearray()
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\":
            nxt = raw[i + 1 : i + 3]
            if _HEX2.fullmatch(nxt):
                out.append(int(nxt, 16))
                i += 3
                continue
            if not nxt:
                raise ValueError("dangling escape")
            out.extend(raw[i + 1].encode("utf-8"))
            i += 2
            continue
        out.extend(ch.encode("utf-8"))
        i += 1
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("escaped bytes are not UTF-8") from None


_SPACE: Final = " "
"""The only whitespace a DN string may carry around `,` `+` `=` (RFC 2253 §4: SPACE, ASCII 32, ignored when
parsing; RFC 4514 §3 lets readers accept such older forms). Any other whitespace belongs to the type or value:
rfc4514_string() writes a value's leading tab or NBSP unescaped (RFC 4514 §2.4 escapes only a leading SPACE or
`#`), and stripping it would read the text "<TAB>#0c0161" as the `#`-hex value "a"."""


def _strip_spaces(raw: str) -> str:
    """The value without surrounding SPACEs, keeping an escaped trailing one (RFC 4514 §2.4 escapes a value's
    last space: `CN=x\\ ` is "x " — what cryptography's rfc4514_string() writes)."""
    value = raw.strip(_SPACE)
    backslashes = len(value) - len(value.rstrip("\\"))
    return value + _SPACE if backslashes % 2 == 1 and len(value) < len(raw.lstrip(_SPACE)) else value


def _split_unescaped(text: str, sep: str) -> list[str]:
    parts, start, i = [], 0, 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == sep:
            parts.append(text[start:i])
            start = i + 1
        i += 1
    parts.append(text[start:])
    return parts


def parse_dn(text: str) -> list[Rdn]:
    """An RFC 4514 DN string as normalised RDNs, most specific first (the order of the string)."""
    if not text.strip(_SPACE) or len(text) > 1024:
        raise ValueError("empty or too long")
    rdns: list[Rdn] = []
    for rdn_text in _split_unescaped(text, ","):
        attrs: set[tuple[str, str]] = set()
        for ava in _split_unescaped(rdn_text, "+"):
            name, sep, raw = ava.partition("=")
            key = name.strip(_SPACE).lower()
            if not sep or not key:
                raise ValueError(f"{quoted(ava)} is not type=value")
            oid = _ATTRIBUTE_OIDS.get(key)
            if oid is None:
                m = _OID.match(key)
                if m is None:
                    raise ValueError(f"unknown attribute type {quoted(name.strip(_SPACE))}")
                oid = m.group(1)
            value = _strip_spaces(raw)
            text = _ber_text(value) if value.startswith("#") else _unescape(value)
            attrs.add((oid, _norm(text)))
        rdns.append(frozenset(attrs))
    return rdns


_BER_HEX: Final = re.compile(r"#(?:[0-9a-fA-F]{2})+")


def _ber_text(value: str) -> str:
    """The text of a `#`-hex value (RFC 4514 §2.4: the BER encoding of the value, written in hex): only a
    character string (UTF8String, PrintableString, IA5String, BMPString, UniversalString…), read as strict DER;
    anything else is refused, never compared as bytes."""
    if not _BER_HEX.fullmatch(value):
        raise ValueError("a #-value must be an even number of hex digits")
    try:
        return der.text(der.read_one(bytes.fromhex(value[1:])), max_chars=1024)
    except der.ParseError as exc:
        raise ValueError(f"a #-value must be the DER of a character string ({exc})") from None


def name_rdns(name: x509.Name) -> list[Rdn]:
    """A name as normalised RDNs, most specific first (RFC 4514 string order)."""
    return [
        frozenset((a.oid.dotted_string, _norm(a.value if isinstance(a.value, str) else a.value.hex()))
                  for a in rdn)
        for rdn in reversed(name.rdns)
    ]


def subject_rdns(cert: x509.Certificate) -> list[Rdn]:
    """The certificate subject as normalised RDNs, most specific first (RFC 4514 string order)."""
    return name_rdns(cert.subject)


def same_dn(wanted: Sequence[Rdn], subject: Sequence[Rdn]) -> bool:
    """True when a parsed DN names `subject` (both from `parse_dn` / `subject_rdns`): the same RDNs in the same
    order, or in exactly the reverse order (a DN written least specific first, as OpenSSL prints it). Never a
    prefix, a subset or another permutation: every RDN must be there, each with all its attributes.

    Accepting the reverse order could only confuse a subject with its own mirror image (`CN=a,O=b` with a
    certificate whose subject is, most specific first, `O=b,CN=a`): a name no CA issues beside the other."""
    if len(wanted) != len(subject):
        return False
    return list(wanted) == list(subject) or list(wanted) == list(reversed(subject))
