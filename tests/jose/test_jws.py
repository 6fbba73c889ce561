"""Strict compact JWS parsing and signature verification: the attack table, through the real verifier."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.jose import (
    FAPI_ALGORITHMS,
    REASONS,
    ClaimRules,
    JoseError,
    JwkSet,
    JwsVerifier,
    StaticKeys,
    Trust,
    UrlPolicy,
    VerificationKey,
    allow_list,
    parse_compact,
    sign_compact,
    sign_jwt,
    verify_signature,
)
from gateway.jose.algorithms import SUPPORTED, engine
from gateway.jose.encoding import b64url_encode

from .conftest import NOW, TestKeys

RULES = ClaimRules.build(
    issuers="issuer",
    audiences="bank",
    leeway_seconds=30,
    max_lifetime_seconds=600,
    require=("exp", "iat"),
)
JWKS_URI = "https://issuer.example/jwks"
TRUST = Trust(algorithms=FAPI_ALGORITHMS, jwks_uri=JWKS_URI, rules=RULES, issuer="issuer", typ="JWT")


def verifier(keyset: JwkSet) -> JwsVerifier:
    """The one verification path, with `keyset` served at JWKS_URI."""
    return JwsVerifier(StaticKeys({JWKS_URI: keyset}), max_bytes=8192, clock=lambda: NOW)


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claims set at NOW; `None` values remove a claim."""
    base: dict[str, Any] = {"iss": "issuer", "aud": "bank", "iat": NOW - 10, "exp": NOW + 300, "jti": "jti-1"}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def payload_bytes(**overrides: Any) -> bytes:
    return json.dumps(claims(**overrides)).encode()


def unsigned(header: dict[str, Any] | bytes, payload: bytes, signature: bytes = b"") -> str:
    """A token with an arbitrary (not computed) signature."""
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    return ".".join((b64url_encode(raw_header), b64url_encode(payload), b64url_encode(signature)))


def es256(k: TestKeys, **headers: Any) -> str:
    """A valid ES256 token (decoded payload: claims())."""
    return sign_jwt(claims(), k.ec, "ES256", extra_headers=headers or None)


def hs256_with_rsa_public_key(k: TestKeys) -> str:
    """Algorithm confusion: HS256 whose HMAC secret is the trusted RSA public key (PEM), kid rsa-1."""
    secret = k.rsa.verification_key().jwk.export_to_pem()
    header = b64url_encode(json.dumps({"alg": "HS256", "kid": "rsa-1", "typ": "JWT"}).encode())
    body = b64url_encode(payload_bytes())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{b64url_encode(mac)}"


