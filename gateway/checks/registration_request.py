"""`registration_request`: the registration request is a JWS signed with a key of the TPP's software key set
(the SSA's `software_jwks_endpoint`, fetched through the SSRF guard), issued by the SSA's software, for us,
now, with a bounded lifetime and a UUID `jti`."""

from __future__ import annotations

import re
from typing import Final, Literal

from pydantic import Field

from ..config.schema import PositiveSeconds, StrictModel
from ..jose import JoseError, JwsVerifier, Trust, UrlPolicy, allow_list
from ..jose.claims import ClaimRules
from ..jose.errors import quoted
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


class RegistrationRequestReasons(RequestBodyReasons, SoftwareJwksReasons):
    """Why `registration_request` refuses: its own reasons, the body's structure (`request_<jose code>`,
    `request_not_jws`) and the software key set (`software_jwks_*`); 400 invalid_client_metadata."""

    request_jti_invalid = Reason(400, "invalid_client_metadata")
    software_statement_unverified = Reason(400, "invalid_software_statement")


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
    __slots__ = ("_algorithms", "_rules", "_url_policy", "_verifier")

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
        # The one JWS path (gateway/jose/verifier.py); the request is parsed (and memoised) by request_jws.
        self._verifier = JwsVerifier(locate=services_locator(services))

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
            await self._verifier.verify(jws, trust, now=request.now)
        except JoseError as exc:
            # request_<reason>, or software_jwks_url_refused / software_jwks_unavailable for the key set itself.
            return self.deny(*software_jwks_failure(exc))
        software_id = ssa["software_id"]
        if claims["iss"] != software_id:
            # OB DCR 3.1 data dictionary: for OB Directory SSAs, iss is the SSA's software_id.
            return self.deny(R.request["iss_mismatch"], f"registration request iss {quoted(claims['iss'])} must be "
                                                         f"the software statement's software_id {quoted(software_id)}")
        if not _UUID.match(claims["jti"]):
            return self.deny(R.request_jti_invalid, "registration request jti must be a UUID")
        request.facts.set(REGISTRATION_CLAIMS, dict(claims))
        return None
