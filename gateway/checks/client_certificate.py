"""`client_certificate`: the TPP's mTLS certificate, forwarded by the ingress that terminated TLS, is current,
chains to a configured trust anchor for transport (`anchors`, gateway/pki/chain.py), belongs to the software
(a `use: tls` key of its software key set), matches the tls_client_auth DN and, when the policy asks, is not
revoked (OCSP / CRL, `gateway.pki.revocation`, against the issuer the chain validation found). (Whether
it is the certificate an RFC 8705 certificate-bound access token was issued for is `bearer_token`'s to enforce,
through the same reader: `Services.certificates`.)"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from cryptography import x509
from pydantic import Field, field_validator, model_validator

from ..certificates import PARSED_CERTIFICATES, CertificateRefused, parse_dn, registered_dn, same_dn, subject_rdns
from ..config.schema import StrictModel
from ..jose import JoseError
from ..jose.errors import quoted
from ..observability.logging import get_logger
from ..pki.chain import ChainRefused, ValidatedChain
from ..pki.psd2 import ParseError, Psd2Certificate, Role, psd2_certificate
from ..pki.revocation import Method, Mode, RevocationStatus, refuses
from ..reasons import Answer, Challenge, Reason
from .base import Check, Denial, RequestView
from .facts import Fact, Facts
from .registration import (
    CLIENT_CERT_ISSUER,
    CLIENT_CERT_PSD2,
    CLIENT_CERT_S256,
    CLIENT_CERT_SERIAL,
    CLIENT_CERT_SUBJECT,
    SOFTWARE_ID,
    SoftwareJwksReasons,
    registration_claims_of,
    software_jwks_failure,
    software_jwks_policy,
    ssa_claims_of,
)
from .services import Services
from .trust_chains import CLIENT_CERT_CHAIN, CLIENT_CERT_CHAIN_REFUSALS, ClientCertChainReasons, select_anchors

log = get_logger("client_certificate")


class RevocationParams(StrictModel):
    """Whether and how `client_certificate` asks if the certificate is revoked (config `trust.revocation`)."""

    mode: Mode = "off"
    """hard_fail: a revoked certificate is refused, and so is one whose status cannot be learnt (no validated
    issuer, responder and CRL unreachable, answers invalid or stale); soft_fail: a revoked certificate is
    refused, an unknown status passes (logged, counted in dcr_gateway_certificate_revocation_soft_fail_total);
    off: nothing is asked."""
    methods: tuple[Method, ...] = Field(default=("ocsp", "crl"), min_length=1)
    """Which to ask, in order, until one says good or revoked: the OCSP responder of the certificate's AIA
    (RFC 6960) and the CRL of its distribution points (RFC 5280)."""

    @field_validator("methods")
    @classmethod
    def _distinct(cls, v: tuple[Method, ...]) -> tuple[Method, ...]:
        if len(set(v)) != len(v):
            raise ValueError("each method at most once")
        return v


CLIENT_CERT_REVOCATION: Final[Fact[RevocationStatus]] = Fact(
    "client_cert_revocation", RevocationStatus,
    audit={"cert_revocation": lambda s: s.status if s.method is None else f"{s.status}:{s.method}"},
)
"""The revocation status of the client certificate, when the policy asked (audit field `cert_revocation`:
`good:ocsp`, `revoked:crl`, `unknown`…)."""


SCOPE_ROLES: Final[dict[str, Role]] = {"accounts": "PSP_AI", "payments": "PSP_PI", "fundsconfirmations": "PSP_IC"}
"""The OB scopes and the PSD2 role each needs (account information, payment initiation, card-based instruments)."""
SOFTWARE_ROLE_ROLES: Final[dict[str, Role]] = {"AISP": "PSP_AI", "PISP": "PSP_PI", "CBPII": "PSP_IC",
                                               "ASPSP": "PSP_AS"}
"""The OB Directory's software roles and the PSD2 role each needs."""


