"""JOSE for the gateway: strict JWS/JWT verification, keys and claims.

This package is the only place in the gateway core that imports jwcrypto. Every failure is a
`JoseError` whose `reason` is one of `REASONS`.
"""

from .algorithms import FAPI_ALGORITHMS, SUPPORTED, allow_list
from .claims import ClaimRules, check_typ, validate_claims
from .errors import REASONS, JoseError, JoseReason
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
    SigningKey,
    VerificationKey,
    cert_thumbprint_s256,
    generate_signing_key,
    jwk_thumbprint,
    load_signing_key_pem,
    sign_compact,
    sign_jwt,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "FAPI_ALGORITHMS",
    "FORBIDDEN_HEADERS",
    "REASONS",
    "SUPPORTED",
    "ClaimRules",
    "CompactJWS",
    "JoseError",
    "JoseReason",
    "JwkSet",
    "SigningKey",
    "VerificationKey",
    "allow_list",
    "cert_thumbprint_s256",
    "check_algorithm",
    "check_typ",
    "generate_signing_key",
    "jwk_thumbprint",
    "load_signing_key_pem",
    "parse_compact",
    "sign_compact",
    "sign_jwt",
    "validate_claims",
    "verify_signature",
]
