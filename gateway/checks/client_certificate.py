"""`client_certificate`: the TPP's mTLS certificate, forwarded by the ingress that terminated TLS, is current,
belongs to the software (a `use: tls` key of its software key set), matches the tls_client_auth DN, and is the
certificate an RFC 8705 certificate-bound access token was issued for."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal
from urllib.parse import unquote

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from ..addresses import ProxyTrust
from ..config.schema import StrictModel
from ..jose import JoseError, cert_thumbprint_s256
from ..jose.errors import quoted
from ..observability.logging import get_logger
from ..reasons import Answer, Challenge, Reason
from .base import Check, Denial, RequestView
from .facts import Facts
from .registration import (
    CLIENT_CERT_S256,
    SOFTWARE_ID,
    SoftwareJwksReasons,
    registration_claims_of,
    software_jwks_failure,
    software_jwks_policy,
    ssa_claims_of,
)
from .registration_metadata import DN_CLAIMS
from .services import Services
from .token import token_of

log = get_logger("client_certificate")

MAX_HEADER_BYTES: Final = 16384
"""A forwarded certificate header longer than this is refused (a leaf certificate is 1-3 kB)."""
PARSED_CERTIFICATES: Final = 512
"""Forwarded certificate headers whose parse is remembered per check (a TPP sends the same one every time);
beyond this the oldest is forgotten. At most MAX_HEADER_BYTES each: a few MB in the worst case."""
_PEM_BEGIN: Final = "-----BEGIN CERTIFICATE-----"

Format = Literal["nginx", "xfcc", "rfc9440"]
_Parsed = tuple[bytes, x509.Certificate, str]
"""A forwarded certificate: DER, the parsed certificate, its x5t#S256 thumbprint."""


class ClientCertificateParams(StrictModel):
    """Parameters of `client_certificate`."""

    required: bool = True
    """Refuse a request without a certificate. When false, a request without one passes unless its access token
    is certificate-bound (RFC 8705 `cnf`)."""
    match_software_jwks: bool = True
    """The certificate must be a `use: tls` key (its `x5c`) in the SSA's software key set (DCR POST/PUT; needs
    `software_statement` earlier in the policy)."""
    match_tls_client_auth_dn: bool = True
    """When the verified registration request uses tls_client_auth, its DN claim must name the certificate's
    subject (RFC 4514, compared attribute by attribute, case- and space-insensitively)."""
    token_binding: bool = True
    """When the verified access token carries `cnf.x5t#S256` (RFC 8705 §3.1), it must be this certificate's."""
    status: Literal[400, 401] = 400
    """Status when the certificate is missing, untrusted, malformed or out of date: 400 invalid_client_metadata
    (registration, digest §8) or 401 invalid_token (token-authenticated calls)."""


_METADATA: Final = "invalid_client_metadata"


class ClientCertificateReasons(SoftwareJwksReasons):
    """Why `client_certificate` refuses. A missing, untrusted, malformed or out-of-date certificate is answered
    with the check's `status`: 400 invalid_client_metadata, or 401 invalid_token with a Bearer challenge."""

    client_cert_missing = Reason(400, _METADATA, configurable="status")
    client_cert_untrusted_proxy = Reason(400, _METADATA, configurable="status")
    client_cert_malformed = Reason(400, _METADATA, configurable="status")
    client_cert_not_yet_valid = Reason(400, _METADATA, configurable="status")
    client_cert_expired = Reason(400, _METADATA, configurable="status")
    token_cert_binding_mismatch = Reason(401, "invalid_token", Challenge.BEARER_ERROR)
    """RFC 8705 §3: a certificate-bound token presented over another certificate."""
    client_cert_not_in_software_jwks = Reason(400, "invalid_software_statement")
    client_cert_dn_mismatch = Reason(400, _METADATA)
    software_statement_unverified = Reason(400, "invalid_software_statement")


R = ClientCertificateReasons


