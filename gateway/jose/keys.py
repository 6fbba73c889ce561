"""Keys parsed once: verification keys and key sets (RFC 7517), signing keys, thumbprints, `sign_jwt`."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import structlog
from cryptography import x509
from jwcrypto.jwk import JWK

from .algorithms import MIN_RSA_BITS, SUPPORTED, engine
from .encoding import DuplicateMemberError, JsonTextError, b64url_encode, json_dumps_compact, json_loads_strict
from .errors import JoseError, quoted

_log = structlog.get_logger(__name__)

_PUBLIC_MEMBERS: Final[Mapping[str, tuple[str, ...]]] = {"RSA": ("n", "e"), "EC": ("crv", "x", "y")}
_CURVES: Final = frozenset({"P-256", "P-384", "P-521"})
TLS_USE: Final = "tls"
"""OB Directory JWKS mark transport (mTLS) certificates with `use: tls`, beside `use: sig` signing keys."""


def cert_thumbprint_s256(der: bytes) -> str:
    """The `x5t#S256` of a DER certificate: base64url SHA-256 (RFC 7517 §4.9, RFC 8705 §3.1)."""
    return b64url_encode(hashlib.sha256(der).digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """RFC 7638 SHA-256 thumbprint of a JWK given as a dict (JoseError key_invalid if it is not a key)."""
    return _public_jwk(jwk)[0].thumbprint()  # type: ignore[no-any-return]


def _public_jwk(data: Mapping[str, Any]) -> tuple[Any, Any]:
    """A jwcrypto JWK carrying only the public members (never `use`/`key_ops`/`alg`/private parts), and its
    parsed `cryptography` public key.

    Constraints (`use`, `key_ops`, `alg`) are enforced by us before verification, so the jwcrypto object is
    a pure public key and its parsed cryptography key is built here, once: signatures are verified with it.
    """
    kty = data.get("kty")
    if kty == "oct":
        # SECURITY: symmetric keys never come from a key set (algorithm confusion, RFC 8725 §3.1).
        raise JoseError("key_invalid", "symmetric (oct) keys are not accepted")
    members = _PUBLIC_MEMBERS.get(kty) if isinstance(kty, str) else None
    if members is None:
        raise JoseError("key_invalid", f"unsupported key type {quoted(kty)}; supported: RSA, EC")
    public: dict[str, Any] = {"kty": kty}
    for name in members:
        value = data.get(name)
        if not isinstance(value, str) or not value:
            raise JoseError("key_invalid", f"{kty} key member {name!r} missing or not a string")
        public[name] = value
    if kty == "EC" and public["crv"] not in _CURVES:
        raise JoseError("key_invalid", f"unsupported EC curve {quoted(public['crv'])}")
    try:
        jwk = JWK(**public)
        pyca = jwk.get_op_key("verify", public.get("crv"))  # parses, checks the point is on the curve
    except Exception as exc:  # jwcrypto raises ValueError/TypeError/InvalidJWKValue/... for bad keys
        raise JoseError("key_invalid", f"{kty} key could not be parsed") from exc
    if kty == "RSA" and pyca.key_size < MIN_RSA_BITS:
        # SECURITY: weak RSA keys (FAPI 1.0 Part 2 §8.6, RFC 7518 §3.3 requires >= 2048 bits).
        raise JoseError("key_invalid", f"RSA key of {pyca.key_size} bits is below {MIN_RSA_BITS}")
    return jwk, pyca


def _optional_str(data: Mapping[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None or isinstance(value, str):
        return value
    raise JoseError("key_invalid", f"key member {name!r} must be a string")


def _decode_x5c(data: Mapping[str, Any]) -> tuple[bytes, ...]:
    raw = data.get("x5c")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw or not all(isinstance(c, str) for c in raw):
        raise JoseError("key_invalid", "x5c must be a non-empty array of base64 strings")
    try:
        # RFC 7517 §4.7: standard base64 (not base64url) DER.
        return tuple(base64.b64decode(c, validate=True) for c in raw)
    except (binascii.Error, ValueError) as exc:
        raise JoseError("key_invalid", "x5c entry is not base64") from exc


def _same_public_key(jwk: Any, der: bytes) -> bool:
    try:
        cert_key = x509.load_der_x509_certificate(der).public_key()
    except ValueError:
        return False
    jwk_key = jwk.get_op_key("verify", jwk.get("crv"))
    try:
        return bool(cert_key.public_numbers() == jwk_key.public_numbers())  # type: ignore[union-attr]
    except AttributeError:
        return False


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """A public key parsed once from a JWK: the jwcrypto object plus its constraints and thumbprints."""

    jwk: Any = field(repr=False, compare=False)
    public: Any = field(repr=False, compare=False)
    """The parsed `cryptography` public key that verifies (built once, with the key set)."""
    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    use: str | None
    key_ops: frozenset[str] | None
    thumbprint: str
    x5c: tuple[bytes, ...] = field(default=(), repr=False)
    x5t_s256: str | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VerificationKey:
        """Parse one JWK (RFC 7517 §4); JoseError key_invalid when unusable. Private members are dropped."""
        if not isinstance(data, Mapping):
            raise JoseError("key_invalid", "a JWK must be a JSON object")
        jwk, public = _public_jwk(data)
        kid = _optional_str(data, "kid")
        alg = _optional_str(data, "alg")
        use = _optional_str(data, "use")
        ops = data.get("key_ops")
        if ops is not None and (not isinstance(ops, list) or not all(isinstance(o, str) for o in ops)):
            raise JoseError("key_invalid", "key_ops must be an array of strings")
        certs = _decode_x5c(data)
        leaf_thumbprint = cert_thumbprint_s256(certs[0]) if certs else None
        declared = data.get("x5t#S256")
        if certs and declared is not None and declared != leaf_thumbprint:
            raise JoseError("key_invalid", "x5t#S256 does not match the first x5c certificate")
        if certs and not _same_public_key(jwk, certs[0]):
            # RFC 7517 §4.7: the key in the first certificate MUST match the JWK.
            raise JoseError("key_invalid", "the first x5c certificate does not hold this key")
        return cls(
            jwk=jwk,
            public=public,
            kid=kid,
            kty=str(data["kty"]),
            crv=data.get("crv") if data["kty"] == "EC" else None,
            alg=alg,
            use=use,
            key_ops=frozenset(ops) if ops is not None else None,
            thumbprint=jwk.thumbprint(),
            x5c=certs,
            x5t_s256=leaf_thumbprint if certs else (declared if isinstance(declared, str) else None),
        )

    def public_dict(self) -> dict[str, Any]:
        """The public JWK as a dict (with kid/use/alg/key_ops/x5c when set), e.g. to publish a JWKS."""
        out: dict[str, Any] = dict(self.jwk.export_public(as_dict=True))
        for name, value in (("kid", self.kid), ("use", self.use), ("alg", self.alg)):
            if value is not None:
                out[name] = value
        if self.key_ops is not None:
            out["key_ops"] = sorted(self.key_ops)
        if self.x5c:
            out["x5c"] = [base64.b64encode(c).decode("ascii") for c in self.x5c]
        return out


def transport_jwk(chain: Sequence[bytes], *, kid: str | None = None) -> dict[str, Any]:
    """The `use: tls` JWK of a transport certificate chain (DER, leaf first), as OB Directory software JWKS list
    them: the leaf's public key, `x5c` (RFC 7517 §4.7: standard base64 DER, leaf first), `x5t#S256` (§4.9) and
    `kid` (default: the key's RFC 7638 thumbprint). JoseError key_invalid when the leaf's key cannot be used."""
    if not chain:
        raise JoseError("key_invalid", "a transport key needs at least one certificate")
    try:
        leaf = x509.load_der_x509_certificate(chain[0])
        jwk = JWK.from_pyca(leaf.public_key())
    except Exception as exc:  # cryptography/jwcrypto: ValueError, TypeError, UnsupportedAlgorithm...
        raise JoseError("key_invalid", "the certificate's public key is not an RSA or EC key") from exc
    out: dict[str, Any] = dict(jwk.export_public(as_dict=True))
    out["kid"] = kid or jwk.thumbprint()
    out["use"] = TLS_USE
    out["x5c"] = [base64.b64encode(der).decode("ascii") for der in chain]
    out["x5t#S256"] = cert_thumbprint_s256(chain[0])
    VerificationKey.from_dict(out)  # the one validation: key type and size, x5c against the key (RFC 7517 §4.7)
    return out


class JwkSet:
    """A JWKS parsed once: signing keys by `kid`; `use: tls` keys kept apart for certificate matching."""

    __slots__ = ("_by_kid", "_tls_by_x5t", "keys", "skipped", "tls_keys")

    def __init__(
        self, keys: Iterable[VerificationKey] = (), tls_keys: Iterable[VerificationKey] = (), skipped: int = 0
    ) -> None:
        self.keys: tuple[VerificationKey, ...] = tuple(keys)
        self.tls_keys: tuple[VerificationKey, ...] = tuple(tls_keys)
        self.skipped = skipped
        by_kid: dict[str, VerificationKey] = {}
        for key in self.keys:
            if key.kid is not None:
                by_kid.setdefault(key.kid, key)
        self._by_kid = by_kid
        self._tls_by_x5t = {k.x5t_s256: k for k in self.tls_keys if k.x5t_s256 is not None}

    @classmethod
    def from_json(cls, data: bytes | str, *, uses: frozenset[str] = frozenset({"sig"})) -> JwkSet:
        """Parse a JWKS document (JoseError jwks_invalid if it is not one); unusable keys skipped, logged."""
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            doc = json_loads_strict(raw)
        except DuplicateMemberError as exc:
            raise JoseError("jwks_invalid", f"key set JSON repeats member {quoted(exc.name)}") from exc
        except JsonTextError as exc:
            raise JoseError("jwks_invalid", f"key set is not acceptable JSON text: {exc}") from exc
        except ValueError as exc:
            raise JoseError("jwks_invalid", "key set is not valid UTF-8 JSON") from exc
        return cls.from_dict(doc, uses=uses)

    @classmethod
    def from_dict(cls, doc: Any, *, uses: frozenset[str] = frozenset({"sig"})) -> JwkSet:
        """Build from a decoded JWKS object (RFC 7517 §5); keys with another `use` than `uses` are skipped."""
        if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
            raise JoseError("jwks_invalid", "key set must be a JSON object with a 'keys' array")
        keys: list[VerificationKey] = []
        tls: list[VerificationKey] = []
        kids: set[str] = set()
        skipped = 0
        for index, entry in enumerate(doc["keys"]):
            kid = entry.get("kid") if isinstance(entry, dict) else None
            use = entry.get("use") if isinstance(entry, dict) else None
            if use is not None and use != TLS_USE and use not in uses:
                skipped += 1
                _log.debug("jwks_key_skipped", index=index, kid=quoted(kid), why="use", use=quoted(use))
                continue
            try:
                key = VerificationKey.from_dict(entry)
            except JoseError as exc:
                skipped += 1
                _log.warning("jwks_key_skipped", index=index, kid=quoted(kid), why=exc.description)
                continue
            if use == TLS_USE:
                tls.append(key)
                continue
            if key.kid is not None:
                if key.kid in kids:
                    # SECURITY: an ambiguous kid could select an unintended key; the first one wins.
                    skipped += 1
                    _log.warning("jwks_key_skipped", index=index, kid=quoted(kid), why="duplicate kid")
                    continue
                kids.add(key.kid)
            keys.append(key)
        return cls(keys, tls, skipped)

    def get(self, kid: str) -> VerificationKey | None:
        """The signing key with this `kid`, or None."""
        return self._by_kid.get(kid)

    def kids(self) -> frozenset[str]:
        """Every signing key id in the set."""
        return frozenset(self._by_kid)

    def tls_key_for_cert(self, der: bytes) -> VerificationKey | None:
        """The `use: tls` key whose first x5c certificate is exactly this DER certificate, or None."""
        return self._tls_by_x5t.get(cert_thumbprint_s256(der))

    def tls_key_for_thumbprint(self, x5t_s256: str) -> VerificationKey | None:
        """`tls_key_for_cert` given the certificate's `x5t#S256` (`cert_thumbprint_s256` of its DER)."""
        return self._tls_by_x5t.get(x5t_s256)

    def to_dict(self) -> dict[str, Any]:
        """The public JWKS (signing keys then tls keys), e.g. for a sandbox directory to publish."""
        return {"keys": [k.public_dict() for k in (*self.keys, *self.tls_keys)]}

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[VerificationKey]:
        return iter(self.keys)


_DEFAULT_ALG: Final[Mapping[tuple[str, str | None], str]] = {
    ("RSA", None): "PS256", ("EC", "P-256"): "ES256", ("EC", "P-384"): "ES384", ("EC", "P-521"): "ES512"}


def check_jwk(data: Mapping[str, Any]) -> None:
    """Refuse (JoseError key_invalid) a JWK whose members do not all make sense for its key type: the full
    member-by-member validation of jwcrypto (e.g. `crv` on an RSA key), stricter than what verification reads."""
    try:
        JWK(**data)
    except Exception as exc:  # jwcrypto: InvalidJWKValue, ValueError, TypeError, KeyError (another type's member)
        raise JoseError("key_invalid", "not a valid JWK") from exc


class SigningKey:
    """A private key for the sandbox and tests; its repr never shows private material."""

    __slots__ = ("_jwk", "crv", "kid", "kty")

    def __init__(self, jwk: Any, kid: str | None = None) -> None:
        if not jwk.has_private:
            raise JoseError("key_invalid", "not a private key")
        kty = jwk.get("kty")
        if kty not in _PUBLIC_MEMBERS:
            raise JoseError("key_invalid", f"unsupported private key type {kty!r}; supported: RSA, EC")
        self._jwk = jwk
        self.kty: str = kty
        self.crv: str | None = jwk.get("crv")
        self.kid: str = kid or jwk.get("kid") or jwk.thumbprint()

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r}, kty={self.kty!r}, crv={self.crv!r})"

    @property
    def alg(self) -> str:
        """The alg this key signs with unless told otherwise: PS256 (RSA), ES256 / ES384 / ES512 (EC)."""
        alg = _DEFAULT_ALG.get((self.kty, self.crv if self.kty == "EC" else None))
        if alg is None:
            raise ValueError(f"no default alg for a {self.kty} {self.crv} key")
        return alg

    @property
    def thumbprint(self) -> str:
        """RFC 7638 thumbprint of the public key."""
        return self._jwk.thumbprint()  # type: ignore[no-any-return]

    def public_jwk(self, *, use: str | None = "sig", alg: str | None = None) -> dict[str, Any]:
        """The public JWK dict with this key's kid (for publishing in a JWKS)."""
        out: dict[str, Any] = dict(self._jwk.export_public(as_dict=True))
        out["kid"] = self.kid
        if use is not None:
            out["use"] = use
        if alg is not None:
            out["alg"] = alg
        return out

    def verification_key(self) -> VerificationKey:
        """The matching public VerificationKey."""
        return VerificationKey.from_dict(self.public_jwk())

    def to_pem(self, password: bytes | None = None) -> bytes:
        """PKCS#8 PEM of the private key, encrypted when a password is given."""
        return self._jwk.export_to_pem(private_key=True, password=password)  # type: ignore[no-any-return]

    def sign(self, alg: str, signing_input: bytes) -> bytes:
        """Raw JWS signature over `signing_input` (ECDSA as R || S, RFC 7518 §3.4)."""
        spec = SUPPORTED.get(alg)
        if spec is None:
            raise ValueError(f"cannot sign with unsupported alg {alg!r}")
        if spec.kty != self.kty or (spec.crv is not None and spec.crv != self.crv):
            raise ValueError(f"a {self.kty} {self.crv or ''} key cannot sign {alg}".replace("  ", " "))
        return engine(alg).sign(self._jwk, signing_input)  # type: ignore[no-any-return]


