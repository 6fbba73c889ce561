"""The sandbox's JOSE, all of it through `gateway.jose` (the only door to jwcrypto): key generation and PEM I/O,
JWKS export, compact JWS signing, unverified decoding, and verification by the one path (`JwsVerifier`).

Every failure becomes a `CryptoError` with a stable reason. Algorithms are allow-listed explicitly: PS256 and
ES256 only (FAPI 1.0 Part 2 §8.6).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ..jose import (
    ClaimRules,
    JoseError,
    JwkSet,
    JwsVerifier,
    SigningKey,
    StaticKeys,
    Trust,
    VerificationKey,
    generate_signing_key,
    load_signing_key_pem,
    sign_jwt,
)
from ..jose.encoding import b64url_decode
from ..jose.keys import TLS_USE, check_jwk
from .jsonvalues import JsonValueError, check, loads

__all__ = [
    "ALLOWED_ALGS",
    "PRIVATE_MEMBERS",
    "CryptoError",
    "KeySet",
    "SigningKey",
    "alg_for",
    "decode_unverified",
    "generate_key",
    "jwks",
    "load_private_pem",
    "public_jwk",
    "sign",
]

ALLOWED_ALGS: Final = ("PS256", "ES256")
"""The only JWS algorithms the sandbox signs or accepts."""

# Members of a JWK that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

MAX_JWS_BYTES: Final = 65536
"""Longest compact JWS the sandbox verifies (its access tokens and client assertions are far shorter)."""
_OWN_KEYS: Final = "urn:dcr-gateway:sandbox:key-set"
"""The JWKS URI of a KeySet in its Trust: the keys are in memory, nothing is fetched."""

# JoseError reasons as the sandbox has always named them; every other reason keeps its own name.
_REASONS: Final = {
    "malformed": "malformed_jws",
    "payload_not_json": "malformed_jws",
    "duplicate_member": "malformed_jws",
    "too_large": "malformed_jws",
    "key_mismatch": "key_alg_mismatch",
}


class CryptoError(Exception):
    """A JOSE object or key that cannot be used; `reason` is a stable snake_case code."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def _json_part(segment: str, name: str) -> Any:
    try:
        return loads(b64url_decode(segment))
    except JsonValueError as exc:
        raise CryptoError("malformed_jws", f"JWS {name}: {exc}") from None
    except (ValueError, UnicodeDecodeError):
        raise CryptoError("malformed_jws", "JWS header or payload is not base64url-encoded JSON") from None


def decode_unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and payload of a compact JWS, WITHOUT checking the signature (RFC 7515 §7.1)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise CryptoError("malformed_jws", "not a compact JWS (expected three dot-separated parts)")
    header, payload = _json_part(parts[0], "header"), _json_part(parts[1], "payload")
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise CryptoError("malformed_jws", "JWS header and payload must be JSON objects")
    if not isinstance(header.get("alg"), str):
        raise CryptoError("malformed_jws", "JWS header has no alg")
    return header, payload


def alg_for(key: SigningKey) -> str:
    """The signing algorithm the sandbox uses for a key: PS256 for RSA, ES256 for EC P-256."""
    if key.kty == "RSA":
        return "PS256"
    if key.kty == "EC" and key.crv == "P-256":
        return "ES256"
    raise CryptoError("unsupported_key", "only RSA (PS256) and EC P-256 (ES256) keys are supported")


def public_jwk(key: SigningKey) -> dict[str, Any]:
    """The public half as a JWK dict with kid, use and alg."""
    return key.public_jwk(use="sig", alg=alg_for(key))


def sign(
    key: SigningKey, claims: Mapping[str, Any], *, typ: str | None, extra_header: Mapping[str, Any] | None = None
) -> str:
    """Compact JWS over the JSON claims, protected header {alg, kid, typ} (and `extra_header`)."""
    try:
        return sign_jwt(claims, key, alg_for(key), typ=typ, extra_headers=extra_header)
    except (JoseError, ValueError, TypeError) as exc:
        raise CryptoError("signing_failed", f"cannot sign: {type(exc).__name__}") from None


def generate_key(alg: str = "PS256", *, kid: str | None = None) -> SigningKey:
    """A fresh key for `alg`: RSA 2048 for PS256, EC P-256 for ES256 (kid: its RFC 7638 thumbprint)."""
    if alg == "PS256":
        return generate_signing_key("RSA", rsa_bits=2048, kid=kid)
    if alg == "ES256":
        return generate_signing_key("EC", crv="P-256", kid=kid)
    raise CryptoError("unsupported_alg", f"alg must be one of {', '.join(ALLOWED_ALGS)}")


def load_private_pem(data: bytes, *, kid: str | None = None) -> SigningKey:
    """A private key from PEM; alg from its type, kid the RFC 7638 thumbprint unless given."""
    try:
        key = load_signing_key_pem(data, kid=kid)
    except JoseError as exc:
        if exc.description == "not a private key":
            raise CryptoError("bad_key", "the PEM holds no private key") from None
        if exc.description.startswith("unsupported"):
            raise CryptoError("unsupported_key", "only RSA (PS256) and EC P-256 (ES256) keys are supported") from None
        raise CryptoError("bad_key", "not a PEM private key") from None
    alg_for(key)
    return key


def jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """A public JWKS document for `keys`."""
    return {"keys": [public_jwk(k) for k in keys]}


class KeySet:
    """Public verification keys by kid, parsed once (RFC 7517 §5); private material is refused. `verify` is the
    one JWS path of gateway/jose, with these keys."""

    __slots__ = ("_keys", "_verifier")

    def __init__(self, keys: JwkSet) -> None:
        self._keys = keys
        self._verifier = JwsVerifier(StaticKeys({_OWN_KEYS: keys}), max_bytes=MAX_JWS_BYTES)

    @classmethod
    def of(cls, keys: Iterable[SigningKey]) -> KeySet:
        """The public halves of our own signing keys."""
        return cls(JwkSet(VerificationKey.from_dict(public_jwk(k)) for k in keys))

    @classmethod
    def from_document(cls, doc: Any, *, max_keys: int = 50) -> KeySet:
        """Parse a JWKS document; raise CryptoError for anything but public RSA/EC signature keys."""
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise CryptoError("bad_jwks", 'a JWKS must be a JSON object with a "keys" array')
        raw_keys = doc["keys"]
        if not raw_keys or len(raw_keys) > max_keys:
            raise CryptoError("bad_jwks", f"a JWKS must hold 1 to {max_keys} keys")
        keys: list[VerificationKey] = []
        transport: list[VerificationKey] = []
        for i, raw in enumerate(raw_keys):
            if not isinstance(raw, dict):
                raise CryptoError("bad_jwks", f"keys[{i}] is not a JSON object")
            # SECURITY: a published JWKS must never carry private key material (RFC 7517 §9.2).
            private = sorted(PRIVATE_MEMBERS & raw.keys())
            if private:
                raise CryptoError("private_key_material", f"keys[{i}] contains private members {private}")
            if raw.get("kty") not in ("RSA", "EC"):
                raise CryptoError("bad_jwks", f"keys[{i}]: kty must be RSA or EC")
            try:
                check_jwk(raw)
            except JoseError:
                raise CryptoError("bad_jwks", f"keys[{i}] is not a valid JWK") from None
            if raw.get("use") == TLS_USE:
                # SECURITY: a transport (mTLS) key never verifies a signature; it names a certificate (its x5c).
                try:
                    transport.append(VerificationKey.from_dict(raw))
                except JoseError as exc:
                    raise CryptoError("bad_jwks", f"keys[{i}] is not a usable transport key: {exc.description}") \
                        from None
                continue
            kid = raw.get("kid")
            if not isinstance(kid, str) or not kid:
                continue  # never selectable: verification needs a kid
            try:
                keys.append(VerificationKey.from_dict(raw))
            except JoseError as exc:
                raise CryptoError("bad_jwks", f"keys[{i}] is not a usable signature key: {exc.description}") from None
        return cls(JwkSet(keys, transport))

    def __contains__(self, kid: object) -> bool:
        return isinstance(kid, str) and self._keys.get(kid) is not None

    def has_certificate(self, x5t_s256: str) -> bool:
        """True when a key of the set carries this certificate: its `x5c` leaf, or its declared `x5t#S256`
        (RFC 8705 §2.2, self-signed certificate client authentication)."""
        return any(k.x5t_s256 == x5t_s256 for k in (*self._keys.keys, *self._keys.tls_keys))

    async def verify(
        self,
        token: str,
        *,
        algs: Iterable[str] = ALLOWED_ALGS,
        typ: tuple[str, ...] | None = None,
        rules: ClaimRules | None = None,
        sole_key_without_kid: bool = False,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Verify a compact JWS against the key named by its kid; return (header, payload). Without `rules` the
        claims are the caller's to judge (the sandbox words its own RFC 7523 / RFC 9068 errors); with them, the
        one verifier checks iss, aud and the times too.

        `sole_key_without_kid`: a JWS without `kid` (optional in RFC 7515 §4.1.4) is verified with the set's
        signature key when the set holds exactly one (`use: tls` keys never count); with several it is refused, as
        always, for want of a `kid`. For client assertions: the OB conformance tool signs them without one."""
        # SECURITY: explicit allow-list; never `none`, HS* (key confusion) or RS* (FAPI 1.0 Part 2 §8.6).
        allowed = frozenset(a for a in algs if a in ALLOWED_ALGS)
        trust = Trust(algorithms=allowed, jwks_uri=_OWN_KEYS, rules=rules, typ=typ)
        # Only a set with exactly one signature key names a key for a JWS without kid (`use: tls` keys never count).
        sole = self._keys.keys[0].kid if sole_key_without_kid and len(self._keys.keys) == 1 else None
        try:
            verified = await self._verifier.verify(token, trust, kid_if_absent=sole)
        except JoseError as exc:
            raise CryptoError(_REASONS.get(exc.reason, exc.reason), exc.description) from None
        payload = dict(verified.claims)
        try:
            check(payload)
        except JsonValueError as exc:
            raise CryptoError("malformed_jws", f"JWS payload: {exc}") from None
        return dict(verified.header), payload