def replace_segment(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


def non_canonical_signature(k: TestKeys) -> str:
    """Flip an unused trailing bit of the base64url signature (same bytes, different spelling)."""
    token = es256(k)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = token[-1]
    return token[:-1] + alphabet[alphabet.index(last) ^ 1]


def dup_claims(first: str, second: str) -> Callable[[TestKeys], str]:
    def build(k: TestKeys) -> str:
        body = (
            f'{{"iss":"{first}","aud":"bank","iat":{NOW - 10},"exp":{NOW + 300},"iss":"{second}"}}'
        ).encode()
        return sign_compact({"alg": "ES256", "kid": "ec-1", "typ": "JWT"}, body, k.ec)

    return build


Case = tuple[str, Callable[[TestKeys], str], str | None]
Build = Callable[[TestKeys], str]
EC_HEADER = {"alg": "ES256", "kid": "ec-1", "typ": "JWT"}


def with_claims(**overrides: Any) -> Build:
    """ES256 by the trusted key with some claims changed."""
    return lambda k: sign_jwt(claims(**overrides), k.ec, "ES256")


def with_headers(**headers: Any) -> Build:
    """ES256 by the trusted key with extra header members."""
    return lambda k: es256(k, **headers)


def with_kid(kid: str) -> Build:
    """ES256 by the trusted key announcing another kid."""
    return lambda k: sign_jwt(claims(), k.ec, "ES256", kid=kid)


def with_payload(payload: bytes) -> Build:
    """A correctly signed token whose payload is arbitrary bytes."""
    return lambda k: sign_compact(EC_HEADER, payload, k.ec)


def fake_signed(header: dict[str, Any] | bytes, signature: bytes = b"x" * 64) -> Build:
    """A token with a valid claims payload and an arbitrary signature."""
    return lambda k: unsigned(header, payload_bytes(), signature)


def mutated(index: int, change: Callable[[str], str]) -> Build:
    """A valid ES256 token with one segment changed."""
    return lambda k: replace_segment(es256(k), index, change(es256(k).split(".")[index]))


CASES: list[Case] = [
    # accepted
    ("valid_es256", es256, None),
    ("valid_ps256", lambda k: sign_jwt(claims(), k.rsa, "PS256"), None),
    ("valid_typ_with_media_prefix", lambda k: sign_jwt(claims(), k.ec, "ES256", typ="application/JWT"), None),
    # algorithm policy
    ("alg_none", fake_signed({"alg": "none", "kid": "ec-1", "typ": "JWT"}, b""), "alg_not_allowed"),
    ("alg_None_capitalised", fake_signed({**EC_HEADER, "alg": "None"}, b""), "alg_not_allowed"),
    ("alg_hs256_rsa_public_key_as_secret", hs256_with_rsa_public_key, "alg_not_allowed"),
    ("alg_rs256_not_in_allow_list", lambda k: sign_jwt(claims(), k.rsa, "RS256"), "alg_not_allowed"),
    ("alg_missing", fake_signed({"kid": "ec-1", "typ": "JWT"}), "malformed"),
    ("alg_ps256_with_ec_kid", lambda k: sign_jwt(claims(), k.rsa, "PS256", kid="ec-1"), "key_mismatch"),
    ("alg_es256_with_p384_key", fake_signed({**EC_HEADER, "kid": "ec384-1"}), "key_mismatch"),
    # key selection
    ("kid_missing", lambda k: sign_compact({"alg": "ES256", "typ": "JWT"}, payload_bytes(), k.ec),
     "missing_kid"),
    ("kid_empty", with_headers(kid=""), "missing_kid"),
    ("kid_not_a_string", with_headers(kid=7), "malformed"),
    ("kid_unknown", with_kid("no-such-key"), "unknown_kid"),
    ("kid_path_traversal", with_kid("../../../../etc/passwd"), "unknown_kid"),
    ("kid_sql_like", with_kid("' OR '1'='1'; DROP TABLE keys; --"), "unknown_kid"),
    ("kid_nul_and_long", with_kid("\x00" + "k" * 2000), "unknown_kid"),
    # keys are never taken from the token
    ("header_embedded_jwk", lambda k: sign_jwt(claims(), k.attacker_ec, "ES256",
                                               extra_headers={"jwk": k.attacker_ec.public_jwk()}),
     "forbidden_header"),
    ("header_jku", with_headers(jku="https://attacker.example/jwks.json"), "forbidden_header"),
    ("header_x5u", with_headers(x5u="https://attacker.example/cert.pem"), "forbidden_header"),
    ("header_x5c", with_headers(x5c=["MIIBszCCAVmgAwIBAgIU"]), "forbidden_header"),
    # RFC 7797 / crit / typ
    ("b64_false_with_crit", with_headers(b64=False, crit=["b64"]), "unencoded_payload"),
    ("b64_false_without_crit", with_headers(b64=False), "unencoded_payload"),
    ("crit_unknown_extension", with_headers(crit=["urn:example:ext"], **{"urn:example:ext": True}),
     "crit_unsupported"),
    ("crit_claim_name", with_headers(crit=["exp"], exp=1), "crit_unsupported"),
    ("crit_lists_alg", with_headers(crit=["alg"]), "malformed"),
    ("crit_empty", with_headers(crit=[]), "malformed"),
    ("typ_wrong", lambda k: sign_jwt(claims(), k.ec, "ES256", typ="at+jwt"), "typ_mismatch"),
    ("typ_missing", lambda k: sign_jwt(claims(), k.ec, "ES256", typ=None), "typ_mismatch"),
    # structure
    ("truncated_two_segments", lambda k: es256(k).rsplit(".", 1)[0], "malformed"),
    ("truncated_signature", lambda k: es256(k)[:-10], "bad_signature"),
    ("extra_segment", lambda k: es256(k) + "." + b64url_encode(b"extra"), "malformed"),
    ("jwe_five_segments", lambda k: "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", "malformed"),
    ("empty_token", lambda k: "", "malformed"),
    ("non_ascii", lambda k: es256(k) + "é", "malformed"),
    ("base64_plus", mutated(1, lambda seg: "+" + seg[1:]), "malformed"),
    ("base64_slash", mutated(1, lambda seg: "/" + seg[1:]), "malformed"),
    ("base64_padding", mutated(2, lambda seg: seg + "=="), "malformed"),
    ("base64_whitespace", mutated(1, lambda seg: " " + seg), "malformed"),
    ("base64_non_canonical", non_canonical_signature, "malformed"),
    ("header_not_json", fake_signed(b'{"alg":"ES256","kid":"ec-1"'), "malformed"),
    ("header_json_array", fake_signed(b'["ES256"]'), "malformed"),
    ("header_utf16", fake_signed('{"alg":"ES256"}'.encode("utf-16")), "malformed"),
    ("header_duplicate_alg", lambda k: sign_compact(b'{"alg":"ES256","kid":"ec-1","typ":"JWT","alg":"none"}',
                                                    payload_bytes(), k.ec, alg="ES256"), "duplicate_member"),
    ("too_large", with_claims(pad="x" * 9000), "too_large"),
    # payload
    ("payload_not_json", with_payload(b"hello"), "payload_not_json"),
    ("payload_json_array", with_payload(b"[1]"), "payload_not_json"),
    ("payload_not_utf8", with_payload(b"\xff{}"), "payload_not_json"),
    ("payload_nan", with_payload(b'{"exp": NaN}'), "payload_not_json"),
    ("claims_duplicate_good_then_evil", dup_claims("issuer", "evil"), "duplicate_member"),
    ("claims_duplicate_evil_then_good", dup_claims("evil", "issuer"), "duplicate_member"),
    # signatures
    ("ecdsa_zero_signature", mutated(2, lambda seg: b64url_encode(bytes(64))), "bad_signature"),
    ("ecdsa_der_signature", mutated(2, lambda seg: b64url_encode(b"\x30\x44" + b"\x01" * 68)),
     "bad_signature"),
    ("signed_by_attacker_same_kid_ec", lambda k: sign_jwt(claims(), k.attacker_ec, "ES256"), "bad_signature"),
    ("signed_by_attacker_same_kid_rsa", lambda k: sign_jwt(claims(), k.attacker_rsa, "PS256"),
     "bad_signature"),
    ("payload_swapped_after_signing", mutated(1, lambda seg: b64url_encode(payload_bytes(sub="admin"))),
     "bad_signature"),
    ("empty_signature", mutated(2, lambda seg: ""), "bad_signature"),
    # claims
    ("expired", with_claims(iat=NOW - 200, exp=NOW - 100), "expired"),
    ("not_yet_valid_nbf", with_claims(nbf=NOW + 300, exp=NOW + 400), "not_yet_valid"),
    ("iat_far_future", with_claims(iat=NOW + 3600, exp=NOW + 3700), "iat_in_future"),
    ("lifetime_too_long", with_claims(iat=NOW, exp=NOW + 3600), "lifetime_too_long"),
    ("exp_missing", with_claims(exp=None), "missing_claim"),
    ("exp_string", with_claims(exp=str(NOW + 300)), "bad_claim"),
    ("iss_mismatch", with_claims(iss="someone-else"), "iss_mismatch"),
    ("aud_mismatch", with_claims(aud=["other-bank"]), "aud_mismatch"),
]


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
async def test_token_table(keys: TestKeys, build: Callable[[TestKeys], str], expected: str | None) -> None:
    """Each token is accepted or refused with exactly the expected reason, and never echoed back."""
    token = build(keys)
    if expected is None:
        verified = await verifier(keys.jwks).verify(token, TRUST)
        assert verified.claims["iss"] == "issuer"
        assert verified.key_thumbprint in {keys.ec.thumbprint, keys.rsa.thumbprint}
        return
    with pytest.raises(JoseError) as info:
        await verifier(keys.jwks).verify(token, TRUST)
    assert info.value.reason == expected, info.value.description
    assert info.value.reason in REASONS
    for segment in token.split("."):
        if len(segment) > 16:
            assert segment not in info.value.description


class RecordingKeys(StaticKeys):
    """StaticKeys that record every key lookup."""

    def __init__(self, keyset: JwkSet) -> None:
        super().__init__({JWKS_URI: keyset})
        self.kids: list[str] = []

    async def get_key(self, uri: str, kid: str, *, policy: UrlPolicy | None = None) -> VerificationKey:
        self.kids.append(kid)
        return await super().get_key(uri, kid, policy=policy)


async def test_refused_alg_never_reaches_key_lookup(keys: TestKeys) -> None:
    """`none`/HS256/RS256 are refused before any key lookup (so they can never trigger a JWKS fetch)."""
    source = RecordingKeys(keys.jwks)
    one_path = JwsVerifier(source, max_bytes=8192, clock=lambda: NOW)
    refused = (
        unsigned({"alg": "none", "kid": "x", "typ": "JWT"}, payload_bytes()),
        hs256_with_rsa_public_key(keys),
        sign_jwt(claims(), keys.rsa, "RS256", kid="y"),
    )
    for token in refused:
        with pytest.raises(JoseError, match="alg_not_allowed"):
            await one_path.verify(token, TRUST)
    assert source.kids == []
    await one_path.verify(es256(keys), TRUST)
    assert source.kids == ["ec-1"]


@pytest.mark.parametrize("algs", [{"HS256"}, {"none"}, {"PS256", "HS512"}, set(), {"EdDSA"}])
def test_allow_list_refuses_symmetric_none_and_unknown(algs: set[str]) -> None:
    """An allow-list naming none, HS* or an unsupported alg is a build-time error."""
    with pytest.raises(ValueError):
        allow_list(algs)


def test_hs256_refused_even_when_caller_passes_it(keys: TestKeys) -> None:
    """verify_signature itself refuses HS256 whatever algorithm set a caller hands it."""
    jws = parse_compact(hs256_with_rsa_public_key(keys))
    key = keys.jwks.get("rsa-1")
    assert key is not None
    with pytest.raises(JoseError) as info:
        verify_signature(jws, key, frozenset({"HS256", "PS256"}))
    assert info.value.reason == "alg_not_allowed"


def test_zero_ecdsa_signature_refused_by_cryptography_too(keys: TestKeys) -> None:
    """Below our range check, the crypto backend also refuses r = s = 0 (CVE-2022-21449 shape)."""
    jws = parse_compact(replace_segment(es256(keys), 2, b64url_encode(bytes(64))))
    key = keys.jwks.get("ec-1")
    assert key is not None
    with pytest.raises(Exception) as info:
        engine("ES256").verify(key.jwk, jws.signing_input, jws.signature)
    assert type(info.value).__name__ == "InvalidSignature"


@pytest.mark.parametrize("which", ["r_equals_n", "s_equals_n"])
def test_ecdsa_values_out_of_range_refused(keys: TestKeys, which: str) -> None:
    """r or s equal to the curve order is refused before the backend sees it."""
    order = SUPPORTED["ES256"].curve_order
    assert order is not None
    token = es256(keys)
    sig = parse_compact(token).signature
    n = order.to_bytes(32, "big")
    forged = n + sig[32:] if which == "r_equals_n" else sig[:32] + n
    jws = parse_compact(replace_segment(token, 2, b64url_encode(forged)))
    key = keys.jwks.get("ec-1")
    assert key is not None
    with pytest.raises(JoseError) as info:
        verify_signature(jws, key, FAPI_ALGORITHMS)
    assert info.value.reason == "bad_signature"
    assert "out of range" in info.value.description


@pytest.mark.parametrize(
    ("constraint", "expected"),
    [
        ({"alg": "PS384"}, "key_mismatch"),
        ({"use": "enc"}, "key_mismatch"),
        ({"key_ops": ["sign"]}, "key_mismatch"),
        ({"key_ops": ["verify"]}, None),
        ({"alg": "PS256", "use": "sig"}, None),
    ],
    ids=["alg_restricted", "use_enc", "key_ops_without_verify", "key_ops_verify", "alg_and_use_match"],
)
def test_key_constraints(keys: TestKeys, constraint: dict[str, Any], expected: str | None) -> None:
    """The JWK's alg, use and key_ops restrict what it may verify (RFC 7517 §4.2-4.4)."""
    key = VerificationKey.from_dict({**keys.rsa.public_jwk(use=None), **constraint})
    jws = parse_compact(sign_jwt(claims(), keys.rsa, "PS256"))
    if expected is None:
        verify_signature(jws, key, FAPI_ALGORITHMS)
        return
    with pytest.raises(JoseError) as info:
        verify_signature(jws, key, FAPI_ALGORITHMS)
    assert info.value.reason == expected


def test_parse_exposes_the_parts(keys: TestKeys) -> None:
    """parse_compact keeps the exact signing input, header, claims, kid and alg."""
    token = es256(keys)
    jws = parse_compact(token)
    assert jws.signing_input == token.rsplit(".", 1)[0].encode()
    assert jws.alg == "ES256" and jws.kid == "ec-1"
    assert dict(jws.header) == {"alg": "ES256", "kid": "ec-1", "typ": "JWT"}
    assert jws.claims == claims()
    assert len(jws.signature) == 64
    assert token.split(".")[2] not in repr(jws)


def test_understood_crit_extension_is_accepted(keys: TestKeys) -> None:
    """A crit extension listed in understood_crit parses; one absent from the header does not."""
    token = es256(keys, crit=["urn:example:ext"], **{"urn:example:ext": 1})
    assert parse_compact(token, understood_crit=frozenset({"urn:example:ext"})).header["urn:example:ext"] == 1
    absent = es256(keys, crit=["urn:example:ext"])
    with pytest.raises(JoseError) as info:
        parse_compact(absent, understood_crit=frozenset({"urn:example:ext"}))
    assert info.value.reason == "malformed"


def test_raw_payload_mode(keys: TestKeys) -> None:
    """json_payload=False keeps a non-JSON payload for verification by signature only."""
    jws = parse_compact(sign_compact({"alg": "ES256", "kid": "ec-1"}, b"opaque", keys.ec), json_payload=False)
    assert jws.claims is None and jws.payload == b"opaque"
    key = keys.jwks.get("ec-1")
    assert key is not None
    verify_signature(jws, key, FAPI_ALGORITHMS)


def test_case_reasons_are_declared() -> None:
    """Every reason the table expects is one of the declared stable codes."""
    assert {c[2] for c in CASES if c[2] is not None} <= REASONS
