"""The sandbox's only door to jwcrypto: key generation and PEM I/O, compact JWS signing and verification.

Every jwcrypto failure (including its ValueError/TypeError/KeyError) becomes a `CryptoError` with a stable reason.
Algorithms are allow-listed explicitly: PS256 and ES256 only (FAPI 1.0 Part 2 §8.6).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jwcrypto import jwk, jws
from jwcrypto.common import JWException

from .jsonvalues import JsonValueError, loads

ALLOWED_ALGS: Final = ("PS256", "ES256")
"""The only JWS algorithms the sandbox signs or accepts."""

# Members of a JWK that hold private key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS: Final = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})

_ALG_KTY: Final = {"PS256": ("RSA", None), "ES256": ("EC", "P-256")}
# What jwcrypto raises for input it cannot use: its own errors, and ValueError, TypeError or KeyError (a member
# that does not belong to the key type, e.g. "crv" on an RSA key).
_JWCRYPTO_ERRORS: Final = (JWException, ValueError, TypeError, KeyError)


class CryptoError(Exception):
    """A JOSE object or key that cannot be used; `reason` is a stable snake_case code."""

    def __init__(self, reason: str, description: str) -> None:
        super().__init__(description)
        self.reason = reason
        self.description = description


def _b64url_decode(part: str) -> bytes:
    if not part or any(c not in _B64URL for c in part):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


_B64URL: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _json_part(segment: str, name: str) -> Any:
    try:
        return loads(_b64url_decode(segment))
    except JsonValueError as exc:
        raise CryptoError("malformed_jws", f"JWS {name}: {exc}") from None
    except (ValueError, binascii.Error, UnicodeDecodeError):
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


def alg_for(key: jwk.JWK) -> str:
    """The signing algorithm the sandbox uses for a key: PS256 for RSA, ES256 for EC P-256."""
    kty = key.get("kty")
    if kty == "RSA":
        return "PS256"
    if kty == "EC" and key.get("crv") == "P-256":
        return "ES256"
    raise CryptoError("unsupported_key", "only RSA (PS256) and EC P-256 (ES256) keys are supported")


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A private key with its kid (RFC 7638 thumbprint unless given) and algorithm."""

    kid: str
    alg: str
    jwk: jwk.JWK

    def public_jwk(self) -> dict[str, Any]:
        """The public half as a JWK dict with kid, use and alg."""
        public: dict[str, Any] = self.jwk.export_public(as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}

    def private_pem(self) -> bytes:
        """PKCS#8 PEM of the private key (unencrypted; callers write it 0600)."""
        pem: bytes = self.jwk.export_to_pem(private_key=True, password=None)
        return pem

    def sign(
        self, claims: Mapping[str, Any], *, typ: str | None, extra_header: Mapping[str, Any] | None = None
    ) -> str:
        """Compact JWS over the JSON claims, protected header {alg, kid, typ}."""
        header: dict[str, Any] = {"alg": self.alg, "kid": self.kid}
        if typ is not None:
            header["typ"] = typ
        if extra_header:
            header.update(extra_header)
        payload = json.dumps(dict(claims), separators=(",", ":")).encode()
        try:
            token = jws.JWS(payload)
            token.add_signature(self.jwk, alg=self.alg, protected=json.dumps(header, separators=(",", ":")))
            out: str = token.serialize(compact=True)
        except _JWCRYPTO_ERRORS as exc:
            raise CryptoError("signing_failed", f"cannot sign: {type(exc).__name__}") from None
        return out


def generate_key(alg: str = "PS256", *, kid: str | None = None) -> SigningKey:
    """A fresh key for `alg`: RSA 2048 for PS256, EC P-256 for ES256."""
    if alg == "PS256":
        key = jwk.JWK.generate(kty="RSA", size=2048)
    elif alg == "ES256":
        key = jwk.JWK.generate(kty="EC", crv="P-256")
    else:
        raise CryptoError("unsupported_alg", f"alg must be one of {', '.join(ALLOWED_ALGS)}")
    return SigningKey(kid=kid or key.thumbprint(), alg=alg, jwk=key)


