"""Strict compact JWS (RFC 7515 §7.1): parsed and vetted by us before jwcrypto verifies a signature."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .algorithms import SUPPORTED, verify_raw
from .encoding import DuplicateMemberError, JsonTextError, b64url_decode, json_loads_strict
from .errors import JoseError, quoted
from .keys import VerificationKey

DEFAULT_MAX_BYTES: Final = 16 * 1024
"""Default size limit of a compact JWS (registration requests with an embedded SSA fit easily)."""

# SECURITY: keys are never taken from the token (OB DCR "Of JWS & JWKS"; RFC 8725 §3.10). `jwk`/`jku`/`x5u`
# let an attacker supply their own key or key URL (CVE-2018-0114 embedded-jwk bypass; jku/x5u are SSRF).
FORBIDDEN_HEADERS: Final = frozenset({"jwk", "jku", "x5c", "x5u"})

_REGISTERED_HEADERS: Final = frozenset(
    {"alg", "jku", "jwk", "kid", "x5u", "x5c", "x5t", "x5t#S256", "typ", "cty", "crit"}
)


@dataclass(frozen=True, slots=True)
class CompactJWS:
    """A structurally valid compact JWS whose signature is NOT yet verified."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any] | None  # the payload as a JSON object, when parsed as JSON
    payload: bytes = field(repr=False)
    signing_input: bytes = field(repr=False)  # ASCII(BASE64URL(header) '.' BASE64URL(payload)), as received
    signature: bytes = field(repr=False)
    alg: str
    kid: str | None


def _decode_segment(segment: str, name: str) -> bytes:
    try:
        return b64url_decode(segment)
    except ValueError as exc:
        raise JoseError("malformed", f"JWS {name} segment is not strict base64url: {exc}") from exc


def _check_crit(header: Mapping[str, Any], understood_crit: frozenset[str]) -> None:
    crit = header["crit"]
    # RFC 7515 §4.1.11: a non-empty array of names, each present in the header, none of them registered.
    if not isinstance(crit, list) or not crit or not all(isinstance(n, str) for n in crit):
        raise JoseError("malformed", "crit must be a non-empty array of header names")
    for name in crit:
        if name in _REGISTERED_HEADERS:
            raise JoseError("malformed", f"crit must not list the registered header {quoted(name)}")
        # SECURITY: an extension we do not implement changes the meaning of the token; refuse it.
        if name not in understood_crit:
            raise JoseError("crit_unsupported", f"critical header extension {quoted(name)} is not supported")
        if name not in header:
            raise JoseError("malformed", f"crit lists {quoted(name)} which is absent from the header")


def parse_compact(
    token: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    understood_crit: frozenset[str] = frozenset(),
    json_payload: bool = True,
) -> CompactJWS:
    """Parse a compact JWS strictly (size, segments, base64url, JSON, header policy); no signature check."""
    if len(token) > max_bytes:
        raise JoseError("too_large", f"JWS is longer than {max_bytes} bytes")
    if not token.isascii():
        raise JoseError("malformed", "JWS contains non-ASCII characters")
    parts = token.split(".")
    if len(parts) != 3:
        # five parts would be a JWE (RFC 7516 §7.1); only JWS is accepted
        raise JoseError("malformed", f"compact JWS must have 3 dot-separated segments, got {len(parts)}")
    header_b64, payload_b64, signature_b64 = parts
    if not header_b64:
        raise JoseError("malformed", "JWS header segment is empty")
    header_bytes = _decode_segment(header_b64, "header")
    payload = _decode_segment(payload_b64, "payload")
    signature = _decode_segment(signature_b64, "signature")

    try:
        header = json_loads_strict(header_bytes)
    except DuplicateMemberError as exc:
        # SECURITY: parsers disagreeing on which duplicate wins allow bypasses (RFC 7515 §5.2, RFC 8725).
        raise JoseError("duplicate_member", f"JWS header repeats member {quoted(exc.name)}") from exc
    except JsonTextError as exc:
        raise JoseError("malformed", f"JWS header is not acceptable JSON text: {exc}") from exc
    except ValueError as exc:
        raise JoseError("malformed", "JWS header is not valid UTF-8 JSON") from exc
    if not isinstance(header, dict):
        raise JoseError("malformed", "JWS header is not a JSON object")

    present = sorted(FORBIDDEN_HEADERS.intersection(header))
    if present:
        names = ", ".join(present)
        raise JoseError("forbidden_header", f"JWS header must not carry {names}: keys come from the JWKS")
    if "b64" in header:
        # SECURITY: RFC 7797 unencoded payloads change what is signed; never accepted here.
        if header["b64"] is not True:
            raise JoseError("unencoded_payload", "unencoded payload (b64: false, RFC 7797) is not accepted")
    if "crit" in header:
        _check_crit(header, understood_crit)
    alg = header.get("alg")
    if not isinstance(alg, str) or not alg:
        raise JoseError("malformed", "JWS header has no alg string")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise JoseError("malformed", "JWS header kid must be a string")
    for name in ("typ", "cty"):
        if name in header and not isinstance(header[name], str):
            raise JoseError("malformed", f"JWS header {name} must be a string")

    claims: dict[str, Any] | None = None
    if json_payload:
        try:
            decoded = json_loads_strict(payload)
        except DuplicateMemberError as exc:
            # SECURITY: refused whichever value comes first (RFC 7519 §4; RFC 8725 §3.4).
            raise JoseError("duplicate_member", f"JWT claims repeat member {quoted(exc.name)}") from exc
        except JsonTextError as exc:
            raise JoseError("payload_not_json", f"JWS payload is not acceptable JSON text: {exc}") from exc
        except ValueError as exc:
            raise JoseError("payload_not_json", "JWS payload is not valid UTF-8 JSON") from exc
        if not isinstance(decoded, dict):
            raise JoseError("payload_not_json", "JWS payload is not a JSON object")
        claims = decoded
    return CompactJWS(
        header=header,
        claims=claims,
        payload=payload,
        signing_input=f"{header_b64}.{payload_b64}".encode("ascii"),
        signature=signature,
        alg=alg,
        kid=kid or None,
    )


