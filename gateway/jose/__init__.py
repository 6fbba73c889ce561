"""JOSE for the gateway: strict JWS/JWT verification, keys, the shared JWKS cache and its SSRF guard.

This package is the only place in `gateway/` (the sandbox included) that imports jwcrypto, and `JwsVerifier`
(verifier.py) is the one path by which a JWS is verified. Every failure is a
`JoseError` whose `reason` is one of `REASONS`.
"""

from .algorithms import FAPI_ALGORITHMS, SUPPORTED, allow_list
from .claims import ClaimRules, check_typ, validate_claims
from .errors import REASONS, JoseError, JoseReason
from .jwks_cache import EVENTS, JwksCache, JwksCacheSettings
from .jws import (
    DEFAULT_MAX_BYTES,
    FORBIDDEN_HEADERS,
    CompactJWS,
    check_algorithm,
    parse_compact,
    verify_signature,
)
from .keys import (
    JwkSet,
    JwtSigner,
    SigningKey,
    VerificationKey,
    cert_thumbprint_s256,
    generate_signing_key,
    jwk_thumbprint,
    load_signing_key_pem,
    public_jwk_from_pem,
    sign_compact,
    sign_jwt,
    transport_jwk,
)
from .url_guard import UrlGuard, UrlPolicy, VettedUrl, address_category
from .verifier import (
    JwsVerifier,
    KeyLocator,
    KeyProvider,
    StaticKeys,
    Trust,
    VerifiedJwt,
    provider_locator,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "EVENTS",
    "FAPI_ALGORITHMS",
    "FORBIDDEN_HEADERS",
    "REASONS",
    "SUPPORTED",
    "ClaimRules",
    "CompactJWS",
    "JoseError",
    "JoseReason",
    "JwkSet",
    "JwksCache",
    "JwksCacheSettings",
    "JwsVerifier",
    "JwtSigner",
    "KeyLocator",
    "KeyProvider",
    "SigningKey",
    "StaticKeys",
    "Trust",
    "UrlGuard",
    "UrlPolicy",
    "VerificationKey",
    "VerifiedJwt",
    "VettedUrl",
    "address_category",
    "allow_list",
    "cert_thumbprint_s256",
    "check_algorithm",
    "check_typ",
    "generate_signing_key",
    "jwk_thumbprint",
    "load_signing_key_pem",
    "parse_compact",
    "provider_locator",
    "public_jwk_from_pem",
    "sign_compact",
    "sign_jwt",
    "transport_jwk",
    "validate_claims",
    "verify_signature",
]
