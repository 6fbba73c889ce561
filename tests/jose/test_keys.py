"""Keys parsed once: JWK / JWKS parsing, skipping of unusable keys, tls keys, thumbprints, PEM, sign_jwt."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from gateway.jose import (
    JoseError,
    JwkSet,
    VerificationKey,
    cert_thumbprint_s256,
    generate_signing_key,
    jwk_thumbprint,
    load_signing_key_pem,
    parse_compact,
    sign_jwt,
    verify_signature,
)
from gateway.jose.encoding import b64url_encode

from .conftest import TestKeys, self_signed_cert

# RFC 7638 §3.1 example key and its SHA-256 thumbprint.
RFC7638_N = (
    "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
    "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6"
    "qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awap"
    "JzKnqDKgw"
)


def test_rfc7638_thumbprint_vector() -> None:
    """The RFC 7638 §3.1 example key has the thumbprint the RFC states."""
    jwk = {"kty": "RSA", "n": RFC7638_N, "e": "AQAB", "alg": "RS256", "kid": "2011-04-29"}
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    assert VerificationKey.from_dict(jwk).thumbprint == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_cert_thumbprint_s256() -> None:
    """x5t#S256 is the base64url SHA-256 of the DER bytes (SHA-256("abc") test vector)."""
    assert cert_thumbprint_s256(b"abc") == "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"


