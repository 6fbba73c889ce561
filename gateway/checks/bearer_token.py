"""`bearer_token`: RFC 6750 bearer tokens — JWTs verified locally against the issuer's JWKS, or opaque
tokens through RFC 7662 introspection — with issuer, audience, lifetime, revocation and scope checks, and
RFC 8705 certificate binding: a token whose `cnf` carries `x5t#S256` is accepted only over that TLS client
certificate, forwarded by a trusted proxy (the one place the gateway compares a binding)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from pydantic import Field

from ..certificates import CertificateRefused
from ..config import TokenIssuer
from ..config.schema import NonNegativeSeconds, StrictModel
from ..jose import JoseError
from ..reasons import Challenge, JoseFamily, Reason, Reasons, bearer_challenge
from .base import Check, Denial, RequestView
from .params import ParamError
from .services import Services
from .token import CLIENT_ID, TOKEN, VerifiedToken
from .token_verifier import MAX_TOKEN_BYTES

_INVALID = (401, "invalid_token", Challenge.BEARER_ERROR)
X5T_S256: Final = "x5t#S256"
"""The RFC 8705 §3.1 confirmation method: base64url SHA-256 of the DER of the certificate the token is bound to."""
_THUMBPRINT = re.compile(r"^[A-Za-z0-9_-]{43}$")
"""A base64url (unpadded) SHA-256 digest: 32 bytes, 43 characters."""


class BearerTokenReasons(Reasons):
    """Why `bearer_token` refuses (RFC 6750 §3.1: 401 invalid_token, 403 insufficient_scope)."""

    token_missing = Reason(401, "invalid_token", Challenge.BEARER)
    """No Authorization header, or another scheme: a challenge without an error code (RFC 6750 §3.1)."""
    token_malformed = Reason(*_INVALID)
    token_issuer_not_trusted = Reason(*_INVALID)
    token_lifetime_too_long = Reason(*_INVALID)
    token_revoked = Reason(*_INVALID)
    token_cert_binding_missing = Reason(*_INVALID)
    """RFC 8705 §3: a certificate-bound token without a usable TLS client certificate (none forwarded, or one
    from an untrusted peer, malformed or out of date)."""
    token_cert_binding_mismatch = Reason(*_INVALID)
    """RFC 8705 §3: a certificate-bound token presented over another certificate."""
    token_cnf_malformed = Reason(*_INVALID)
    """The `cnf` claim (RFC 7800 §3.1) is not a non-empty object, or its `x5t#S256` is not a SHA-256 thumbprint."""
    token_cnf_unsupported = Reason(*_INVALID)
    """The `cnf` claim binds the token to a key by a method the gateway cannot verify (e.g. DPoP `jkt`, `jwk`):
    possession cannot be proven, so the token is not accepted as a plain bearer token."""
    token = JoseFamily("token_", *_INVALID, excluded=("jwks_unavailable",))
    """A token the verifier refused: `token_<jose code>`."""
    insufficient_scope = Reason(403, "insufficient_scope", Challenge.BEARER_ERROR)
    jwks_unavailable = Reason(503, "temporarily_unavailable")
    """The issuer's keys cannot be had (fail closed), with Retry-After."""


R = BearerTokenReasons


class BearerTokenParams(StrictModel):
    """Parameters of `bearer_token`."""

    issuers: tuple[str, ...] = Field(min_length=1)
    """Names of trusted issuers from config `trust.token_issuers`; a token from any other issuer is refused."""
    required_scopes: tuple[str, ...] = ()
    """Scopes the token must all carry (`scope` claim, space separated); otherwise 403 insufficient_scope."""
    max_lifetime_seconds: NonNegativeSeconds | None = None
    """Refuse tokens whose exp - iat exceeds this (long-lived tokens are a risk); unset: no bound. With the
    clock skew it must fit in config `trust.revocation_ttl_seconds` (else the policy set is refused)."""


