"""`registration_request`: the registration request is a JWS signed with a key of the TPP's software key set
(the SSA's `software_jwks_endpoint`, fetched through the SSRF guard), issued by the SSA's software, for us,
now, with a bounded lifetime and a UUID `jti`; with `x5c_anchors`, the signing key's `x5c` chains to a configured
trust anchor for signing (gateway/pki/chain.py)."""

from __future__ import annotations

import re
from typing import Final, Literal

from cryptography import x509
from pydantic import Field, model_validator

from ..config.schema import PositiveSeconds, StrictModel
from ..jose import JoseError, JwsVerifier, Trust, UrlPolicy, VerifiedJwt, allow_list
from ..jose.claims import ClaimRules
from ..jose.errors import quoted
from ..observability.logging import get_logger
from ..pki.chain import ChainRefused
from ..pki.der import ParseError
from ..pki.psd2 import qc_statements_of
from ..reasons import Reason
from .base import Check, Denial, RequestView
from .registration import (
    REGISTRATION_CLAIMS,
    RegistrationError,
    RequestBodyReasons,
    SoftwareJwksReasons,
    request_jws,
    services_locator,
    software_jwks_failure,
    software_jwks_policy,
    ssa_claims_of,
)
from .services import Services
from .trust_chains import SIGNING_KEY_CHAIN_REFUSALS, SigningKeyChainReasons, select_anchors

log = get_logger("registration_request")

# RFC 4122 textual form, either case (the OB data dictionary shows upper case, its OpenAPI any case).
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

Algorithm = Literal["PS256", "ES256", "PS384", "PS512", "ES384", "ES512", "RS256", "RS384", "RS512"]


class RegistrationRequestParams(StrictModel):
    """Parameters of `registration_request`."""

    algorithms: tuple[Algorithm, ...] = Field(default=("PS256", "ES256"), min_length=1)
    """JWS algorithms accepted (FAPI 1.0 Part 2 §8.6: PS256, ES256). `none` and HMAC can never be listed."""
    max_lifetime_seconds: PositiveSeconds = 3600.0
    """Largest `exp - iat` accepted: a long-lived request widens the replay window."""
    typ: str | None = None
    """Expected `typ` header (e.g. `JWT`); unset: not checked (OB does not fix it)."""
    x5c_anchors: tuple[str, ...] = ()
    """Names of `trust.certificate_authorities` sets for `signing`: when the key that signed the request carries
    `x5c` (an eIDAS QSealC, an OB signing certificate), that chain must validate to a root of one of them (the
    set's intermediates may complete it), every certificate valid at now ± `trust.clock_skew_seconds`, the leaf
    with keyUsage digitalSignature or nonRepudiation. Empty: `x5c` is not validated (its first certificate must
    still hold the key, RFC 7517 §4.7)."""
    x5c_required: bool = False
    """With `x5c_anchors`: refuse a signing key without `x5c` (`signing_key_x5c_missing`)."""
    x5c_require: Literal["qsealc"] | None = None
    """With `x5c_anchors`: `qsealc` — the validated `x5c` leaf must be an eIDAS qualified seal certificate
    (QCStatements QcCompliance and QcType eseal, ETSI EN 319 412-5), the certificate PSD2 asks a TPP to sign
    with (`signing_key_x5c_not_qsealc`). Not set: any certificate the chain rules accept."""
    x5c_accept_obseal: bool = False
    """With `x5c_require: qsealc`: also accept a leaf with no QCStatements at all (an OB Directory signing
    certificate, OBSeal, which carries none); a certificate that says it is something else stays refused."""

    @model_validator(mode="after")
    def _required_needs_anchors(self) -> RegistrationRequestParams:
        if self.x5c_required and not self.x5c_anchors:
            raise ValueError("x5c_required needs x5c_anchors (the sets the x5c must chain to)")
        if self.x5c_require is not None and not self.x5c_anchors:
            # SECURITY: QCStatements are believed only in a certificate whose chain was validated.
            raise ValueError("x5c_require needs x5c_anchors (QCStatements count only in a validated chain)")
        if self.x5c_accept_obseal and self.x5c_require is None:
            raise ValueError("x5c_accept_obseal applies only with x5c_require: qsealc")
        return self


class RegistrationRequestReasons(RequestBodyReasons, SoftwareJwksReasons, SigningKeyChainReasons):
    """Why `registration_request` refuses: its own reasons, the body's structure (`request_<jose code>`,
    `request_not_jws`) and the software key set (`software_jwks_*`); 400 invalid_client_metadata."""

    request_jti_invalid = Reason(400, "invalid_client_metadata")
    software_statement_unverified = Reason(400, "invalid_software_statement")
    signing_key_x5c_not_qsealc = Reason(400, "invalid_client_metadata")
    """`x5c_require: qsealc` and the validated leaf is not an eIDAS QSealC."""


R = RegistrationRequestReasons