def generate_signing_key(
    kty: Literal["RSA", "EC"] = "EC", *, crv: str = "P-256", rsa_bits: int = 2048, kid: str | None = None
) -> SigningKey:
    """A fresh private key (kid defaults to its RFC 7638 thumbprint)."""
    if kty == "RSA":
        if rsa_bits < MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
        jwk = JWK.generate(kty="RSA", size=rsa_bits)
    else:
        if crv not in _CURVES:
            raise ValueError(f"unsupported curve {crv!r}")
        jwk = JWK.generate(kty="EC", crv=crv)
    return SigningKey(jwk, kid)


def public_jwk_from_pem(pem: bytes) -> dict[str, Any]:
    """The public JWK of a PEM key (public or private; only the public half is kept), for publishing: `kid` its
    RFC 7638 thumbprint, `use: sig`, `alg` the key type's (PS256, ES256…). JoseError key_invalid when it is
    not a usable RSA (2048 bits or more) or EC key."""
    try:
        jwk = JWK.from_pem(pem)
    except Exception as exc:  # jwcrypto/cryptography: ValueError, TypeError, UnsupportedAlgorithm...
        raise JoseError("key_invalid", "PEM key could not be loaded") from exc
    out: dict[str, Any] = dict(jwk.export_public(as_dict=True))
    kty = str(out.get("kty"))
    alg = _DEFAULT_ALG.get((kty, str(out.get("crv")) if kty == "EC" else None))
    if alg is None:
        raise JoseError("key_invalid", "only RSA and EC P-256/P-384/P-521 keys can be published")
    out.update(kid=jwk.thumbprint(), use="sig", alg=alg)
    VerificationKey.from_dict(out)  # SECURITY: the same rules as any key we verify with (RSA >= 2048 bits)
    return out


