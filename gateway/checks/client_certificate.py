"""`client_certificate`: the TPP's mTLS certificate, forwarded by the ingress that terminated TLS, is current,
belongs to the software (a `use: tls` key of its software key set), matches the tls_client_auth DN and, when the
policy asks, is not revoked (OCSP / CRL, `gateway.pki.revocation`). (Whether
it is the certificate an RFC 8705 certificate-bound access token was issued for is `bearer_token`'s to enforce,
through the same reader: `Services.certificates`.)"""

from __future__ import annotations

from typing import Any, Final, Literal

from cryptography import x509
from pydantic import Field, field_validator, model_validator

from ..certificates import CertificateRefused, parse_dn, registered_dn, subject_rdns
from ..config.schema import StrictModel
from ..jose import JoseError
from ..observability.logging import get_logger
from ..pki.revocation import Method, Mode, RevocationStatus, refuses
from ..reasons import Answer, Challenge, Reason
from .base import Check, Denial, RequestView
from .facts import Fact, Facts
from .registration import (
    CLIENT_CERT_S256,
    CLIENT_CERT_SUBJECT,
    SOFTWARE_ID,
    SoftwareJwksReasons,
    registration_claims_of,
    software_jwks_failure,
    software_jwks_policy,
    ssa_claims_of,
)
from .services import Services

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


class ClientCertificateParams(StrictModel):
    """Parameters of `client_certificate`."""

    required: bool = True
    """Refuse a request without a certificate. When false, a request without one passes (a certificate-bound
    access token without its certificate is refused by `bearer_token`, RFC 8705 §3)."""
    match_software_jwks: bool = True
    """The certificate must be a `use: tls` key (its `x5c`) in the SSA's software key set (DCR POST/PUT; needs
    `software_statement` earlier in the policy)."""
    match_tls_client_auth_dn: bool = True
    """When the verified registration request uses tls_client_auth, its DN claim must name the certificate's
    subject (RFC 4514, compared attribute by attribute, case- and space-insensitively)."""
    status: Literal[400, 401] = 400
    """Status when the certificate is missing, untrusted, malformed or out of date: 400 invalid_client_metadata
    (registration, digest §8) or 401 invalid_token (token-authenticated calls)."""
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


class ClientCertificateReasons(SoftwareJwksReasons):
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


R = ClientCertificateReasons
_REFUSALS: Final = {r.name: r for r in (R.client_cert_untrusted_proxy, R.client_cert_malformed,
                                        R.client_cert_not_yet_valid, R.client_cert_expired)}
"""The reasons `certificates.read_forwarded` refuses with, by name."""


class ClientCertificate(Check[ClientCertificateParams]):
    """Read, parse and vet the forwarded client certificate; record its thumbprint as `client_cert_s256`."""

    name = "client_certificate"
    Params = ClientCertificateParams
    produces = (CLIENT_CERT_S256, CLIENT_CERT_SUBJECT, CLIENT_CERT_REVOCATION)
    reasons = ClientCertificateReasons
    __slots__ = ("_answer", "_url_policy")

    def __init__(self, params: ClientCertificateParams, services: Services) -> None:
        super().__init__(params, services)
        self._url_policy = software_jwks_policy(services.trust)
        error = params.error or ("invalid_token" if params.status == 401 else _METADATA)
        self._answer = Answer(params.status, error,
                              Challenge.BEARER_ERROR if error == "invalid_token" else Challenge.NONE)

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
        request.facts.set(CLIENT_CERT_S256, thumbprint)
        request.facts.set(CLIENT_CERT_SUBJECT, cert.subject.rfc4514_string())
        if self.params.match_software_jwks:
            denial = await self._in_software_jwks(request, der, thumbprint)
            if denial is not None:
                return denial
        if self.params.match_tls_client_auth_dn:
            denial = self._dn_matches(request.facts, cert)
            if denial is not None:
                return denial
        if self.params.revocation.mode != "off":
            return await self._not_revoked(request, cert, thumbprint)
        return None

    async def _not_revoked(self, request: RequestView, cert: x509.Certificate, thumbprint: str) -> Denial | None:
        """Last, once everything local passed: ask the issuer's OCSP responder / CRL (network, cached)."""
        mode = self.params.revocation.mode
        checker, issuers = self.services.revocation, self.services.issuers
        issuer = issuers.issuer_of(cert) if issuers is not None else None
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
        if wanted != subject_rdns(cert):
            return self.deny(R.client_cert_dn_mismatch,
                             "tls_client_auth_subject_dn does not match the TLS client certificate's subject")
        return None
