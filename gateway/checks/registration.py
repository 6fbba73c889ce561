"""What the DCR checks share: the registration request body as a compact JWS, and the verified facts.

The checks run in this order in the shipped policies, each reading what the previous ones verified:

    software_statement     SSA verified against its directory  -> facts software_statement_claims, software_id, …
    registration_request   request JWS verified against the SSA's software_jwks_endpoint -> facts registration_claims
    replay                 the verified request's jti is new
    registration_metadata  the verified request's metadata against the verified SSA
    client_certificate     the TPP's transport certificate against the SSA's key set (and the DN claim)

A check that needs a fact an earlier check did not establish refuses (fail closed): nothing is ever read from
an unverified payload except to find the key that will verify it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from multidict import CIMultiDict, CIMultiDictProxy

from ..config import TrustSettings
from ..jose import CompactJWS, JoseError, JoseReason, KeyLocator, UrlPolicy, VerificationKey, parse_compact
from ..jose.encoding import json_loads_strict
from ..reasons import JoseFamily, Reason, Reasons
from .base import RequestView
from .facts import Fact, Facts, claim_named, header_text, same

if TYPE_CHECKING:
    from .services import Services


def _jti(claims: Mapping[str, Any]) -> str | None:
    return str(claims["jti"]) if "jti" in claims else None


SSA_CLAIMS: Final[Fact[dict[str, Any]]] = Fact("software_statement_claims", dict)
"""Fact: the verified SSA claims (never forwarded)."""
REGISTRATION_CLAIMS: Final[Fact[dict[str, Any]]] = Fact("registration_claims", dict, audit={"registration_jti": _jti})
"""Fact: the verified registration request claims (never forwarded; the decision event names its jti)."""
SOFTWARE_ID: Final[Fact[str]] = Fact("software_id", str, header=header_text, audit={"software_id": same},
                                     claim=claim_named("software_id"))
ORG_ID: Final[Fact[str]] = Fact("org_id", str, header=header_text, audit={"org_id": same},
                                claim=claim_named("org_id"))
SOFTWARE_ROLES: Final[Fact[list[str]]] = Fact("software_roles", list, header=header_text,
                                              claim=claim_named("software_roles"))
"""Fact: the SSA's software roles (forwarded comma-joined; signed as a list)."""


def _confirmation(thumbprint: str) -> dict[str, Any]:
    return {"cnf": {"x5t#S256": thumbprint}}


CLIENT_CERT_S256: Final[Fact[str]] = Fact("client_cert_s256", str, header=header_text, audit={"cert_s256": same},
                                          claim=_confirmation)
"""Fact: base64url SHA-256 thumbprint of the TPP's transport certificate (RFC 8705 `x5t#S256`; signed as
`cnf.x5t#S256`, the confirmation claim RFC 8705 §3.1 defines)."""
CLIENT_CERT_SUBJECT: Final[Fact[str]] = Fact("client_cert_subject_dn", str, claim=claim_named("client_cert_subject_dn"))
"""Fact: the RFC 4514 subject DN of the TPP's transport certificate (what `tls_client_auth` matches). Signed
only: a DN can hold any Unicode text, which a plain header cannot carry faithfully."""
CLIENT_CERT_ISSUER: Final[Fact[str]] = Fact("client_cert_issuer_dn", str, audit={"cert_issuer": same})
"""Fact: the RFC 4514 issuer DN of the TPP's transport certificate (the decision event's `cert_issuer`)."""
CLIENT_CERT_SERIAL: Final[Fact[str]] = Fact("client_cert_serial", str, audit={"cert_serial": same})
"""Fact: the serial number of the TPP's transport certificate, in hexadecimal (the decision event's
`cert_serial`; with the issuer it names the certificate in a CRL or an OCSP request)."""


def _psd2_roles(value: Mapping[str, Any]) -> list[str] | None:
    roles = value.get("roles")
    return list(roles) if isinstance(roles, list) else None


def _psd2_org(value: Mapping[str, Any]) -> str | None:
    org = value.get("organization_identifier")
    return org if isinstance(org, str) else None