def load_signing_key_pem(pem: bytes, *, password: bytes | None = None, kid: str | None = None) -> SigningKey:
    """Load a PEM private key (PKCS#8 / traditional); JoseError key_invalid when it cannot be used."""
    try:
        jwk = JWK.from_pem(pem, password)
    except Exception as exc:  # jwcrypto/cryptography: ValueError, TypeError, UnsupportedAlgorithm...
        raise JoseError("key_invalid", "PEM private key could not be loaded") from exc
    return SigningKey(jwk, kid)


def sign_compact(
    header: Mapping[str, Any] | bytes, payload: bytes, key: SigningKey, *, alg: str | None = None
) -> str:
    """Sign a header (dict, or raw bytes with `alg` given) and raw payload bytes into a compact JWS."""
    if isinstance(header, bytes):
        header_bytes = header  # raw bytes let tests craft unusual (e.g. duplicate-member) but signed headers
    else:
        header_bytes = json_dumps_compact(dict(header))
        alg = alg or header.get("alg")
    if not isinstance(alg, str):
        raise ValueError("signing needs an alg (from the header dict or the alg argument)")
    signing_input = f"{b64url_encode(header_bytes)}.{b64url_encode(payload)}".encode("ascii")
    return f"{signing_input.decode('ascii')}.{b64url_encode(key.sign(alg, signing_input))}"


