"""`JwsVerifier(remember=N)`: a JWS verified before (a TPP's SSA, sent in each of its registration requests)
skips its parse and its signature computation, and nothing else — the key its kid names now, that key's
constraints and every claim rule at the current time are judged again, and only what verified is remembered."""

from __future__ import annotations

from typing import Any

import pytest

import gateway.jose.jws as jws_module
import gateway.jose.verifier as verifier_module
from gateway.jose import ClaimRules, JoseError, JwkSet, JwsVerifier, StaticKeys, sign_jwt
from gateway.jose.encoding import b64url_decode, b64url_encode

from .conftest import NOW, TestKeys
from .test_verifier import URI, claims, trust


@pytest.fixture
def work(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How many strict parses and signature computations the verifier asked for."""
    counts = {"parse": 0, "signature": 0}
    real_parse, real_verify = verifier_module.parse_compact, jws_module.verify_raw

    def parse(*args: Any, **kwargs: Any) -> Any:
        counts["parse"] += 1
        return real_parse(*args, **kwargs)

    def verify(*args: Any, **kwargs: Any) -> None:
        counts["signature"] += 1
        real_verify(*args, **kwargs)

    monkeypatch.setattr(verifier_module, "parse_compact", parse)
    monkeypatch.setattr(jws_module, "verify_raw", verify)
    return counts


def _verifier(keys: JwkSet, remember: int = 8) -> tuple[JwsVerifier, StaticKeys]:
    served = StaticKeys({URI: keys})
    return JwsVerifier(served, remember=remember), served


async def test_the_same_text_is_parsed_and_its_signature_computed_once(keys: TestKeys, work: dict[str, int]) -> None:
    verifier, _ = _verifier(keys.jwks)
    token = sign_jwt(claims(), keys.rsa, "PS256")
    first = await verifier.verify(token, trust(), now=NOW)
    second = await verifier.verify(token, trust(), now=NOW)
    assert work == {"parse": 1, "signature": 1}
    assert second.claims == first.claims and second.key_thumbprint == first.key_thumbprint
    assert verifier.remembered() == 1


async def test_without_remember_every_verification_does_the_work(keys: TestKeys, work: dict[str, int]) -> None:
    verifier, _ = _verifier(keys.jwks, remember=0)
    token = sign_jwt(claims(), keys.rsa, "PS256")
    for _ in range(2):
        await verifier.verify(token, trust(), now=NOW)
    assert work == {"parse": 2, "signature": 2}
    assert verifier.remembered() == 0


async def test_claims_are_judged_again_at_the_current_time(keys: TestKeys) -> None:
    verifier, _ = _verifier(keys.jwks)
    token = sign_jwt(claims(exp=int(NOW) + 60), keys.rsa, "PS256")
    await verifier.verify(token, trust(), now=NOW)
    with pytest.raises(JoseError) as exc:
        await verifier.verify(token, trust(), now=NOW + 3600)
    assert exc.value.reason == "expired"
    other_rules = ClaimRules.build(issuers="issuer", audiences="another-bank", leeway_seconds=30)
    with pytest.raises(JoseError) as exc:
        await verifier.verify(token, trust(rules=other_rules), now=NOW)
    assert exc.value.reason == "aud_mismatch"


async def test_the_trust_is_judged_again(keys: TestKeys, work: dict[str, int]) -> None:
    verifier, _ = _verifier(keys.jwks)
    token = sign_jwt(claims(), keys.rsa, "PS256")
    await verifier.verify(token, trust(), now=NOW)
    with pytest.raises(JoseError) as exc:
        await verifier.verify(token, trust(algorithms=frozenset({"ES256"})), now=NOW)
    assert exc.value.reason == "alg_not_allowed"
    with pytest.raises(JoseError) as exc:
        await verifier.verify(token, trust(typ="at+jwt"), now=NOW)
    assert exc.value.reason == "typ_mismatch"


def _gone(keys: TestKeys) -> list[dict[str, Any]]:
    return [keys.ec.public_jwk()]  # the directory rotated rsa-1 out


def _replaced(keys: TestKeys) -> list[dict[str, Any]]:
    return [keys.attacker_rsa.public_jwk()]  # the same kid names another key


def _restricted(keys: TestKeys) -> list[dict[str, Any]]:
    return [{**keys.rsa.public_jwk(), "alg": "RS256"}]  # the same key, now published for RS256 only


@pytest.mark.parametrize(("published", "reason", "signatures"), [
    (_gone, "unknown_kid", 1), (_replaced, "bad_signature", 2), (_restricted, "key_mismatch", 1)])
async def test_the_key_is_judged_again(keys: TestKeys, work: dict[str, int], published: Any, reason: str,
                                       signatures: int) -> None:
    """After the key set changes, a remembered JWS meets the key its kid names now: gone, another key (full
    verification again) or the same key with constraints that now exclude it."""
    verifier, served = _verifier(keys.jwks)
    token = sign_jwt(claims(), keys.rsa, "PS256")
    await verifier.verify(token, trust(), now=NOW)
    served.serve(URI, JwkSet.from_dict({"keys": published(keys)}))
    with pytest.raises(JoseError) as exc:
        await verifier.verify(token, trust(), now=NOW)
    assert exc.value.reason == reason
    assert work["signature"] == signatures


async def test_a_forged_signature_on_a_remembered_signing_input_is_refused(keys: TestKeys,
                                                                            work: dict[str, int]) -> None:
    verifier, _ = _verifier(keys.jwks)
    token = sign_jwt(claims(), keys.rsa, "PS256")
    await verifier.verify(token, trust(), now=NOW)
    head, payload, signature = token.split(".")
    forged = bytearray(b64url_decode(signature))
    forged[0] ^= 1
    with pytest.raises(JoseError) as exc:
        await verifier.verify(f"{head}.{payload}.{b64url_encode(bytes(forged))}", trust(), now=NOW)
    assert exc.value.reason == "bad_signature"
    assert work["signature"] == 2
    await verifier.verify(token, trust(), now=NOW)  # the genuine one is still remembered
    assert work["signature"] == 2


async def test_what_fails_is_not_remembered(keys: TestKeys, work: dict[str, int]) -> None:
    verifier, _ = _verifier(keys.jwks)
    forged = sign_jwt(claims(), keys.attacker_rsa, "PS256")  # kid rsa-1, the attacker's key
    for _ in range(2):
        with pytest.raises(JoseError):
            await verifier.verify(forged, trust(), now=NOW)
    assert work == {"parse": 2, "signature": 2}
    assert verifier.remembered() == 0


async def test_the_memo_is_bounded_and_forgets_the_least_recent(keys: TestKeys, work: dict[str, int]) -> None:
    verifier, _ = _verifier(keys.jwks, remember=2)
    tokens = [sign_jwt(claims(jti=f"t{i}"), keys.ec, "ES256") for i in range(3)]
    await verifier.verify(tokens[0], trust(), now=NOW)
    await verifier.verify(tokens[1], trust(), now=NOW)
    await verifier.verify(tokens[0], trust(), now=NOW)  # t0 is now the most recent
    await verifier.verify(tokens[2], trust(), now=NOW)  # t1 is forgotten
    assert verifier.remembered() == 2
    assert work["signature"] == 3
    await verifier.verify(tokens[0], trust(), now=NOW)
    assert work["signature"] == 3
    await verifier.verify(tokens[1], trust(), now=NOW)
    assert work["signature"] == 4


def test_remember_is_not_negative(keys: TestKeys) -> None:
    with pytest.raises(ValueError):
        JwsVerifier(StaticKeys({URI: keys.jwks}), remember=-1)