def _psd2_claims(value: Mapping[str, Any]) -> dict[str, Any]:
    return {"client_cert_psd2": dict(value)}


def _psd2_header(value: Mapping[str, Any]) -> str | None:
    return header_text(_psd2_roles(value) or None)


CLIENT_CERT_PSD2: Final[Fact[dict[str, Any]]] = Fact(
    "client_cert_psd2", dict, header=_psd2_header,
    audit={"cert_psd2_roles": _psd2_roles, "cert_organization_identifier": _psd2_org}, claim=_psd2_claims)
"""Fact: what the TPP's transport certificate says as a PSD2 certificate (`gateway.pki.psd2`), as JSON:
`qualified` (QcCompliance), `qc_types` (`web`, `eseal`…), `roles` (PSD2 roles: `PSP_AI`…, a list; null without
the PSD2 statement), `nca_id`, `organization_identifier` (the subject's 2.5.4.97, null without one). Set when the
certificate has a QCStatements extension or an organizationIdentifier. The decision event carries its roles and
organizationIdentifier; a header carries the roles comma-joined; the signed facts carry it whole."""

MAX_REQUEST_JWS_BYTES: Final = 65536
"""Largest registration request JWS parsed (an OB request with its SSA is a few kilobytes)."""
MAX_SSA_BYTES: Final = 16384
"""Largest software statement parsed (OB Directory SSAs are 3-6 kB)."""

_JSON_MEDIA: Final = "application/json"
_WS: Final = " \t\r\n"


_METADATA: Final = "invalid_client_metadata"
_UNUSABLE: Final[tuple[JoseReason, ...]] = ("jwks_url_refused", "jwks_unavailable")
"""JOSE codes of a key set that cannot be had: `software_jwks_*`, never `request_*`."""


class RequestJoseReasons(Reasons):
    """`request_<jose code>`: the registration request JWS refused by the JOSE layer (parse, header, key,
    signature, claims); 400 invalid_client_metadata whichever check finds it."""

    request_malformed = Reason(400, _METADATA)
    """Also: a body with non-ASCII bytes, or an application/json body that is not a JSON string."""
    request = JoseFamily("request_", 400, _METADATA, excluded=_UNUSABLE)


class RequestBodyReasons(RequestJoseReasons):
    """The registration request body's structure, found by the first check that parses it (`request_jws`)."""

    request_not_jws = Reason(400, _METADATA)
    """An empty body, or plain JSON instead of a JWS."""


class SoftwareJwksReasons(RequestJoseReasons):
    """The TPP's software key set (the SSA's `software_jwks_endpoint`) cannot be had, or a key of it."""

    software_jwks_url_refused = Reason(400, _METADATA)
    software_jwks_unavailable = Reason(400, _METADATA)


class RegistrationError(Exception):
    """The registration request body is unusable: a registered reason and a description safe to show."""

    def __init__(self, refusal: Reason, description: str) -> None:
        super().__init__(description)
        self.refusal = refusal
        """The reason, from `RequestBodyReasons`."""
        self.reason = refusal.name
        self.description = description