def _weak_rsa_jwk() -> dict[str, Any]:
    numbers = rsa.generate_private_key(public_exponent=65537, key_size=1024).public_key().public_numbers()

    def enc(i: int) -> str:
        return b64url_encode(i.to_bytes((i.bit_length() + 7) // 8, "big"))

    return {"kty": "RSA", "kid": "weak", "n": enc(numbers.n), "e": enc(numbers.e)}


def _off_curve(k: TestKeys) -> dict[str, Any]:
    jwk = k.ec.public_jwk()
    y = bytearray(base64.urlsafe_b64decode(jwk["y"] + "=="))
    y[-1] ^= 1
    return {**jwk, "kid": "off-curve", "y": b64url_encode(bytes(y))}


BAD_KEYS: list[tuple[str, Any]] = [
    ("oct_symmetric", lambda k: {"kty": "oct", "kid": "hmac", "k": b64url_encode(b"s" * 32)}),
    ("rsa_1024_bits", lambda k: _weak_rsa_jwk()),
    ("ec_point_off_curve", _off_curve),
    ("ec_unsupported_curve", lambda k: {**k.ec.public_jwk(), "kid": "k1", "crv": "secp256k1"}),
    ("okp_unsupported_kty", lambda k: {"kty": "OKP", "crv": "Ed25519", "x": b64url_encode(bytes(32))}),
    ("missing_n", lambda k: {"kty": "RSA", "e": "AQAB", "kid": "no-n"}),
    ("kid_not_string", lambda k: {**k.ec.public_jwk(), "kid": 5}),
    ("key_ops_not_list", lambda k: {**k.ec.public_jwk(), "kid": "ops", "key_ops": "verify"}),
    ("not_an_object", lambda k: "a string"),
]


@pytest.mark.parametrize("build", [b[1] for b in BAD_KEYS], ids=[b[0] for b in BAD_KEYS])
def test_unusable_keys_are_refused_and_skipped(keys: TestKeys, build: Any) -> None:
    """An unusable JWK is key_invalid on its own and skipped (with a log) inside a JWKS."""
    bad = build(keys)
    with pytest.raises(JoseError) as info:
        VerificationKey.from_dict(bad)
    assert info.value.reason == "key_invalid"
    with structlog.testing.capture_logs() as logs:
        keyset = JwkSet.from_dict({"keys": [bad, keys.ec.public_jwk()]})
    assert keyset.kids() == {"ec-1"}
    assert keyset.skipped == 1
    assert [e["event"] for e in logs] == ["jwks_key_skipped"]


def test_private_members_are_dropped(keys: TestKeys) -> None:
    """A JWKS that (wrongly) publishes a private key yields only the public key."""
    private = json.loads(keys.ec._jwk.export_private())
    key = VerificationKey.from_dict({**private, "kid": "leaky"})
    assert not key.jwk.has_private
    assert "d" not in key.public_dict()


@pytest.mark.parametrize(
    "doc",
    [b"not json", b"[]", b'{"keys": {}}', b'{"nokeys": []}', b'{"keys": [], "keys": []}', b"\xff"],
    ids=["not_json", "array", "keys_not_list", "no_keys", "duplicate_member", "not_utf8"],
)
def test_jwks_document_must_be_a_jwks(doc: bytes) -> None:
    """Anything but a JSON object with a keys array is jwks_invalid."""
    with pytest.raises(JoseError) as info:
        JwkSet.from_json(doc)
    assert info.value.reason == "jwks_invalid"


def test_jwks_uses_duplicates_and_lookup(keys: TestKeys) -> None:
    """sig and use-less keys are indexed by kid; enc keys skipped; a repeated kid keeps the first key."""
    doc = {
        "keys": [
            keys.ec.public_jwk(),
            keys.rsa.public_jwk(use=None),
            {**keys.ec384.public_jwk(), "use": "enc"},
            {**keys.attacker_ec.public_jwk(), "kid": "ec-1"},
        ]
    }
    keyset = JwkSet.from_json(json.dumps(doc).encode())
    assert keyset.kids() == {"ec-1", "rsa-1"}
    assert keyset.skipped == 2
    first = keyset.get("ec-1")
    assert first is not None and first.thumbprint == keys.ec.thumbprint
    assert keyset.get("nope") is None
    with_enc = JwkSet.from_dict(doc, uses=frozenset({"sig", "enc"}))
    assert with_enc.kids() == {"ec-1", "rsa-1", "ec384-1"}


def test_tls_keys_kept_apart_with_their_certificate() -> None:
    """use: tls keys are not signing keys; they are found by their exact certificate."""
    private = ec.generate_private_key(ec.SECP256R1())
    der = self_signed_cert(private)
    other_der = self_signed_cert(ec.generate_private_key(ec.SECP256R1()), cn="other")
    signing = load_signing_key_pem(_pem(private), kid="tls-1")
    tls_jwk = {**signing.public_jwk(use="tls"), "x5c": [base64.b64encode(der).decode()]}
    keyset = JwkSet.from_dict({"keys": [tls_jwk]})
    assert keyset.kids() == frozenset()
    assert len(keyset.tls_keys) == 1
    found = keyset.tls_key_for_cert(der)
    assert found is not None and found.kid == "tls-1" and found.x5t_s256 == cert_thumbprint_s256(der)
    assert found.x5c == (der,)
    assert keyset.tls_key_for_cert(other_der) is None
    assert keyset.to_dict()["keys"][0]["x5c"] == tls_jwk["x5c"]


@pytest.mark.parametrize("flaw", ["cert_of_other_key", "x5t_mismatch", "x5c_not_base64"])
def test_tls_key_with_inconsistent_certificate_is_skipped(flaw: str) -> None:
    """x5c must hold this key (RFC 7517 §4.7), match x5t#S256, and be base64."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = load_signing_key_pem(_pem(private), kid="tls-1").public_jwk(use="tls")
    der = self_signed_cert(private)
    if flaw == "cert_of_other_key":
        jwk["x5c"] = [base64.b64encode(self_signed_cert(ec.generate_private_key(ec.SECP256R1()))).decode()]
    elif flaw == "x5t_mismatch":
        jwk["x5c"] = [base64.b64encode(der).decode()]
        jwk["x5t#S256"] = cert_thumbprint_s256(b"other")
    else:
        jwk["x5c"] = ["not base64 !"]
    with pytest.raises(JoseError) as info:
        VerificationKey.from_dict(jwk)
    assert info.value.reason == "key_invalid"
    assert JwkSet.from_dict({"keys": [jwk]}).tls_keys == ()


def _pem(private: ec.EllipticCurvePrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_pem_round_trip_with_password(keys: TestKeys) -> None:
    """A key written as encrypted PEM loads back and signs tokens the original public key verifies."""
    pem = keys.ec.to_pem(password=b"s3cret")
    assert b"ENCRYPTED" in pem
    loaded = load_signing_key_pem(pem, password=b"s3cret", kid="ec-1")
    assert loaded.thumbprint == keys.ec.thumbprint
    jws = parse_compact(sign_jwt({"exp": 1}, loaded, "ES256"))
    key = keys.jwks.get("ec-1")
    assert key is not None
    verify_signature(jws, key, frozenset({"ES256"}))


@pytest.mark.parametrize("case", ["wrong_password", "garbage", "public_only"])
def test_pem_loading_failures(keys: TestKeys, case: str) -> None:
    """Unloadable or public-only PEM is key_invalid."""
    if case == "wrong_password":
        pem, password = keys.ec.to_pem(password=b"right"), b"wrong"
    elif case == "garbage":
        pem, password = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", None
    else:
        pem, password = keys.ec.verification_key().jwk.export_to_pem(), None
    with pytest.raises(JoseError) as info:
        load_signing_key_pem(pem, password=password)
    assert info.value.reason == "key_invalid"


def test_signing_key_repr_hides_private_material(keys: TestKeys) -> None:
    """repr() of a signing key shows kid and type only."""
    d = json.loads(keys.rsa._jwk.export_private())["d"]
    text = repr(keys.rsa) + str(keys.rsa)
    assert d not in text and "PRIVATE" not in text
    assert "rsa-1" in text


@pytest.mark.parametrize(
    ("alg", "which"),
    [("none", "ec"), ("HS256", "ec"), ("PS256", "ec"), ("ES256", "rsa"), ("ES384", "ec")],
)
def test_sign_jwt_refuses_impossible_combinations(keys: TestKeys, alg: str, which: str) -> None:
    """sign_jwt never produces alg none / HS* tokens or signs with a key of the wrong family."""
    with pytest.raises(ValueError):
        sign_jwt({"exp": 1}, getattr(keys, which), alg)


def test_generate_refuses_weak_rsa() -> None:
    """Keys below 2048 bits are never generated."""
    with pytest.raises(ValueError):
        generate_signing_key("RSA", rsa_bits=1024)