class Psd2Params(StrictModel):
    """`client_certificate.psd2`: what the certificate must say as a PSD2 certificate (ETSI TS 119 495 QCStatements
    and organizationIdentifier, read by `gateway.pki.psd2`). Every option is off by default. Whether the
    certificate is genuine (chain, revocation) is not this block's to decide."""

    require: Literal["qwac"] | None = None
    """`qwac`: the certificate must be a qualified website authentication certificate (QCStatements with
    QcCompliance and QcType web), the only eIDAS certificate meant for TLS; a QSealC is refused."""
    accept_obwac: bool = False
    """Take a certificate with no QCStatements extension at all as an OB certificate (an OBWAC, or the OB
    transport certificate): it passes `require: qwac`, and `roles_cover` is not applied to it (OB certificates
    carry no roles: the directory's SSA is the word on them). A certificate that has QCStatements is always read
    as an eIDAS certificate (a QSealC stays refused)."""
    roles_cover: Literal["scopes", "software_roles"] | None = None
    """The certificate's PSD2 roles must cover the registration's requested `scope` (`scopes`; without a scope
    claim, the SSA's software_roles) or the SSA's `software_roles` (`software_roles`), through `scope_roles` and
    `software_role_roles`."""
    scope_roles: dict[str, Role] = Field(default_factory=lambda: dict(SCOPE_ROLES))
    """Scope → the PSD2 role it needs (a scope not listed, e.g. `openid`, needs none)."""
    software_role_roles: dict[str, Role] = Field(default_factory=lambda: dict(SOFTWARE_ROLE_ROLES))
    """SSA software role → the PSD2 role it needs (a software role not listed needs none)."""
    organization_matches: bool = False
    """The certificate's organizationIdentifier (`PSDGB-FCA-123456`) must name the SSA's organisation: its
    `organisation_competent_authority_claims` (authority_id and registration_id) when the SSA has them, else its
    `org_id` (the identifier's registration number)."""

    @model_validator(mode="after")
    def _obwac_needs_something(self) -> Psd2Params:
        if self.accept_obwac and self.require is None and self.roles_cover is None:
            raise ValueError("accept_obwac relaxes require: qwac and roles_cover; set one of them")
        return self

    @property
    def enabled(self) -> bool:
        """Any option on."""
        return self.require is not None or self.roles_cover is not None or self.organization_matches


class ClientCertificateParams(StrictModel):
    """Parameters of `client_certificate`."""

    required: bool = True
    """Refuse a request without a certificate. When false, a request without one passes (a certificate-bound
    access token without its certificate is refused by `bearer_token`, RFC 8705 §3)."""
    anchors: tuple[str, ...] = ()
    """Names of `trust.certificate_authorities` sets for `transport`: the certificate must chain to a root of
    one of them (with the intermediates the ingress forwards, XFCC `Chain` or RFC 9440 `Client-Cert-Chain`, and
    the set's own), be valid with every certificate of its path at now ± `trust.clock_skew_seconds`, and carry
    extendedKeyUsage clientAuth. Empty: no chain is validated (the TLS-terminating ingress is trusted to have
    done it)."""
    match_software_jwks: bool = True
    """The certificate must be a `use: tls` key (its `x5c`) in the SSA's software key set (DCR POST/PUT; needs
    `software_statement` earlier in the policy)."""
    match_tls_client_auth_dn: bool = True
    """When the verified registration request uses tls_client_auth, its DN claim must name the certificate's
    subject (RFC 4514, compared attribute by attribute, case- and space-insensitively)."""
    psd2: Psd2Params = Field(default_factory=Psd2Params)
    """What the certificate must say as a PSD2 certificate (QWAC, PSD2 roles, organisation); all off by default."""
    status: Literal[400, 401] = 400
    """Status when the certificate is missing, untrusted, malformed, out of date or not a QWAC: 400
    invalid_client_metadata (registration, digest §8) or 401 invalid_token (token-authenticated calls)."""
    error: Literal["invalid_client_metadata", "invalid_token", "invalid_client", "invalid_request"] | None = None
    """Error code for those refusals; not set: the status's (invalid_client_metadata for 400, invalid_token
    with a Bearer challenge for 401). `invalid_client` suits the token endpoint (RFC 6749 §5.2)."""
    revocation: RevocationParams = RevocationParams()
    """Revocation checking (OCSP, CRL) of the certificate; off by default. Refusals are answered with `status`
    and `error` (`client_cert_revoked`, `client_cert_revocation_unknown`)."""

    @model_validator(mode="before")
    @classmethod
    def _removed(cls, data: Any) -> Any:
        if isinstance(data, dict) and "token_binding" in data:
            # A policy that said `token_binding: false` meant "do not enforce": refuse to load it rather than
            # silently enforce (or silently not): RFC 8705 binding is bearer_token's, always on.
            raise ValueError("token_binding was removed: bearer_token enforces RFC 8705 certificate binding "
                             "(cnf.x5t#S256) on every request and it cannot be turned off; delete this parameter")
        return data


