"""Claim validation (RFC 7519 §4.1) at a fixed time, and the typ header check."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.jose import ClaimRules, JoseError, check_typ, validate_claims

from .conftest import NOW

RULES = ClaimRules.build(
    issuers=["dir-a", "dir-b"], audiences="bank", leeway_seconds=30, max_lifetime_seconds=600
)
OPEN = ClaimRules(leeway_seconds=0)  # exp required, nothing else


def c(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": "dir-a", "aud": "bank", "iat": NOW - 5, "exp": NOW + 60}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


CASES: list[tuple[str, dict[str, Any], ClaimRules, str | None]] = [
    ("valid", c(), RULES, None),
    ("valid_aud_list_contains", c(aud=["x", "bank"]), RULES, None),
    ("valid_second_issuer", c(iss="dir-b"), RULES, None),
    ("exp_exactly_now_no_leeway", c(exp=NOW), OPEN, "expired"),
    ("exp_just_future_no_leeway", c(exp=NOW + 1), OPEN, None),
    ("exp_within_leeway", c(iat=NOW - 100, exp=NOW - 29), RULES, None),
    ("exp_beyond_leeway", c(iat=NOW - 100, exp=NOW - 30), RULES, "expired"),
    ("exp_missing", c(exp=None), RULES, "missing_claim"),
    ("exp_string", c(exp="1700000060"), RULES, "bad_claim"),
    ("exp_bool", c(exp=True), RULES, "bad_claim"),
    ("exp_null", {**c(), "exp": None}, RULES, "bad_claim"),
    ("nbf_future_beyond_leeway", c(nbf=NOW + 31), RULES, "not_yet_valid"),
    ("nbf_future_within_leeway", c(nbf=NOW + 30), RULES, None),
    ("nbf_past", c(nbf=NOW - 100), RULES, None),
    ("iat_future_within_leeway", c(iat=NOW + 30), RULES, None),
    ("iat_future_beyond_leeway", c(iat=NOW + 31, exp=NOW + 90), RULES, "iat_in_future"),
    ("lifetime_at_limit", c(iat=NOW, exp=NOW + 600), RULES, None),
    ("lifetime_over_limit", c(iat=NOW - 1, exp=NOW + 600), RULES, "lifetime_too_long"),
    ("lifetime_without_iat_from_now", c(iat=None, exp=NOW + 601), RULES, "lifetime_too_long"),
    ("exp_before_iat", c(iat=NOW + 10, exp=NOW + 5), RULES, "bad_claim"),
    ("iss_untrusted", c(iss="dir-c"), RULES, "iss_mismatch"),
    ("iss_missing", c(iss=None), RULES, "missing_claim"),
    ("iss_not_string", c(iss=["dir-a"]), RULES, "bad_claim"),
    ("aud_other", c(aud="other"), RULES, "aud_mismatch"),
    ("aud_empty_list", c(aud=[]), RULES, "aud_mismatch"),
    ("aud_list_of_numbers", c(aud=[1]), RULES, "bad_claim"),
    ("aud_missing", c(aud=None), RULES, "missing_claim"),
    ("aud_wrong_type_even_if_unchecked", c(aud=5), OPEN, "bad_claim"),
    ("jti_not_string", c(jti=5), RULES, "bad_claim"),
    ("jti_required_missing", c(), ClaimRules(require=frozenset({"exp", "jti"})), "missing_claim"),
    ("sub_empty", c(sub=""), RULES, "bad_claim"),
]


@pytest.mark.parametrize(("claims", "rules", "expected"), [x[1:] for x in CASES], ids=[x[0] for x in CASES])
def test_claims_table(claims: dict[str, Any], rules: ClaimRules, expected: str | None) -> None:
    """Each claims set passes or fails with exactly the expected reason."""
    if expected is None:
        validate_claims(claims, rules, NOW)
        return
    with pytest.raises(JoseError) as info:
        validate_claims(claims, rules, NOW)
    assert info.value.reason == expected, info.value.description


@pytest.mark.parametrize(
    ("header", "expected", "ok"),
    [
        ({"typ": "JWT"}, "JWT", True),
        ({"typ": "jwt"}, "JWT", True),
        ({"typ": "application/jwt"}, "JWT", True),
        ({"typ": "JOSE"}, "JWT", False),
        ({}, "JWT", False),
        ({"typ": 1}, "JWT", False),
        ({}, None, True),
    ],
    ids=["exact", "case_insensitive", "media_prefix", "other", "missing", "not_string", "not_checked"],
)
def test_check_typ(header: dict[str, Any], expected: str | None, ok: bool) -> None:
    """typ compares case-insensitively with an optional application/ prefix (RFC 7515 §4.1.9)."""
    if ok:
        check_typ(header, expected)
        return
    with pytest.raises(JoseError) as info:
        check_typ(header, expected)
    assert info.value.reason == "typ_mismatch"


@pytest.mark.parametrize("kwargs", [{"leeway_seconds": -1}, {"leeway_seconds": float("nan")},
                                    {"max_lifetime_seconds": 0}])
def test_rules_refuse_nonsense(kwargs: dict[str, Any]) -> None:
    """Negative or NaN leeway and a zero lifetime bound are configuration errors."""
    with pytest.raises(ValueError):
        ClaimRules(**kwargs)
