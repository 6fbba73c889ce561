"""The signature algorithms the gateway can verify, each bound to the one key type that may verify it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwcrypto.jwa import JWA


@dataclass(frozen=True, slots=True)
class AlgSpec:
    """One JWS `alg` (RFC 7518 §3.1): the key type (and curve) it needs and, for ECDSA, the signature size."""

    name: str
    kty: str
    crv: str | None = None
    signature_bytes: int | None = None  # ECDSA: R || S, fixed length (RFC 7518 §3.4)
    curve_order: int | None = None  # ECDSA: n, to refuse r or s outside [1, n-1]


_P256_N: Final = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_P384_N: Final = int(
    "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFC7634D81F4372DDF581A0DB248B0A77AECEC196ACCC52973", 16
)
_P521_N: Final = int(
    "01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF"
    "FA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409",
    16,
)

# SECURITY: only asymmetric algorithms exist here. HS* (and `none`) are not in this table, so they are
# refused whatever a policy's allow-list says: a public key can never be used as an HMAC secret
# (algorithm confusion, CVE-2015-9235 / CVE-2016-10555 family; RFC 8725 §2.1, §3.1).
SUPPORTED: Final[Mapping[str, AlgSpec]] = MappingProxyType(
    {
        "PS256": AlgSpec("PS256", "RSA"),
        "PS384": AlgSpec("PS384", "RSA"),
        "PS512": AlgSpec("PS512", "RSA"),
        "RS256": AlgSpec("RS256", "RSA"),
        "RS384": AlgSpec("RS384", "RSA"),
        "RS512": AlgSpec("RS512", "RSA"),
        "ES256": AlgSpec("ES256", "EC", "P-256", 64, _P256_N),
        "ES384": AlgSpec("ES384", "EC", "P-384", 96, _P384_N),
        "ES512": AlgSpec("ES512", "EC", "P-521", 132, _P521_N),
    }
)

FAPI_ALGORITHMS: Final = frozenset({"PS256", "ES256"})
"""FAPI 1.0 Part 2 §8.6 and OB DCR (digest V2): the only algorithms accepted by default."""

MIN_RSA_BITS: Final = 2048
"""RSA keys below this size are refused (FAPI 1.0 Part 2 §8.6, RFC 7518 §3.3)."""

_ENGINES: Final[Mapping[str, Any]] = MappingProxyType({name: JWA.signing_alg(name) for name in SUPPORTED})


def engine(alg: str) -> Any:
    """The prebuilt jwcrypto signing engine for a supported alg (KeyError otherwise)."""
    return _ENGINES[alg]


_HASHES: Final[Mapping[str, hashes.HashAlgorithm]] = MappingProxyType(
    {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()})
# RFC 7518 §3.3 / §3.5: PKCS#1 v1.5 for RS*, PSS with MGF1 of the same hash and a salt as long as the hash for PS*
# (the parameters jwcrypto signs with); §3.4: ECDSA over the curve the key's `crv` names.
_RSA_PADDING: Final[Mapping[str, padding.AsymmetricPadding]] = MappingProxyType(
    {**{f"RS{n}": padding.PKCS1v15() for n in _HASHES},
     **{f"PS{n}": padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size) for n, h in _HASHES.items()}})
_ECDSA: Final[Mapping[str, ec.ECDSA]] = MappingProxyType({f"ES{n}": ec.ECDSA(h) for n, h in _HASHES.items()})


def verify_raw(alg: str, public_key: Any, signing_input: bytes, signature: bytes) -> None:
    """Verify a JWS signature (RFC 7518 §3; ECDSA as R || S of the spec's length) with a parsed `cryptography`
    public key; InvalidSignature (or ValueError / TypeError / KeyError) when it does not verify. The caller has
    matched the key to the alg (`jws.verify_signature`)."""
    ecdsa = _ECDSA.get(alg)
    if ecdsa is not None:
        half = len(signature) // 2
        der = encode_dss_signature(int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big"))
        public_key.verify(der, signing_input, ecdsa)
        return
    public_key.verify(signature, signing_input, _RSA_PADDING[alg], _HASHES[alg[2:]])


def allow_list(algorithms: Iterable[str]) -> frozenset[str]:
    """Validate a configured allow-list at build time: non-empty, supported names only (never `none`/HS*)."""
    algs = frozenset(algorithms)
    if not algs:
        raise ValueError("the algorithm allow-list is empty")
    unsupported = sorted(algs - SUPPORTED.keys())
    if unsupported:
        raise ValueError(f"unsupported algorithms {unsupported}; supported: {sorted(SUPPORTED)}")
    return algs