def _media_type(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    return headers.get("Content-Type", "").split(";", 1)[0].strip().lower()


def request_jws_text(body: bytes, headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> str:
    """The compact JWS a registration body carries (`application/jose|jwt`; a JSON string with `application/json`)."""
    if not body.strip():
        raise RegistrationError(RequestBodyReasons.request_not_jws,
                                "the registration request body is empty; a signed JWS is expected")
    try:
        text = body.decode("ascii").strip(_WS)
    except UnicodeDecodeError:
        raise RegistrationError(RequestBodyReasons.request_malformed, "the registration request is not a compact "
                                                                      "JWS (non-ASCII bytes)") from None
    if text[:1] == '"' and _media_type(headers) == _JSON_MEDIA:
        # The OB OpenAPI files declare application/json with a string body: tolerate the JSON-quoted form.
        try:
            value = json_loads_strict(text.encode("ascii"))
        except ValueError:
            raise RegistrationError(RequestBodyReasons.request_malformed,
                                    "the registration request is not a JSON string") from None
        if not isinstance(value, str):  # pragma: no cover - a text starting with '"' decodes to a str or fails
            raise RegistrationError(RequestBodyReasons.request_malformed,
                                    "the registration request is not a JSON string")
        text = value.strip(_WS)
    if text[:1] in ("{", "["):
        raise RegistrationError(RequestBodyReasons.request_not_jws, "the registration request is plain JSON; it must "
                                                                    "be a signed JWS (Content-Type: application/jose)")
    return text


def parse_request(body: bytes | None, headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> CompactJWS:
    """Parse (never verify) the registration request JWS strictly; RegistrationError `request_<reason>`."""
    text = request_jws_text(body or b"", headers)
    try:
        # SECURITY: parse_compact refuses jwk/jku/x5u/x5c headers (keys never come from the token), unknown
        # `crit`, `b64: false`, duplicate member names and anything that is not strict base64url JSON.
        return parse_compact(text, max_bytes=MAX_REQUEST_JWS_BYTES)
    except JoseError as exc:
        raise RegistrationError(RequestBodyReasons.request[exc.reason],
                                f"registration request: {exc.description}") from None


_PARSED_REQUEST: Final = "registration_request_jws"
"""`RequestView.memo` key: (body, headers, CompactJWS) of the parse, for the body and headers it was made of."""


def request_jws(request: RequestView) -> CompactJWS:
    """`parse_request` of this request's body, parsed once per request and shared by the checks that need it.

    The result is NOT verified: `software_statement` reads the SSA from it (and verifies the SSA), and
    `registration_request` verifies its signature and claims before anything from it becomes a fact.
    """
    body, headers = request.body, request.headers
    memo = request.memo.get(_PARSED_REQUEST)
    # The same objects, not equal ones: a RequestView whose body or headers were replaced is parsed anew.
    if memo is not None and memo[0] is body and memo[1] is headers:
        return memo[2]  # type: ignore[no-any-return]
    jws = parse_request(body, headers)
    request.memo[_PARSED_REQUEST] = (body, headers, jws)
    return jws


def ssa_claims_of(facts: Facts) -> Mapping[str, Any] | None:
    """The verified SSA claims, when `software_statement` passed for this request."""
    return facts.get(SSA_CLAIMS)


def registration_claims_of(facts: Facts) -> Mapping[str, Any] | None:
    """The verified registration request claims, when `registration_request` passed for this request."""
    return facts.get(REGISTRATION_CLAIMS)


def software_jwks_policy(trust: TrustSettings) -> UrlPolicy:
    """The SSRF policy for TPP key sets named by SSAs (config `trust.software_jwks`)."""
    p = trust.software_jwks
    return UrlPolicy.build(allow_http=p.allow_http, allowed_hosts=p.allowed_hosts, allow_private=p.allow_private,
                           allow_loopback=p.allow_loopback, origin="software")


def software_jwks_failure(exc: JoseError) -> tuple[Reason, str]:
    """(reason of `SoftwareJwksReasons`, description) for a failure to get the TPP's key set or a key in it."""
    if exc.reason == "jwks_url_refused":
        return SoftwareJwksReasons.software_jwks_url_refused, f"the software statement's software_jwks_endpoint " \
                                                              f"was refused: {exc.description}"
    if exc.reason == "jwks_unavailable":
        return SoftwareJwksReasons.software_jwks_unavailable, f"the software statement's key set could not be " \
                                                              f"fetched: {exc.description}"
    return SoftwareJwksReasons.request[exc.reason], f"registration request: {exc.description}"


def services_locator(services: Services) -> KeyLocator:
    """The key locator of the DCR checks: `services.keys` as it is when the key is needed (tests swap in a traced
    JWKS cache after the policy set is built)."""

    async def locate(issuer: str | None, jwks_uri: str, kid: str, policy: UrlPolicy | None) -> VerificationKey:
        return await services.keys.get_key(jwks_uri, kid, policy=policy)

    return locate