class ClientCertificate(Check[ClientCertificateParams]):
    """Read, parse and vet the forwarded client certificate; record its thumbprint as `client_cert_s256`."""

    name = "client_certificate"
    Params = ClientCertificateParams
    produces = (CLIENT_CERT_S256,)
    reasons = ClientCertificateReasons
    __slots__ = ("_answer", "_certificates", "_format", "_header", "_proxies", "_url_policy")

    def __init__(self, params: ClientCertificateParams, services: Services) -> None:
        super().__init__(params, services)
        cfg = services.trust.client_certificate
        self._header = cfg.header
        self._format: Format = cfg.format
        self._proxies = ProxyTrust(cfg.trusted_proxies)
        self._url_policy = software_jwks_policy(services.trust)
        self._certificates: dict[str, _Parsed] = {}
        self._answer = (Answer(401, "invalid_token", Challenge.BEARER_ERROR) if params.status == 401
                        else Answer(400, _METADATA))

    def _fail(self, reason: Reason, description: str) -> Denial:
        return self.deny(reason, description, answer=self._answer)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with `client_cert_s256` set (or, when not required, without a certificate)."""
        bound = self._bound_thumbprint(request.facts)
        values = request.headers.getall(self._header, [])
        if not values:
            if self.params.required or bound is not None:
                return self._fail(R.client_cert_missing, "a TLS client certificate is required (mutual TLS)")
            return None
        # SECURITY: the header is only as trustworthy as whoever set it: the TLS-terminating ingress.
        if not self._proxies.trusts(request.peer):
            return self._fail(R.client_cert_untrusted_proxy,
                              f"the {self._header} header was not set by a trusted TLS-terminating proxy")
        if len(values) > 1:
            return self._fail(R.client_cert_malformed, f"the {self._header} header must be sent once")
        try:
            der, cert, thumbprint = self._parse(values[0])
        except ValueError as exc:
            return self._fail(R.client_cert_malformed, f"the TLS client certificate is malformed: {exc}")
        # Validity is judged on every request: only the parse is remembered, never a verdict.
        now = datetime.fromtimestamp(request.now, UTC)
        if now < cert.not_valid_before_utc:
            return self._fail(R.client_cert_not_yet_valid, "the TLS client certificate is not valid yet")
        if now > cert.not_valid_after_utc:
            return self._fail(R.client_cert_expired, "the TLS client certificate has expired")
        request.facts.set(CLIENT_CERT_S256, thumbprint)
        if bound is not None and bound != thumbprint:
            # RFC 8705 §3: a certificate-bound token presented over another certificate is invalid.
            description = "the access token is bound to another client certificate"
            return self.deny(R.token_cert_binding_mismatch, description)
        if self.params.match_software_jwks:
            denial = await self._in_software_jwks(request, der, thumbprint)
            if denial is not None:
                return denial
        if self.params.match_tls_client_auth_dn:
            return self._dn_matches(request.facts, cert)
        return None

    def _parse(self, value: str) -> _Parsed:
        """The certificate a header value carries, parsed once per distinct value (ValueError when malformed).

        The key is the exact header text and the parse is a pure function of it; failures are not remembered.
        """
        parsed = self._certificates.get(value)
        if parsed is None:
            der, cert = certificate_of(value, self._format)
            parsed = (der, cert, cert_thumbprint_s256(der))
            if len(self._certificates) >= PARSED_CERTIFICATES:
                del self._certificates[next(iter(self._certificates))]  # the oldest
            self._certificates[value] = parsed
        return parsed

    def _bound_thumbprint(self, facts: Facts) -> str | None:
        token = token_of(facts) if self.params.token_binding else None
        cnf = token.claims.get("cnf") if token is not None else None
        value = cnf.get("x5t#S256") if isinstance(cnf, dict) else None
        return value if isinstance(value, str) else None

    async def _in_software_jwks(self, request: RequestView, der: bytes, thumbprint: str) -> Denial | None:
        ssa = ssa_claims_of(request.facts)
        if ssa is None:
            return self.deny(R.software_statement_unverified,
                             "no verified software statement to match the client certificate with")
        try:
            keyset = await self.services.keys.get_keyset(ssa["software_jwks_endpoint"], policy=self._url_policy)
        except JoseError as exc:
            return self.deny(*software_jwks_failure(exc))
        if keyset.tls_key_for_thumbprint(thumbprint) is None:
            log.info("client_cert_not_in_software_jwks", client_cert_s256=thumbprint,
                     software_id=request.facts.get(SOFTWARE_ID))
            return self.deny(R.client_cert_not_in_software_jwks,
                             "the TLS client certificate is not a transport key (use: tls) of the software "
                             "statement's key set")
        return None

    def _dn_matches(self, facts: Facts, cert: x509.Certificate) -> Denial | None:
        claims = registration_claims_of(facts)
        if claims is None or claims.get("token_endpoint_auth_method") != "tls_client_auth":
            return None
        dn = next((claims[n] for n in DN_CLAIMS if isinstance(claims.get(n), str)), None)
        if dn is None:
            return None  # registration_metadata refuses tls_client_auth without a DN
        try:
            wanted = parse_dn(dn)
        except ValueError as exc:
            return self.deny(R.client_cert_dn_mismatch, f"tls_client_auth_subject_dn is not an RFC 4514 DN: {exc}")
        if wanted != subject_rdns(cert):
            return self.deny(R.client_cert_dn_mismatch,
                             "tls_client_auth_subject_dn does not match the TLS client certificate's subject")
        return None


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
        text = value.strip()
        if len(text) < 3 or text[0] != ":" or text[-1] != ":":
            raise ValueError("not an RFC 9440 byte sequence (:base64:)")
        try:
            der = base64.b64decode(text[1:-1], validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("not base64") from None
        return der, x509.load_der_x509_certificate(der)
    pem = unquote(_xfcc_cert(value) if fmt == "xfcc" else value.strip(), errors="strict")
    if pem.count(_PEM_BEGIN) != 1:
        raise ValueError("expected exactly one PEM certificate")
    cert = x509.load_pem_x509_certificate(pem.strip().encode("ascii", "strict"))
    return cert.public_bytes(Encoding.DER), cert


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
    elements = [e for e in _split_outside_quotes(value, ",") if e.strip()]
    if len(elements) != 1:
        # SECURITY: several elements mean several proxies added certificates; which is the TPP's is ambiguous.
        raise ValueError(f"expected one x-forwarded-client-cert element, got {len(elements)}")
    for pair in _split_outside_quotes(elements[0], ";"):
        key, sep, val = pair.partition("=")
        if sep and key.strip().lower() == "cert":
            val = val.strip()
            return val[1:-1] if len(val) >= 2 and val[0] == val[-1] == '"' else val
    raise ValueError("no Cert key in x-forwarded-client-cert")


# -- distinguished names (RFC 4514) ---------------------------------------------------------------------

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
    if not text.strip() or len(text) > 1024:
        raise ValueError("empty or too long")
    rdns: list[Rdn] = []
    for rdn_text in _split_unescaped(text, ","):
        attrs: set[tuple[str, str]] = set()
        for ava in _split_unescaped(rdn_text, "+"):
            name, sep, raw = ava.partition("=")
            key = name.strip().lower()
            if not sep or not key:
                raise ValueError(f"{quoted(ava)} is not type=value")
            oid = _ATTRIBUTE_OIDS.get(key)
            if oid is None:
                m = _OID.match(key)
                if m is None:
                    raise ValueError(f"unknown attribute type {quoted(name.strip())}")
                oid = m.group(1)
            value = raw.strip()
            if value.startswith("#"):
                raise ValueError("BER-encoded (#hex) values are not supported")
            attrs.add((oid, _norm(_unescape(value))))
        rdns.append(frozenset(attrs))
    return rdns


def subject_rdns(cert: x509.Certificate) -> list[Rdn]:
    """The certificate subject as normalised RDNs, most specific first (RFC 4514 string order)."""
    return [
        frozenset((a.oid.dotted_string, _norm(a.value if isinstance(a.value, str) else a.value.hex()))
                  for a in rdn)
        for rdn in reversed(cert.subject.rdns)
    ]
