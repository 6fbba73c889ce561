"""The one JWS path (`JwsVerifier`) step by step, with real keys: each defect is refused at its step, and a
later step never runs (no key lookup for a bad alg, no claim read for a bad signature)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.jose import (
    FAPI_ALGORITHMS,
    ClaimRules,
    JoseError,
    JwksCache,
    JwkSet,
    JwsVerifier,
    KeyProvider,
    StaticKeys,
    Trust,
    UrlPolicy,
    VerificationKey,
    sign_compact,
    sign_jwt,
)
from gateway.jose.encoding import b64url_encode, json_dumps_compact

from .conftest import NOW, TestKeys

URI = "https://keys.example/jwks"
RULES = ClaimRules.build(issuers="issuer", audiences="bank", leeway_seconds=30, require=("exp", "iat"))
STRICT = UrlPolicy.build()


@dataclass
class Locator:
    """A key-locator hook over a real key set that records every question it is asked."""

    keyset: JwkSet
    asked: list[tuple[str | None, str, str, UrlPolicy | None]] = field(default_factory=list)

    async def __call__(self, issuer: str | None, jwks_uri: str, kid: str, policy: UrlPolicy | None) -> VerificationKey:
        self.asked.append((issuer, jwks_uri, kid, policy))
        key = self.keyset.get(kid)
        if key is None:
            raise JoseError("unknown_kid", "no key with this kid")
        return key


def trust(**overrides: Any) -> Trust:
    """The trust of these tests: FAPI algorithms, the key set at URI, RULES; `overrides` replace fields."""
    fields: dict[str, Any] = {"algorithms": FAPI_ALGORITHMS, "jwks_uri": URI, "rules": RULES, "issuer": "issuer",
                              "url_policy": STRICT, "typ": None}
    return Trust(**{**fields, **overrides})


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claims set at NOW; `None` removes a claim."""
    base: dict[str, Any] = {"iss": "issuer", "aud": "bank", "iat": int(NOW) - 10, "exp": int(NOW) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def unsigned(header: Mapping[str, Any], body: Mapping[str, Any]) -> str:
    """A compact JWS with an empty signature."""
    return f"{b64url_encode(json_dumps_compact(dict(header)))}.{b64url_encode(json_dumps_compact(dict(body)))}."


def hs256_with_public_key(keys: TestKeys, body: Mapping[str, Any]) -> str:
    """Algorithm confusion: HMAC keyed with the RSA public key (which anyone has)."""
    head = b64url_encode(json_dumps_compact({"alg": "HS256", "kid": "rsa-1"}))
    payload = b64url_encode(json_dumps_compact(dict(body)))
    secret = json_dumps_compact(keys.rsa.public_jwk())
    mac = hmac.new(secret, f"{head}.{payload}".encode(), hashlib.sha256).digest()
    return f"{head}.{payload}.{b64url_encode(mac)}"


def setup(keys: TestKeys, **options: Any) -> tuple[JwsVerifier, Locator]:
    """A verifier over a recording locator at the fixed time NOW."""
    locator = Locator(keys.jwks)
    return JwsVerifier(locate=locator, clock=lambda: NOW, **options), locator


async def refused(verifier: JwsVerifier, token: str, the_trust: Trust | None = None) -> str:
    """The reason `token` is refused with."""
    with pytest.raises(JoseError) as info:
        await verifier.verify(token, the_trust or trust())
    return info.value.reason


async def test_a_good_token_passes_every_step(keys: TestKeys) -> None:
    """A token signed by a trusted key, with valid claims, is verified; the locator is asked exactly once."""
    verifier, locator = setup(keys)
    verified = await verifier.verify(sign_jwt(claims(), keys.ec, "ES256"), trust())
    assert verified.claims["iss"] == "issuer" and verified.kid == "ec-1" and verified.alg == "ES256"
    assert verified.key_thumbprint == keys.ec.thumbprint
    assert locator.asked == [("issuer", URI, "ec-1", STRICT)]


@pytest.mark.parametrize("case", ["alg_none", "hs256_with_public_key", "rs256_not_listed", "es384_not_listed"])
async def test_bad_alg_is_refused_before_any_key_lookup(keys: TestKeys, case: str) -> None:
    """`none`, HS256, and algorithms outside the allow-list are refused without asking for a key, even with an
    unknown kid, a wrong typ or expired claims."""
    verifier, locator = setup(keys)
    expired = claims(exp=int(NOW) - 600)
    token = {
        "alg_none": unsigned({"alg": "none", "kid": "nobody", "typ": "nope"}, expired),
        "hs256_with_public_key": hs256_with_public_key(keys, expired),
        "rs256_not_listed": sign_jwt(expired, keys.rsa, "RS256", kid="unknown", typ="nope"),
        "es384_not_listed": sign_jwt(expired, keys.ec384, "ES384"),
    }[case]
    assert await refused(verifier, token, trust(typ="JWT")) == "alg_not_allowed"
    assert locator.asked == []


async def test_missing_kid_comes_after_alg_and_before_typ(keys: TestKeys) -> None:
    """No kid: refused as such (not for its typ), and no key is looked up."""
    verifier, locator = setup(keys)
    token = sign_compact({"alg": "ES256", "typ": "nope"}, json_dumps_compact(claims()), keys.ec)
    assert await refused(verifier, token, trust(typ="JWT")) == "missing_kid"
    assert locator.asked == []


async def test_missing_kid_description_is_the_callers(keys: TestKeys) -> None:
    """The caller words the missing kid (the token check says "the access token has no kid header")."""
    verifier, _ = setup(keys, missing_kid="the access token has no kid header")
    token = sign_compact({"alg": "ES256"}, json_dumps_compact(claims()), keys.ec)
    with pytest.raises(JoseError, match="the access token has no kid header"):
        await verifier.verify(token, trust())


async def test_kid_if_absent_names_the_key_only_when_the_jws_names_none(keys: TestKeys) -> None:
    """`kid_if_absent` (the caller's choice from the set it trusts) is looked up for a JWS without kid; a JWS that
    names a kid is looked up by its own, and the signature must still be the named key's."""
    verifier, locator = setup(keys)
    bare = sign_compact({"alg": "ES256"}, json_dumps_compact(claims()), keys.ec)
    assert (await verifier.verify(bare, trust(), kid_if_absent="ec-1")).kid == "ec-1"
    named = sign_compact({"alg": "ES256", "kid": "ec-1"}, json_dumps_compact(claims()), keys.ec)
    assert (await verifier.verify(named, trust(), kid_if_absent="rsa-1")).kid == "ec-1"
    assert [asked[2] for asked in locator.asked] == ["ec-1", "ec-1"]
    stranger = sign_compact({"alg": "ES256"}, json_dumps_compact(claims()), keys.attacker_ec)
    assert (await refused_with(verifier, stranger, kid_if_absent="ec-1")) == "bad_signature"


async def refused_with(verifier: JwsVerifier, token: str, **options: Any) -> str:
    """The reason `token` is refused with, given verify options."""
    with pytest.raises(JoseError) as info:
        await verifier.verify(token, trust(), **options)
    return info.value.reason


@pytest.mark.parametrize(("typ", "rule", "ok"), [
    ("JWT", "JWT", True), ("application/jwt", "JWT", True), ("at+jwt", "JWT", False), (None, "JWT", False),
    ("at+jwt", ("at+jwt", "application/at+jwt"), True), ("application/at+jwt", ("at+jwt",), True),
    ("JWT", ("at+jwt", "application/at+jwt"), False), (None, ("at+jwt",), False), (None, None, True),
])
async def test_the_trusts_typ_rule_comes_before_the_key(keys: TestKeys, typ: str | None,
                                                        rule: str | tuple[str, ...] | None, ok: bool) -> None:
    """The trust's typ (one media type, or one of several) is checked after alg and kid, before the key lookup."""
    verifier, locator = setup(keys)
    token = sign_jwt(claims(), keys.ec, "ES256", typ=typ)
    if ok:
        await verifier.verify(token, trust(typ=rule))
        assert len(locator.asked) == 1
        return
    assert await refused(verifier, token, trust(typ=rule)) == "typ_mismatch"
    assert locator.asked == []


async def test_a_fixed_typ_is_checked_at_the_parse_before_the_alg(keys: TestKeys) -> None:
    """The verifier's fixed typ (the SSA's JWT) is part of step 1: an alg-none token of the wrong typ is refused
    for its typ; without a fixed typ the same token is refused for its alg."""
    token = unsigned({"alg": "none", "kid": "ec-1", "typ": "at+jwt"}, claims())
    fixed, locator = setup(keys, typ="JWT")
    with pytest.raises(JoseError) as info:
        fixed.parse(token)
    assert info.value.reason == "typ_mismatch"
    assert await refused(fixed, token) == "typ_mismatch"
    plain, _ = setup(keys)
    assert await refused(plain, token) == "alg_not_allowed"
    assert locator.asked == []


async def test_structure_is_refused_before_anything_else(keys: TestKeys) -> None:
    """Size, segments and forbidden headers fail at the parse: no key is looked up."""
    verifier, locator = setup(keys, max_bytes=512)
    good = sign_jwt(claims(), keys.ec, "ES256")
    embedded = sign_jwt(claims(), keys.attacker_ec, "ES256", extra_headers={"jwk": keys.attacker_ec.public_jwk()})
    assert await refused(verifier, good + ".AAAA") == "malformed"
    assert await refused(verifier, sign_jwt(claims(pad="x" * 600), keys.ec, "ES256")) == "too_large"
    assert await refused(verifier, embedded) == "forbidden_header"
    assert locator.asked == []


async def test_unknown_kid_is_the_locators_answer(keys: TestKeys) -> None:
    """A kid the key set does not hold is refused by the locator (unknown_kid); the signature is never tried."""
    verifier, locator = setup(keys)
    token = sign_jwt(claims(), keys.attacker_ec, "ES256", kid="not-in-the-set")
    assert await refused(verifier, token) == "unknown_kid"
    assert locator.asked == [("issuer", URI, "not-in-the-set", STRICT)]


async def test_bad_signature_is_refused_before_claims_are_read(keys: TestKeys) -> None:
    """A token signed by an attacker under a trusted kid, with expired claims from the wrong issuer, is refused
    for its signature: its claims are never judged."""
    verifier, _ = setup(keys)
    token = sign_jwt(claims(exp=int(NOW) - 600, iss="evil"), keys.attacker_ec, "ES256")
    assert await refused(verifier, token) == "bad_signature"


async def test_key_of_another_type_is_refused_before_claims(keys: TestKeys) -> None:
    """An ES384-capable key named by an ES256 token cannot verify it (key_mismatch), whatever the claims say."""
    verifier, _ = setup(keys)
    token = sign_jwt(claims(exp=int(NOW) - 600), keys.ec, "ES256", kid="ec384-1")
    assert await refused(verifier, token) == "key_mismatch"


@pytest.mark.parametrize(("overrides", "reason"), [
    ({"exp": int(NOW) - 600}, "expired"), ({"iss": "someone-else"}, "iss_mismatch"),
    ({"aud": "other-bank"}, "aud_mismatch"), ({"iat": None}, "missing_claim"),
])
async def test_claims_are_judged_last(keys: TestKeys, overrides: dict[str, Any], reason: str) -> None:
    """With a good signature, the trust's claim rules decide; without rules the caller judges them itself."""
    verifier, _ = setup(keys)
    token = sign_jwt(claims(**overrides), keys.rsa, "PS256")
    assert await refused(verifier, token) == reason
    verified = await verifier.verify(token, trust(rules=None))
    assert dict(verified.claims) == claims(**overrides)


async def test_now_overrides_the_clock(keys: TestKeys) -> None:
    """The caller's `now` (the request's time) is the time claims are judged at."""
    verifier, _ = setup(keys)
    token = sign_jwt(claims(), keys.ec, "ES256")
    with pytest.raises(JoseError, match="expired"):
        await verifier.verify(token, trust(), now=NOW + 3600)


async def test_a_parsed_jws_takes_the_same_path(keys: TestKeys) -> None:
    """A JWS parsed once (the registration request memo) is verified exactly as its text is."""
    verifier, locator = setup(keys)
    token = sign_jwt(claims(), keys.ec, "ES256")
    parsed = verifier.parse(token)
    assert (await verifier.verify(parsed, trust())).claims == (await verifier.verify(token, trust())).claims
    none = verifier.parse(unsigned({"alg": "none", "kid": "ec-1"}, claims()))
    with pytest.raises(JoseError, match="alg_not_allowed"):
        await verifier.verify(none, trust())
    assert len(locator.asked) == 2


async def test_static_keys_are_a_key_provider(keys: TestKeys) -> None:
    """StaticKeys serves key sets by URI through the same path; an unserved URI is unavailable, a literal
    private address fails a strict URL policy, and names are never resolved."""
    static = StaticKeys({URI: keys.jwks})
    verifier = JwsVerifier(static, clock=lambda: NOW)
    assert (await verifier.verify(sign_jwt(claims(), keys.ec, "ES256"), trust())).kid == "ec-1"
    token = sign_jwt(claims(), keys.ec, "ES256")
    assert await refused(verifier, token, trust(jwks_uri="https://elsewhere.example/jwks")) == "jwks_unavailable"
    static.serve("https://10.0.0.7/jwks", keys.jwks)
    assert await refused(verifier, token, trust(jwks_uri="https://10.0.0.7/jwks")) == "jwks_url_refused"
    assert (await verifier.verify(token, trust(jwks_uri="https://10.0.0.7/jwks", url_policy=None))).kid == "ec-1"
    assert await static.prefetch([URI]) == {URI: None}


def test_exactly_one_key_source() -> None:
    """A verifier takes a KeyProvider or a key locator, not both and not neither."""
    with pytest.raises(ValueError):
        JwsVerifier()
    with pytest.raises(ValueError):
        JwsVerifier(StaticKeys(), locate=Locator(JwkSet()))


def test_one_key_provider_protocol() -> None:
    """The JWKS cache and StaticKeys are both the one KeyProvider (what Services.keys holds)."""
    assert isinstance(JwksCache(), KeyProvider)
    assert isinstance(StaticKeys(), KeyProvider)
    assert not isinstance(object(), KeyProvider)