_METADATA: Final = "invalid_client_metadata"


class ClientCertificateReasons(SoftwareJwksReasons, ClientCertChainReasons):
    """Why `client_certificate` refuses. A missing, untrusted, malformed or out-of-date certificate is answered
    with the check's `status` and `error`: 400 invalid_client_metadata, or 401 invalid_token with a Bearer
    challenge, unless `error` names another code."""

    client_cert_missing = Reason(400, _METADATA, configurable="status, error")
    client_cert_untrusted_proxy = Reason(400, _METADATA, configurable="status, error")
    client_cert_malformed = Reason(400, _METADATA, configurable="status, error")
    client_cert_not_yet_valid = Reason(400, _METADATA, configurable="status, error")
    client_cert_expired = Reason(400, _METADATA, configurable="status, error")
    client_cert_revoked = Reason(400, _METADATA, configurable="status, error")
    client_cert_revocation_unknown = Reason(400, _METADATA, configurable="status, error")
    client_cert_not_in_software_jwks = Reason(400, "invalid_software_statement")
    client_cert_dn_mismatch = Reason(400, _METADATA)
    software_statement_unverified = Reason(400, "invalid_software_statement")
    client_cert_qc_malformed = Reason(400, _METADATA, configurable="status, error")
    client_cert_not_qwac = Reason(400, _METADATA, configurable="status, error")
    client_cert_psd2_roles_missing = Reason(400, _METADATA)
    client_cert_organization_mismatch = Reason(400, "invalid_software_statement")
    registration_unverified = Reason(400, _METADATA)


R = ClientCertificateReasons
_REFUSALS: Final = {r.name: r for r in (R.client_cert_untrusted_proxy, R.client_cert_malformed,
                                        R.client_cert_not_yet_valid, R.client_cert_expired)}
"""The reasons `certificates.read_forwarded` refuses with, by name."""


@dataclass(frozen=True, slots=True)
class _Described:
    """What a client certificate says, read once (`ClientCertificate._describe`)."""

    subject: str
    """RFC 4514 subject DN."""
    issuer: str
    """RFC 4514 issuer DN."""
    serial: str
    """Serial number, hexadecimal."""
    psd2: Psd2Certificate | None
    """Its PSD2 statements and organizationIdentifier; None when they cannot be read."""
    psd2_error: str | None
    """Why they cannot be read (`client_cert_qc_malformed` when the policy reads them)."""