class RegistrationRequest(Check[RegistrationRequestParams]):
    """Verify the request JWS with the TPP's key, check its claims, and record them as `registration_claims`.

    Needs the SSA facts: place `software_statement` before it in the policy.
    """

    name = "registration_request"
    Params = RegistrationRequestParams
    produces = (REGISTRATION_CLAIMS,)
    reasons = RegistrationRequestReasons
    needs_body = True
    __slots__ = ("_algorithms", "_anchors", "_rules", "_url_policy", "_verifier")

    def __init__(self, params: RegistrationRequestParams, services: Services) -> None:
        super().__init__(params, services)
        trust = services.trust
        self._algorithms = allow_list(params.algorithms)
        self._url_policy: UrlPolicy = software_jwks_policy(trust)
        self._rules = ClaimRules.build(
            audiences=trust.registration_audiences or None,
            leeway_seconds=trust.clock_skew_seconds,
            max_lifetime_seconds=params.max_lifetime_seconds,
            require=("iss", "aud", "iat", "exp", "jti"),
        )
        self._anchors = select_anchors(services, params.x5c_anchors, "signing", "x5c_anchors")
        # The one JWS path (gateway/jose/verifier.py); the request is parsed (and memoised) by request_jws.
        self._verifier = JwsVerifier(locate=services_locator(services))

    async def _x5c_validates(self, trust: Trust, verified: VerifiedJwt, now: float) -> Denial | None:
        """With `x5c_anchors`: the `x5c` of the key that verified the request chains to one of them."""
        try:
            # The key set is cached: this is the key that verified, looked up again (step 6 alone).
            key = await self._verifier.locate(trust, verified.kid)
        except JoseError as exc:
            return self.deny(*software_jwks_failure(exc))
        if key.thumbprint != verified.key_thumbprint:
            return self.deny(R.software_jwks_unavailable, "the software statement's key set changed while the "
                                                          "request was verified; try again")
        if not key.x5c:
            if self.params.x5c_required:
                return self.deny(R.signing_key_x5c_missing, f"the signing key {quoted(verified.kid)} carries no x5c "
                                                            "certificate chain")
            return None
        try:
            chain = self.services.chains.validate_der(key.x5c, self._anchors, "signing", now)
        except ChainRefused as exc:
            log.info("signing_key_x5c_refused", code=exc.code, kid=verified.kid, key_thumbprint=key.thumbprint)
            return self.deny(SIGNING_KEY_CHAIN_REFUSALS[exc.code],
                             f"the x5c of signing key {quoted(verified.kid)}: {exc.description}")
        if self.params.x5c_require == "qsealc":
            return self._qsealc(chain.leaf, verified.kid)
        return None

    def _qsealc(self, leaf: x509.Certificate, kid: str | None) -> Denial | None:
        """`x5c_require: qsealc`: the validated leaf is a QSealC (or, with `x5c_accept_obseal`, has no
        QCStatements at all)."""
        try:
            statements = qc_statements_of(leaf)
        except ParseError as exc:
            return self.deny(R.signing_key_x5c_not_qsealc, f"the x5c of signing key {quoted(kid)}: its "
                                                           f"QCStatements cannot be read: {exc}")
        if statements is None:
            if self.params.x5c_accept_obseal:
                return None
            what = "it carries no QCStatements (an OB signing certificate: allow with x5c_accept_obseal)"
        elif statements.qsealc:
            return None
        elif statements.qwac:
            what = "it is a QWAC (QcType web), which authenticates TLS and cannot seal"
        elif not statements.compliance:
            what = "it is not a qualified certificate (no QcCompliance)"
        else:
            what = f"its QcType is {', '.join(statements.types) or 'absent'}, not eseal"
        return self.deny(R.signing_key_x5c_not_qsealc,
                         f"the x5c of signing key {quoted(kid)} is not a QSealC: {what}")

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with `registration_claims` set, or refuse with 400 invalid_client_metadata."""
        ssa = ssa_claims_of(request.facts)
        if ssa is None:
            return self.deny(R.software_statement_unverified, "no verified software statement to take the TPP's "
                             "keys from")
        try:
            jws = request_jws(request)
        except RegistrationError as exc:
            return self.deny(exc.refusal, exc.description)
        claims = jws.claims or {}
        # SECURITY: the key comes only from the key set the directory-signed SSA names (holder-of-key proof, OB
        # Directory "Request Validation" 2), fetched through the SSRF guard of trust.software_jwks. The one path
        # applies the allow-list before any key lookup, so `none`, HS256-with-the-RSA-key (algorithm confusion)
        # and RS256 never cause a fetch (RFC 8725 §3.1, FAPI 1.0 Part 2 §8.6).
        trust = Trust(algorithms=self._algorithms, jwks_uri=ssa["software_jwks_endpoint"], rules=self._rules,
                      issuer=ssa["software_id"], url_policy=self._url_policy, typ=self.params.typ)
        try:
            verified = await self._verifier.verify(jws, trust, now=request.now)
        except JoseError as exc:
            # request_<reason>, or software_jwks_url_refused / software_jwks_unavailable for the key set itself.
            return self.deny(*software_jwks_failure(exc))
        if self._anchors:
            denial = await self._x5c_validates(trust, verified, request.now)
            if denial is not None:
                return denial
        software_id = ssa["software_id"]
        if claims["iss"] != software_id:
            # OB DCR 3.1 data dictionary: for OB Directory SSAs, iss is the SSA's software_id.
            return self.deny(R.request["iss_mismatch"], f"registration request iss {quoted(claims['iss'])} must be "
                                                         f"the software statement's software_id {quoted(software_id)}")
        if not _UUID.match(claims["jti"]):
            return self.deny(R.request_jti_invalid, "registration request jti must be a UUID")
        request.facts.set(REGISTRATION_CLAIMS, dict(claims))
        return None