class BearerToken(Check[BearerTokenParams]):
    """Verify the bearer token and record it as the `token` fact for later checks."""

    name = "bearer_token"
    Params = BearerTokenParams
    produces = (TOKEN, CLIENT_ID)
    reasons = BearerTokenReasons
    __slots__ = ("_issuers", "_required")

    def __init__(self, params: BearerTokenParams, services: Services) -> None:
        super().__init__(params, services)
        configured = services.trust.token_issuers
        issuers: dict[str, tuple[str, TokenIssuer]] = {}
        for i, name in enumerate(params.issuers):
            if name not in configured:
                valid = ", ".join(sorted(configured)) or "none configured"
                raise ParamError(["issuers", i], f"unknown issuer {name!r} (config trust.token_issuers: {valid})")
            issuers[configured[name].issuer] = (name, configured[name])
        self._issuers = issuers
        self._required = frozenset(params.required_scopes)
        trust = services.trust
        limit = params.max_lifetime_seconds
        if limit is not None and limit + trust.clock_skew_seconds > trust.revocation_ttl_seconds:
            # A client's tokens are revoked at its DELETE by a watermark kept revocation_ttl_seconds; a token
            # issued just before lives up to max_lifetime (+ skew) after it and would be accepted again.
            raise ParamError(["max_lifetime_seconds"], (
                f"{limit:g} s (+ trust.clock_skew_seconds {trust.clock_skew_seconds:g} s) outlasts config "
                f"trust.revocation_ttl_seconds ({trust.revocation_ttl_seconds:g} s): tokens of a client revoked "
                "after a DELETE would be accepted again before they expire; set trust.revocation_ttl_seconds to "
                f"at least {limit + trust.clock_skew_seconds:g} or lower max_lifetime_seconds"))

    def jwks_uris(self) -> tuple[str, ...]:
        """The JWKS of every trusted issuer, for prefetching."""
        return tuple(cfg.jwks_uri for _, cfg in self._issuers.values() if cfg.jwks_uri)

    async def evaluate(self, request: RequestView) -> Denial | None:
        """Pass with the facts `token` and `client_id` set, or refuse: 401 invalid_token, 403 insufficient_scope."""
        values = request.headers.getall("Authorization", [])
        if not values:
            description = "an access token is required (Authorization: Bearer)"
            return self.deny(R.token_missing, description)
        if len(values) > 1:
            return self.deny(R.token_malformed, "Authorization header must be sent once")
        scheme, _, raw = values[0].strip().partition(" ")
        if scheme.lower() != "bearer":
            return self.deny(R.token_missing, "the Bearer authentication scheme is required")
        raw = raw.strip()
        if not raw or len(raw) > MAX_TOKEN_BYTES or not raw.isascii():
            return self.deny(R.token_malformed, "the access token is malformed")
        try:
            # The verifier judges the b64token syntax (RFC 6750 §2.1) of a token it has not verified before
            # (JoseError `malformed`, the same refusal); a token it remembers passed it when it was verified.
            token = await self.services.tokens.verify(raw, self._issuers, request.now)
        except JoseError as exc:
            if exc.reason == "jwks_unavailable":
                # Fail closed, and say it is not the client's fault.
                return self.deny(R.jwks_unavailable, "token keys unavailable, retry later", (("Retry-After", "5"),))
            return self.deny(R.token[exc.reason], exc.description)
        if token.iss not in self._issuers:
            return self.deny(R.token_issuer_not_trusted, "the access token's issuer is not trusted here")
        limit = self.params.max_lifetime_seconds
        if limit is not None and token.exp - token.iat > limit:
            return self.deny(R.token_lifetime_too_long, "the access token's lifetime is too long")
        # On every request, cached token or not: the verifier caches the token, never a binding verdict.
        denial = self._binding(token.claims, request)
        if denial is not None:
            return denial
        if await self.services.revocations.is_revoked(token):
            return self.deny(R.token_revoked, "the access token has been revoked")
        missing = self._required - token.scopes
        if missing:
            scope = " ".join(sorted(self._required))
            description = f"the access token lacks scope: {' '.join(sorted(missing))}"
            return self.deny(R.insufficient_scope, description, scope=scope)
        request.facts.set(TOKEN, token)
        request.facts.set(CLIENT_ID, token.client_id)
        return None

    def _binding(self, claims: Mapping[str, Any], request: RequestView) -> Denial | None:
        """RFC 8705 §3: a token confirmed by `cnf.x5t#S256` needs that certificate, forwarded by a trusted proxy
        (`Services.certificates`, the reader `client_certificate` uses). A token without `cnf` is a plain
        bearer token. Fail closed on a `cnf` the gateway cannot check: not a non-empty object, a malformed
        `x5t#S256`, or only confirmation methods it does not implement (RFC 7800 §3.1 lets a recipient ignore
        members it does not understand "in the absence of such requirements"; a resource server that cannot
        prove possession of a sender-constrained token must not treat it as a bearer token). Members beside a
        valid `x5t#S256` are ignored: the certificate proves possession."""
        if "cnf" not in claims:
            return None
        cnf = claims["cnf"]
        if not isinstance(cnf, dict) or not cnf:
            return self.deny(R.token_cnf_malformed, "the access token's cnf claim is not a confirmation object")
        if X5T_S256 not in cnf:
            return self.deny(R.token_cnf_unsupported, "the access token is bound to a key by a confirmation "
                                                      "method this gateway does not support")
        bound = cnf[X5T_S256]
        if not isinstance(bound, str) or not _THUMBPRINT.match(bound):
            return self.deny(R.token_cnf_malformed, "the access token's cnf x5t#S256 is not a SHA-256 thumbprint")
        try:
            forwarded = self.services.certificates.read(request.headers, request.peer, request.now)
        except CertificateRefused as exc:
            return self.deny(R.token_cert_binding_missing,
                             f"the access token is certificate-bound and {exc.description}")
        if forwarded is None:
            return self.deny(R.token_cert_binding_missing,
                             "the access token is certificate-bound: its TLS client certificate is required")
        if forwarded[2] != bound:
            return self.deny(R.token_cert_binding_mismatch, "the access token is bound to another client certificate")
        return None


__all__ = ["BearerToken", "BearerTokenReasons", "VerifiedToken", "bearer_challenge"]