class ClientCertificate(Check[ClientCertificateParams]):
    """Read, parse and vet the forwarded client certificate; record its thumbprint as `client_cert_s256`."""

    name = "client_certificate"
    Params = ClientCertificateParams
    produces = (CLIENT_CERT_S256, CLIENT_CERT_SUBJECT, CLIENT_CERT_ISSUER, CLIENT_CERT_SERIAL, CLIENT_CERT_CHAIN,
                CLIENT_CERT_PSD2, CLIENT_CERT_REVOCATION)
    reasons = ClientCertificateReasons
    __slots__ = ("_anchors", "_answer", "_described", "_url_policy")

    def __init__(self, params: ClientCertificateParams, services: Services) -> None:
        super().__init__(params, services)
        self._url_policy = software_jwks_policy(services.trust)
        self._anchors = select_anchors(services, params.anchors, "transport", "anchors")
        error = params.error or ("invalid_token" if params.status == 401 else _METADATA)
        self._answer = Answer(params.status, error,
                              Challenge.BEARER_ERROR if error == "invalid_token" else Challenge.NONE)
        # x5t#S256 -> what the certificate says (a TPP comes with the same certificate every time).
        self._described: dict[str, _Described] = {}

    def _describe(self, cert: x509.Certificate, thumbprint: str) -> _Described:
        """What `cert` says (DNs, serial, PSD2 statements), read once per certificate: a pure function of its DER,
        which `thumbprint` (SHA-256 of the DER) names. Only reading is remembered; every judgement is made anew."""
        described = self._described.get(thumbprint)
        if described is None:
            info: Psd2Certificate | None = None
            error: str | None = None
            try:
                info = psd2_certificate(cert)
            except ParseError as exc:
                error = str(exc)
            described = _Described(cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(),
                                   format(cert.serial_number, "x"), info, error)
            if len(self._described) >= PARSED_CERTIFICATES:
                del self._described[next(iter(self._described))]  # the oldest
            self._described[thumbprint] = described
        return described

    def _fail(self, reason: Reason, description: str) -> Denial:
        return self.deny(reason, description, answer=self._answer)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with `client_cert_s256` set (or, when not required, without a certificate)."""
        try:
            parsed = self.services.certificates.read(request.headers, request.peer, request.now)
        except CertificateRefused as exc:
            return self._fail(_REFUSALS[exc.reason], exc.description)
        if parsed is None:
            if self.params.required:
                return self._fail(R.client_cert_missing, "a TLS client certificate is required (mutual TLS)")
            return None
        der, cert, thumbprint = parsed
        described = self._describe(cert, thumbprint)
        request.facts.set(CLIENT_CERT_S256, thumbprint)
        request.facts.set(CLIENT_CERT_SUBJECT, described.subject)
        request.facts.set(CLIENT_CERT_ISSUER, described.issuer)
        request.facts.set(CLIENT_CERT_SERIAL, described.serial)
        if self._anchors:
            chain = self._chain(request, der, cert)
            if not isinstance(chain, ValidatedChain):
                return chain
            request.facts.set(CLIENT_CERT_CHAIN, chain)
        psd2 = self.params.psd2
        info = described.psd2
        if described.psd2_error is not None and psd2.enabled:
            return self._fail(R.client_cert_qc_malformed,
                              f"the TLS client certificate's QCStatements or organizationIdentifier cannot be "
                              f"read: {described.psd2_error}")
        if info is not None and (info.statements is not None or info.organization_identifier is not None):
            request.facts.set(CLIENT_CERT_PSD2, _psd2_fact(info))
        if psd2.require == "qwac" and info is not None:
            denial = self._qwac(info)
            if denial is not None:
                return denial
        if self.params.match_software_jwks:
            denial = await self._in_software_jwks(request, der, thumbprint)
            if denial is not None:
                return denial
        if self.params.match_tls_client_auth_dn:
            denial = self._dn_matches(request.facts, cert)
            if denial is not None:
                return denial
        if info is not None and psd2.roles_cover is not None:
            denial = self._roles_cover(request.facts, info)
            if denial is not None:
                return denial
        if info is not None and psd2.organization_matches:
            denial = self._organization_matches(request.facts, info)
            if denial is not None:
                return denial
        if self.params.revocation.mode != "off":
            return await self._not_revoked(request, cert, thumbprint)
        return None

    def _qwac(self, info: Psd2Certificate) -> Denial | None:
        statements = info.statements
        if statements is None:
            if self.params.psd2.accept_obwac:
                return None  # an OB certificate (psd2.accept_obwac)
            return self._fail(R.client_cert_not_qwac,
                              "the TLS client certificate is not a QWAC: it has no QCStatements (an OB "
                              "certificate is accepted only with psd2.accept_obwac)")
        if statements.qwac:
            return None
        if not statements.compliance:
            what = "it does not declare QcCompliance (not an EU qualified certificate)"
        elif statements.qsealc:
            what = "it is a QSealC (QcType eseal), which signs and cannot authenticate TLS"
        else:
            what = f"its QcType is {', '.join(statements.types) or 'absent'}, not web"
        return self._fail(R.client_cert_not_qwac, f"the TLS client certificate is not a QWAC: {what}")

    def _roles_cover(self, facts: Facts, info: Psd2Certificate) -> Denial | None:
        psd2 = self.params.psd2
        if info.statements is None and psd2.accept_obwac:
            return None  # OB certificates carry no roles (psd2.accept_obwac)
        ssa = ssa_claims_of(facts)
        needed: dict[Role, str] = {}
        if psd2.roles_cover == "scopes":
            claims = registration_claims_of(facts)
            if claims is None:
                return self.deny(R.registration_unverified,
                                 "no verified registration request to read the requested scope from")
            scope = claims.get("scope")
            if scope is not None:
                # A string, or a list of strings (registration_metadata's claim type accepts both).
                parts = [scope] if isinstance(scope, str) else scope if isinstance(scope, list) else None
                if parts is None or not all(isinstance(p, str) for p in parts):
                    return self.deny(R.registration_unverified,
                                     "the registration request's scope is not a string or a list of strings")
                for word in (w for p in parts for w in p.split()):
                    if (role := psd2.scope_roles.get(word)) is not None:
                        needed.setdefault(role, f"scope {word}")
                return self._cover(info, needed)
        if ssa is None:
            return self.deny(R.software_statement_unverified,
                             "no verified software statement to read the software roles from")
        for name in ssa.get("software_roles") or ():
            if isinstance(name, str) and (role := psd2.software_role_roles.get(name)) is not None:
                needed.setdefault(role, f"software role {name}")
        return self._cover(info, needed)

    def _cover(self, info: Psd2Certificate, needed: Mapping[Role, str]) -> Denial | None:
        held = set(info.roles)
        missing = [(role, why) for role, why in needed.items() if role not in held]
        if not missing:
            return None
        has = ", ".join(info.roles) if info.roles else "none"
        if info.statements is None or info.statements.roles is None:
            has = "none (no PSD2 QCStatement)"
        return self.deny(R.client_cert_psd2_roles_missing,
                         "the TLS client certificate's PSD2 roles do not cover "
                         + ", ".join(f"{why} (needs {role})" for role, why in missing) + f"; it has {has}")

    def _organization_matches(self, facts: Facts, info: Psd2Certificate) -> Denial | None:
        ssa = ssa_claims_of(facts)
        if ssa is None:
            return self.deny(R.software_statement_unverified,
                             "no verified software statement to match the certificate's organisation with")
        org = info.organization
        if org is None:
            found = (f"its organizationIdentifier {quoted(info.organization_identifier, 64)} is not in the PSD form"
                     if info.organization_identifier is not None else "it has no organizationIdentifier")
            return self.deny(R.client_cert_organization_mismatch,
                             f"the TLS client certificate does not name a PSD2 organisation: {found} "
                             "(PSD<country>-<NCA>-<id>, ETSI EN 319 412-1)")
        authority = ssa.get("organisation_competent_authority_claims")
        if isinstance(authority, Mapping) and ("authority_id" in authority or "registration_id" in authority):
            authority_id, registration_id = authority.get("authority_id"), authority.get("registration_id")
            if not isinstance(authority_id, str) or not isinstance(registration_id, str):
                return self.deny(R.client_cert_organization_mismatch,
                                 "the software statement's organisation_competent_authority_claims lack a text "
                                 "authority_id and registration_id")
            if not authority_matches(authority_id, org.country, org.nca):
                return self.deny(R.client_cert_organization_mismatch,
                                 f"the TLS client certificate's organizationIdentifier {quoted(str(org), 64)} names "
                                 f"authority {org.country}-{org.nca}, the software statement "
                                 f"{quoted(authority_id, 32)}")
            if registration_id.strip() != org.id:
                return self.deny(R.client_cert_organization_mismatch,
                                 f"the TLS client certificate's organizationIdentifier {quoted(str(org), 64)} is not "
                                 f"the software statement's registration_id {quoted(registration_id, 64)}")
            return None
        org_id = ssa.get("org_id")
        if not isinstance(org_id, str) or org.id != org_id:
            return self.deny(R.client_cert_organization_mismatch,
                             f"the TLS client certificate's organizationIdentifier {quoted(str(org), 64)} is not "
                             "the software statement's org_id (it has no organisation_competent_authority_claims)")
        return None

    def _chain(self, request: RequestView, der: bytes, cert: x509.Certificate) -> ValidatedChain | Denial:
        """The certificate's path to a root of `anchors` (remembered per certificate; the forwarded chain is read
        only when it is not), or the refusal."""
        chains = self.services.chains
        known = chains.cached(der, self._anchors, "transport", request.now)
        if known is not None:
            return known
        try:
            presented = self.services.certificates.read_chain(request.headers, der)
            return chains.validate(der, cert, presented, self._anchors, "transport", request.now)
        except CertificateRefused as exc:
            return self._fail(_REFUSALS[exc.reason], exc.description)
        except ChainRefused as exc:
            log.info("client_cert_chain_refused", code=exc.code, client_cert_s256=request.facts.get(CLIENT_CERT_S256),
                     serial=request.facts.get(CLIENT_CERT_SERIAL))
            return self._fail(CLIENT_CERT_CHAIN_REFUSALS[exc.code], f"the TLS client certificate: {exc.description}")

    async def _not_revoked(self, request: RequestView, cert: x509.Certificate, thumbprint: str) -> Denial | None:
        """Last, once everything local passed: ask the issuer's OCSP responder / CRL (network, cached)."""
        mode = self.params.revocation.mode
        checker, issuers = self.services.revocation, self.services.issuers
        # The issuer of the chain this request validated (`anchors`); else one an earlier validation found.
        chain = request.facts.get(CLIENT_CERT_CHAIN)
        issuer = chain.issuer if chain is not None else issuers.issuer_of(cert) if issuers is not None else None
        if checker is None:
            status = RevocationStatus("unknown", None, "revocation cannot be checked here (nothing may be fetched)")
        elif issuer is None:
            status = RevocationStatus("unknown", None, "the certificate's issuer is not a validated CA certificate "
                                                       "(chain validation), so no CRL or OCSP answer can be verified")
        else:
            status = await checker.check(cert, issuer, self.params.revocation.methods)
        request.facts.set(CLIENT_CERT_REVOCATION, status)
        serial = f"{cert.serial_number:x}"
        if status.status == "revoked":
            log.info("client_cert_revoked", client_cert_s256=thumbprint, serial=serial, method=status.method)
        if not refuses(status, mode):
            if status.status == "unknown":
                # soft_fail: let through, but never silently.
                log.warning("client_cert_revocation_unknown_allowed", client_cert_s256=thumbprint, serial=serial,
                            why=status.description)
                if checker is not None:
                    checker.soft_failed()
            return None
        if status.status == "revoked":
            return self._fail(R.client_cert_revoked, f"the TLS client certificate is revoked: {status.description}")
        return self._fail(R.client_cert_revocation_unknown,
                          f"the TLS client certificate's revocation status could not be established and this policy "
                          f"requires it (hard_fail): {status.description}")

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
        dn = registered_dn(claims)
        if dn is None:
            return None  # registration_metadata refuses tls_client_auth without a DN
        try:
            wanted = parse_dn(dn)
        except ValueError as exc:
            return self.deny(R.client_cert_dn_mismatch, f"tls_client_auth_subject_dn is not an RFC 4514 DN: {exc}")
        if not same_dn(wanted, subject_rdns(cert)):
            return self.deny(R.client_cert_dn_mismatch,
                             "tls_client_auth_subject_dn does not match the TLS client certificate's subject")
        return None