def sign_jwt(
    claims: Mapping[str, Any],
    private_key: SigningKey,
    alg: str,
    kid: str | None = None,
    typ: str | None = "JWT",
    extra_headers: Mapping[str, Any] | None = None,
) -> str:
    """Sign claims as a compact JWS JWT (RFC 7519 §7.1): header alg, kid (default: the key's), typ."""
    header: dict[str, Any] = {"alg": alg, "kid": kid or private_key.kid}
    if typ is not None:
        header["typ"] = typ
    if extra_headers:
        if "alg" in extra_headers:
            raise ValueError("alg is set by the alg argument")
        header.update(extra_headers)
    return sign_compact(header, json_dumps_compact(dict(claims)), private_key)


class JwtSigner:
    """Signs claim sets as compact JWTs with one key under one protected header `{alg, kid, typ}`, serialised
    once (the gateway signs on the request path: nothing about the key is parsed per call)."""

    __slots__ = ("_header", "alg", "key")

    def __init__(self, key: SigningKey, *, typ: str) -> None:
        self.key = key
        self.alg = key.alg
        self._header = json_dumps_compact({"alg": self.alg, "kid": key.kid, "typ": typ})

    def sign(self, claims: dict[str, Any]) -> str:
        """The compact JWS of `claims`."""
        return sign_compact(self._header, json_dumps_compact(claims), self.key, alg=self.alg)

    def jwks(self) -> dict[str, Any]:
        """The public key as a JWK Set (RFC 7517 §5) with `kid`, `use: sig` and `alg`, for publishing."""
        return {"keys": [self.key.public_jwk(use="sig", alg=self.alg)]}