def check_algorithm(jws: CompactJWS, algorithms: frozenset[str]) -> None:
    """Refuse an alg outside the allow-list; `none` and symmetric algs are never accepted (RFC 8725 §3.1)."""
    # SECURITY: `none` (CVE-2015-9235) and HS* are absent from SUPPORTED, so an allow-list cannot admit them.
    if jws.alg not in algorithms or jws.alg not in SUPPORTED:
        allowed = ", ".join(sorted(algorithms & SUPPORTED.keys()))
        raise JoseError("alg_not_allowed", f"JWS alg {quoted(jws.alg)} is not allowed; allowed: [{allowed}]")


def _check_key(jws: CompactJWS, key: VerificationKey) -> None:
    spec = SUPPORTED[jws.alg]
    # SECURITY: the key type must match the alg family (algorithm confusion, RFC 8725 §2.1 / §3.1).
    if key.kty != spec.kty or (spec.crv is not None and key.crv != spec.crv):
        shape = f"{key.kty} {key.crv}" if key.crv else key.kty
        raise JoseError("key_mismatch", f"key {quoted(key.kid)} ({shape}) cannot verify {jws.alg}")
    if key.alg is not None and key.alg != jws.alg:
        raise JoseError("key_mismatch", f"key {quoted(key.kid)} is restricted to alg {quoted(key.alg)} (RFC 7517 §4.4)")
    if key.use is not None and key.use != "sig":
        raise JoseError("key_mismatch", f"key {quoted(key.kid)} has use {quoted(key.use)}, not sig (RFC 7517 §4.2)")
    if key.key_ops is not None and "verify" not in key.key_ops:
        raise JoseError("key_mismatch", f"key {quoted(key.kid)} key_ops do not include verify (RFC 7517 §4.3)")


def _check_ecdsa_shape(jws: CompactJWS) -> None:
    spec = SUPPORTED[jws.alg]
    if spec.signature_bytes is None or spec.curve_order is None:
        return
    if len(jws.signature) != spec.signature_bytes:
        size = spec.signature_bytes
        raise JoseError("bad_signature", f"{jws.alg} signature must be {size} bytes (RFC 7518 §3.4)")
    half = spec.signature_bytes // 2
    r = int.from_bytes(jws.signature[:half], "big")
    s = int.from_bytes(jws.signature[half:], "big")
    # SECURITY: r, s must lie in [1, n-1]; r = s = 0 verified anything in Java 15-18 (CVE-2022-21449).
    if not (0 < r < spec.curve_order and 0 < s < spec.curve_order):
        raise JoseError("bad_signature", "ECDSA signature values out of range")


def check_key(jws: CompactJWS, key: VerificationKey, algorithms: frozenset[str]) -> None:
    """Everything `verify_signature` judges but the signature itself: the allow-list, the key's type, curve,
    `alg`, `use` and `key_ops` against the alg, and the ECDSA signature's shape; JoseError on any failure."""
    check_algorithm(jws, algorithms)
    _check_key(jws, key)
    _check_ecdsa_shape(jws)


def verify_signature(jws: CompactJWS, key: VerificationKey, algorithms: frozenset[str]) -> None:
    """Verify the signature with `key` under an explicit allow-list; JoseError on any failure."""
    check_key(jws, key, algorithms)
    try:
        verify_raw(jws.alg, key.public, jws.signing_input, jws.signature)
    except Exception as exc:  # cryptography InvalidSignature, ValueError, TypeError
        raise JoseError("bad_signature", "JWS signature verification failed") from exc