def load_private_pem(data: bytes, *, kid: str | None = None) -> SigningKey:
    """A private key from PEM; alg from its type, kid the RFC 7638 thumbprint unless given."""
    try:
        key = jwk.JWK.from_pem(data)
    except _JWCRYPTO_ERRORS:
        raise CryptoError("bad_key", "not a PEM private key") from None
    if not key.has_private:
        raise CryptoError("bad_key", "the PEM holds no private key")
    return SigningKey(kid=kid or key.thumbprint(), alg=alg_for(key), jwk=key)


def jwks(keys: Iterable[SigningKey]) -> dict[str, Any]:
    """A public JWKS document for `keys`."""
    return {"keys": [k.public_jwk() for k in keys]}


class KeySet:
    """Public verification keys by kid, parsed once (RFC 7517 §5); private material is refused."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, jwk.JWK]) -> None:
        self._keys = dict(keys)

    @classmethod
    def of(cls, keys: Iterable[SigningKey]) -> KeySet:
        """The public halves of our own signing keys."""
        return cls({k.kid: jwk.JWK(**k.public_jwk()) for k in keys})

    @classmethod
    def from_document(cls, doc: Any, *, max_keys: int = 50) -> KeySet:
        """Parse a JWKS document; raise CryptoError for anything but public RSA/EC signature keys."""
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise CryptoError("bad_jwks", 'a JWKS must be a JSON object with a "keys" array')
        raw_keys = doc["keys"]
        if not raw_keys or len(raw_keys) > max_keys:
            raise CryptoError("bad_jwks", f"a JWKS must hold 1 to {max_keys} keys")
        keys: dict[str, jwk.JWK] = {}
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
                key = jwk.JWK(**raw)
            except _JWCRYPTO_ERRORS:
                raise CryptoError("bad_jwks", f"keys[{i}] is not a valid JWK") from None
            kid = raw.get("kid")
            if isinstance(kid, str) and kid:
                keys.setdefault(kid, key)
        return cls(keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self._keys

    def verify(
        self, token: str, *, algs: Iterable[str] = ALLOWED_ALGS
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Verify a compact JWS against the key named by its kid; return (header, payload)."""
        header, _ = decode_unverified(token)
        alg = header["alg"]
        allowed = tuple(a for a in algs if a in ALLOWED_ALGS)
        # SECURITY: explicit allow-list; never `none`, HS* (key confusion) or RS* (FAPI 1.0 Part 2 §8.6).
        if alg not in allowed:
            raise CryptoError(
                "alg_not_allowed", f"alg {alg!r} is not allowed (allowed: {', '.join(allowed)})"
            )
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise CryptoError("missing_kid", "JWS header has no kid")
        key = self._keys.get(kid)
        if key is None:
            raise CryptoError("unknown_kid", f"no key with kid {kid!r}")
        kty, crv = _ALG_KTY[alg]
        if key.get("kty") != kty or (crv is not None and key.get("crv") != crv):
            raise CryptoError("key_alg_mismatch", f"key {kid!r} cannot verify {alg}")
        if key.get("use") not in (None, "sig") or key.get("alg") not in (None, alg):
            raise CryptoError("key_alg_mismatch", f"key {kid!r} is not a {alg} signature key")
        try:
            parsed = jws.JWS()
            parsed.allowed_algs = [alg]
            parsed.deserialize(token)
            parsed.verify(key, alg=alg)
            payload = loads(parsed.payload)
        except _JWCRYPTO_ERRORS:
            raise CryptoError("bad_signature", "signature verification failed") from None
        if not isinstance(payload, dict):
            raise CryptoError("malformed_jws", "JWS payload must be a JSON object")
        return header, payload