def _psd2_fact(info: Psd2Certificate) -> dict[str, Any]:
    st = info.statements
    return {
        "qualified": st.compliance if st is not None else False,
        "qc_types": list(st.types) if st is not None else [],
        "roles": list(st.roles) if st is not None and st.roles is not None else None,
        "nca_id": st.nca_id if st is not None else None,
        "organization_identifier": info.organization_identifier,
    }


ALPHA3: Final = {
    "AT": "AUT", "BE": "BEL", "BG": "BGR", "CH": "CHE", "CY": "CYP", "CZ": "CZE", "DE": "DEU", "DK": "DNK",
    "EE": "EST", "EL": "GRC", "ES": "ESP", "FI": "FIN", "FR": "FRA", "GB": "GBR", "GR": "GRC", "HR": "HRV",
    "HU": "HUN", "IE": "IRL", "IS": "ISL", "IT": "ITA", "LI": "LIE", "LT": "LTU", "LU": "LUX", "LV": "LVA",
    "MT": "MLT", "NL": "NLD", "NO": "NOR", "PL": "POL", "PT": "PRT", "RO": "ROU", "SE": "SWE", "SI": "SVN",
    "SK": "SVK",
}
"""ISO 3166 alpha-3 codes of the EEA, Switzerland and the UK (and EL, the EU's code for Greece): OB Directory
SSAs write authority_id as NCA + alpha-3 country (`FCAGBR`)."""


def authority_matches(authority_id: str, country: str, nca: str) -> bool:
    """True when an SSA's `authority_id` names the NCA `nca` of `country`, in any of the forms directories write
    it: `FCAGBR` (OB: NCA + alpha-3), `GB-FCA` (ETSI TS 119 495 nCAId), `GBFCA`, `FCAGB`, or the NCA alone."""
    text = authority_id.strip().upper().replace("-", "").replace(" ", "")
    forms = {nca + country, country + nca, nca}
    if (alpha3 := ALPHA3.get(country)) is not None:
        forms |= {nca + alpha3, alpha3 + nca}
    return text in forms
