"""`client_certificate`: the TPP's mTLS certificate, forwarded by the ingress that terminated TLS, is current,
belongs to the software (a `use: tls` key of its software key set), matches the tls_client_auth DN, and is the
certificate an RFC 8705 certificate-bound access token was issued for."""

from __future__ import annotations

from typing import Final, Literal

from cryptography import x509

from ..addresses import ProxyTrust
from ..certificates import (
    CertificateRefused,
    Format,
    Forwarded,
    parse_dn,
    parse_forwarded,
    read_forwarded,
    registered_dn,
    subject_rdns,
)
from ..config.schema import StrictModel
from ..jose import JoseError
from ..observability.logging import get_logger
from ..reasons import Answer, Challenge, Reason
from .base import Check, Denial, RequestView
from .facts import Facts
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
from .token import token_of

log = get_logger("client_certificate")

PARSED_CERTIFICATES: Final = 512
"""Forwarded certificate headers whose parse is remembered per check (a TPP sends the same one every time);
beyond this the oldest is forgotten. At most `certificates.MAX_HEADER_BYTES` each: a few MB in the worst case."""


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
    error: Literal["invalid_client_metadata", "invalid_token", "invalid_client", "invalid_request"] | None = None
    """Error code for those refusals; not set: the status's (invalid_client_metadata for 400, invalid_token
    with a Bearer challenge for 401). `invalid_client` suits the token endpoint (RFC 6749 §5.2)."""


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
    token_cert_binding_mismatch = Reason(401, "invalid_token", Challenge.BEARER_ERROR)
    """RFC 8705 §3: a certificate-bound token presented over another certificate."""
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
    produces = (CLIENT_CERT_S256, CLIENT_CERT_SUBJECT)
    reasons = ClientCertificateReasons
    __slots__ = ("_answer", "_certificates", "_format", "_header", "_proxies", "_url_policy")

    def __init__(self, params: ClientCertificateParams, services: Services) -> None:
        super().__init__(params, services)
        cfg = services.trust.client_certificate
        self._header = cfg.header
        self._format: Format = cfg.format
        self._proxies = ProxyTrust(cfg.trusted_proxies)
        self._url_policy = software_jwks_policy(services.trust)
        self._certificates: dict[str, Forwarded] = {}
        error = params.error or ("invalid_token" if params.status == 401 else _METADATA)
        self._answer = Answer(params.status, error,
                              Challenge.BEARER_ERROR if error == "invalid_token" else Challenge.NONE)

    def _fail(self, reason: Reason, description: str) -> Denial:
        return self.deny(reason, description, answer=self._answer)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with `client_cert_s256` set (or, when not required, without a certificate)."""
        bound = self._bound_thumbprint(request.facts)
        values = request.headers.getall(self._header, [])
        try:
            parsed = read_forwarded(values, request.peer, request.now, header=self._header, proxies=self._proxies,
                                    parse=self._parse)
        except CertificateRefused as exc:
            return self._fail(_REFUSALS[exc.reason], exc.description)
        if parsed is None:
            if self.params.required or bound is not None:
                return self._fail(R.client_cert_missing, "a TLS client certificate is required (mutual TLS)")
            return None
        der, cert, thumbprint = parsed
        request.facts.set(CLIENT_CERT_S256, thumbprint)
        request.facts.set(CLIENT_CERT_SUBJECT, cert.subject.rfc4514_string())
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

    def _parse(self, value: str) -> Forwarded:
        """The certificate a header value carries, parsed once per distinct value (ValueError when malformed).

        The key is the exact header text and the parse is a pure function of it; failures are not remembered.
        """
        parsed = self._certificates.get(value)
        if parsed is None:
            parsed = parse_forwarded(value, self._format)
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
