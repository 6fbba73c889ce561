"""The one JOSE error type and its closed set of stable reason codes."""

from __future__ import annotations

from typing import Final, Literal, get_args
from urllib.parse import urlsplit

JoseReason = Literal[
    # structure of the compact serialisation (RFC 7515 §7.1)
    "malformed",  # not three strict base64url segments, header not a JSON object, bad header member types
    "too_large",  # token longer than the configured limit
    "payload_not_json",  # payload is not a JSON object (a JWT claims set, RFC 7519 §7.2)
    "duplicate_member",  # a JSON object with a repeated member name (RFC 7515 §5.2, RFC 7519 §4)
    # header policy
    "alg_not_allowed",  # alg absent from the allow-list, `none`, symmetric or unsupported
    "key_mismatch",  # the selected key cannot verify this alg (kty/crv/alg/use/key_ops)
    "missing_kid",  # no `kid` header, so no key can be selected
    "unknown_kid",  # no key with this `kid` in the trusted key set (after the permitted refetch)
    "forbidden_header",  # x5c / x5u / jku / jwk present: keys are never taken from the token
    "crit_unsupported",  # `crit` names an extension we do not understand (RFC 7515 §4.1.11)
    "unencoded_payload",  # `b64: false` (RFC 7797) is refused
    "typ_mismatch",  # `typ` header absent or not the expected media type (RFC 7515 §4.1.9)
    # signature
    "bad_signature",
    # claims (RFC 7519 §4.1)
    "expired",
    "not_yet_valid",
    "iat_in_future",
    "lifetime_too_long",
    "missing_claim",
    "bad_claim",  # a registered claim of the wrong type or an inconsistent value
    "iss_mismatch",
    "aud_mismatch",
    # keys and key sets
    "key_invalid",  # a key that cannot be parsed or is too weak
    "jwks_invalid",  # a key set that is not a JWKS JSON object
    "jwks_unavailable",  # the key set could not be fetched and no usable stale copy exists
    "jwks_url_refused",  # the key set URL failed the SSRF guard (scheme, host, resolved address)
]

REASONS: Final[frozenset[str]] = frozenset(get_args(JoseReason))


class JoseError(Exception):
    """A refused token, key or key set: a stable `reason` and a `description` safe to show a client."""

    __slots__ = ("description", "reason")

    def __init__(self, reason: JoseReason, description: str) -> None:
        super().__init__(f"{reason}: {description}")
        self.reason: JoseReason = reason
        self.description = description

    def __repr__(self) -> str:
        return f"JoseError({self.reason!r}, {self.description!r})"


def quoted(value: object, limit: int = 64) -> str:
    """repr() of a client-supplied value, cut to `limit` characters, for a description or a log line.

    repr escapes control characters and lone surrogates; a long string is cut before repr (no copy of a whole
    JWS); a value repr cannot render (an integer over Python's digit limit, a structure nested too deep) is
    named by its type instead of raising.
    """
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def quoted_url(uri: str, limit: int = 128) -> str:
    """quoted() of a client-named URL without its userinfo (a password there is a secret), for logs and
    descriptions."""
    try:
        netloc = urlsplit(uri).netloc
    except ValueError:
        netloc = ""
    if "@" in netloc:
        uri = uri.replace(netloc, "***@" + netloc.rpartition("@")[2], 1)
    return quoted(uri, limit)
